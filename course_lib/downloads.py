"""Optional downloads of :mod:`course_lib.data`: pinned idx files, verified by sha256, cached.

``data.load("mnist")`` and ``data.load("fashion_mnist")`` come through here. The URLs and the
sha256 of every file are pinned in ``course_lib/datasets/downloads.json`` (which says where the
hashes come from). Read-only system copies (Debian's ``dataset-fashion-mnist``) are tried first,
then the cache folder, then the mirrors in order. With no copy and no network the load fails
within seconds, saying which files to fetch and where to put them; other data is never
substituted. Not taught on its own: it is the download half of chapter 1's ``data.load``
(01_background).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.client
import json
import pathlib
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass

import numpy as np

from course_lib.files import atomic_write

__all__ = ["Download", "DownloadError", "RemoteFile", "fetch_pair", "pinned", "present"]

_PINS = pathlib.Path(__file__).resolve().parent / "datasets" / "downloads.json"

# Short limits so that an offline machine gets its error within seconds, not minutes.
_SOCKET_TIMEOUT_S = 4.0
_GIVE_UP_AFTER_S = 10.0


class DownloadError(ValueError):
    """A pinned file is absent and cannot be fetched, or is not the pinned file; the message says
    what to do. ``course_lib.data`` raises it again as its ``DatasetError``."""


@dataclass(frozen=True)
class RemoteFile:
    """One pinned file: its name on the mirrors and its two sha256."""

    name: str
    sha256: str  # of the .gz file as its host publishes it
    sha256_raw: str  # of the decompressed file, so re-compressed copies (Debian's) also verify


@dataclass(frozen=True)
class Download:
    """Where a downloadable dataset comes from and how its files are checked."""

    urls: tuple[str, ...]  # base URLs, tried in order
    splits: dict[str, tuple[RemoteFile, RemoteFile]]  # split -> (images, labels)
    local_dirs: tuple[str, ...] = ()  # read-only system copies, tried before the cache
    hint: str = ""  # an extra line for the offline error


def pinned(name: str, local_dirs: tuple[str, ...] = (), hint: str = "") -> Download:
    """The :class:`Download` of `name`, with the URLs and hashes of ``datasets/downloads.json``."""
    pins = json.loads(_PINS.read_text(encoding="utf-8"))[name]
    splits = {
        split: (RemoteFile(**files["images"]), RemoteFile(**files["labels"]))
        for split, files in pins["splits"].items()
    }
    return Download(tuple(pins["urls"]), splits, tuple(local_dirs), hint)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verified_raw(data: bytes, remote: RemoteFile) -> bytes | None:
    """The decompressed idx bytes if `data` is the expected file, else None."""
    gz_ok = _sha256(data) == remote.sha256
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError, ValueError):
        return None
    return raw if gz_ok or _sha256(raw) == remote.sha256_raw else None


def _parse_idx(raw: bytes, ndim: int, origin: str) -> np.ndarray:
    if len(raw) < 4 + 4 * ndim or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise DownloadError(f"{origin} is not a {ndim}-d uint8 idx file; delete it and retry")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DownloadError(f"{origin} is truncated; delete it and retry")
    return body.reshape(dims)


@functools.lru_cache(maxsize=8)
def _read_local(path: str, stamp: tuple[int, int], remote: RemoteFile) -> np.ndarray | None:
    """Parsed, read-only idx array of a verified local file (memoised per path, mtime, size)."""
    raw = _verified_raw(pathlib.Path(path).read_bytes(), remote)
    if raw is None:
        return None
    array = _parse_idx(raw, 3 if "idx3" in remote.name else 1, path)
    array.flags.writeable = False
    return array


def _read_if_file(path: pathlib.Path, remote: RemoteFile) -> np.ndarray | None:
    st = path.stat()
    return _read_local(str(path), (st.st_mtime_ns, st.st_size), remote)


def _find_local(
    name: str, spec: Download, folder: pathlib.Path, remote: RemoteFile
) -> np.ndarray | None:
    """The verified array of `remote` from a system copy or the cache `folder`, else None."""
    for directory in spec.local_dirs:
        path = pathlib.Path(directory) / remote.name
        if path.is_file():
            array = _read_if_file(path, remote)
            if array is not None:
                return array
            # stacklevel 4: reported in course_lib.data, which called fetch_pair
            warnings.warn(f"{path} fails its sha256 check and is ignored", stacklevel=4)
    path = folder / remote.name
    if not path.is_file():
        return None
    array = _read_if_file(path, remote)
    if array is None:
        raise DownloadError(
            f"{path} does not match its sha256 {remote.sha256}; delete it and load "
            f"{name!r} again to re-download it"
        )
    return array


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


def _download(url: str, dest: pathlib.Path, remote: RemoteFile) -> None:
    """Fetch `url`, verify it, then write it to `dest` atomically; on failure nothing is left,
    not even the folders made for it."""
    if not _host_resolves(url, _SOCKET_TIMEOUT_S):
        raise urllib.error.URLError(f"cannot resolve {urllib.parse.urlsplit(url).hostname}")
    request = urllib.request.Request(url, headers={"User-Agent": "course_lib"})
    with urllib.request.urlopen(request, timeout=_SOCKET_TIMEOUT_S) as response:
        data = response.read()
    if _verified_raw(data, remote) is None:
        raise DownloadError(
            f"{url} does not match the expected sha256 {remote.sha256} (got "
            f"{_sha256(data)}); the download was deleted. Try again later or fetch the "
            f"file by hand into {dest.parent}"
        )
    made = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(dest) as out:
            out.write(data)
    except BaseException:
        for directory in made:  # deepest first; one that is not empty stays
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


def _offline_error(name: str, spec: Download, folder, missing: list[RemoteFile], why: str):
    lines = [f"  {spec.urls[0]}{r.name}  (sha256 {r.sha256})" for r in missing]
    mirrors = ", ".join(spec.urls[1:])
    return DownloadError(
        f"dataset {name!r} is not on this machine and could not be downloaded ({why}).\n"
        "Download these files:\n"
        + "\n".join(lines)
        + (f"\n(or from a mirror: {mirrors})" if mirrors else "")
        + f"\nand put them, still gzipped, in this directory:\n  {folder}\n"
        "(set COURSE_LIB_DATA to use another cache directory)."
        + (f"\n{spec.hint}" if spec.hint else "")
        + "\nThe shipped 'mnist10k' and 'digits' work offline."
    )


def present(spec: Download, folder: pathlib.Path, remote: RemoteFile) -> pathlib.Path | None:
    """The first existing (not yet verified) copy of `remote`, system copies first."""
    candidates = [pathlib.Path(d) / remote.name for d in spec.local_dirs]
    candidates.append(folder / remote.name)
    return next((p for p in candidates if p.is_file()), None)


def _fetch_missing(name: str, spec: Download, folder: pathlib.Path, missing: list[RemoteFile]):
    """Download every file of `missing` into `folder`, trying the mirrors in order."""
    failures: dict[str, str] = {}
    # The deadline only bounds the search for a working mirror, not a slow download.
    deadline = time.monotonic() + _GIVE_UP_AFTER_S
    for remote in missing:
        for base in spec.urls:
            if base in failures or time.monotonic() > deadline:
                continue
            try:
                _download(base + remote.name, folder / remote.name, remote)
                deadline = float("inf")
                break
            except (OSError, http.client.HTTPException) as exc:
                failures[base] = f"{base}: {getattr(exc, 'reason', exc)}"
        else:
            why = "; ".join(failures.values()) or "gave up after the time limit"
            still = [r for r in missing if present(spec, folder, r) is None]
            raise _offline_error(name, spec, folder, still, why)


def fetch_pair(name: str, split: str, spec: Download, folder: pathlib.Path):
    """Read-only ``(images, labels)`` uint8 arrays of `split`, downloaded into `folder` first
    if no verified copy is on this machine. Raises :class:`DownloadError`."""
    wanted = spec.splits[split]
    arrays = [_find_local(name, spec, folder, r) for r in wanted]
    if any(a is None for a in arrays):
        # Fetch every absent file of the dataset, so that one offline error lists them all.
        missing = [r for r, a in zip(wanted, arrays, strict=True) if a is None] + [
            r
            for pair in spec.splits.values()
            for r in pair
            if r not in wanted and present(spec, folder, r) is None
        ]
        _fetch_missing(name, spec, folder, missing)
        arrays = [_find_local(name, spec, folder, r) for r in wanted]
    images, labels = arrays
    if images is None or labels is None or len(images) != len(labels) or labels.max() > 9:
        raise DownloadError(
            f"{name}/{split}: the images and labels files do not belong together; delete "
            f"{folder} and load again"
        )
    return images, labels
