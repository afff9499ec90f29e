"""Figures shared by the CLI and the chapters: image grids, and Chinese text in matplotlib.

Image grids are taught in chapter 5.2 (05a_vae_in_practice); the font set-up in chapter 1.

Matplotlib's default font (DejaVu Sans) has no Chinese glyphs and draws empty boxes ("tofu") in
their place. This module is the one place that fixes that: it looks for an installed CJK font,
makes it the default sans-serif font, and, when there is none, warns once and makes `label` return
the English fallback so that no figure ever shows tofu.

The search runs once, the first time a chapter calls `label`, `cjk_font` or `image_grid`, so a
chapter's first figure gets the font without an extra call, while importing this module (as the
CLI does) touches no font. A figure with Chinese text that none of those has seen yet (text
written without `label`) needs ``plotting.setup_cjk_font()`` first.
"""

from __future__ import annotations

import glob
import io
import os
import pathlib
import warnings

import numpy as np

from course_lib import files

# Simplified-Chinese families first: the same code point is drawn differently in JP/TC faces.
CJK_FONT_FAMILIES = (
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Microsoft YaHei",
    "PingFang SC",
    "Hiragino Sans GB",
    "SimHei",
    "Noto Serif CJK SC",
    "Noto Sans CJK TC",
    "Noto Sans CJK JP",
)
# Where fonts live when matplotlib's font cache predates their installation.
_FONT_GLOBS = (
    "/usr/share/fonts/**/*CJK*",
    "/usr/share/fonts/**/*wqy*",
    "/usr/local/share/fonts/**/*CJK*",
    "~/.local/share/fonts/**/*CJK*",
    "~/.fonts/**/*CJK*",
    "/Library/Fonts/*",
    "/System/Library/Fonts/*",
)
FONT_ENV_VAR = "COURSE_LIB_CJK_FONT"
INSTALL_HINT = (
    "Install one and restart the kernel: Debian/Ubuntu 'sudo apt-get install fonts-noto-cjk', "
    "Fedora 'sudo dnf install google-noto-sans-cjk-fonts', macOS and Windows ship one; or point "
    f"${FONT_ENV_VAR} at a .otf/.ttf/.ttc file, e.g. Noto Sans CJK SC from "
    "https://github.com/notofonts/noto-cjk/releases."
)


class CJKFontWarning(UserWarning):
    """No Chinese font was found: figure text falls back to English."""


_cjk_family: str | None = None
_font_checked = False  # whether setup_cjk_font has run (see _ensure_font)


def _installed_families() -> set[str]:
    from matplotlib import font_manager

    return {f.name for f in font_manager.fontManager.ttflist}


def setup_cjk_font(warn: bool = True) -> str | None:
    """Make matplotlib draw Chinese with the first installed CJK font; return its family.

    Order: the file in ``$COURSE_LIB_CJK_FONT``, then `CJK_FONT_FAMILIES` as matplotlib knows
    them, then font files installed after matplotlib built its cache. With no CJK font it warns
    (`CJKFontWarning`, naming how to install one) and returns None; `label` then returns its
    English text. It runs by itself the first time `label`, `cjk_font` or `image_grid` is
    called; call it directly before a figure whose Chinese text does not go through `label`.
    """
    global _cjk_family, _font_checked
    import matplotlib
    from matplotlib import font_manager

    env_font = os.environ.get(FONT_ENV_VAR)
    if env_font:
        if not os.path.isfile(env_font):
            raise FileNotFoundError(
                f"${FONT_ENV_VAR}={env_font!r} is not a font file; point it at a .otf/.ttf/.ttc "
                "file with Chinese glyphs, or unset it to use an installed font."
            )
        font_manager.fontManager.addfont(env_font)
        family = font_manager.FontProperties(fname=env_font).get_name()
    else:
        family = _first_known_family()
        if family is None:
            for pattern in _FONT_GLOBS:
                for path in glob.glob(os.path.expanduser(pattern), recursive=True):
                    if path.lower().endswith((".otf", ".ttf", ".ttc")):
                        font_manager.fontManager.addfont(path)
            family = _first_known_family()
    _cjk_family, _font_checked = family, True
    if family is None:
        if warn:
            _warn_no_font(stacklevel=3)  # the line that called setup_cjk_font
        return None
    sans = [f for f in matplotlib.rcParams["font.sans-serif"] if f != family]
    matplotlib.rcParams["font.sans-serif"] = [family, *sans]
    matplotlib.rcParams["font.family"] = "sans-serif"
    # CJK fonts lack U+2212 (the typographic minus): use "-" on axes instead of a box.
    matplotlib.rcParams["axes.unicode_minus"] = False
    return family


