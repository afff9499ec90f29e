"""Session-wide test set-up.

COURSE_LIB_DATA (the download and classifier cache of course_lib.data / course_lib.metrics) points
to a fresh directory for each test session, so tests never read or write the user's
~/.cache/course_lib, while a cache built in one test (e.g. the FD-LeNet classifier) is reused by the
next. A value the user has set is kept. This happens in pytest_configure, i.e. before any test
module (and with it course_lib) is imported, so code that reads the variable at import time sees it
too; subprocesses started by tests inherit it.

The browser tests' fixtures live here too: ``browser`` (headless Chromium, tests/chromium.py) and
``jupyter_lab`` (a `jupyter lab` server, tests/jupyter_lab.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

DATA_ENV = "COURSE_LIB_DATA"
_data_dir_key = pytest.StashKey[Path]()
_owned_data_dir: Path | None = None  # a directory this file made itself and must remove


@pytest.hookimpl(trylast=True)  # after pytest's tmpdir plugin has set up the session base temp
def pytest_configure(config: pytest.Config) -> None:
    global _owned_data_dir
    # Headless plotting in tests, unless the user chose a backend.
    os.environ.setdefault("MPLBACKEND", "Agg")

    if os.environ.get(DATA_ENV):
        return
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is not None:
        # Under pytest's numbered base temp: kept for the last few sessions, for inspection.
        data_dir = factory.mktemp("course_lib_data", numbered=False)
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="course_lib_data-"))
        _owned_data_dir = data_dir
    os.environ[DATA_ENV] = str(data_dir)
    config.stash[_data_dir_key] = data_dir


def pytest_unconfigure(config: pytest.Config) -> None:
    global _owned_data_dir
    if config.stash.get(_data_dir_key, None) is not None:
        os.environ.pop(DATA_ENV, None)
    if _owned_data_dir is not None:
        shutil.rmtree(_owned_data_dir, ignore_errors=True)
        _owned_data_dir = None


@pytest.fixture(scope="session")
def course_lib_data_dir() -> Path:
    """The COURSE_LIB_DATA directory of this test session (the user's own one if they set it)."""
    return Path(os.environ[DATA_ENV])


# --- the browser tests (tests/chromium.py, tests/jupyter_lab.py) --------------------------------


@pytest.fixture
def browser():
    """Headless Debian Chromium driven by Playwright (skipped without it, except under CI)."""
    from chromium import launched

    with launched() as browser:
        yield browser


@pytest.fixture
def jupyter_lab(tmp_path):
    """A `jupyter lab` server serving the empty folder ``tmp_path / "lab"``, stopped (with its
    kernels) after the test; skipped without JupyterLab or jupyter-ui-poll, except under CI."""
    from chromium import missing
    from jupyter_lab import Lab

    try:
        import jupyter_ui_poll  # noqa: F401
        import jupyterlab  # noqa: F401
    except ImportError as err:
        missing(f"{err.name} is not installed: pip install -e '.[dev]'")
    root = tmp_path / "lab"
    root.mkdir()
    server = Lab(root, tmp_path)
    try:
        server.start()
        yield server
    finally:
        server.stop()
