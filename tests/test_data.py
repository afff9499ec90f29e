"""course_lib.data: shipped, installed and downloaded datasets, their splits and their errors."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import io
import json
import re
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from course_lib import data, downloads

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "course_lib" / "datasets"
ALL_NAMES = {"mnist10k", "tang5", "tang5lu", "digits", "co2", "mnist", "fashion_mnist"}
CJK = "\u3400-\u4dbf\u4e00-\u9fff"
FORM = {
    "tang5": re.compile(f"(?:[{CJK}]{{5}}，[{CJK}]{{5}}。){{2}}"),
    "tang5lu": re.compile(f"(?:[{CJK}]{{5}}，[{CJK}]{{5}}。){{4}}"),
}
UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: connection refused at once


def manifest() -> dict:
    return json.loads((SHIPPED / "MANIFEST.json").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- listing and errors


def test_list_datasets_covers_every_name():
    infos = data.list_datasets()
    assert {i.name for i in infos} == ALL_NAMES
    for info in infos:
        assert info.kind in ("images", "text", "series")
        assert info.splits and all(n > 0 for n in info.splits.values())
        assert info.source and info.licence
        assert isinstance(info.size_bytes, int) and info.size_bytes >= 0
        if info.name in ("mnist10k", "tang5", "tang5lu", "digits", "co2"):
            assert info.offline and info.size_bytes > 0, info


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(data.DatasetError) as err:
        data.load("mnist10", "train")
    assert isinstance(err.value, ValueError)
    for name in ALL_NAMES:
        assert name in str(err.value)


@pytest.mark.parametrize(
    ("name", "bad", "valid"),
    [("mnist10k", "val", ["train", "test"]), ("tang5", "dev", ["train", "val", "test"])],
)
def test_unknown_split_lists_the_valid_ones(name, bad, valid):
    with pytest.raises(data.DatasetError, match="valid splits") as err:
        data.load(name, bad)
    for split in valid:
        assert split in str(err.value)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_LIB_DATA", str(tmp_path / "elsewhere"))
    assert data.cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("COURSE_LIB_DATA")
    assert data.cache_dir() == Path.home() / ".cache" / "course_lib"


def test_one_table_entry_is_all_a_new_dataset_needs(monkeypatch, tmp_path):
    images = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2)
    labels = np.array([0, 1, 2], dtype=np.int32)
    stored = tmp_path / "tiny.bin"
    stored.write_bytes(b"x" * 7)
    tiny = data.Dataset(
        name="tiny",
        kind="images",
        shape=(2, 2),
        splits=("train",),
        licence="CC0",
        source=lambda: "made up for this test",
        load=lambda split: data.ImageData(images.copy(), labels.copy()),
        counts=lambda: {"train": 3},
        files=lambda: [stored],
    )
    monkeypatch.setitem(data.DATASETS, "tiny", tiny)
    info = data.list_datasets()[-1]
    assert info == data.DatasetInfo(
        "tiny", "images", (2, 2), {"train": 3}, "made up for this test", "CC0", True, 7
    )
    x, y = data.load("tiny", "train")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    with pytest.raises(data.DatasetError, match="valid splits: train$"):
        data.load("tiny", "test")
    with pytest.raises(data.DatasetError, match="tiny"):
        data.load("tiny2", "train")
    # A file that is not on this machine: listed, but neither offline nor counted on disk.
    monkeypatch.setitem(
        data.DATASETS, "tiny", dataclasses.replace(tiny, files=lambda: [stored, None])
    )
    info = data.list_datasets()[-1]
    assert info.name == "tiny" and not info.offline and info.size_bytes == 7


def test_downloads_are_pinned_in_the_data_file():
    pins = json.loads((SHIPPED / "downloads.json").read_text(encoding="utf-8"))
    assert pins["_comment"] and "tensorflow_datasets" in " ".join(pins["_comment"])
    pinned = {n: d.download for n, d in data.DATASETS.items() if d.download is not None}
    assert set(pinned) == {"mnist", "fashion_mnist"} == set(pins) - {"_comment"}
    for name, spec in pinned.items():
        assert spec.urls and all(u.endswith("/") for u in spec.urls), name
        assert set(spec.splits) == set(data.DATASETS[name].splits) == {"train", "test"}
        for images, labels in spec.splits.values():
            assert "idx3" in images.name and "idx1" in labels.name
            for remote in (images, labels):
                assert re.fullmatch("[0-9a-f]{64}", remote.sha256), remote
                assert re.fullmatch("[0-9a-f]{64}", remote.sha256_raw), remote
    assert pinned["fashion_mnist"].local_dirs == ("/usr/share/datasets/fashion-mnist",)


# --------------------------------------------------------------------------- shipped files


def test_manifest_matches_the_shipped_files():
    man = manifest()
    total = 0
    for name, entry in man["datasets"].items():
        blob = (SHIPPED / entry["file"]).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == entry["sha256"], name
        assert len(blob) == entry["bytes"], name
        total += len(blob)
        for key in ("source", "licence", "split_method", "format"):
            assert entry[key], (name, key)
    assert total == man["total_bytes"] <= 5 * 1000 * 1000
    assert set(man["datasets"]) == {"mnist10k", "tang5", "tang5lu"}


@pytest.fixture
def build(monkeypatch):
    """scripts/build_datasets.py as a module."""
    spec = importlib.util.spec_from_file_location(
        "build_datasets", ROOT / "scripts" / "build_datasets.py"
    )
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_manifest_pins_match_the_build_script(build):
    pins = {p.spec: p for p in (build.MNIST_PKG, build.POETRY_PKG)}
    for spec_name, entry in manifest()["packages"].items():
        assert entry["shasum"] == pins[spec_name].shasum
        assert entry["integrity"] == pins[spec_name].integrity
    assert manifest()["split_seed"] == build.SPLIT_SEED
    # The zip container is reproducible: same arrays, same bytes, and numpy reads it.
    arrays = {"a": np.arange(12, dtype=np.uint8).reshape(3, 4), "b": np.ones(3, np.int16)}
    blob = build.deterministic_npz(arrays)
    assert blob == build.deterministic_npz(arrays)
    with np.load(io.BytesIO(blob)) as f:
        np.testing.assert_array_equal(f["a"], arrays["a"])
    assert build.stratified_test_counts(np.array([1001, 1127, 991]), 0.2).sum() == round(623.8)


def test_build_script_writes_each_file_atomically_and_world_readable(build, tmp_path):
    target = tmp_path / "new" / "folder" / "file.bin"
    build.write_atomic(target, b"first")
    build.write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert list(target.parent.iterdir()) == [target]  # no temporary file left
    if sys.platform != "win32":
        assert target.stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------- images


def test_mnist10k_shapes_dtypes_and_ranges():
    for split, n in (("train", 8000), ("test", 2000)):
        x, y = data.load("mnist10k", split)
        assert x.shape == (n, 28, 28) and x.dtype == np.uint8
        assert y.shape == (n,) and y.dtype == np.int32
        assert x.min() == 0 and x.max() == 255
        assert set(np.unique(y)) == set(range(10))
        # MNIST: black background, white ink, mean intensity about 0.13 * 255.
        assert 25 < x.mean() < 42
        assert (x[:, 0, :] == 0).mean() > 0.99


def test_mnist10k_split_is_stratified_disjoint_and_complete():
    with np.load(SHIPPED / "mnist10k.npz") as f:
        train = set(zip(f["y_train"].tolist(), f["source_index_train"].tolist(), strict=True))
        test = set(zip(f["y_test"].tolist(), f["source_index_test"].tolist(), strict=True))
    assert len(train) == 8000 and len(test) == 2000 and not train & test
    per_digit = np.bincount([d for d, _ in train | test], minlength=10)
    assert per_digit.sum() == 10000
    _, y_test = data.load("mnist10k", "test")
    counts = np.bincount(y_test, minlength=10)
    assert np.all(np.abs(counts - 0.2 * per_digit) <= 1)  # 20% of every digit
    _, y_train = data.load("mnist10k", "train")
    assert len(set(y_train[:200].tolist())) == 10  # stored shuffled, not grouped by digit


def test_digits_shapes_split_and_fixed_seed():
    x_train, y_train = data.load("digits", "train")
    x_test, y_test = data.load("digits", "test")
    assert x_train.shape == (1438, 8, 8) and x_test.shape == (359, 8, 8)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int32
    levels = set(np.rint(np.arange(17) * 255 / 16).astype(int).tolist())
    assert set(np.unique(x_train).tolist()) <= levels and x_train.max() == 255
    totals = np.bincount(y_train, minlength=10) + np.bincount(y_test, minlength=10)
    assert np.all(np.abs(np.bincount(y_test, minlength=10) - 0.2 * totals) <= 1)
    # Disjoint and complete: together, exactly the 1,797 examples of load_digits.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    source = np.rint(bunch.images * 255 / 16).astype(np.uint8)

    def examples(xs, ys):
        return sorted(x.tobytes() + bytes([y]) for x, y in zip(xs, ys, strict=True))

    ours = examples(np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test]))
    assert ours == examples(source, bunch.target)
    # The seeded split is part of the course's results: pin it.
    digest = hashlib.sha256(x_test.tobytes() + y_test.tobytes()).hexdigest()
    assert digest == DIGITS_TEST_SHA256


DIGITS_TEST_SHA256 = "d483a197b2a6879fc14ba4ef3b7b489ad728544d2211b76fc3b8d064ad8ba5d4"


def test_loads_are_deterministic_and_cannot_corrupt_the_cache():
    x1, y1 = data.load("mnist10k", "train")
    x0, y0 = data.load("mnist10k", "train")
    np.testing.assert_array_equal(x0, x1)
    np.testing.assert_array_equal(y0, y1)
    x1[:] = 0
    y1[:] = -1
    x2, y2 = data.load("mnist10k", "train")
    assert x2.max() == 255 and y2.min() == 0
    poems = data.load("tang5", "train")
    first = poems[0]
    poems[0] = "x"
    assert data.load("tang5", "train")[0] == first


# --------------------------------------------------------------------------- series


def test_co2_is_monthly_and_split_at_1992():
    full = data.load("co2", "all")
    train, test = data.load("co2", "train"), data.load("co2", "test")
    assert isinstance(full, data.SeriesData)
    assert full.values.dtype == np.float32 and full.months.dtype == np.dtype("datetime64[M]")
    assert len(full.values) == 526 and len(train.values) == 406 and len(test.values) == 120
    assert np.all(np.diff(full.months).astype(int) == 1)
    assert str(full.months[0]) == "1958-03" and str(full.months[-1]) == "2001-12"
    assert str(train.months[-1]) == "1991-12" and str(test.months[0]) == "1992-01"
    assert np.isfinite(full.values).all() and 310 < full.values.min() < full.values.max() < 380
    np.testing.assert_array_equal(np.concatenate([train.values, test.values]), full.values)


# --------------------------------------------------------------------------- poems


@pytest.mark.parametrize("name", ["tang5", "tang5lu"])
def test_poems_have_the_exact_form_and_disjoint_splits(name):
    splits = {s: data.load(name, s) for s in ("train", "val", "test")}
    expected = manifest()["datasets"][name]["splits"]
    seen: set[str] = set()
    for split, poems in splits.items():
        assert poems.ndim == 1 and len(poems) == expected[split]
        bad = [p for p in poems if not FORM[name].fullmatch(p)]
        assert not bad, bad[:3]
        assert not seen & set(poems), f"{split} shares poems with another split"
        assert len(set(poems)) == len(poems)
        seen |= set(poems)
    n = len(seen)
    assert abs(len(splits["val"]) - 0.05 * n) <= 1 and len(splits["val"]) == len(splits["test"])
    assert n > (3500 if name == "tang5" else 10000)


def test_the_classic_quatrain_is_there():
    everything = set(np.concatenate([data.load("tang5", s) for s in ("train", "val", "test")]))
    assert "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。" in everything


@pytest.mark.parametrize("name", ["tang5", "tang5lu"])
def test_no_traditional_characters_are_left(name):
    opencc = pytest.importorskip("opencc")
    converter = opencc.OpenCC("t2s")
    poems = np.concatenate([data.load(name, s) for s in ("train", "val", "test")])
    converted = converter.convert("\n".join(poems)).split("\n")
    changed = {
        a
        for p, c in zip(poems, converted, strict=True)
        for a, b in zip(p, c, strict=True)
        if a != b
    }
    # 徵 (the note zhi) survives t2s only inside the phrase 徵調; converting twice loses that
    # context and turns it into 征, which would be wrong.
    assert changed <= {"徵"}, changed


# --------------------------------------------------------------------------- downloads


def idx_gz(array: np.ndarray, mtime: int = 0) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=mtime)


@pytest.fixture
def fake_mnist(monkeypatch, tmp_path):
    """Tiny idx files for 'mnist' with matching hashes, and a cache in tmp_path/cache."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (5, 28, 28)),
        "train-labels-idx1-ubyte.gz": np.array([0, 1, 2, 3, 9]),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (3, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": np.array([4, 5, 6]),
    }
    blobs = {name: idx_gz(a) for name, a in arrays.items()}
    remotes = {
        name: downloads.RemoteFile(
            name,
            hashlib.sha256(blob).hexdigest(),
            hashlib.sha256(gzip.decompress(blob)).hexdigest(),
        )
        for name, blob in blobs.items()
    }
    splits = {
        "train": (remotes["train-images-idx3-ubyte.gz"], remotes["train-labels-idx1-ubyte.gz"]),
        "test": (remotes["t10k-images-idx3-ubyte.gz"], remotes["t10k-labels-idx1-ubyte.gz"]),
    }
    cache = tmp_path / "cache"
    monkeypatch.setenv("COURSE_LIB_DATA", str(cache))

    def use(urls, local_dirs=(), splits_=splits):
        entry = data.DATASETS["mnist"]
        spec = dataclasses.replace(
            entry.download,
            urls=tuple(urls),
            local_dirs=tuple(map(str, local_dirs)),
            splits=splits_,
        )
        monkeypatch.setitem(data.DATASETS, "mnist", dataclasses.replace(entry, download=spec))

    return types.SimpleNamespace(arrays=arrays, blobs=blobs, splits=splits, cache=cache, use=use)


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_offline_download_fails_fast_and_says_what_to_do(fake_mnist):
    fake_mnist.use([UNREACHABLE])
    start = time.monotonic()
    with pytest.raises(data.DatasetError) as err:
        data.load("mnist", "train")
    # A generous bound: the point is that there is no retry loop or long timeout.
    assert time.monotonic() - start < 20
    message = str(err.value)
    assert UNREACHABLE + "train-images-idx3-ubyte.gz" in message
    assert UNREACHABLE + "t10k-labels-idx1-ubyte.gz" in message
    assert str(fake_mnist.cache / "mnist") in message
    assert files_under(fake_mnist.cache) == []
    assert not (fake_mnist.cache / "mnist").exists()
    assert not next(i for i in data.list_datasets() if i.name == "mnist").offline


