"""Figures shared by the CLI and the chapters: image grids written without any font.

Taught in chapter 5.2 (05a_vae_in_practice).
"""

from __future__ import annotations

import os
import pathlib
import tempfile

import numpy as np


def image_grid(images, ncols: int = 8, pad: int = 1) -> np.ndarray:
    """Tile images [N, H, W] with values in [0, 1] into one [rows*(H+pad), ncols*(W+pad)] array."""
    images = np.asarray(images, np.float32)
    if images.ndim != 3:
        raise ValueError(f"image_grid expects [N, H, W] images, got shape {images.shape}")
    n, h, w = images.shape
    rows = -(-n // ncols)
    grid = np.ones((rows * (h + pad) + pad, ncols * (w + pad) + pad), np.float32)
    for i, img in enumerate(np.clip(images, 0, 1)):
        r, c = divmod(i, ncols)
        grid[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + c * (w + pad) : pad + c * (w + pad) + w,
        ] = img
    return grid


def save_image_grid(images, path, ncols: int = 8) -> pathlib.Path:
    """Write ``image_grid(images)`` as a PNG (white ink on black, as in MNIST), atomically."""
    import matplotlib.image

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = image_grid(images, ncols)
    scale = max(1, 256 // grid.shape[1])  # small digits (8x8) are enlarged to stay visible
    grid = np.kron(grid, np.ones((scale, scale), np.float32))
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        matplotlib.image.imsave(tmp, grid, cmap="gray", vmin=0.0, vmax=1.0)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
