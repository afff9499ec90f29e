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


def save_tree(path, tree, meta: dict) -> None:
    """The arrays of ``tree`` (a pytree of arrays) and a JSON-able ``meta`` as one ``.npz``,
    atomically; read back with :func:`load_tree`. Used by the cache of trained models (``runs``)."""
    import jax
    import numpy as np

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    arrays = {jax.tree_util.keystr(p): np.asarray(leaf) for p, leaf in leaves}
    arrays["__meta__"] = np.array(json.dumps(meta))
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load_tree(path, template):
    """``(tree, meta)`` from a :func:`save_tree` file, with the structure of ``template``.

    Raises ValueError if a leaf is missing or has another shape or dtype than the template's.
    """
    import jax
    import numpy as np

    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    with np.load(path) as f:
        meta = json.loads(str(f["__meta__"]))
        new = []
        for p, leaf in leaves:
            name = jax.tree_util.keystr(p)
            if name not in f:
                raise ValueError(f"{path} has no array {name}")
            arr = f[name]
            if arr.shape != np.shape(leaf) or arr.dtype != np.asarray(leaf).dtype:
                raise ValueError(f"{path}: {name} has shape {arr.shape}, expected {np.shape(leaf)}")
            new.append(jax.numpy.asarray(arr))
    return jax.tree_util.tree_unflatten(treedef, new), meta
