"""Build the workbook's web site with Jupyter Book 1.x: `make book` (and `make test` via tests).

    python scripts/book.py build                   # what `make book` runs
    python scripts/book.py build --stored-outputs  # no execution: the site of the stored outputs
    python scripts/book.py execute [--force] [NOTEBOOK ...]
    python scripts/book.py status                  # which notebooks are current

`build` does, in order:

1. **Font.** Finds a CJK font for the pages and the figures (fontconfig and matplotlib); as root
   with apt-get it installs Debian's fonts-noto-cjk when there is none. Without one it stops: the
   site never ships tofu.
2. **Offline assets.** Fetches MathJax 3 and Mermaid with `npm pack` (pinned versions below) into
   `_build/site_static/`, which Sphinx copies to `_build/html/_static/`. They are deliberately not
   in a top-level `_static/` folder: Jupyter Book would add every `.js` found there to every page.
3. **Execution.** A notebook's stored outputs are *current* when the fingerprint stamped into its
   metadata (`metadata.workbook.inputs_sha256`) equals the fingerprint of its code cells, of
   course_lib's sources and shipped data, and of the run profile (`$COURSE_LIB_PROFILE`). Stale or
   unstamped notebooks are executed in place with nbclient (which records per-cell timestamps) and
   stamped. `--stored-outputs` skips this step (`make test` checks the stored outputs with nbval).
4. **Chapter times.** `_build/generated/chapter_times.md`, included by the landing page, lists how
   long each chapter took on a CPU, summed from nbclient's per-cell timestamps in the notebooks.
5. **HTML.** `jupyter-book build . --config <book.yml, adjusted> --toc toc.yml -W` into
   `_build/html`. The adjustment: without `repository.url` in book.yml the launch buttons are
   dropped (sphinx-book-theme cannot build them without a repository).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
SITE_STATIC = BUILD / "site_static"  # in html_static_path (book.yml)
GENERATED = BUILD / "generated"
HTML = BUILD / "html"
STAMP_KEY = "workbook"
CELL_TIMEOUT_S = 1200
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"

# npm packages served by the site itself (never from a CDN). Mermaid matches the version
# sphinxcontrib-mermaid would otherwise load from a CDN.
NPM_PACKAGES = {"mathjax": "3.2.2", "mermaid": "11.12.1"}
# What of each package the site needs (paths inside the npm tarball, under package/).
MATHJAX_KEEP = ("es5/tex-chtml.js", "es5/input/tex/", "es5/output/chtml/", "es5/ui/", "es5/a11y/")
MERMAID_KEEP = ("dist/mermaid.esm.min.mjs", "dist/chunks/mermaid.esm.min/")
CJK_FONT_PACKAGE = "fonts-noto-cjk"


class BookError(RuntimeError):
    """A problem that stops the build, with a message saying what to do."""


# --- configuration ------------------------------------------------------------------------------


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def toc_documents(toc: dict) -> list[str]:
    """Every document of a jb-book table of contents, root first, without suffix, in order."""
    docs = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                docs.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return docs


def resolve_document(doc: str, root: Path = ROOT) -> Path:
    for suffix in (".ipynb", ".md"):
        path = root / f"{doc}{suffix}"
        if path.exists():
            return path
    raise BookError(f"toc.yml lists '{doc}', but neither {doc}.ipynb nor {doc}.md exists")


def toc_notebooks(root: Path = ROOT) -> list[Path]:
    docs = toc_documents(load_yaml(root / "toc.yml"))
    return [p for p in map(lambda d: resolve_document(d, root), docs) if p.suffix == ".ipynb"]


def effective_config(book: dict) -> dict:
    """book.yml as Jupyter Book gets it: launch buttons only when a repository URL is set."""
    config = copy.deepcopy(book)
    url = (config.get("repository") or {}).get("url")
    if not url:
        config.pop("launch_buttons", None)
        config.pop("repository", None)
        html = config.setdefault("html", {})
        for key in ("use_repository_button", "use_issues_button", "use_edit_page_button"):
            html[key] = False
    return config


# --- fonts --------------------------------------------------------------------------------------


def fontconfig_cjk_families() -> list[str]:
    """Families fontconfig (and so Chromium) knows for Chinese; empty without fc-list."""
    if shutil.which("fc-list") is None:
        return []
    proc = subprocess.run(
        ["fc-list", ":lang=zh", "family"], capture_output=True, text=True, check=False
    )
    return sorted({f.strip() for line in proc.stdout.splitlines() for f in line.split(",") if f})


def matplotlib_cjk_family() -> str | None:
    from course_lib import plotting

    return plotting.setup_cjk_font(warn=False)


def ensure_cjk_font(install: bool = True) -> str:
    """Return the CJK family figures use; install fonts-noto-cjk as root, or stop clearly."""
    family, pages = matplotlib_cjk_family(), fontconfig_cjk_families()
    if family and pages:
        return family
    can_apt = install and os.geteuid() == 0 and shutil.which("apt-get")
    if can_apt:
        print(f"book: no CJK font found; installing {CJK_FONT_PACKAGE} with apt-get", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", CJK_FONT_PACKAGE],
            check=False,
            env=env,
        )
        family, pages = matplotlib_cjk_family(), fontconfig_cjk_families()
        if family and pages:
            return family
    raise BookError(
        "no Chinese (CJK) font is installed, so the site's pages and figures would show empty "
        "boxes instead of Chinese text. Install one and run again: Debian/Ubuntu "
        f"'sudo apt-get install {CJK_FONT_PACKAGE}' (make book does this itself when run as "
        "root), Fedora 'sudo dnf install google-noto-sans-cjk-fonts'. "
        f"Found for figures: {family or 'none'}; for pages (fc-list :lang=zh): "
        f"{', '.join(pages) or 'none'}."
    )


# --- offline JavaScript from npm ----------------------------------------------------------------


def vendor_assets(dest: Path = SITE_STATIC) -> None:
    """Unpack the pinned MathJax and Mermaid npm tarballs into dest (skipped when present)."""
    marker = dest / "npm-versions.json"
    if marker.exists() and json.loads(marker.read_text()) == NPM_PACKAGES:
        return
    if shutil.which("npm") is None:
        raise BookError(
            "npm is needed once to fetch MathJax 3 and Mermaid, which the site serves itself "
            "(no CDN): install Node.js/npm (Debian: apt-get install npm) and run again"
        )
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    keep = {"mathjax": MATHJAX_KEEP, "mermaid": MERMAID_KEEP}
    with tempfile.TemporaryDirectory() as tmp:
        for name, version in NPM_PACKAGES.items():
            print(f"book: npm pack {name}@{version}", flush=True)
            proc = subprocess.run(
                ["npm", "pack", "--silent", f"{name}@{version}"],
                cwd=tmp,
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise BookError(f"npm pack {name}@{version} failed:\n{proc.stderr[-2000:]}")
            tgz = Path(tmp) / proc.stdout.strip().splitlines()[-1]
            with tarfile.open(tgz) as tar:
                for member in tar.getmembers():
                    rel = member.name.removeprefix("package/")
                    wanted = rel == "LICENSE" or any(
                        rel == k or (k.endswith("/") and rel.startswith(k)) for k in keep[name]
                    )
                    if not member.isfile() or not wanted or rel.endswith(".map"):
                        continue
                    # es5/ and dist/ are dropped: _static/mathjax/tex-chtml.js, _static/mermaid/...
                    target = dest / name / rel.split("/", 1)[-1]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
    marker.write_text(json.dumps(NPM_PACKAGES))


# --- currency of stored outputs -----------------------------------------------------------------


def library_digest(root: Path = ROOT) -> str:
    """sha256 over course_lib's Python sources and shipped data files (path and content)."""
    h = hashlib.sha256()
    lib = root / "course_lib"
    files = sorted(
        p
        for p in lib.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and (p.suffix == ".py" or "datasets" in p.relative_to(lib).parts)
    )
    for path in files:
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def run_profile() -> str:
    from course_lib import recipes

    return recipes.profile_from_env()


