"""Command line: ``python -m course_lib train {vae,gan,rnn,forecast,diffusion,transformer}``,
``collab {annotate,tune,feedback}`` and ``data list``.

Taught in chapter 5.1 (05a_vae_in_practice); ``collab`` in chapter 6 (06a_annotation_lab,
06b_tuning_lab, 06c_feedback_lab); ``train diffusion`` and ``train transformer`` in chapter 8
(08_trends).
The last line ``train`` and ``collab`` print to stdout is one JSON object with the run's metrics,
so scripts can read it with ``tail -n 1``. Ctrl-C during training
saves a checkpoint at the step reached and prints the command that resumes it (exit status 130).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import shlex
import sys

from course_lib import (
    active,
    annotation,
    collab,
    data,
    feedback,
    files,
    latent_search,
    recipes,
    runs,
    train,
    tuning,
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer (at least 1), got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m course_lib", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one model and print its metrics as JSON")
    t.add_argument("model", choices=sorted(runs.MODELS))
    t.add_argument("--dataset", help="dataset name (see `data list`); default: the recipe's")
    length = t.add_mutually_exclusive_group()
    length.add_argument("--steps", type=_positive_int, help="number of updates")
    length.add_argument("--epochs", type=_positive_int, help="passes over the examples trained on")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--batch-size", type=_positive_int)
    t.add_argument("--out", default=None, help="output directory (default: runs/<model>)")
    t.add_argument(
        "--profile",
        choices=sorted(recipes.PROFILES),
        default="quick",
        help="quick: ~2 min on a laptop CPU (default); full: longer, for a GPU",
    )
    t.add_argument(
        "--conditioning",
        choices=recipes.GAN_CONDITIONING,
        help="gan only: condition G and D on k-means clusters of the images (the default; no "
        "labels), on the digit labels, or on nothing",
    )
    t.add_argument(
        "--space",
        choices=recipes.DIFFUSION_SPACES,
        help="diffusion only: diffuse the codes of a VAE (the default; trained first unless "
        "cached) or the pixels, with a U-Net (slower)",
    )
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    add_collab_parser(sub)

    d = sub.add_parser("data", help="datasets")
    d.add_argument("action", choices=["list"])
    return parser


def add_collab_parser(sub) -> None:
    """``collab annotate`` and ``collab tune``: the flags of the chapter-6 labs."""
    c = sub.add_parser("collab", help="the human-AI collaboration labs (chapter 6)")
    labs = c.add_subparsers(dest="lab", required=True)
    a = labs.add_parser("annotate", help="label digits with active learning (06a)")
    lab = annotation.AnnotationRecipe()  # the defaults shown in --help
    a.add_argument("--strategy", choices=active.STRATEGIES, help=f"default: {lab.strategy}")
    a.add_argument("--budget", type=_positive_int, help=f"labels the person gives ({lab.budget})")
    a.add_argument("--batch", type=_positive_int, help=f"labels per round ({lab.batch})")
    tu = labs.add_parser("tune", help="tune the CO2 forecaster: a person or a search (06b)")
    tuned = tuning.TuningRecipe()
    tu.add_argument("--strategy", choices=tuning.STRATEGIES, help=f"default: {tuned.strategy}")
    tu.add_argument("--trials", type=_positive_int, help=f"settings tried ({tuned.trials})")
    fe = labs.add_parser("feedback", help="steer poems or a VAE search by preferences (06c)")
    fe.add_argument("--part", choices=["poems", "latent"], required=True)
    fe.add_argument(
        "--comparisons",
        type=_positive_int,
        help=f"poems: pairs the person compares ({feedback.FeedbackRecipe().comparisons})",
    )
    for p in (a, tu, fe):
        p.add_argument(
            "--human",
            choices=["simulated", "terminal"],
            default="simulated",
            help="who answers: a seeded simulated person, or you, at this terminal",
        )
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", default=None, help="output directory (default: runs/collab-<lab>)")
        p.add_argument("--no-progress", action="store_true", help="hide the progress output")


def cmd_train(args) -> dict:
    recipe = recipes.recipe_for(args.model, args.profile)
    if args.conditioning is not None:
        if args.model != "gan":
            raise ValueError(f"--conditioning applies to `train gan` only, not {args.model!r}")
        recipe = dataclasses.replace(recipe, conditioning=args.conditioning)
    if args.space is not None:
        if args.model != "diffusion":
            raise ValueError(f"--space applies to `train diffusion` only, not {args.model!r}")
        if args.space == "pixels":
            recipe = recipes.pixel_diffusion(recipe)
    recipe = recipes.with_overrides(
        recipe, dataset=args.dataset, seed=args.seed, batch_size=args.batch_size, steps=args.steps
    )
    prepared = runs.MODELS[args.model].prepare(recipe)
    if args.epochs is not None:
        steps_per_epoch = max(1, prepared.train_size // recipe.batch_size)
        recipe = dataclasses.replace(recipe, steps=args.epochs * steps_per_epoch)
    out = args.out or f"runs/{args.model}"
    return runs.run(
        args.model,
        recipe,
        out=out,
        resume=args.resume,
        progress=not args.no_progress,
        prepared=prepared,
    )


def cmd_collab(args) -> dict:
    human = collab.TerminalHuman() if args.human == "terminal" else None
    out = args.out or f"runs/collab-{args.lab}"
    if args.lab == "feedback":
        return cmd_feedback(args, args.out or f"runs/collab-feedback-{args.part}")
    if args.lab == "tune":
        recipe = recipes.with_overrides(
            tuning.TuningRecipe(), strategy=args.strategy, trials=args.trials, seed=args.seed
        )
        if args.human == "terminal" and recipe.strategy != "human":
            raise ValueError("--human terminal needs --strategy human (the searches ask no one)")
        return tuning.run(recipe, human=human, out=out, progress=not args.no_progress)
    recipe = recipes.with_overrides(
        annotation.AnnotationRecipe(),
        strategy=args.strategy,
        budget=args.budget,
        batch=args.batch,
        seed=args.seed,
    )
    return annotation.run(recipe, human=human, out=out, progress=not args.no_progress)


def cmd_feedback(args, out) -> dict:
    progress = not args.no_progress
    if args.part == "latent":
        if args.comparisons is not None:
            raise ValueError("--comparisons applies to --part poems only")
        recipe = latent_search.LatentRecipe(seed=args.seed)
        result = latent_search.run(recipe, human_kind=args.human, progress=progress)
        pathlib.Path(out).mkdir(parents=True, exist_ok=True)
        files.write_json(pathlib.Path(out) / "metrics.json", result)
        return result
    recipe = recipes.with_overrides(
        feedback.FeedbackRecipe(), comparisons=args.comparisons, seed=args.seed
    )
    return feedback.run(recipe, human_kind=args.human, progress=progress, out=out)


def _resume_command(argv) -> str:
    words = [w for w in argv if w != "--resume"]
    return shlex.join(["python", "-m", "course_lib", *words, "--resume"])


def cmd_data_list() -> None:
    rows = [("name", "kind", "shape", "splits", "offline", "MB", "source", "licence")]
    for info in data.list_datasets():
        splits = " ".join(f"{k}={v}" for k, v in info.splits.items())
        shape = "x".join(map(str, info.shape)) if isinstance(info.shape, tuple) else info.shape
        mb = f"{info.size_bytes / 1e6:.2f}"
        rows.append(
            (info.name, info.kind, shape, splits, str(info.offline), mb, info.source, info.licence)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        print(
            "  ".join(c.ljust(w) for c, w in zip(r[:6], widths, strict=True))
            + "  "
            + r[6]
            + " | "
            + r[7]
        )


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "data":
            cmd_data_list()
            return 0
        result = cmd_collab(args) if args.command == "collab" else cmd_train(args)
    except (data.DatasetError, train.CheckpointError, train.TrainingDiverged, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        step = getattr(stop, "step", None)
        where = "" if step is None else f" at step {step}"
        if getattr(stop, "saved", False):
            print(f"interrupted{where}; resume with: {_resume_command(argv)}", file=sys.stderr)
        else:
            print(f"interrupted{where}; nothing was saved to resume from", file=sys.stderr)
        return 130
    print(json.dumps(result, ensure_ascii=False))
    return 0
