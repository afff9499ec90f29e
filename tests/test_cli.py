"""The command line: JSON last line, artefacts, resume, and clear errors that write nothing."""

import json

import numpy as np
import pytest
from course_lib import cli, recipes


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


def test_train_vae_gan_rnn_report_their_metrics(capsys, tmp_path):
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
    }
    for model, (args, keys) in cases.items():
        out_dir = tmp_path / model
        code, out, err = run(capsys, "train", model, *args, "--out", str(out_dir), "--no-progress")
        assert code == 0, err
        result = last_json(out)
        assert result["model"] == model and all(k in result for k in keys), result
        if model == "gan":  # self-conditioned on GANRecipe.num_clusters k-means clusters
            assert result["conditioning"] == "clusters" and result["num_classes"] == 50
            assert result["cluster_seconds"] > 0
        assert (out_dir / "metrics.json").exists()
    assert (tmp_path / "vae" / "samples.png").exists() and (
        tmp_path / "gan" / "samples.png"
    ).exists()


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
    assert code == 0 and last_json(out)["steps"] == 1438 // 100


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


def test_gan_conditioning_flag(capsys, tmp_path):
    # the default, "clusters", is run by test_train_vae_gan_rnn_report_their_metrics
    code, out, err = run(
        capsys, "train", "gan", "--dataset", "digits", "--steps", "10",
        "--conditioning", "labels", "--out", str(tmp_path), "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    result = last_json(out)
    assert result["conditioning"] == "labels" and result["num_classes"] == 10
    assert result["cluster_seconds"] == 0


def test_gan_class_ids_follow_the_recipe():
    images = np.random.default_rng(0).uniform(-1, 1, (60, 8, 8)).astype(np.float32)
    labels = np.arange(60) % 10
    expected = {"none": None, "labels": 10, "clusters": 7}
    for conditioning, num_classes in expected.items():
        recipe = recipes.GANRecipe(conditioning=conditioning, num_clusters=7)
        ids = recipes.gan_class_ids(recipe, images, labels)
        assert (ids is None) == (num_classes is None)
        cfg = recipes.gan_config(recipe, images.shape[1:], ids)
        assert cfg.num_classes == num_classes and cfg.arch == "mlp"
    np.testing.assert_array_equal(
        recipes.gan_class_ids(recipes.GANRecipe(conditioning="labels"), images, labels), labels
    )


def test_conditioning_is_for_the_gan_only(capsys, tmp_path):
    code, out, err = run(
        capsys, "train", "vae", "--conditioning", "labels", "--out", str(tmp_path / "x")
    )
    assert code == 2 and "`train gan` only" in err and out == ""
    assert not (tmp_path / "x").exists()


def test_gan_recipe_rejects_an_unknown_conditioning():
    with pytest.raises(ValueError, match=r"one of \('clusters', 'labels', 'none'\)"):
        recipes.GANRecipe(conditioning="label")
