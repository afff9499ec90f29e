"""scripts/build_errata.py: the 勘误-box parser and the appendix table, on synthetic notebooks."""

from __future__ import annotations

import json
from pathlib import Path

from script_loader import load_script

ROOT = Path(__file__).resolve().parents[1]


be = load_script("build_errata")

BOX = """\
前面的文字。

(erratum-4-2-3-gan-losses)=
:::{admonition} 勘误（原文 4.2.3）：两个损失函数写成了同一个式子
:class: warning

**原文**：……  **正确**：……  **验证**：下面的代码单元。
:::

后面的文字。
"""


def _write_nb(path: Path, markdown_cells) -> Path:
    cells = [{"cell_type": "code", "source": "x = 1", "metadata": {}, "outputs": []}]
    cells += [{"cell_type": "markdown", "source": s, "metadata": {}} for s in markdown_cells]
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4}), encoding="utf-8")
    return path


def test_parse_well_formed_box():
    errata, problems = be.parse_source(BOX, "04_math.ipynb", 7)
    assert problems == []
    (e,) = errata
    assert (e.label, e.section, e.title) == (
        "erratum-4-2-3-gan-losses",
        "4.2.3",
        "两个损失函数写成了同一个式子",
    )
    assert (e.notebook, e.cell, e.chapter) == ("04_math.ipynb", 7, 4)
    assert e.body.startswith("**原文**")


def test_parse_reports_malformed_boxes():
    cases = {
        "no label": BOX.replace("(erratum-4-2-3-gan-losses)=\n", ""),
        "section mismatch": BOX.replace("erratum-4-2-3-", "erratum-4-2-2-"),
        "bad title": BOX.replace("勘误（原文 4.2.3）：", "勘误：原文 4.2.3 "),
        "no class": BOX.replace(":class: warning\n", ""),
        "not closed": BOX.replace("\n:::\n", "\n"),
        "missing keys": BOX.replace("**正确**", "正确"),
        "label alone": "(erratum-2-3-encoder)=\n\n普通段落。\n",
    }
    for name, text in cases.items():
        _, problems = be.parse_source(text, "x.ipynb", 0)
        assert problems, f"{name}: no problem reported"


def test_collect_render_and_check(tmp_path):
    _write_nb(tmp_path / "02_core.ipynb", [BOX.replace("4-2-3", "2-3").replace("4.2.3", "2.3")])
    _write_nb(
        tmp_path / "01_background.ipynb", [BOX.replace("4-2-3", "1-3").replace("4.2.3", "1.3")]
    )
    _write_nb(tmp_path / "notes.ipynb", [BOX])  # not a chapter: ignored
    errata, problems = be.collect(tmp_path)
    assert problems == []
    assert [e.label for e in errata] == ["erratum-1-3-gan-losses", "erratum-2-3-gan-losses"]
    page = be.render(errata)
    assert page.startswith("# 附录：勘误表")
    assert (
        "| 1 | 1.3 | 两个损失函数写成了同一个式子 | {ref}`第1章（01）<erratum-1-3-gan-losses>` |"
        in page
    )
    assert "| 2 | 2.3 |" in page

    out = tmp_path / "appendix_errata.md"
    args = ["--notebooks", str(tmp_path)]
    assert be.main([*args, "--check"]) == 1  # missing page is stale
    assert be.main(args) == 0 and out.read_text(encoding="utf-8") == page
    assert be.main([*args, "--check"]) == 0
    _write_nb(tmp_path / "03_algo.ipynb", [BOX.replace("4-2-3", "3-1").replace("4.2.3", "3.1")])
    assert be.main([*args, "--check"]) == 1


def test_duplicate_labels_are_reported(tmp_path):
    _write_nb(tmp_path / "04_a.ipynb", [BOX])
    _write_nb(tmp_path / "04_b.ipynb", [BOX])
    _, problems = be.collect(tmp_path)
    assert len(problems) == 1 and "unique" in problems[0]
    assert be.main(["--notebooks", str(tmp_path), "--check"]) == 1


def test_matter_of_record_box_needs_no_proof_and_is_marked_in_the_table():
    record = BOX.replace(
        "**验证**：下面的代码单元。", "**性质**：史实记录。出处：某年某月的发布说明。"
    )
    errata, problems = be.parse_source(record, "01_background.ipynb", 3)
    assert problems == []
    assert "（史实记录）" in be.render(errata)
    neither = BOX.replace("**验证**：下面的代码单元。", "出处：无。")
    _, problems = be.parse_source(neither, "01_background.ipynb", 3)
    assert len(problems) == 1 and "**验证** (or **性质**：史实记录)" in problems[0]
