"""Atomic file writes: write to a temporary file beside the target, then rename."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def user_cache(env: str, name: str) -> Path:
    """A writable cache folder: ``$<env>`` if set, else ``<XDG cache home>/dcl/<name>``
    (``~/.cache/dcl/<name>``)."""
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dcl" / name


@contextmanager
def atomic_path(dst: str | os.PathLike, suffix: str = ".part") -> Iterator[Path]:
    """Yield a temporary path next to ``dst``; rename it to ``dst`` if the block succeeds.

    If the block raises (or the process dies), ``dst`` keeps its previous
    content and the temporary file is removed (or left with ``suffix``,
    never under the final name).
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dst.name + ".", suffix=suffix, dir=dst.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(dst: str | os.PathLike, obj, **kw) -> Path:
    """Write ``obj`` as strict JSON (no NaN/inf), indented, atomically; return the path."""
    with atomic_path(dst, suffix=".tmp") as tmp:
        tmp.write_text(json.dumps(obj, indent=2, allow_nan=False, **kw))
    return Path(dst)
