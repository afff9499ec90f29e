"""Writing files so that a reader never sees half of one: the one atomic-write helper.

A crash, a full disk or Ctrl-C while writing leaves the previous file (or none) in place, never a
truncated one, and no temporary file behind. Used by the run outputs (``recipes``), the dataset
downloads (``data``), the FD-LeNet cache (``fd_lenet``) and the figures (``plotting``).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import tempfile


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", **open_kwargs):
    """Open a temporary file beside ``path``; on success move it onto ``path`` in one step.

    On any exception (KeyboardInterrupt included) the temporary file is deleted and ``path`` is
    left as it was. The parent directory must exist.
    """
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path, obj) -> None:
    """``obj`` as indented UTF-8 JSON at ``path``, atomically."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
