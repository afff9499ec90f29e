"""Print one table of the metrics that `python -m course_lib train ...` runs reported.

The last line of a train run's stdout is one JSON object; `make demo` keeps each run's stdout in
`runs/<model>/stdout.log`. Every metric is shown beside the quick-profile target from the work item
(issue 2, section 7), so the table says at a glance whether a run met it.

Usage:
    python scripts/summarize_runs.py runs/vae/stdout.log runs/gan/stdout.log ...
    python scripts/summarize_runs.py --markdown runs/*/stdout.log   # for the README
    python scripts/summarize_runs.py --strict ...                   # exit 1 if a target is missed
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


class RunLogError(ValueError):
    """A run log is missing or its last line is not the run's JSON metrics."""


@dataclass(frozen=True)
class Target:
    """A quick-profile goal for one metric; `check` is None for context-only values."""

    key: str
    goal: str = ""
    check: Callable[[float, dict], bool] | None = None


@dataclass(frozen=True)
class Row:
    model: str
    dataset: str
    steps: str
    seconds: str
    metric: str
    value: str
    goal: str
    ok: str  # "yes", "NO", "" (no goal) or "missing"


TARGETS: dict[str, tuple[Target, ...]] = {
    "vae": (Target("test_neg_elbo_nats", "<= 94", lambda v, m: v <= 94.0),),
    "gan": (
        Target("fd_lenet", "<= 10 x floor", lambda v, m: v <= 10.0 * m["fd_lenet_floor"]),
        Target("fd_lenet_floor"),
        Target("class_kl", "<= 0.1", lambda v, m: v <= 0.1),
        Target("classes_covered", "== 10", lambda v, m: v == 10),
    ),
    "rnn": (
        Target("val_bpc", "<= 0.95 x 3-gram", lambda v, m: v <= 0.95 * m["ngram3_val_bpc"]),
        Target("ngram3_val_bpc"),
        Target("form_ok_fraction", ">= 0.9", lambda v, m: v >= 0.9),
    ),
    "forecast": (
        Target("rmse", "<= 0.5 x naive", lambda v, m: v <= 0.5 * m["seasonal_naive_rmse"]),
        Target("seasonal_naive_rmse"),
    ),
    "diffusion": (
        Target("fd_lenet", "<= 15 x floor", lambda v, m: v <= 15.0 * m["fd_lenet_floor"]),
        Target("fd_lenet_floor"),
        Target("class_kl", "<= 0.1", lambda v, m: v <= 0.1),
        Target("classes_covered", "== 10", lambda v, m: v == 10),
        Target("autoencoder_train_seconds"),  # a latent model's VAE, trained before it
        Target("sample_seconds"),
    ),
    "transformer": (
        Target("val_bpc", "<= 0.95 x 3-gram", lambda v, m: v <= 0.95 * m["ngram3_val_bpc"]),
        Target("ngram3_val_bpc"),
        Target("form_ok_fraction", ">= 0.9", lambda v, m: v >= 0.9),
    ),
}


def read_last_json(path: Path) -> dict:
    """Return the JSON object on the last non-empty line of a train run's stdout log."""
    if not path.is_file():
        raise RunLogError(f"{path}: no such run log; run `make demo` (or the train command) first")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise RunLogError(f"{path}: empty log; the run probably failed, re-run it and read why")
    try:
        metrics = json.loads(lines[-1])
    except json.JSONDecodeError as err:
        raise RunLogError(
            f"{path}: last line is not JSON ({err.msg}); the run probably failed, re-run it"
        ) from None
    if not isinstance(metrics, dict):
        raise RunLogError(f"{path}: last line is JSON but not an object")
    return metrics


def _fmt(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def rows_for(metrics: dict) -> list[Row]:
    """Table rows for one run: one per metric of its model, each with its goal and verdict."""
    model = str(metrics.get("model", "?"))
    head = (
        model,
        str(metrics.get("dataset", "?")),
        _fmt(metrics.get("steps", "?")),
        _fmt(metrics.get("train_seconds", "?")),
    )
    targets = TARGETS.get(model)
    if targets is None:
        return [Row(*head, "(unknown model)", "", "", "")]
    rows = []
    for target in targets:
        if target.key not in metrics:
            rows.append(Row(*head, target.key, "-", target.goal, "missing"))
            continue
        value = metrics[target.key]
        ok = ""
        if target.check is not None:
            try:
                ok = "yes" if target.check(value, metrics) else "NO"
            except (KeyError, TypeError):
                ok = "missing"
        rows.append(Row(*head, target.key, _fmt(value), target.goal, ok))
        head = ("", "", "", "")
    return rows


HEADER = Row("model", "dataset", "steps", "train s", "metric", "value", "target", "met")


def format_table(rows: Sequence[Row], markdown: bool = False) -> str:
    """Render rows as an aligned plain-text table, or as a Markdown table."""
    cells = [list(vars(HEADER).values())] + [list(vars(r).values()) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(c) + " |" for c in cells]
        lines.insert(1, "|" + "|".join("---" for _ in cells[0]) + "|")
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+", type=Path, help="stdout logs of train runs")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    rows: list[Row] = []
    errors: list[str] = []
    samples: list[str] = []
    for path in args.logs:
        try:
            metrics = read_last_json(path)
        except RunLogError as err:
            errors.append(str(err))
            continue
        rows.extend(rows_for(metrics))
        run_samples = metrics.get("samples") or []
        if isinstance(run_samples, str):
            run_samples = [run_samples]
        samples.extend(str(s) for s in run_samples[:3])

    print(format_table(rows, markdown=args.markdown))
    if samples:
        print("\npoem samples:")
        for sample in samples:
            print("  " + sample.replace("\n", " / "))
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    missed = [r for r in rows if r.ok in ("NO", "missing")]
    if missed:
        print(f"\n{len(missed)} metric(s) missed their target or are missing.")
    if errors:
        return 1
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
