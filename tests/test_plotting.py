"""Figures: image grids and Chinese text in matplotlib (course_lib.plotting)."""

import warnings

import matplotlib
import numpy as np
import pytest
from course_lib import plotting


def test_image_grid_tiles_images_with_padding():
    images = np.zeros((5, 2, 3), np.float32)
    images[4] = 1.0
    grid = plotting.image_grid(images, ncols=4, pad=1)
    assert grid.shape == (2 * 3 + 1, 4 * 4 + 1)
    assert grid[4:6, 1:4].min() == 1.0  # the fifth image opens the second row
    assert grid[1:3, 1:4].max() == 0.0


def test_image_grid_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        plotting.image_grid(np.zeros((2, 28, 28, 1)))


@pytest.mark.skipif(plotting.cjk_font() is None, reason="no CJK font installed on this machine")
def test_chinese_figure_text_draws_every_glyph():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.set_title(plotting.label("变分自编码器的负证据下界 −1", "negative ELBO"))
    ax.set_xlabel("训练步数")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)"
        fig.canvas.draw()
    plt.close(fig)
    assert plotting.label("中文", "English") == "中文"


def test_without_cjk_font_warns_once_and_labels_fall_back(monkeypatch):
    saved = plotting.cjk_font(), dict(matplotlib.rcParams)
    monkeypatch.delenv(plotting.FONT_ENV_VAR, raising=False)
    monkeypatch.setattr(plotting, "_installed_families", lambda: set())
    monkeypatch.setattr(plotting, "_FONT_GLOBS", ())
    try:
        with pytest.warns(plotting.CJKFontWarning, match="fonts-noto-cjk") as record:
            assert plotting.setup_cjk_font() is None
        assert len(record) == 1
        assert plotting.label("训练步数", "training step") == "training step"
    finally:
        plotting._cjk_family = saved[0]
        matplotlib.rcParams.update(saved[1])


def test_font_env_var_must_name_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv(plotting.FONT_ENV_VAR, str(tmp_path / "missing.otf"))
    with pytest.raises(FileNotFoundError, match="COURSE_LIB_CJK_FONT"):
        plotting.setup_cjk_font()
