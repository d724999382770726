import os
from pathlib import Path

import pytest

os.environ.setdefault("DCL_PROGRESS", "0")


def _mirror() -> Path | None:
    env = os.environ.get("DCL_DATA_MIRROR")
    return Path(env) if env else None


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The read-only data mirror; CI must have it, elsewhere its tests are skipped."""
    m = _mirror()
    if m is None or not (m / "MNIST" / "raw").is_dir():
        msg = f"DCL_DATA_MIRROR ({m}) does not hold MNIST/raw; set it to ../shared/data"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return m


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """An empty writable cache for tests that must not touch the user's one."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("DCL_DATA_DIR", str(cache))
    return cache