def inputs_sha256(nb, library: str, profile: str) -> str:
    """The fingerprint of what a notebook's outputs depend on: code cells, library, profile."""
    h = hashlib.sha256(f"profile={profile}\0library={library}\0".encode())
    for cell in nb.cells:
        if cell.cell_type == "code":
            source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
            h.update(b"code\0" + source.encode() + b"\0")
    return h.hexdigest()


def stored_stamp(nb) -> dict:
    return dict(nb.metadata.get(STAMP_KEY, {}))


def is_current(nb, library: str, profile: str) -> bool:
    return stored_stamp(nb).get("inputs_sha256") == inputs_sha256(nb, library, profile)


def execute_notebook(path: Path, library: str, profile: str) -> float:
    """Run every cell with nbclient (cwd = the notebook's folder), stamp, write in place."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    start = dt.datetime.now(dt.timezone.utc)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=True,
    )
    # Figures must be captured as outputs even where MPLBACKEND=Agg is set (as in .ci/run):
    # the kernel inherits this process's environment.
    saved = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = INLINE_BACKEND
    try:
        client.execute()
    except CellExecutionError as err:
        raise BookError(f"{path.relative_to(ROOT)}: a cell failed:\n{str(err)[-3000:]}") from None
    finally:
        if saved is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = saved
    seconds = (dt.datetime.now(dt.timezone.utc) - start).total_seconds()
    # Saved widget state (a tqdm.auto bar) makes Jupyter Book load the widget manager and
    # require.js from CDNs; the site is offline and shows each output's text form instead.
    nb.metadata.pop("widgets", None)
    nb.metadata[STAMP_KEY] = {
        "inputs_sha256": inputs_sha256(nb, library, profile),
        "profile": profile,
        "executed_on": {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
        },
    }
    nbformat.write(nb, path)
    return seconds


def execute_stale(paths: list[Path], force: bool = False) -> list[Path]:
    import nbformat

    library, profile = library_digest(), run_profile()
    done = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        rel = path.relative_to(ROOT)
        if not force and is_current(nb, library, profile):
            print(f"book: {rel}: stored outputs are current", flush=True)
            continue
        print(f"book: {rel}: executing (profile {profile}) ...", flush=True)
        seconds = execute_notebook(path, library, profile)
        print(f"book: {rel}: executed in {seconds:.0f} s", flush=True)
        done.append(path)
    return done


# --- chapter times ------------------------------------------------------------------------------


def _parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def cell_seconds(nb) -> float | None:
    """Sum of the code cells' run times from nbclient's timestamps; None if any is missing."""
    total = 0.0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        timing = cell.get("metadata", {}).get("execution", {})
        start = timing.get("iopub.execute_input") or timing.get("shell.execute_reply.started")
        end = timing.get("shell.execute_reply")
        if not (start and end):
            return None
        total += max(0.0, (_parse_time(end) - _parse_time(start)).total_seconds())
    return total


def format_duration(seconds: float) -> str:
    """Rounded for a reader: 约 40 秒, 约 2 分 10 秒 (to 10 s; at least 10 s)."""
    seconds = max(10, int(round(seconds / 10.0)) * 10)
    minutes, rest = divmod(seconds, 60)
    if not minutes:
        return f"约 {rest} 秒"
    return f"约 {minutes} 分" + (f" {rest} 秒" if rest else "")


def notebook_title(nb, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            match = re.search(r"^#\s+(.+)$", cell.source, flags=re.MULTILINE)
            if match:
                return match.group(1).strip()
    return fallback


def chapter_times_markdown(paths: list[Path], root: Path = ROOT) -> str:
    """The landing page's table: each chapter's CPU time, linked, with a total and a note."""
    import nbformat

    rows, total, machines, missing = [], 0.0, set(), False
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        seconds = cell_seconds(nb)
        stamp = stored_stamp(nb)
        if stamp.get("executed_on"):
            on = stamp["executed_on"]
            machines.add(f"{on.get('cpus', '?')} 核 {on.get('machine', '')} CPU".replace("  ", " "))
        link = f"[{notebook_title(nb, path.stem)}]({path.relative_to(root).as_posix()})"
        if seconds is None:
            missing = True
            rows.append(f"| {link} | 未记录 |")
        else:
            total += seconds
            rows.append(f"| {link} | {format_duration(seconds)} |")
    lines = ["| 章节 | CPU 上的运行时间 |", "|:---|---:|", *rows]
    if paths and not missing:
        lines.append(f"| **合计** | **{format_duration(total)}** |")
    where = "、".join(sorted(machines)) or "CPU"
    note = (
        f"\n这些时间由 `make book` 在构建本站时，从笔记本中保存的每个代码单元的执行时间戳"
        f"（nbclient 记录）累加得到：在 {where} 上、使用默认的快速配置（quick profile）。"
    )
    if missing:
        note += "标为“未记录”的笔记本没有保存时间戳；运行 `make book` 会重新执行并记录。"
    return "\n".join(lines) + "\n" + note + "\n"


def write_chapter_times(paths: list[Path]) -> Path:
    GENERATED.mkdir(parents=True, exist_ok=True)
    out = GENERATED / "chapter_times.md"
    text = chapter_times_markdown(paths)
    if not out.exists() or out.read_text(encoding="utf-8") != text:
        out.write_text(text, encoding="utf-8")
    return out


# --- build --------------------------------------------------------------------------------------


def check_sources() -> None:
    if (ROOT / "_static").is_dir():
        raise BookError(
            "a top-level _static/ folder makes Jupyter Book add every .js and .css under every "
            "html_static_path to every page, including the MathJax and Mermaid files in "
            f"{SITE_STATIC.relative_to(ROOT)}; put custom CSS elsewhere"
        )


def jupyter_book() -> str:
    exe = Path(sys.executable).with_name("jupyter-book")
    if not exe.exists():
        raise BookError(
            "jupyter-book is not installed in this environment: run 'make book', which installs "
            "the 'book' extra (pip install -e '.[dev,book]')"
        )
    return str(exe)


def check_notebook_metadata(paths: list[Path]) -> None:
    """Every chapter names its Pygments lexer, as a notebook run by Jupyter does.

    Without `language_info.pygments_lexer` ("ipython3") the site highlights code cells as plain
    Python, which fails on the Colab cell's `%pip` and `!apt-get` lines, a warning under -W.
    """
    import nbformat

    bad = []
    for path in paths:
        info = nbformat.read(path, as_version=4).metadata.get("language_info", {})
        if not info.get("pygments_lexer"):
            bad.append(str(path.relative_to(ROOT)))
    if bad:
        raise BookError(
            "metadata.language_info.pygments_lexer is missing in "
            + ", ".join(bad)
            + ": execute these notebooks (make book does, or Restart Kernel and Run All) so that "
            "Jupyter records their language"
        )


def build(stored_outputs: bool = False, install_font: bool = True) -> Path:
    check_sources()
    family = ensure_cjk_font(install=install_font)
    print(f"book: CJK font for figures: {family}", flush=True)
    vendor_assets()
    notebooks = toc_notebooks()
    if not stored_outputs:
        execute_stale(notebooks)
    check_notebook_metadata(notebooks)
    write_chapter_times(notebooks)
    GENERATED.mkdir(parents=True, exist_ok=True)
    config_path = GENERATED / "book.yml"
    config_path.write_text(
        yaml.safe_dump(effective_config(load_yaml(ROOT / "book.yml")), allow_unicode=True),
        encoding="utf-8",
    )
    cmd = [jupyter_book(), "build", str(ROOT), "--config", str(config_path)]
    cmd += ["--toc", str(ROOT / "toc.yml"), "-W", "--keep-going"]
    print("book: " + " ".join(Path(c).name if c == cmd[0] else c for c in cmd), flush=True)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, check=False)
    if proc.returncode != 0:
        raise BookError("jupyter-book build failed (warnings are errors, see above)")
    check_offline(HTML)
    index = HTML / "index.html"
    print(f"book: the site is in {HTML}/; open file://{index}", flush=True)
    print(f"book: or serve it: python -m http.server -d {HTML} 8000 (http://127.0.0.1:8000/)")
    return index


EXTERNAL_ASSET = re.compile(
    r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=[\"'](?:https?:)?//[^\"']+", re.IGNORECASE
)


def check_offline(html_dir: Path) -> None:
    """No page loads a script, style sheet, image or frame from another host."""
    offenders = []
    for page in sorted(html_dir.rglob("*.html")):
        for match in EXTERNAL_ASSET.finditer(page.read_text(encoding="utf-8", errors="replace")):
            tag = match.group(0)
            if re.match(r"<link\b", tag, re.IGNORECASE) and not re.search(
                r"rel=[\"'](?:stylesheet|preload|modulepreload|icon)", tag, re.IGNORECASE
            ):
                continue  # a plain hyperlink-like <link rel="..."> is not fetched
            offenders.append(f"{page.relative_to(html_dir)}: {tag[:160]}")
    if offenders:
        raise BookError("pages load assets from the web:\n" + "\n".join(offenders[:20]))


def status() -> int:
    import nbformat

    library, profile = library_digest(), run_profile()
    stale = 0
    for path in toc_notebooks():
        nb = nbformat.read(path, as_version=4)
        current = is_current(nb, library, profile)
        stale += not current
        seconds = cell_seconds(nb)
        timing = f"{seconds:.0f} s of cells" if seconds is not None else "no timestamps"
        state = "current" if current else "STALE"
        print(f"{path.relative_to(ROOT)}: {state}, {timing}")
    return 1 if stale else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="font, assets, execute stale notebooks, HTML with -W")
    b.add_argument(
        "--stored-outputs",
        action="store_true",
        help="do not execute: build from the outputs stored in the notebooks",
    )
    b.add_argument("--no-font-install", action="store_true", help="never run apt-get")
    e = sub.add_parser("execute", help="execute stale notebooks in place and stamp them")
    e.add_argument("--force", action="store_true", help="execute even current notebooks")
    e.add_argument("notebooks", nargs="*", type=Path)
    sub.add_parser("status", help="print whether each notebook's outputs are current")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            build(stored_outputs=args.stored_outputs, install_font=not args.no_font_install)
        elif args.command == "execute":
            paths = [p.resolve() for p in args.notebooks] or toc_notebooks()
            execute_stale(paths, force=args.force)
        else:
            return status()
    except BookError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
