"""The book's notebooks as a reader meets them: a cell whose input is hidden only draws.

A reader sees a hidden cell's output, not its code; a name it binds (an import, a
variable, a function) and a later visible cell uses would be used without ever being
defined on the page.  Checked statically on the stored notebooks (no execution)."""
import ast
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
HIDDEN = {"hide-input", "remove-input", "remove-cell"}


def _is_hidden(cell: dict) -> bool:
    return bool(HIDDEN & set(cell.get("metadata", {}).get("tags", [])))


def _tree(cell: dict) -> ast.AST:
    """A code cell's syntax tree (IPython's magic and shell lines left out)."""
    text = "".join(cell["source"])
    return ast.parse("\n".join(l for l in text.splitlines()
                               if not l.lstrip().startswith(("%", "!"))))


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
    visible: set[str] = set()  # bound by a visible cell: a hidden cell's rebinding is harmless
    found = []
    for i, c in enumerate(cells):
        if c["cell_type"] != "code":
            continue
        tree = _tree(c)
        bound = _bound(tree)
        if _is_hidden(c):
            for name in bound - visible:
                hidden_only.setdefault(name, i)
            continue
        found += [(i, n, hidden_only[n]) for n in sorted(_used(tree) - bound) if n in hidden_only]
        for name in bound:
            hidden_only.pop(name, None)
        visible |= bound
    return found


def _cells(*sources_and_tags):
    return [{"cell_type": "code", "source": [s], "metadata": {"tags": t}} for s, t in sources_and_tags]


