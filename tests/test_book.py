"""The web site's configuration and build script (scripts/book.py), without building the site.

tests/test_site.py builds it and checks it in a browser; these tests are fast and need neither
jupyter-book nor Chromium.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from script_loader import load_script

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = [
    "notebooks/00_jax_primer",
    "notebooks/01_background",
    "notebooks/02_core_concepts",
    "notebooks/03_algorithms",
    "notebooks/04_math",
    "notebooks/05a_vae_in_practice",
    "notebooks/05b_gan_in_practice",
    "notebooks/05c_rnn_in_practice",
    "notebooks/06a_annotation_lab",
    "notebooks/06b_tuning_lab",
    "notebooks/06c_feedback_lab",
    "notebooks/08_trends",
    "notebooks/appendix_errata",
]
COLAB_INSTALL = re.compile(r'"course-lib @ git\+(https://[^"\s]+?)(?:\.git)?"')


@pytest.fixture(scope="module")
def book():
    return load_script("book")


def book_yml() -> dict:
    return yaml.safe_load((ROOT / "book.yml").read_text(encoding="utf-8"))


def toc_yml() -> dict:
    return yaml.safe_load((ROOT / "toc.yml").read_text(encoding="utf-8"))


# --- book.yml and toc.yml ------------------------------------------------------------------------


def test_toc_follows_the_article_in_order(book):
    toc = toc_yml()
    assert toc["format"] == "jb-book"
    assert book.toc_documents(toc) == ["intro", *CHAPTERS]
    captions = [part["caption"] for part in toc["parts"]]
    assert captions[0] == "预备知识"  # the JAX primer, before the article's sections
    assert [c.split(" · ")[0] for c in captions[1:6]] == [f"原文 {n}" for n in range(1, 6)]
    assert captions[-1] == "附录"
    assert (ROOT / "intro.md").read_text(encoding="utf-8").startswith("# 前言")


def test_book_config_is_chinese_offline_and_strict():
    config = book_yml()
    sphinx = config["sphinx"]["config"]
    assert sphinx["language"] == "zh_CN"
    assert config["execute"]["execute_notebooks"] == "off"
    assert "://" not in sphinx["mathjax_path"], "MathJax must be served by the site itself"
    assert "://" not in sphinx["mermaid_use_local"], "Mermaid must be served by the site itself"
    assert "sphinxcontrib.mermaid" in sphinx["extensions"]
    assert sphinx["html_static_path"] == ["_build/site_static"]
    assert not (ROOT / "_static").exists(), "Jupyter Book would load every .js under _static/"


def test_vendored_files_are_the_ones_the_config_points_at(book):
    sphinx = book_yml()["sphinx"]["config"]
    # vendor_assets() keeps es5/tex-chtml.js as mathjax/tex-chtml.js and dist/X as mermaid/X
    assert sphinx["mathjax_path"] == "mathjax/" + book.MATHJAX_KEEP[0].removeprefix("es5/")
    assert sphinx["mermaid_use_local"] == "mermaid/" + book.MERMAID_KEEP[0].removeprefix("dist/")
    assert book.NPM_PACKAGES["mathjax"].startswith("3.")


def test_repository_url_is_the_one_the_colab_cell_installs_from():
    url = book_yml()["repository"]["url"]
    sources = {"notebooks/README.md": (ROOT / "notebooks" / "README.md").read_text("utf-8")}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        first_code = next((c.source for c in nb.cells if c.cell_type == "code"), "")
        sources[path.relative_to(ROOT).as_posix()] = first_code
    for name, text in sources.items():
        found = COLAB_INSTALL.findall(text)
        assert found, f"{name}: no Colab install of course-lib from git"
        assert set(found) == {url}, f"{name} installs from {found}, book.yml says {url}"


def test_launch_buttons_need_the_repository_url(book):
    config = book_yml()
    untouched = copy.deepcopy(config)
    assert config["launch_buttons"]["binderhub_url"] and config["launch_buttons"]["colab_url"]
    assert book.effective_config(config)["launch_buttons"] == config["launch_buttons"]
    without = {k: v for k, v in config.items() if k != "repository"}
    adjusted = book.effective_config(without)
    assert "launch_buttons" not in adjusted and "repository" not in adjusted
    assert adjusted["html"]["use_repository_button"] is False
    empty = {**config, "repository": {"url": ""}}
    assert "launch_buttons" not in book.effective_config(empty)
    assert config == untouched, "effective_config must not change its argument"


# --- currency of stored outputs ------------------------------------------------------------------


def notebook(*sources: str, markdown: str = "# 标题") -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(markdown)]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


def test_fingerprint_follows_code_library_and_profile_not_prose(book):
    base = book.inputs_sha256(notebook("x = 1"), "lib", "quick")
    assert base == book.inputs_sha256(notebook("x = 1", markdown="# 另一个标题"), "lib", "quick")
    assert base != book.inputs_sha256(notebook("x = 2"), "lib", "quick")
    assert base != book.inputs_sha256(notebook("x = 1", ""), "lib", "quick")
    assert base != book.inputs_sha256(notebook("x = 1"), "lib2", "quick")
    assert base != book.inputs_sha256(notebook("x = 1"), "lib", "full")
    nb = notebook("x = 1")
    assert not book.is_current(nb, "lib", "quick")
    nb.metadata[book.STAMP_KEY] = {"inputs_sha256": base}
    assert book.is_current(nb, "lib", "quick") and not book.is_current(nb, "lib2", "quick")


def test_library_digest_covers_sources_and_shipped_data(book, tmp_path):
    lib = tmp_path / "course_lib"
    (lib / "datasets").mkdir(parents=True)
    (lib / "a.py").write_text("A = 1\n")
    (lib / "datasets" / "d.npz").write_bytes(b"\x00\x01")
    (lib / "notes.txt").write_text("not an input")
    first = book.library_digest(tmp_path)
    (lib / "notes.txt").write_text("changed")
    assert book.library_digest(tmp_path) == first
    (lib / "datasets" / "d.npz").write_bytes(b"\x00\x02")
    second = book.library_digest(tmp_path)
    assert second != first
    (lib / "a.py").write_text("A = 2\n")
    assert book.library_digest(tmp_path) != second


# --- chapter times -------------------------------------------------------------------------------


def timed(nb, *spans: tuple[str, str]):
    for cell, (start, end) in zip(
        [c for c in nb.cells if c.cell_type == "code"], spans, strict=True
    ):
        cell.metadata["execution"] = {"iopub.execute_input": start, "shell.execute_reply": end}
    return nb


def test_cell_seconds_sums_nbclient_timestamps(book):
    nb = timed(
        notebook("a", "b"),
        ("2026-11-29T10:00:00.000000Z", "2026-11-29T10:00:01.500000Z"),
        ("2026-11-29T10:05:00Z", "2026-11-29T10:06:00.5Z"),  # a pause between cells is not counted
    )
    assert book.cell_seconds(nb) == pytest.approx(62.0)
    assert book.cell_seconds(notebook("a")) is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.4, "约 10 秒"),
        (44, "约 40 秒"),
        (60, "约 1 分"),
        (128, "约 2 分 10 秒"),
        (3599, "约 60 分"),
    ],
)
def test_durations_are_rounded_for_readers(book, seconds, text):
    assert book.format_duration(seconds) == text


def test_chapter_times_table(book, tmp_path):
    one = timed(
        notebook("x = 1", markdown="# 第1章 背景介绍\n正文"),
        ("2026-11-29T10:00:00Z", "2026-11-29T10:01:30Z"),
    )
    one.metadata[book.STAMP_KEY] = {"executed_on": {"cpus": 2, "machine": "x86_64"}}
    two = notebook("y = 2", markdown="# 第2章 核心概念与联系")
    paths = []
    for name, nb in (("01.ipynb", one), ("02.ipynb", two)):
        nbformat.write(nb, tmp_path / name)
        paths.append(tmp_path / name)
    table = book.chapter_times_markdown(paths, root=tmp_path)
    assert "| [第1章 背景介绍](01.ipynb) | 约 1 分 30 秒 |" in table
    assert "| [第2章 核心概念与联系](02.ipynb) | 未记录 |" in table
    assert "合计" not in table  # no total while a chapter has no timestamps
    assert "2 核 x86_64 CPU" in table
    nbformat.write(timed(two, ("2026-11-29T10:00:00Z", "2026-11-29T10:00:20Z")), paths[1])
    assert "| **合计** | **约 1 分 50 秒** |" in book.chapter_times_markdown(paths, root=tmp_path)


# --- build checks --------------------------------------------------------------------------------


def test_offline_check_rejects_assets_from_other_hosts(book, tmp_path):
    page = tmp_path / "page.html"
    page.write_text(
        '<script src="_static/mathjax/tex-chtml.js"></script>'
        '<a href="https://colab.research.google.com/x">Colab</a>',
        encoding="utf-8",
    )
    book.check_offline(tmp_path)  # local scripts and plain hyperlinks are fine
    page.write_text(
        '<script defer src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>',
        encoding="utf-8",
    )
    with pytest.raises(book.BookError, match="cdn.jsdelivr.net"):
        book.check_offline(tmp_path)


def test_missing_font_stops_with_a_clear_message(book, monkeypatch):
    monkeypatch.setattr(book, "matplotlib_cjk_family", lambda: None)
    monkeypatch.setattr(book, "fontconfig_cjk_families", lambda: [])
    with pytest.raises(book.BookError, match="fonts-noto-cjk"):
        book.ensure_cjk_font(install=False)


def test_missing_toc_file_is_named(book, tmp_path):
    with pytest.raises(book.BookError, match="notebooks/99_missing"):
        book.resolve_document("notebooks/99_missing", tmp_path)


def test_vendored_assets_are_fetched_only_when_the_versions_change(book, tmp_path, monkeypatch):
    marker = tmp_path / "npm-versions.json"
    marker.write_text(json.dumps(book.NPM_PACKAGES))
    vendored = tmp_path / "mathjax" / "tex-chtml.js"
    vendored.parent.mkdir()
    vendored.write_text("// MathJax")
    monkeypatch.setattr(book.shutil, "which", lambda name: None)  # npm cannot be reached
    book.vendor_assets(tmp_path)  # up to date: nothing fetched, nothing removed
    assert vendored.read_text() == "// MathJax"
    marker.write_text(json.dumps({**book.NPM_PACKAGES, "mathjax": "2.7.9"}))
    with pytest.raises(book.BookError, match="npm"):  # stale: it would fetch again
        book.vendor_assets(tmp_path)


def test_notebook_without_pygments_lexer_is_named(book, tmp_path, monkeypatch):
    monkeypatch.setattr(book, "ROOT", tmp_path)
    nb = notebook("%pip install x")
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, tmp_path / "03.ipynb")
    with pytest.raises(book.BookError, match="03.ipynb"):
        book.check_notebook_metadata([tmp_path / "03.ipynb"])
    nb.metadata["language_info"]["pygments_lexer"] = "ipython3"
    nbformat.write(nb, tmp_path / "03.ipynb")
    book.check_notebook_metadata([tmp_path / "03.ipynb"])


def test_no_notebook_stores_widget_state():
    # Jupyter Book would load the widget manager from a CDN for it; scripts/book.py drops it.
    stored = [
        p.name
        for p in sorted((ROOT / "notebooks").glob("*.ipynb"))
        if "widgets" in json.loads(p.read_text(encoding="utf-8")).get("metadata", {})
    ]
    assert not stored, f"metadata.widgets in {stored}: re-execute with scripts/book.py"