def _first_known_family() -> str | None:
    installed = _installed_families()
    return next((f for f in CJK_FONT_FAMILIES if f in installed), None)


def _warn_no_font(stacklevel: int) -> None:
    warnings.warn(
        "No Chinese (CJK) font found for matplotlib, so figure text is in English. " + INSTALL_HINT,
        CJKFontWarning,
        stacklevel=stacklevel,
    )


def _ensure_font() -> None:
    """Run `setup_cjk_font` unless it has run already: the font search and its warning, once."""
    if not _font_checked and setup_cjk_font(warn=False) is None:
        _warn_no_font(stacklevel=4)  # the chapter's line that called label, cjk_font, image_grid


def cjk_font() -> str | None:
    """The CJK font family that figures use, or None when there is none (see `setup_cjk_font`)."""
    _ensure_font()
    return _cjk_family


def label(zh: str, en: str) -> str:
    """Figure text: ``zh`` when a CJK font is set up, otherwise its English translation ``en``.

    Use it for every Chinese string in a figure (titles, axis labels, legends), e.g.
    ``ax.set_xlabel(label("训练步数", "training step"))``.
    """
    _ensure_font()
    return zh if _cjk_family is not None else en


def image_grid(images, ncols: int = 8, pad: int = 1) -> np.ndarray:
    """Tile images [N, H, W] with values in [0, 1] into one [rows*(H+pad), ncols*(W+pad)] array.

    Meant for a figure (``plt.imshow``), so it also sets up the Chinese font on first use.
    """
    _ensure_font()
    return _tile(images, ncols, pad)


def _tile(images, ncols: int, pad: int) -> np.ndarray:
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


def draw_forecasts(ax, truth, forecasts, months=None, names=None) -> None:
    """A series' truth and 12-month forecasts from every 12th origin (chapter 6.4). ``truth``
    and each of ``forecasts`` are [origins, horizon], one row per consecutive origin; x values
    are ``months`` (default 0, 1, ...), legend entries ``names``."""
    horizon = truth.shape[1]
    months = np.arange(len(truth) + horizon - 1) if months is None else months
    series = np.concatenate([truth[:, 0], truth[-1, 1:]])
    ax.plot(months, series, color="k", lw=1, label=label("真实值", "truth"))
    for k, pred in enumerate(forecasts):
        for origin in range(0, len(pred), 12):
            name = names[k] if names is not None and origin == 0 else None
            ax.plot(
                months[origin : origin + horizon], pred[origin], color=f"C{k}", lw=2, label=name
            )


def unit_range(images) -> np.ndarray:
    """Grey images as float32 in [0, 1]: 0..255 values are divided by 255."""
    images = np.asarray(images, np.float32)
    return np.clip(images / 255.0 if images.max() > 1.0 else images, 0.0, 1.0)


def png_bytes(image, scale: int = 2) -> bytes:
    """One grey image (values in [0, 1] or 0..255) as PNG bytes, enlarged ``scale`` times."""
    import matplotlib.image

    big = np.kron(unit_range(image), np.ones((scale, scale), np.float32))
    buf = io.BytesIO()
    matplotlib.image.imsave(buf, big, cmap="gray", vmin=0.0, vmax=1.0, format="png")
    return buf.getvalue()


def save_image_grid(images, path, ncols: int = 8) -> pathlib.Path:
    """Write ``image_grid(images)`` as a PNG (white ink on black, as in MNIST), atomically."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = _tile(images, ncols, pad=1)  # a picture without text: no font needed
    scale = max(1, 256 // grid.shape[1])  # small digits (8x8) are enlarged to stay visible
    with files.atomic_write(path) as f:
        f.write(png_bytes(grid, scale))
    return path
