"""How each dataset's files become numpy arrays: the readers behind :mod:`course_lib.data`.

Two kinds of source are read here. **Shipped** files in ``course_lib/datasets/`` are checked
against the sha256 in ``MANIFEST.json`` before they are parsed (:func:`npz_images` for
``mnist10k``, :func:`poems` for ``tang5`` and ``tang5lu``). **Installed packages** are read with
no network (:func:`digits` from scikit-learn, split 80/20 with a fixed seed; :func:`co2` from
statsmodels, split at 1991-12). Each reader returns ``{split: arrays}`` once (``functools.cache``),
read-only; ``data.load`` hands out copies. The result and error types live here because the
readers build them; ``course_lib.data`` exports them. Not taught on its own: it is the reading
half of chapter 1's ``data.load`` (01_background).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import io
import json
import pathlib
from typing import NamedTuple

import numpy as np

__all__ = [
    "SHIPPED_DIR",
    "DatasetError",
    "ImageData",
    "SeriesData",
    "co2",
    "digits",
    "manifest",
    "npz_images",
    "package_file",
    "poems",
]

SHIPPED_DIR = pathlib.Path(__file__).resolve().parent / "datasets"


class DatasetError(ValueError):
    """A dataset name, split or file is wrong or unavailable; the message says how to fix it.

    Taught in chapter 1 (01_background).
    """


class ImageData(NamedTuple):
    """Labelled images: ``images`` uint8 [N, H, W] in 0..255 (0 = background, 255 = ink, as in
    MNIST) and ``labels`` int32 [N] in 0..9. Unpacks as ``x, y = load(...)``.

    Taught in chapter 5 (05a_vae_in_practice, 05b_gan_in_practice).
    """

    images: np.ndarray
    labels: np.ndarray


class SeriesData(NamedTuple):
    """A monthly series: ``values`` float32 [T] and ``months`` datetime64[M] [T].

    Taught in chapter 5 (05c_rnn_in_practice).
    """

    values: np.ndarray
    months: np.ndarray


# --------------------------------------------------------------------------- shipped files


@functools.cache
def manifest() -> dict:
    """``datasets/MANIFEST.json``: file, sha256, source and split sizes of each shipped dataset."""
    path = SHIPPED_DIR / "MANIFEST.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(
            f"cannot read {path} ({exc}); reinstall course_lib or run scripts/build_datasets.py"
        ) from exc


def _shipped_bytes(name: str) -> bytes:
    """The shipped file of `name`, checked against MANIFEST.json."""
    entry = manifest()["datasets"][name]
    path = SHIPPED_DIR / entry["file"]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(
            f"shipped file {path} is missing ({exc}); reinstall course_lib or run "
            "scripts/build_datasets.py"
        ) from exc
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        # A git checkout that rewrites line endings or stores LFS pointers ends up here.
        raise DatasetError(
            f"shipped file {path} does not match its sha256 in MANIFEST.json (was it modified, "
            "e.g. by line-ending conversion?); restore it from git or run "
            "scripts/build_datasets.py"
        )
    return data


def _readonly(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for a in arrays:
        a.flags.writeable = False
    return arrays


@functools.cache
def npz_images(name: str) -> dict[str, ImageData]:
    """The train and test :class:`ImageData` of the shipped ``.npz`` file of `name`."""
    with np.load(io.BytesIO(_shipped_bytes(name))) as f:
        return {
            split: ImageData(*_readonly(f[f"x_{split}"], f[f"y_{split}"].astype(np.int32)))
            for split in ("train", "test")
        }


@functools.cache
def poems(name: str) -> dict[str, np.ndarray]:
    """The train, val and test poems (1-D str arrays) of the shipped file of `name`: one
    ``split<TAB>poem`` line per poem, gzipped if the file name ends in ``.gz``."""
    data = _shipped_bytes(name)
    if manifest()["datasets"][name]["file"].endswith(".gz"):
        data = gzip.decompress(data)
    by_split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for line in data.decode("utf-8").splitlines():
        split, poem = line.split("\t")
        by_split[split].append(poem)
    return {s: _readonly(np.array(p, dtype=str))[0] for s, p in by_split.items()}


# --------------------------------------------------------------------------- installed packages

# Fixed, documented seed of the digits split; changing it changes every digits result.
_DIGITS_SPLIT_SEED = 20240501
_CO2_TRAIN_END = np.datetime64("1991-12", "M")


def _stratified_test_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a stratified test split: per class (in class order) a
    ``default_rng(seed).permutation``; its first share goes to test. Shares use largest-remainder
    rounding so the total is ``round(fraction * N)``."""
    classes, sizes = np.unique(labels, return_counts=True)
    exact = sizes * fraction
    counts = np.floor(exact).astype(np.int64)
    missing = int(round(fraction * len(labels))) - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:missing]] += 1
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for cls, count in zip(classes, counts, strict=True):
        members = np.flatnonzero(labels == cls)
        mask[members[rng.permutation(len(members))[:count]]] = True
    return mask


def _import_or_explain(module: str, dataset: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DatasetError(
            f"dataset {dataset!r} is read from the {package} package, which is not importable "
            f"({exc}); install it with `pip install {package}`"
        ) from exc


@functools.cache
def digits() -> dict[str, ImageData]:
    """scikit-learn's ``load_digits`` as uint8 0..255 :class:`ImageData`, split 80/20
    (stratified, fixed seed) into train and test."""
    datasets = _import_or_explain("sklearn.datasets", "digits", "scikit-learn")
    bunch = datasets.load_digits()
    images = np.rint(np.asarray(bunch.images) * (255 / 16)).astype(np.uint8)
    labels = np.asarray(bunch.target).astype(np.int32)
    test = _stratified_test_mask(labels, 0.2, _DIGITS_SPLIT_SEED)
    return {
        "train": ImageData(*_readonly(images[~test], labels[~test])),
        "test": ImageData(*_readonly(images[test], labels[test])),
    }


@functools.cache
def co2() -> dict[str, SeriesData]:
    """statsmodels' weekly Mauna Loa CO2 as monthly :class:`SeriesData`: all, train (up to
    1991-12) and test (from 1992-01)."""
    module = _import_or_explain("statsmodels.datasets.co2", "co2", "statsmodels")
    weekly = module.load_pandas().data["co2"]
    monthly = weekly.resample("MS").mean().interpolate(method="linear")
    values = monthly.to_numpy(dtype=np.float32)
    months = monthly.index.to_numpy().astype("datetime64[M]")
    if not np.isfinite(values).all():
        raise DatasetError("co2: the series has gaps at its ends that cannot be interpolated")
    train = months <= _CO2_TRAIN_END
    return {
        "all": SeriesData(*_readonly(values, months)),
        "train": SeriesData(*_readonly(values[train], months[train])),
        "test": SeriesData(*_readonly(values[~train], months[~train])),
    }


def package_file(package: str, *parts: str) -> pathlib.Path | None:
    """The file `parts` inside an installed `package`, or None if it is not there."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = pathlib.Path(next(iter(spec.submodule_search_locations)), *parts)
    return path if path.is_file() else None
