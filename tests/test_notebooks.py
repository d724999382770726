"""The book's notebooks as a reader meets them: a cell whose input is hidden only draws.

A reader sees a hidden cell's output, not its code; a name it binds (an import, a
variable, a function) and a later visible cell uses would be used without ever being
defined on the page.  Checked statically on the stored notebooks (no execution)."""
import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
HIDDEN = {"hide-input", "remove-input", "remove-cell"}


def _bound(tree: ast.AST) -> set[str]:
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            out |= {(a.asname or a.name).split(".")[0] for a in n.names}
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            out.add(n.id)
    return out


def _used(tree: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def hidden_names_used(cells: list[dict]) -> list[tuple[int, str, int]]:
    """(visible cell, name, hidden cell that bound it) for each name a visible code cell
    uses that only a hidden cell before it bound."""
    hidden_only: dict[str, int] = {}
    found = []
    for i, c in enumerate(cells):
        if c["cell_type"] != "code":
            continue
        text = "".join(c["source"])
        tree = ast.parse("\n".join(l for l in text.splitlines()
                                   if not l.lstrip().startswith(("%", "!"))))
        bound = _bound(tree)
        if HIDDEN & set(c.get("metadata", {}).get("tags", [])):
            for name in bound:
                hidden_only.setdefault(name, i)
            continue
        found += [(i, n, hidden_only[n]) for n in sorted(_used(tree) - bound) if n in hidden_only]
        for name in bound:
            hidden_only.pop(name, None)
    return found


def _cells(*sources_and_tags):
    return [{"cell_type": "code", "source": [s], "metadata": {"tags": t}} for s, t in sources_and_tags]


def test_the_check_sees_a_name_only_a_hidden_cell_defines():
    cells = _cells(("import numpy as np\nreal = np.ones(3)", ["hide-input"]),
                   ("print(real.sum())", []),
                   ("real = 2\nprint(real)", []),
                   ("x = 1", ["hide-input"]), ("x = 2\nprint(x)", []))
    assert hidden_names_used(cells) == [(1, "real", 0)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_hidden_cells_only_draw(path):
    cells = json.loads(path.read_text())["cells"]
    bad = hidden_names_used(cells)
    assert not bad, (f"{path.name}: visible cells use names that only a hidden cell defines "
                     f"(cell, name, hidden cell): {bad}")
