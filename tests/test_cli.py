"""The command line: JSON last line, artefacts, resume, Ctrl-C, and clear errors that write nothing.

The runs that train are marked ``slow``; ``pytest -m "not slow"`` skips them.
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from course_lib import annotation, cli, collab, gan, recipes, tuning
from course_lib.feedback import FeedbackRecipe


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_data_list_names_every_dataset(capsys):
    code, out, _ = run(capsys, "data", "list")
    assert code == 0
    for name in ("mnist10k", "tang5", "tang5lu", "digits", "co2", "mnist", "fashion_mnist"):
        assert name in out


@pytest.mark.slow
def test_train_forecast_writes_artefacts_and_resumes(capsys, tmp_path):
    code, out, _ = run(
        capsys, "train", "forecast", "--steps", "20", "--out", str(tmp_path), "--no-progress"
    )
    assert code == 0
    result = last_json(out)
    for key in (
        "model",
        "dataset",
        "seed",
        "steps",
        "train_seconds",
        "steps_per_second",
        "rmse",
        "seasonal_naive_rmse",
    ):
        assert key in result
    assert result["steps"] == 20 and (tmp_path / "metrics.json").exists()
    code, out, _ = run(
        capsys,
        "train",
        "forecast",
        "--steps",
        "40",
        "--out",
        str(tmp_path),
        "--resume",
        "--no-progress",
    )
    assert code == 0 and last_json(out)["steps"] == 40


@pytest.mark.slow
def test_train_every_model_reports_its_metrics(capsys, tmp_path):
    cases = {
        "vae": (
            ["--dataset", "digits", "--steps", "30"],
            ["test_neg_elbo_nats", "test_bits_per_dim"],
        ),
        "gan": (
            ["--dataset", "digits", "--steps", "20"],
            ["fd_lenet", "fd_lenet_floor", "class_kl", "classes_covered"],
        ),
        "rnn": (
            ["--steps", "10", "--batch-size", "32"],
            ["val_bpc", "ngram3_val_bpc", "form_ok_fraction", "samples"],
        ),
        "diffusion": (
            ["--dataset", "digits", "--steps", "20"],
            ["fd_lenet", "fd_lenet_floor", "class_kl", "classes_covered", "sample_seconds"]
            + ["space", "autoencoder_train_seconds"],
        ),
        "transformer": (
            ["--steps", "10", "--batch-size", "32"],
            ["val_bpc", "ngram3_val_bpc", "form_ok_fraction", "samples"],
        ),
    }
    for model, (args, keys) in cases.items():
        out_dir = tmp_path / model
        code, out, err = run(capsys, "train", model, *args, "--out", str(out_dir), "--no-progress")
        assert code == 0, err
        result = last_json(out)
        assert result["model"] == model and all(k in result for k in keys), result
        if model == "diffusion":  # latent: the codes of a VAE trained first (and cached)
            assert result["space"] == "latent" and result["autoencoder_train_seconds"] > 0
        if model == "gan":  # self-conditioned on GANRecipe.num_clusters k-means clusters
            assert result["conditioning"] == "clusters" and result["num_classes"] == 50
            assert result["cluster_seconds"] > 0
        assert (out_dir / "metrics.json").exists()
    for model in ("vae", "gan", "diffusion"):
        assert (tmp_path / model / "samples.png").exists()
    poems = (tmp_path / "transformer" / "samples.txt").read_text(encoding="utf-8").splitlines()
    assert len(poems) == recipes.TransformerRecipe().n_samples


@pytest.mark.slow
def test_epochs_become_steps(capsys, tmp_path):
    code, out, _ = run(
        capsys,
        "train",
        "vae",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--batch-size",
        "100",
        "--out",
        str(tmp_path),
        "--no-progress",
    )
    # an epoch is a pass over the examples trained on: 1438 digits less the 10 % validation holdout
    assert code == 0 and last_json(out)["steps"] == (1438 - 144) // 100


def test_unknown_dataset_is_a_clear_error_and_writes_nothing(capsys, tmp_path):
    out_dir = tmp_path / "run"
    code, out, err = run(capsys, "train", "vae", "--dataset", "cifar", "--out", str(out_dir))
    assert code == 2 and "mnist10k" in err and out == ""
    assert not out_dir.exists()


@pytest.mark.parametrize("steps", ["0", "-5", "ten"])
def test_non_positive_steps_are_rejected(capsys, steps):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "vae", "--steps", steps])
    assert info.value.code == 2
    assert "positive integer" in capsys.readouterr().err


def test_resume_without_checkpoint_is_a_clear_error(capsys, tmp_path):
    out_dir = tmp_path / "nothing-here"
    code, _, err = run(capsys, "train", "forecast", "--resume", "--out", str(out_dir))
    assert code == 2 and "no checkpoint" in err and "without --resume" in err
    assert not out_dir.exists()


@pytest.mark.slow
def test_corrupt_checkpoint_is_a_clear_error(capsys, tmp_path):
    assert (
        run(capsys, "train", "forecast", "--steps", "10", "--out", str(tmp_path), "--no-progress")[
            0
        ]
        == 0
    )
    (tmp_path / "metrics.json").unlink()
    for f in (tmp_path / "checkpoints").rglob("*"):
        if f.is_file() and "metadata" not in f.name:
            f.write_bytes(b"\x00garbage")
    code, _, err = run(
        capsys, "train", "forecast", "--steps", "20", "--resume", "--out", str(tmp_path)
    )
    assert code == 2 and "corrupt" in err
    assert not (tmp_path / "metrics.json").exists()


# the defaults (clusters, latent) are run by test_train_every_model_reports_its_metrics
FLAG_CASES = {
    "gan --conditioning labels": (
        ["gan", "--conditioning", "labels"],
        {"conditioning": "labels", "num_classes": 10, "cluster_seconds": 0},
    ),
    "diffusion --space pixels": (
        ["diffusion", "--space", "pixels"],
        {"space": "pixels", "autoencoder_train_seconds": 0, "sample_steps": 20},
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", FLAG_CASES)
def test_a_model_flag_picks_its_variant(capsys, tmp_path, case):
    args, expected = FLAG_CASES[case]
    code, out, err = run(
        capsys, "train", *args, "--dataset", "digits", "--steps", "10",
        "--out", str(tmp_path), "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    result = last_json(out)
    assert {key: result[key] for key in expected} == expected and result["steps"] == 10


def test_gan_class_ids_follow_the_conditioning():
    images = np.random.default_rng(0).uniform(-1, 1, (60, 8, 8)).astype(np.float32)
    labels = np.arange(60) % 10
    expected = {"none": None, "labels": 10, "clusters": 7}
    base = recipes.GANRecipe().model
    for conditioning, num_classes in expected.items():
        ids = gan.class_ids(conditioning, images, labels, num_clusters=7, seed=0)
        assert (ids is None) == (num_classes is None)
        cfg = gan.config_for(base, images.shape[1:], ids)
        assert cfg.num_classes == num_classes and cfg.arch == "mlp"
    np.testing.assert_array_equal(gan.class_ids("labels", images, labels, 7, 0), labels)
    with pytest.raises(ValueError, match="'clusters', 'labels' or 'none'"):
        gan.class_ids("label", images, labels, 7, 0)


def test_conditioning_is_for_the_gan_only(capsys, tmp_path):
    code, out, err = run(
        capsys, "train", "vae", "--conditioning", "labels", "--out", str(tmp_path / "x")
    )
    assert code == 2 and "`train gan` only" in err and out == ""
    assert not (tmp_path / "x").exists()


def test_space_is_for_diffusion_only(capsys, tmp_path):
    code, out, err = run(capsys, "train", "gan", "--space", "pixels", "--out", str(tmp_path / "x"))
    assert code == 2 and "`train diffusion` only" in err and out == ""
    assert not (tmp_path / "x").exists()


def test_pixel_diffusion_swaps_the_autoencoder_for_the_unet():
    latent = recipes.DiffusionRecipe()
    pixel = recipes.pixel_diffusion(latent)
    assert latent.autoencoder is not None and pixel.autoencoder is None
    assert pixel.model.width == 16 and pixel.steps == latent.steps // 2 and pixel.batch_size == 32


def test_gan_recipe_rejects_an_unknown_conditioning():
    with pytest.raises(ValueError, match=r"one of \('clusters', 'labels', 'none'\)"):
        recipes.GANRecipe(conditioning="label")


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_the_resumed_run_matches_an_uninterrupted_one(tmp_path):
    """A real CLI run, interrupted by SIGINT mid-training, resumed with the command it prints."""
    argv = ["train", "vae", "--dataset", "digits", "--steps", "600", "--no-progress"]
    cmd = [sys.executable, "-m", "course_lib", *argv]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    straight = subprocess.run([*cmd, "--out", str(tmp_path / "a")], capture_output=True, env=env)
    assert straight.returncode == 0, straight.stderr[-2000:]
    out = tmp_path / "b"
    proc = subprocess.Popen([*cmd, "--out", str(out)], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "250").exists():  # interrupt well inside training
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended too early"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("interrupted at step")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    step = int(lines[0].split()[3].rstrip(";"))
    assert 250 <= step < 600 and (out / "checkpoints" / str(step)).exists()
    resume = lines[0].split("resume with: ")[1].split()
    assert resume[:3] == ["python", "-m", "course_lib"] and resume[-1] == "--resume"
    resumed = subprocess.run([sys.executable, *resume[1:]], capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "WARNING" not in resumed.stderr and "could not be restored" not in resumed.stderr
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("a", "b"))
    for timing in ("train_seconds", "compile_seconds", "steps_per_second"):
        a.pop(timing), b.pop(timing)
    assert a == b  # bit for bit: every metric, best step and test nats alike
    assert (tmp_path / "a" / "history.json").read_text() == (out / "history.json").read_text()


def test_full_profile_changes_only_what_it_names():
    for model, quick in recipes.QUICK.items():
        full = recipes.recipe_for(model, "full")
        assert full is recipes.FULL[model] and recipes.recipe_for(model) is quick
        assert full.steps > quick.steps  # a longer run
        changed = {
            f.name
            for f in dataclasses.fields(quick)
            if getattr(quick, f.name) != getattr(full, f.name)
        }
        assert changed <= {"steps", "batch_size", "eval_every", "model"}, (model, changed)
    gan_quick, gan_full = recipes.QUICK["gan"].model, recipes.FULL["gan"].model
    assert gan_full.beta1 == gan_quick.beta1 == 0.0  # not silently reset to GANConfig's 0.5
    assert (gan_full.width, gan_full.learning_rate) == (64, 5e-4)
    with pytest.raises(ValueError, match="'quick' or 'full'"):
        recipes.recipe_for("vae", "fast")
    with pytest.raises(ValueError, match="model must be one of"):
        recipes.recipe_for("flow_matching")


def test_profile_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(recipes.PROFILE_ENV_VAR, raising=False)
    assert recipes.profile_from_env() == "quick"
    monkeypatch.setenv(recipes.PROFILE_ENV_VAR, "full")
    assert recipes.profile_from_env() == "full"
    monkeypatch.setenv(recipes.PROFILE_ENV_VAR, "gpu")
    with pytest.raises(ValueError, match=r"COURSE_LIB_PROFILE='gpu'.*'quick'.*'full'.*unset it"):
        recipes.profile_from_env()


# --- collab annotate -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--budget", "0"], "--budget: must be a positive integer (at least 1), got 0"),
        (["--batch", "-3"], "--batch: must be a positive integer"),
        (["--strategy", "nonsense"], "--strategy: invalid choice: 'nonsense'"),
        (["--human", "widget"], "--human: invalid choice: 'widget'"),
    ],
)
def test_collab_annotate_rejects_bad_flags_and_writes_nothing(capsys, tmp_path, flags, message):
    out_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        cli.main(["collab", "annotate", *flags, "--out", str(out_dir), "--no-progress"])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert message in err and out == ""
    assert not out_dir.exists()


def test_collab_annotate_passes_its_flags_to_the_lab(capsys, monkeypatch, tmp_path):
    calls = []

    def fake_run(recipe, human=None, out=None, progress=False):
        calls.append((recipe, human, out, progress))
        print("round 1 of 3")  # whatever the lab prints comes before the JSON
        return {"labels_to_90_active": 120, "human": collab.describe(human) if human else "sim"}

    monkeypatch.setattr(annotation, "run", fake_run)
    code, out, err = run(
        capsys, "collab", "annotate", "--strategy", "entropy", "--budget", "80", "--batch", "16",
        "--seed", "7", "--out", str(tmp_path), "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert last_json(out) == {"labels_to_90_active": 120, "human": "sim"}
    recipe, human, out_dir, progress = calls[-1]
    assert isinstance(recipe, annotation.AnnotationRecipe)
    assert (recipe.strategy, recipe.budget, recipe.batch, recipe.seed) == ("entropy", 80, 16, 7)
    assert human is None and out_dir == str(tmp_path) and progress is False  # simulated person

    code, out, _ = run(capsys, "collab", "annotate", "--human", "terminal")
    assert code == 0 and last_json(out)["human"] == "terminal"
    recipe, human, out_dir, progress = calls[-1]
    assert isinstance(human, collab.TerminalHuman) and out_dir == "runs/collab-annotate"
    assert recipe == annotation.AnnotationRecipe() and progress is True  # the defaults


def test_collab_annotate_errors_from_the_lab_exit_with_status_2(capsys, monkeypatch, tmp_path):
    def fail(recipe, human=None, out=None, progress=False):
        raise ValueError("cannot ask about 21 images: 20 are unlabelled")

    monkeypatch.setattr(annotation, "run", fail)
    code, out, err = run(capsys, "collab", "annotate", "--out", str(tmp_path / "x"))
    assert code == 2 and out == "" and "error: cannot ask about 21 images" in err


@pytest.mark.slow
def test_collab_annotate_writes_metrics_labels_and_samples(capsys, monkeypatch, tmp_path):
    """The whole lab from the command line, with a short GAN run (50 steps instead of 1000)."""
    short_gan = dataclasses.replace(
        annotation.AnnotationRecipe().gan, steps=50, eval_every=50, eval_samples=500
    )
    recipe = annotation.AnnotationRecipe
    monkeypatch.setattr(annotation, "AnnotationRecipe", lambda **kw: recipe(gan=short_gan, **kw))
    code, out, err = run(
        capsys, "collab", "annotate", "--budget", "60", "--batch", "20", "--seed", "0",
        "--out", str(tmp_path), "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    result = last_json(out)
    assert result["human"] == "simulated (error_rate=0.03)"
    assert result["strategy"] == "kmeans" and result["budget"] == 60
    for key in ("labels_to_90_active", "labels_to_90_random"):  # None: not reached
        assert result[key] is None or (isinstance(result[key], int) and 0 < result[key] <= 400)
    assert result["labels_to_90_active"] is None or result["labels_to_90_active"] <= 60
    assert 0.6 <= result["accuracy_at_budget"] <= 1.0  # 60 labels: about 0.85
    assert 0.0 <= result["gen_class_accuracy"] <= 1.0
    assert 0.0 < result["fd_lenet_floor"] < result["fd_lenet"]  # 50 steps: far from real data
    assert result["train_seconds"] > 0 and result["human_seconds"] == 120.0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == result
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert len(labels["index"]) == len(labels["label"]) == 60
    assert len(set(labels["index"])) == 60 and all(0 <= y <= 9 for y in labels["label"])
    assert labels["counts"] == [20, 40, 60] and len(labels["test_accuracy"]) == 3
    assert (tmp_path / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- collab tune ---------------------------------------------------------------------------

TUNE_KEYS = (
    "strategy", "trials", "best_val_rmse", "test_rmse", "default_test_rmse",
    "seasonal_naive_rmse", "vmap_speedup", "train_seconds",
)  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--trials", "0"], "--trials: must be a positive integer (at least 1), got 0"),
        (["--trials", "many"], "--trials: expected a positive integer, got 'many'"),
        (["--strategy", "nope"], "--strategy: invalid choice: 'nope'"),
        (["--human", "widget"], "--human: invalid choice: 'widget'"),
    ],
)
def test_collab_tune_rejects_bad_flags_and_writes_nothing(capsys, tmp_path, flags, message):
    out_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        cli.main(["collab", "tune", *flags, "--out", str(out_dir), "--no-progress"])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert message in err and out == ""
    assert not out_dir.exists()


def test_collab_tune_terminal_person_needs_the_human_strategy(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(tuning, "run", lambda *a, **k: pytest.fail("the lab should not run"))
    out_dir = tmp_path / "run"
    code, out, err = run(
        capsys, "collab", "tune", "--human", "terminal", "--strategy", "grid",
        "--out", str(out_dir),
    )  # fmt: skip
    assert code == 2 and out == ""
    assert "error: --human terminal needs --strategy human" in err
    assert not out_dir.exists()


def test_collab_tune_grid_with_more_trials_than_settings_is_an_error(capsys, tmp_path):
    out_dir = tmp_path / "run"
    code, out, err = run(
        capsys, "collab", "tune", "--strategy", "grid", "--trials", "30",
        "--out", str(out_dir), "--no-progress",
    )  # fmt: skip
    assert code == 2 and out == "" and "error: the grid has 24 settings" in err
    assert not out_dir.exists()


def test_collab_tune_passes_its_flags_to_the_lab(capsys, monkeypatch, tmp_path):
    calls = []

    def fake_run(recipe, human=None, out=None, progress=True):
        calls.append((recipe, human, out, progress))
        print("trial   1  validation RMSE 0.800")  # the lab's lines come before the JSON
        return {key: 1 for key in TUNE_KEYS} | {"strategy": recipe.strategy}

    monkeypatch.setattr(tuning, "run", fake_run)
    code, out, err = run(
        capsys, "collab", "tune", "--strategy", "tpe", "--trials", "7", "--seed", "5",
        "--out", str(tmp_path), "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert last_json(out)["strategy"] == "tpe" and set(last_json(out)) == set(TUNE_KEYS)
    recipe, human, out_dir, progress = calls[-1]
    assert isinstance(recipe, tuning.TuningRecipe)
    assert (recipe.strategy, recipe.trials, recipe.seed) == ("tpe", 7, 5)
    assert recipe.forecast == tuning.TuningRecipe().forecast  # the rest: the defaults
    assert human is None and out_dir == str(tmp_path) and progress is False

    code, out, _ = run(capsys, "collab", "tune", "--human", "terminal")
    assert code == 0 and last_json(out)["strategy"] == "human"
    recipe, human, out_dir, progress = calls[-1]
    assert isinstance(human, collab.TerminalHuman) and out_dir == "runs/collab-tune"
    assert recipe == tuning.TuningRecipe() and progress is True


@pytest.mark.slow
def test_collab_tune_grid_reports_validation_and_test(capsys, tmp_path):
    code, out, err = run(
        capsys, "collab", "tune", "--strategy", "grid", "--trials", "4",
        "--out", str(tmp_path), "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1  # --no-progress: the JSON only
    result = last_json(out)
    assert all(key in result for key in TUNE_KEYS), result
    assert result["strategy"] == "grid" and result["trials"] == 4 and result["human"] is None
    assert result["best_setting"]["learning_rate"] == 1e-3  # the one rate of a 4-trial grid
    for key in ("best_val_rmse", "test_rmse", "default_test_rmse", "seasonal_naive_rmse"):
        assert 0.0 < result[key] < 10.0, (key, result[key])  # ppm
    assert result["vmap_speedup"] > 0 and result["train_seconds"] > 0
    assert json.loads((tmp_path / "metrics.json").read_text()) == result
    trials = json.loads((tmp_path / "trials.json").read_text())
    assert [t["number"] for t in trials] == [1, 2, 3, 4]
    assert min(t["val_rmse"] for t in trials) == pytest.approx(result["best_val_rmse"], abs=1e-4)


# --- collab feedback -----------------------------------------------------------------------

FEEDBACK_KEYS = (
    "comparisons", "reward_model_accuracy", "win_rate_vs_base", "kl_to_base", "form_ok_fraction",
    "val_bpc_base", "val_bpc_tuned", "rhyme_rate_base", "rhyme_rate_tuned",
)  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "the following arguments are required: --part"),
        (["--part", "prose"], "--part: invalid choice: 'prose'"),
        (["--part", "poems", "--comparisons", "0"], "--comparisons: must be a positive integer"),
        (["--part", "poems", "--human", "widget"], "--human: invalid choice: 'widget'"),
    ],
)
def test_collab_feedback_rejects_bad_flags_and_writes_nothing(capsys, tmp_path, flags, message):
    out_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        cli.main(["collab", "feedback", *flags, "--out", str(out_dir), "--no-progress"])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert message in err and out == ""
    assert not out_dir.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--part", "poems", "--comparisons", "5"], "error: comparisons must be at least 8, got 5"),
        (
            ["--part", "latent", "--comparisons", "40"],
            "error: --comparisons applies to --part poems",
        ),
    ],
)
def test_collab_feedback_bad_settings_exit_2_before_the_lab(
    capsys, monkeypatch, tmp_path, flags, message
):
    for lab in (cli.feedback, cli.latent_search):
        monkeypatch.setattr(lab, "run", lambda *a, **k: pytest.fail("the lab should not run"))
    out_dir = tmp_path / "run"
    code, out, err = run(capsys, "collab", "feedback", *flags, "--out", str(out_dir))
    assert code == 2 and out == "" and message in err
    assert not out_dir.exists()


def test_collab_feedback_poems_passes_its_flags_to_the_lab(capsys, monkeypatch, tmp_path):
    calls = []

    def fake_run(recipe, human_kind="simulated", progress=False, out=None):
        calls.append((recipe, human_kind, progress, out))
        print("50 comparisons")  # the lab's lines come before the JSON
        return {key: 1 for key in FEEDBACK_KEYS} | {"comparisons": recipe.comparisons}

    monkeypatch.setattr(cli.feedback, "run", fake_run)
    code, out, err = run(
        capsys, "collab", "feedback", "--part", "poems", "--comparisons", "40", "--seed", "7",
        "--out", str(tmp_path), "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert last_json(out)["comparisons"] == 40 and set(last_json(out)) == set(FEEDBACK_KEYS)
    recipe, human_kind, progress, out_dir = calls[-1]
    assert isinstance(recipe, cli.feedback.FeedbackRecipe)
    assert (recipe.comparisons, recipe.seed) == (40, 7)
    assert recipe.rl == cli.feedback.FeedbackRecipe().rl  # the rest: the defaults
    assert human_kind == "simulated" and progress is False and out_dir == str(tmp_path)

    code, out, _ = run(capsys, "collab", "feedback", "--part", "poems", "--human", "terminal")
    assert code == 0 and out.splitlines()[0] == "50 comparisons"
    recipe, human_kind, progress, out_dir = calls[-1]
    assert recipe == cli.feedback.FeedbackRecipe() and human_kind == "terminal"
    assert progress is True and out_dir == "runs/collab-feedback-poems"


def test_collab_feedback_latent_passes_its_flags_to_the_lab(capsys, monkeypatch, tmp_path):
    calls = []

    def fake_run(recipe, human_kind="simulated", progress=False, **kwargs):
        calls.append((recipe, human_kind, progress))
        return {"rounds_to_target_pref": 6, "seed": recipe.seed}

    monkeypatch.setattr(cli.latent_search, "run", fake_run)
    monkeypatch.setattr(cli.feedback, "run", lambda *a, **k: pytest.fail("wrong part"))
    out_dir = tmp_path / "latent"
    code, out, err = run(
        capsys, "collab", "feedback", "--part", "latent", "--seed", "5",
        "--out", str(out_dir), "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert last_json(out) == {"rounds_to_target_pref": 6, "seed": 5}
    recipe, human_kind, progress = calls[-1]
    assert recipe == cli.latent_search.LatentRecipe(seed=5)
    assert human_kind == "simulated" and progress is False
    assert json.loads((out_dir / "metrics.json").read_text()) == last_json(out)

    monkeypatch.chdir(tmp_path)  # the default --out is relative to the working directory
    code, _, _ = run(capsys, "collab", "feedback", "--part", "latent", "--human", "terminal")
    assert code == 0
    recipe, human_kind, progress = calls[-1]
    assert recipe == cli.latent_search.LatentRecipe() and human_kind == "terminal"
    assert progress is True
    assert (tmp_path / "runs" / "collab-feedback-latent" / "metrics.json").exists()


@pytest.mark.slow
def test_collab_feedback_poems_reports_the_reward_model_and_the_tuned_poems(capsys, tmp_path):
    code, out, err = run(
        capsys, "collab", "feedback", "--part", "poems", "--comparisons", "60", "--seed", "0",
        "--out", str(tmp_path), "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    result = last_json(out)
    assert all(key in result for key in FEEDBACK_KEYS), result
    assert result["part"] == "poems" and result["comparisons"] == 60
    assert result["human"] == f"simulated (error_rate={FeedbackRecipe().error_rate})"
    for key in ("reward_model_accuracy", "win_rate_vs_base", "form_ok_fraction"):
        assert 0.0 <= result[key] <= 1.0, (key, result[key])
    for key in ("rhyme_rate_base", "rhyme_rate_tuned"):
        assert 0.0 <= result[key] <= 1.0, (key, result[key])
    assert result["kl_to_base"] >= 0.0
    assert 0.0 < result["val_bpc_base"] < 20.0 and 0.0 < result["val_bpc_tuned"] < 20.0
    assert json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8")) == result
    samples = (tmp_path / "samples.txt").read_text(encoding="utf-8").splitlines()
    assert len(samples) == 512 and sum(len(s) > 0 for s in samples) > 400