def test_download_checks_sha256_and_keeps_nothing_on_mismatch(fake_mnist, tmp_path):
    server = tmp_path / "server"
    server.mkdir()
    for name, blob in fake_mnist.blobs.items():
        (server / name).write_bytes(blob)
    wrong = {
        split: tuple(dataclasses.replace(r, sha256="0" * 64, sha256_raw="0" * 64) for r in pair)
        for split, pair in fake_mnist.splits.items()
    }
    fake_mnist.use([server.as_uri() + "/"], splits_=wrong)
    with pytest.raises(data.DatasetError, match="sha256"):
        data.load("mnist", "train")
    assert not fake_mnist.cache.exists()  # not even the folders it made for the download


def test_download_then_cache(fake_mnist, tmp_path):
    server = tmp_path / "server"
    server.mkdir()
    for name, blob in fake_mnist.blobs.items():
        (server / name).write_bytes(blob)
    fake_mnist.use([UNREACHABLE, server.as_uri() + "/"])  # the first mirror is down
    x, y = data.load("mnist", "train")
    np.testing.assert_array_equal(x, fake_mnist.arrays["train-images-idx3-ubyte.gz"])
    assert y.dtype == np.int32 and y.tolist() == [0, 1, 2, 3, 9]
    cached = sorted(p.name for p in files_under(fake_mnist.cache))
    assert cached == sorted(fake_mnist.blobs)  # all four files, no temp files left
    # Now offline: the cache alone serves both splits.
    for path in server.iterdir():
        path.unlink()
    fake_mnist.use([UNREACHABLE])
    x_test, y_test = data.load("mnist", "test")
    assert x_test.shape == (3, 28, 28) and y_test.tolist() == [4, 5, 6]