def test_the_check_sees_a_name_only_a_hidden_cell_defines():
    cells = _cells(("import numpy as np\nreal = np.ones(3)", ["hide-input"]),
                   ("print(real.sum())", []),
                   ("real = 2\nprint(real)", []),
                   ("x = 1", ["hide-input"]), ("x = 2\nprint(x)", []),
                   ("import math", []), ("import math", ["hide-input"]), ("math.pi", []))
    assert hidden_names_used(cells) == [(1, "real", 0)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_hidden_cells_only_draw(path):
    cells = json.loads(path.read_text())["cells"]
    bad = hidden_names_used(cells)
    assert not bad, (f"{path.name}: visible cells use names that only a hidden cell defines "
                     f"(cell, name, hidden cell): {bad}")


def test_hidden_cells_neither_glue_nor_assert():
    """A hidden cell only draws: a number the text glues, or a claim the page asserts, is
    computed where the reader sees it."""
    bad = []
    for path in NOTEBOOKS:
        for i, c in enumerate(json.loads(path.read_text())["cells"]):
            if c["cell_type"] == "code" and _is_hidden(c):
                tree = _tree(c)
                calls = {n.func.id for n in ast.walk(tree)
                         if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
                if "glue" in calls or any(isinstance(n, ast.Assert) for n in ast.walk(tree)):
                    bad.append((path.name, i))
    assert not bad, f"hidden cells that glue or assert (notebook, cell): {bad}"


# --- the lessons' size, and the book's numbering --------------------------------------

LESSONS = [ROOT / "notebooks" / f"{n}.ipynb" for n in
           ("01_gmm_em", "02_ganmm", "03_dcan", "04_depict", "05_clustergan", "06_vcami")]
# logistics a lesson does not tell (they belong to the reproduction notes)
LOGISTICS = ("window", "campaign", "at once", "avx", "cache key", "--tag", "h200", "--parallel")


def lesson_size(path: Path) -> dict:
    """Prose words (markdown, display maths and code blocks left out), code lines (every
    line of every code cell, hidden ones and blank ones included), glue references, and the
    logistics words the prose uses."""
    words = code = glue = 0
    found = set()
    for c in json.loads(path.read_text())["cells"]:
        text = "".join(c["source"])
        if c["cell_type"] == "code":
            code += len(text.split("\n")) if text else 0
        elif c["cell_type"] == "markdown":
            glue += len(re.findall(r"\{glue(?::\w+)?\}", text))
            prose = re.sub(r"```.*?```|\$\$.*?\$\$", " ", text, flags=re.S)
            words += len(prose.split())
            found |= {w for w in LOGISTICS if w in text.lower()}
    return {"words": words, "code": code, "glue": glue, "logistics": sorted(found)}


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_a_lesson_fits_one_sitting(path):
    size = lesson_size(path)
    assert size["words"] <= 4500 and size["code"] <= 500 and size["glue"] <= 60, size
    assert not size["logistics"], size


def test_lesson_size_counts_what_it_says(tmp_path):
    nb = {"cells": [{"cell_type": "markdown", "source": ["One two {glue:text}`k` $$x y$$\n",
                                                         "```bash\nnot counted\n```\nwindow"]},
                    {"cell_type": "code", "source": ["a = 1\n", "\n", "b = 2"]}]}
    p = tmp_path / "lesson.ipynb"
    p.write_text(json.dumps(nb))
    assert lesson_size(p) == {"words": 4, "code": 3, "glue": 1, "logistics": ["window"]}


def _numbered_chapters() -> list[Path]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    (part,) = [p for p in toc["parts"] if p.get("numbered")]
    return [ROOT / f"{c['file']}.ipynb" for c in part["chapters"]]


def test_chapter_n_is_notebook_0n_and_its_lemmas_and_headings_follow_the_book():
    """The book numbers chapters, sections, figures and equations; a numbered chapter's
    own headings carry no number of their own (else "3.2. 1. GANs"); a lemma is numbered
    by the chapter that states it (Lemma 2.1 in chapter 2), and a lemma cited elsewhere is
    cited by that number, not restated under another."""
    chapters = _numbered_chapters()
    assert [p.name[:2] for p in chapters] == [f"{i:02d}" for i in range(1, len(chapters) + 1)]
    stated, cited = set(), []
    for i, path in enumerate(chapters, start=1):
        md = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                       if c["cell_type"] == "markdown")
        md = re.sub(r"```(?!\{math\}).*?```", " ", md, flags=re.S)
        numbered = re.findall(r"(?m)^#{1,4} \d+[a-z]?[.\s]", md)
        assert not numbered, f"{path.name}: headings numbered by hand: {numbered}"
        here = set(re.findall(r"\*\*Lemma (\d+\.\d+)\.\*\*|\(Lemma (\d+\.\d+)\)\n", md))
        here = {a or b for a, b in here}
        assert {int(n.split(".")[0]) for n in here} <= {i}, f"{path.name} states {here}"
        stated |= here
        cited += [(path.name, n) for n in re.findall(r"Lemma (\d+\.\d+)", md)]
        bare = re.findall(r"(?<!poster's )Lemma \d+(?![.\d])", md)
        assert not bare, f"{path.name}: lemmas without their chapter: {bare}"
    assert stated and all(n in stated for _, n in cited), (stated, cited)


# --- equations cited from code ------------------------------------------------------
# A code comment cites an equation by the number the book prints beside it, "eq. (3.1)":
# a label such as eq-dcan-kl is not visible on the page.  The book numbers the labelled
# equations of a numbered chapter N as N.1, N.2, ... in the order they appear (those of
# the unnumbered introduction 1, 2, ...).  This is that order as the comments were
# written: adding, moving or removing a labelled equation fails here until the numbers
# the code cites and this list are updated together.
EQUATION_ORDER = {
    "00_introduction": ["eq-contingency", "eq-acc", "eq-purity", "eq-ari", "eq-nmi",
                        "eq-kmeans"],
    "01_gmm_em": ["eq-mixture", "eq-loglik", "eq-decomposition", "eq-lognormal", "eq-estep",
                  "eq-mstep", "eq-monotone", "eq-eps-estep", "eq-eps-inequality",
                  "eq-dec-p", "eq-dec-target", "eq-dec-loss"],
    "02_ganmm": ["eq-gan-value", "eq-optimal-d", "eq-wasserstein", "eq-ganmm-mixture",
                 "eq-ganmm-classifier", "eq-ganmm-estep", "eq-ganmm-wgan"],
    "03_dcan": ["eq-dcan-kl", "eq-dcan-jsd", "eq-dcan-value", "eq-dcan-lemma2",
                "eq-dcan-encoder"],
    "04_depict": ["eq-depict-softmax", "eq-depict-objective", "eq-depict-q", "eq-dec-q",
                  "eq-depict-loss", "eq-acpic-walk", "eq-acpic-path"],
    "05_clustergan": ["eq-wgan-gp", "eq-backprop-decoding", "eq-clustergan-prior",
                      "eq-clustergan-ge", "eq-krestart"],
    "06_vcami": ["eq-vc-ba", "eq-vc-mi-lingauss", "eq-vc-jsd-mi", "eq-vc-lmi", "eq-vc-iic",
                 "eq-vc-iic-w", "eq-vc-gmm", "eq-vc-total"],
}
CITED = re.compile(r"\b[Ee]q\. \(?(\d+(?:\.\d+)?)\)?")


def equation_labels(cells: list[dict]) -> list[str]:
    """The labelled display equations of a notebook's markdown, in order: ```{math}
    blocks with :label: and $$ ... $$ (label)."""
    out = []
    for c in cells:
        if c["cell_type"] == "markdown":
            found = re.findall(r"^:label:\s*(\S+)|^\$\$.*?\$\$\s*\((\S+)\)",
                               "".join(c["source"]), flags=re.M | re.S)
            out += [a or b for a, b in found]
    return out


def equation_numbers(notebooks: list[Path]) -> dict[str, tuple[str, str]]:
    """The number the book prints for each labelled equation -> (notebook stem, label)."""
    out = {}
    for path in notebooks:
        n = int(path.name[:2])
        for i, label in enumerate(equation_labels(json.loads(path.read_text())["cells"]), 1):
            out[f"{n}.{i}" if n else f"{i}"] = (path.stem, label)
    return out


def bad_equation_citations(notebooks: list[Path]) -> list[tuple[str, int, str]]:
    """(notebook, cell, why) for each code cell that names an equation by its label, or
    cites a number whose equation is neither defined nor referenced in the markdown
    before that cell (nor defined in an earlier chapter)."""
    numbers, bad = equation_numbers(notebooks), []
    for path in notebooks:
        cells = json.loads(path.read_text())["cells"]
        seen = ""
        for i, c in enumerate(cells):
            text = "".join(c["source"])
            if c["cell_type"] == "markdown":
                seen += text
                continue
            if c["cell_type"] != "code":
                continue
            bad += [(path.name, i, f"label {m}") for m in re.findall(r"\beq-[a-z0-9-]+", text)]
            for num in CITED.findall(text):
                if num not in numbers:
                    bad.append((path.name, i, f"eq. ({num}) does not exist"))
                    continue
                stem, label = numbers[num]
                if stem < path.stem:  # an earlier chapter's equation
                    continue
                if stem != path.stem or label not in seen:
                    bad.append((path.name, i, f"eq. ({num}) is {label}, not shown above"))
    return bad


def test_the_labelled_equations_are_in_the_order_the_code_cites():
    order = {p.stem: labels for p in NOTEBOOKS
             if (labels := equation_labels(json.loads(p.read_text())["cells"]))}
    assert order == EQUATION_ORDER


def test_code_cites_equations_by_the_number_the_book_prints():
    assert not bad_equation_citations(NOTEBOOKS)


def test_the_citation_check_sees_a_label_and_a_number_that_moved(tmp_path):
    md = {"cell_type": "markdown", "source": ["$$a=b$$ (eq-one)\n\n$$c=d$$ (eq-two)"]}
    code = {"cell_type": "code", "source": ["x = 1  # eq. (3.2)"]}
    nb = tmp_path / "03_x.ipynb"
    nb.write_text(json.dumps({"cells": [md, code]}))
    assert equation_labels([md]) == ["eq-one", "eq-two"]
    assert not bad_equation_citations([nb])
    # a third equation cited before the markdown that shows it
    nb.write_text(json.dumps({"cells": [md, {**code, "source": ["# eq. (3.3)"]}]}))
    assert bad_equation_citations([nb])[0][2] == "eq. (3.3) does not exist"
    later = {"cell_type": "markdown", "source": ["$$e$$ (eq-three)"]}
    nb.write_text(json.dumps({"cells": [md, {**code, "source": ["# eq. (3.3)"]}, later]}))
    assert "not shown above" in bad_equation_citations([nb])[0][2]
    nb.write_text(json.dumps({"cells": [md, {**code, "source": ["# see eq-one"]}]}))
    assert bad_equation_citations([nb]) == [("03_x.ipynb", 1, "label eq-one")]
