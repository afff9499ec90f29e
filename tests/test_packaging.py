"""The project's set-up files agree with each other.

- environment.yml (conda / Binder) and pyproject.toml list the same dependencies and version floors;
- course_lib's data files are package data, so a wheel carries them;
- the Makefile has the documented targets and .ci/run calls `make test`;
- the nbval sanitize rules and the `make demo` summary script do what they claim.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from script_loader import load_script

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DATA_BUDGET_BYTES = 5 * 1024 * 1024  # issue 2: at most 5 MB of data in the repository

# conda-forge names that differ from the PyPI name of the same package
CONDA_TO_PYPI = {"matplotlib-base": "matplotlib"}
# environment.yml entries that are not dependencies of pyproject.toml
CONDA_ONLY = {"python", "pip"}


def normalize(name: str) -> str:
    """PEP 503 normalised project name, e.g. Orbax_Checkpoint -> orbax-checkpoint."""
    return re.sub(r"[-_.]+", "-", name).lower()


def floor(specifier: SpecifierSet) -> Version | None:
    """The lowest version a specifier allows by a >=, == or ~= clause, if it gives one."""
    floors = [Version(s.version) for s in specifier if s.operator in (">=", "==", "~=")]
    return max(floors) if floors else None


def parse_requirements(lines: list[str], source: str) -> dict[str, Version | None]:
    """Map normalised names to version floors; a requirement that does not parse is an error."""
    result: dict[str, Version | None] = {}
    for line in lines:
        try:
            req = Requirement(line)
        except InvalidRequirement as err:
            raise AssertionError(f"{source}: cannot parse {line!r}: {err}") from None
        name = normalize(CONDA_TO_PYPI.get(normalize(req.name), req.name))
        if name in result:
            raise AssertionError(f"{source}: {name} is listed twice")
        result[name] = floor(req.specifier)
    return result


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))


def pyproject_requirements() -> dict[str, Version | None]:
    """Runtime dependencies plus the `dev` and `book` extras (what `make book` installs)."""
    project = pyproject()["project"]
    extras = project["optional-dependencies"]
    lines = project["dependencies"] + extras["dev"] + extras.get("book", [])
    return parse_requirements(lines, "pyproject.toml")


def is_local(entry: str) -> bool:
    return entry.startswith(("-e", "-r", ".", "/", "file:"))


def environment_requirements() -> dict[str, Version | None]:
    """conda-forge and pip entries of environment.yml, without python, pip and `-e .`."""
    conda: list[str] = []
    pip: list[str] = []
    for entry in environment()["dependencies"]:
        if isinstance(entry, dict):
            pip.extend(e for e in entry.get("pip", []) if not is_local(e))
        else:
            conda.append(str(entry))
    parsed = parse_requirements(conda + pip, "environment.yml")
    return {name: v for name, v in parsed.items() if name not in CONDA_ONLY}


def dependency_mismatches(
    py: dict[str, Version | None], env: dict[str, Version | None]
) -> list[str]:
    """Human-readable differences between two name -> floor maps (empty when they agree)."""
    problems = [
        f"{n} is in pyproject.toml but not in environment.yml"
        for n in sorted(py.keys() - env.keys())
    ]
    problems += [
        f"{n} is in environment.yml but not in pyproject.toml"
        for n in sorted(env.keys() - py.keys())
    ]
    for name in sorted(py.keys() & env.keys()):
        if py[name] is not None and env[name] is not None and py[name] != env[name]:
            problems.append(
                f"{name}: pyproject.toml needs >={py[name]}, environment.yml >={env[name]}"
            )
    return problems


# --- environment.yml <-> pyproject.toml ----------------------------------------------------------


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    problems = dependency_mismatches(pyproject_requirements(), environment_requirements())
    summary = "\n".join(problems)
    assert not problems, f"update environment.yml and pyproject.toml together:\n{summary}"


def test_dependency_comparison_catches_an_addition_on_either_side():
    py = {"numpy": Version("2.0"), "jax": Version("0.10.2")}
    assert dependency_mismatches(py, dict(py)) == []
    assert dependency_mismatches({**py, "torch": None}, py) == [
        "torch is in pyproject.toml but not in environment.yml"
    ]
    assert dependency_mismatches(py, {**py, "pandas": Version("2")}) == [
        "pandas is in environment.yml but not in pyproject.toml"
    ]
    assert dependency_mismatches(py, {**py, "numpy": Version("1.26")}) == [
        "numpy: pyproject.toml needs >=2.0, environment.yml >=1.26"
    ]


def test_requirement_names_are_normalised():
    parsed = parse_requirements(["Orbax_Checkpoint>=0.12.8", "matplotlib-base>=3.9"], "x")
    assert parsed == {"orbax-checkpoint": Version("0.12.8"), "matplotlib": Version("3.9")}


def test_environment_yml_uses_conda_forge_installs_course_lib_and_matches_python_floor():
    env = environment()
    assert env["channels"] == ["conda-forge"]
    pip_sections = [e["pip"] for e in env["dependencies"] if isinstance(e, dict) and "pip" in e]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip: section"
    assert "-e ." in pip_sections[0], "environment.yml must install course_lib itself (- -e .)"
    assert "pip" in env["dependencies"], "a pip: section needs pip among the conda dependencies"
    pythons = [Requirement(d) for d in env["dependencies"] if str(d).startswith("python")]
    requires_python = SpecifierSet(pyproject()["project"]["requires-python"])
    assert [floor(p.specifier) for p in pythons] == [floor(requires_python)]


# --- package data ------------------------------------------------------------------------------


def dataset_files() -> list[Path]:
    folder = ROOT / "course_lib" / "datasets"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def test_dataset_files_are_declared_package_data():
    setuptools_cfg = pyproject()["tool"]["setuptools"]
    assert any(
        fnmatch.fnmatch("course_lib", pattern)
        for pattern in setuptools_cfg["packages"]["find"]["include"]
    )
    patterns = setuptools_cfg["package-data"]["course_lib"]
    assert "datasets/*" in patterns
    for path in dataset_files():
        relative = path.relative_to(ROOT / "course_lib").as_posix()
        assert any(fnmatch.fnmatch(relative, pat) for pat in patterns), (
            f"{relative} is not matched by [tool.setuptools.package-data] course_lib = {patterns};"
            " add a pattern for it so wheels ship it"
        )


def test_shipped_data_fits_the_repository_budget():
    total = sum(p.stat().st_size for p in dataset_files())
    assert total <= DATA_BUDGET_BYTES, f"course_lib/datasets holds {total} bytes, budget is 5 MB"


def test_wheel_contains_the_package_and_its_data(tmp_path):
    setuptools = pytest.importorskip("setuptools", reason="offline wheel build needs setuptools")
    # setuptools builds wheels by itself from 70.1 on; older ones need the `wheel` package.
    # `make` installs a recent setuptools into .venv; elsewhere the static test above still runs.
    if Version(setuptools.__version__) < Version("70.1") and not importlib.util.find_spec("wheel"):
        pytest.skip(f"setuptools {setuptools.__version__} without `wheel` cannot build wheels")
    # Build from a copy: an in-tree build leaves build/ and *.egg-info next to the sources.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "course_lib",
        src / "course_lib",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    if not (src / "README.md").exists():
        (src / "README.md").write_text("placeholder\n", encoding="utf-8")
    out = tmp_path / "wheel"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["--quiet", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("course_lib-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "course_lib/__init__.py" in names, "course_lib/__init__.py is missing (not committed?)"
    for path in dataset_files():
        member = path.relative_to(ROOT).as_posix()
        assert member in names, f"{member} is missing from the wheel"
    entry_points = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert entry_points, "the course-lib console script is not declared"


# --- Makefile and CI -----------------------------------------------------------------------------


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, flags=re.MULTILINE))


def test_makefile_has_the_documented_targets():
    targets = makefile_targets()
    missing = {"demo", "test", "lab", "lint", "format", "data", "clean"} - targets
    assert not missing, f"Makefile lacks targets {sorted(missing)}"


def make_dry_run(target: str, tmp_path: Path) -> str:
    if shutil.which("make") is None:
        pytest.skip("GNU make is not installed")
    # A fresh VENV path makes make print the whole chain, install included, without running it.
    proc = subprocess.run(
        ["make", "-n", "-C", str(ROOT), target, f"VENV={tmp_path / 'venv'}", f"RUNS={tmp_path}/r"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_make_demo_trains_every_model_through_the_cli(tmp_path):
    commands = make_dry_run("demo", tmp_path)
    assert "pip install -e '.[dev]'" in commands
    for model in ("vae", "gan", "rnn", "forecast"):
        assert f"-m course_lib train {model} --out {tmp_path}/r/{model}" in commands
    assert "scripts/summarize_runs.py" in commands


def test_make_test_runs_ruff_pytest_and_nbval(tmp_path):
    commands = make_dry_run("test", tmp_path)
    assert "ruff check course_lib tests scripts" in commands
    assert "ruff format --check course_lib tests scripts" in commands
    assert re.search(r"pytest tests$", commands, flags=re.MULTILINE)
    assert "--nbval" in commands and "tests/nbval_sanitize.cfg" in commands


def test_ci_script_is_strict_and_calls_make_test():
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    lines = [line.strip() for line in script.splitlines()]
    assert lines[0].startswith("#!") and "bash" in lines[0]
    assert "set -euo pipefail" in lines
    code = [line for line in lines if line and not line.startswith("#")]
    assert any(re.match(r"^(exec\s+)?make\b.*\btest\b", line) for line in code)


def test_book_config_is_a_jupyter_book_stub():
    book = yaml.safe_load((ROOT / "book.yml").read_text(encoding="utf-8"))
    assert book["title"].startswith("生成式AI的三种人机协同模式")
    assert book["execute"]["execute_notebooks"] == "off"
    assert book["sphinx"]["config"]["language"] == "zh_CN"


# --- nbval sanitize rules ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sanitize():
    plugin = pytest.importorskip("nbval.plugin")
    text = (ROOT / "tests" / "nbval_sanitize.cfg").read_text(encoding="utf-8")
    patterns = plugin.get_sanitize_patterns(text)
    assert len(patterns) >= 5

    def apply(s: str) -> str:
        for regex, replace in patterns:  # nbval applies them in file order, like this
            s = re.sub(regex, replace, s)
        return s

    return apply


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("<function f at 0x7f3a2b1c4d50>", "<function f at 0xADDRESS>"),
        ("train:  45%|████▌     | 450/1000 [00:05<00:06, 85.12it/s, loss=1.2]", "<tqdm bar>"),
        ("step 3\n100%|██████████| 10/10 [00:00<00:00, 9.1it/s]\ndone", "step 3\n<tqdm bar>\ndone"),
        ("1234it [00:02, 617.00it/s]", "<tqdm bar>"),
        ("Wall time: 12.3s", "Wall time: <TIME>"),
        ("CPU times: user 1.2 s, sys: 30 ms", "CPU times: user <TIME>, sys: <TIME>"),
        (
            "1.23 ms ± 45.6 µs per loop (mean ± std. dev. of 7 runs, 1,000 loops each)",
            "<TIME> ± <TIME> per loop (mean ± std. dev. of 7 runs, N loops each)",
        ),
        ("speed: 3.5 it/s, 2.0 s/it, 812 steps/s", "speed: <RATE>, <RATE>, <RATE>"),
        ('{"train_seconds": 41.25, "steps_per_second": 97.3}', None),
        ("saved to /tmp/tmpab12cd/run", "saved to /tmp/<TMP>"),
        (
            "/home/me/.venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning",
            "<site-packages>/tqdm/auto.py:21: TqdmWarning",
        ),
    ],
)
def test_sanitize_rules_hide_volatile_output(sanitize, raw, clean):
    if clean is None:
        assert sanitize(raw) == '{"train_seconds": <TIME>, "steps_per_second": <TIME>}'
    else:
        assert sanitize(raw) == clean


@pytest.mark.parametrize(
    "stable",
    [
        "test_neg_elbo_nats = 93.1",
        "classes covered: 10 of 10, class KL 0.03",
        "白日依山尽，黄河入海流。",
        "x.shape = (8000, 28, 28), dtype=uint8",
        "10 samples, 3 steps",
    ],
)
def test_sanitize_rules_keep_real_results(sanitize, stable):
    assert sanitize(stable) == stable


# --- scripts/summarize_runs.py -------------------------------------------------------------------


@pytest.fixture(scope="module")
def summarize_runs():
    return load_script("summarize_runs")


def test_summary_reads_the_last_line_and_checks_targets(summarize_runs, tmp_path, capsys):
    gan = {"model": "gan", "dataset": "mnist10k", "seed": 0, "steps": 10, "train_seconds": 1.5}
    gan |= {"fd_lenet": 5.0, "fd_lenet_floor": 0.4, "class_kl": 0.05, "classes_covered": 10}
    vae = {"model": "vae", "dataset": "mnist10k", "steps": 10, "test_neg_elbo_nats": 93.0}
    (tmp_path / "gan.log").write_text("progress...\n" + json.dumps(gan) + "\n\n", encoding="utf-8")
    (tmp_path / "vae.log").write_text(json.dumps(vae), encoding="utf-8")
    logs = [str(tmp_path / "gan.log"), str(tmp_path / "vae.log")]

    assert summarize_runs.main(logs) == 0
    assert summarize_runs.main([*logs, "--strict"]) == 1  # fd_lenet 5.0 > 10 x 0.4
    rows = summarize_runs.rows_for(gan)
    verdicts = {r.metric: r.ok for r in rows}
    assert verdicts == {
        "fd_lenet": "NO",
        "fd_lenet_floor": "",
        "class_kl": "yes",
        "classes_covered": "yes",
    }
    assert "test_neg_elbo_nats" in capsys.readouterr().out


def test_summary_fails_clearly_on_a_broken_log(summarize_runs, tmp_path):
    bad = tmp_path / "bad.log"
    bad.write_text("Traceback ...\nValueError: boom\n", encoding="utf-8")
    with pytest.raises(summarize_runs.RunLogError, match="not JSON"):
        summarize_runs.read_last_json(bad)
    with pytest.raises(summarize_runs.RunLogError, match="make demo"):
        summarize_runs.read_last_json(tmp_path / "absent.log")
    assert summarize_runs.main([str(bad)]) == 1