def test_valid_cached_files_are_used_without_network(fake_mnist):
    folder = fake_mnist.cache / "mnist"
    folder.mkdir(parents=True)
    for name, blob in fake_mnist.blobs.items():
        (folder / name).write_bytes(blob)
    fake_mnist.use([UNREACHABLE])
    x, y = data.load("mnist", "test")
    np.testing.assert_array_equal(x, fake_mnist.arrays["t10k-images-idx3-ubyte.gz"])
    info = next(i for i in data.list_datasets() if i.name == "mnist")
    assert info.offline and info.size_bytes == sum(len(b) for b in fake_mnist.blobs.values())


def test_recompressed_system_copy_is_accepted_by_its_content_hash(fake_mnist, tmp_path):
    # Debian's dataset-fashion-mnist re-gzips the files: different .gz bytes, same content.
    system = tmp_path / "usr-share"
    system.mkdir()
    for name, array in fake_mnist.arrays.items():
        blob = idx_gz(array, mtime=123456)
        assert blob != fake_mnist.blobs[name]
        (system / name).write_bytes(blob)
    fake_mnist.use([UNREACHABLE], local_dirs=[system])
    x, _ = data.load("mnist", "train")
    np.testing.assert_array_equal(x, fake_mnist.arrays["train-images-idx3-ubyte.gz"])
    assert files_under(fake_mnist.cache) == []


def test_corrupt_cached_file_is_reported_not_used(fake_mnist):
    folder = fake_mnist.cache / "mnist"
    folder.mkdir(parents=True)
    for name, blob in fake_mnist.blobs.items():
        (folder / name).write_bytes(blob)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(idx_gz(np.array([1, 1, 1, 1, 1])))
    fake_mnist.use([UNREACHABLE])
    with pytest.raises(data.DatasetError, match="delete it"):
        data.load("mnist", "train")
