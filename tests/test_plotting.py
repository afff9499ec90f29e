"""Figures: image grids and Chinese text in matplotlib (course_lib.plotting)."""

import json
import subprocess
import sys
import warnings

import matplotlib
import matplotlib.image
import numpy as np
import pytest
from course_lib import plotting

# This machine may have no CJK font: the warning is expected, and checked where it matters.
pytestmark = pytest.mark.filterwarnings("ignore::course_lib.plotting.CJKFontWarning")


@pytest.fixture(autouse=True)
def fresh_font_state(monkeypatch):
    """plotting as just imported (no font search yet); matplotlib's settings restored after."""
    monkeypatch.setattr(plotting, "_font_checked", False)
    monkeypatch.setattr(plotting, "_cjk_family", None)
    with matplotlib.rc_context():
        yield


@pytest.fixture
def no_cjk_font(monkeypatch):
    monkeypatch.delenv(plotting.FONT_ENV_VAR, raising=False)
    monkeypatch.setattr(plotting, "_installed_families", lambda: set())
    monkeypatch.setattr(plotting, "_FONT_GLOBS", ())


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


def test_importing_the_cli_searches_no_font():
    probe = """
import glob, json, sys
searched, real_glob = [], glob.glob
glob.glob = lambda pattern, **kw: searched.append(pattern) or real_glob(pattern, **kw)
import course_lib.cli
from course_lib import plotting
print(json.dumps({"searched": searched, "checked": plotting._font_checked,
                  "font_manager": "matplotlib.font_manager" in sys.modules}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.splitlines()[-1])
    assert not [p for p in seen["searched"] if "font" in p.lower()], seen["searched"]
    assert not seen["checked"]
    assert not seen["font_manager"], "matplotlib's font manager (its font cache) was loaded"
    assert "CJKFontWarning" not in proc.stderr


def test_the_first_label_searches_for_the_font_once(monkeypatch):
    calls = []
    real = plotting.setup_cjk_font
    monkeypatch.setattr(
        plotting, "setup_cjk_font", lambda warn=True: calls.append(warn) or real(warn)
    )
    assert calls == []
    plotting.label("训练步数", "training step")
    assert calls == [False]  # _ensure_font warns itself, pointing at the caller
    plotting.label("验证集", "validation")
    plotting.cjk_font()
    plotting.image_grid(np.zeros((1, 2, 2)))
    assert calls == [False]


def test_image_grid_and_cjk_font_also_set_the_font_up():
    plotting.image_grid(np.zeros((1, 2, 2)))
    assert plotting._font_checked
    plotting._font_checked = False  # restored by the fixture
    plotting.cjk_font()
    assert plotting._font_checked


def test_without_cjk_font_warns_once_and_labels_fall_back(no_cjk_font):
    with pytest.warns(plotting.CJKFontWarning, match="fonts-noto-cjk") as record:
        assert plotting.label("训练步数", "training step") == "training step"
        assert plotting.label("验证集", "validation") == "validation"
        assert plotting.cjk_font() is None
        plotting.image_grid(np.zeros((1, 2, 2)))
    assert len(record) == 1
    assert record[0].filename == __file__, "the warning names the chapter's line, not plotting's"


def test_setup_cjk_font_called_directly_warns_and_returns_none(no_cjk_font):
    with pytest.warns(plotting.CJKFontWarning) as record:
        assert plotting.setup_cjk_font() is None
    assert len(record) == 1 and record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plotting.label("中文", "English") == "English"  # searched already: no 2nd warning


def test_chinese_figure_text_draws_every_glyph():
    if plotting.cjk_font() is None:
        pytest.skip("no CJK font installed on this machine")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.set_title(plotting.label("变分自编码器的负证据下界 −1", "negative ELBO"))
    ax.set_xlabel("训练步数")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)"
        fig.canvas.draw()
    plt.close(fig)
    assert plotting.label("中文", "English") == "中文"


def test_font_env_var_must_name_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv(plotting.FONT_ENV_VAR, str(tmp_path / "missing.otf"))
    with pytest.raises(FileNotFoundError, match="COURSE_LIB_CJK_FONT"):
        plotting.label("训练步数", "training step")


def test_save_image_grid_writes_a_png_atomically_without_a_font(tmp_path, monkeypatch):
    images = np.zeros((3, 8, 8), np.float32)
    images[1] = 1.0
    path = plotting.save_image_grid(images, tmp_path / "run" / "samples.png", ncols=3)
    assert not plotting._font_checked, "a picture without text needs no font search"
    png = matplotlib.image.imread(path)
    scale = 256 // (3 * 9 + 1)  # 8x8 digits are enlarged
    assert png.shape[:2] == ((8 + 2) * scale, (3 * 9 + 1) * scale)
    assert png[scale * 2, scale * 11, 0] == 1.0 and png[scale * 2, scale * 2, 0] == 0.0
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.image, "imsave", broken)
    with pytest.raises(OSError, match="disk full"):
        plotting.save_image_grid(images[:1], path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["samples.png"], "no temporary file left"


def test_draw_forecasts_draws_the_truth_and_every_twelfth_origin():
    import matplotlib.figure

    truth = np.arange(30, dtype=float)[:, None] + np.arange(12)  # 30 origins, one month apart
    ax = matplotlib.figure.Figure().subplots()
    plotting.draw_forecasts(ax, truth, [truth + 1, truth - 1], names=["a", "b"])
    lines = ax.get_lines()
    assert len(lines) == 1 + 2 * 3  # the truth, then origins 0, 12, 24 of each forecast
    np.testing.assert_array_equal(lines[0].get_ydata(), np.arange(41))  # 30 + 12 - 1 months
    np.testing.assert_array_equal(lines[2].get_xdata(), np.arange(12, 24))
    labels = [line.get_label() for line in lines[1:]]
    assert labels[0] == "a" and labels[3] == "b" and labels[1].startswith("_")
