"""The project's set-up files agree with each other and do what they claim.

- environment.yml (conda / Binder) and pyproject.toml list the same dependencies and version floors
  (conda cannot run offline: these two compare the files);
- course_lib's data files are package data, and a wheel built from the sources carries them (slow);
- `make demo`, `make test` and .ci/run are run for real against stand-ins for the tools they call
  (python, ruff, pytest, apt-get...): what each runs, in which order, and that a failure stops it;
  every target named by `make help` or the README exists;
- the nbval sanitize rules and the `make demo` summary script do what they claim.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
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
    assert dataset_files(), "course_lib/datasets holds no files"
    # A fast stand-in for the wheel build below (slow): same question, asked of the config.
    for path in dataset_files():
        relative = path.relative_to(ROOT / "course_lib").as_posix()
        assert any(fnmatch.fnmatch(relative, pat) for pat in patterns), (
            f"{relative} is not matched by [tool.setuptools.package-data] course_lib = {patterns};"
            " add a pattern for it so wheels ship it"
        )


def test_shipped_data_fits_the_repository_budget():
    total = sum(p.stat().st_size for p in dataset_files())
    assert total <= DATA_BUDGET_BYTES, f"course_lib/datasets holds {total} bytes, budget is 5 MB"


@pytest.mark.slow  # a few seconds: pip builds a wheel
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


# --- Makefile and CI: run for real, against stand-ins for the tools ------------------------------
# `make` runs with VENV pointing at a fake virtual environment whose python, ruff and pytest are
# stand-ins (STUB): each appends its name and arguments to $STUB_LOG, one line per call (with
# " [MPLBACKEND]" when that variable is set), and exits 1 when that line matches the shell pattern
# $STUB_FAIL. The fake python answers `-m course_lib train MODEL ...` with a JSON line, refuses
# `-m pip` (nothing may install) and hands everything else (scripts/summarize_runs.py) to the
# real interpreter. The fake environment's stamps are newer than pyproject.toml: nothing installs.

STUB = """#!/usr/bin/env bash
line="$(basename "$0") $*"
echo "$line${MPLBACKEND:+ [MPLBACKEND]}" >> "$STUB_LOG"
if [ -n "${STUB_FAIL:-}" ] && [[ "$line" == $STUB_FAIL ]]; then exit "${STUB_RC:-1}"; fi
"""
PYTHON_STUB = (
    STUB
    + """case "$1 $2" in
  "-m course_lib") echo "training $4"; echo '{"model": "'"$4"'", "dataset": "d", "steps": 1}';;
  "-m pip") exit 1;;
  *) exec "%s" "$@";;
esac
"""
)
LINT_PATHS = ["course_lib", "tests", "scripts", "benchmarks"]


def write_stub(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755)


@pytest.fixture
def fake_venv(tmp_path) -> Path:
    venv = tmp_path / "venv"
    write_stub(venv / "bin" / "python", PYTHON_STUB % sys.executable)
    for tool in ("pip", "ruff", "pytest"):
        write_stub(venv / "bin" / tool, STUB)
    for stamp in (".course-lib-dev.stamp", ".course-lib-book.stamp"):
        (venv / stamp).touch()
    return venv


def run_make(venv: Path, *args: str, fail: str = "", rc: int = 1):
    """`make -C ROOT VENV=venv args...`; returns the process and the stand-ins' call log."""
    if shutil.which("make") is None:
        pytest.skip("GNU make is not installed")
    log = venv / "calls.log"
    log.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    env |= {"STUB_LOG": str(log), "STUB_FAIL": fail, "STUB_RC": str(rc), "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        ["make", "-C", str(ROOT), f"VENV={venv}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    calls = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    return proc, calls


def test_every_documented_make_target_exists(fake_venv):
    help_proc, _ = run_make(fake_venv, "help")
    assert help_proc.returncode == 0, help_proc.stderr
    in_help = set(re.findall(r"^make (\w[\w-]*)", help_proc.stdout, flags=re.MULTILINE))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    in_readme = set(re.findall(r"`make ([a-z][\w-]*)", readme))
    assert {"book", "demo", "test", "lab"} <= in_help
    for target in sorted(in_help | in_readme):
        proc, calls = run_make(fake_venv, "-n", target)
        assert proc.returncode == 0, f"make {target} (README or make help): {proc.stderr}"
        assert calls == [], f"make -n {target} ran {calls}"


def test_make_demo_trains_every_model_from_scratch_and_prints_the_summary(fake_venv, tmp_path):
    runs = tmp_path / "runs"
    (runs / "vae").mkdir(parents=True)
    (runs / "vae" / "old_checkpoint").write_text("from an earlier run")
    proc, calls = run_make(fake_venv, "demo", f"RUNS={runs}", "DEMO_ARGS=--seed 3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    models = ["vae", "gan", "rnn", "forecast", "diffusion", "transformer"]
    trains = [c for c in calls if " -m course_lib " in c]
    expected = [
        f"python -m course_lib train {m} --out {runs}/{m} --seed 3 [MPLBACKEND]" for m in models
    ]
    assert trains == expected
    assert not (runs / "vae" / "old_checkpoint").exists(), "a demo run must start from scratch"
    for model in models:
        log = (runs / model / "stdout.log").read_text(encoding="utf-8").splitlines()
        assert log[0] == f"training {model}" and json.loads(log[-1])["model"] == model
    # then the summary table, read back from the four logs: rows for each model, in make's order
    table = proc.stdout[proc.stdout.index("\nmodel ") + 1 :].split("\n\n")[0].splitlines()[2:]
    assert list(dict.fromkeys(row.split()[0] for row in table)) == models


def test_make_demo_stops_when_a_training_run_fails(fake_venv, tmp_path):
    proc, calls = run_make(
        fake_venv, "demo", f"RUNS={tmp_path}/runs", fail="python -m course_lib train gan*"
    )
    assert proc.returncode != 0, "a failed run piped into tee must still fail make (pipefail)"
    assert not any("summarize_runs" in c for c in calls)


def test_make_test_runs_ruff_pytest_and_every_notebook_under_nbval(fake_venv):
    proc, calls = run_make(fake_venv, "test")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    notebooks = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "notebooks").glob("*.ipynb"))
    nbval = "pytest --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg "
    assert calls == [
        "ruff check " + " ".join(LINT_PATHS) + " [MPLBACKEND]",
        "ruff format --check " + " ".join(LINT_PATHS) + " [MPLBACKEND]",
        "pytest tests [MPLBACKEND]",
        nbval + " ".join(notebooks),  # without MPLBACKEND: the kernel's inline backend
    ]
    assert all((ROOT / p).is_dir() for p in LINT_PATHS)
    assert (ROOT / "tests" / "nbval_sanitize.cfg").is_file()
    lax, calls = run_make(fake_venv, "test", "NBVAL=--nbval-lax")
    assert lax.returncode == 0 and calls[-1].startswith("pytest --nbval-lax --nbval-current-env")


@pytest.mark.parametrize(
    ("fail", "rc", "passes", "last_call"),
    [
        ("ruff check*", 1, False, "ruff check"),  # lint first: nothing runs after a lint error
        ("pytest tests*", 1, False, "pytest tests"),
        ("pytest --nbval*", 1, False, "pytest --nbval"),
        ("pytest --nbval*", 5, True, "pytest --nbval"),  # 5: no cells collected, not a failure
    ],
)
def test_make_test_fails_on_the_first_failing_step(fake_venv, fail, rc, passes, last_call):
    proc, calls = run_make(fake_venv, "test", fail=fail, rc=rc)
    assert (proc.returncode == 0) == passes, proc.stdout + proc.stderr
    assert calls[-1].startswith(last_call)


@pytest.fixture
def ci_checkout(tmp_path) -> tuple[Path, dict]:
    """A copy of .ci/run in an otherwise empty checkout, with every tool it calls stubbed.

    make, chromium, fc-list (which reports a CJK font), npm, apt-get (which must never run) and
    python3 (which makes a venv with pip) are stand-ins, as is the checkout's .venv/bin/python.
    """
    repo, bin_dir = tmp_path / "repo", tmp_path / "bin"
    write_stub(repo / ".ci" / "run", (ROOT / ".ci" / "run").read_text(encoding="utf-8"))
    write_stub(repo / ".venv" / "bin" / "python", STUB + "cat > /dev/null\n")
    for tool in ("make", "chromium", "npm", "apt-get"):
        write_stub(bin_dir / tool, STUB)
    write_stub(bin_dir / "fc-list", STUB + 'echo "Noto Sans CJK SC"\n')
    write_stub(
        bin_dir / "python3",
        STUB + '[ "${1:-}" = "-m" ] && mkdir -p "$3/bin" && touch "$3/bin/pip" '
        '&& chmod +x "$3/bin/pip"\n[ "${1:-}" = --version ] && echo "Python 3.11.0"\nexit 0\n',
    )
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "STUB_LOG": str(tmp_path / "calls.log"),
    }
    return repo, env


def run_ci(repo: Path, env: dict, fail: str = ""):
    proc = subprocess.run(
        ["bash", str(repo / ".ci" / "run")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "STUB_FAIL": fail},
    )
    log = Path(env["STUB_LOG"])
    calls = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    return proc, calls


def test_ci_script_sets_up_then_runs_make_test(ci_checkout):
    proc, calls = run_ci(*ci_checkout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not any(c.startswith("apt-get") for c in calls), "nothing was missing"
    makes = [c for c in calls if c.startswith("make ") and "--version" not in c]
    assert makes == [
        "make venv PYTHON=python3 [MPLBACKEND]",  # .ci/run sets MPLBACKEND=Agg for the tests
        "make .venv/.course-lib-book.stamp PYTHON=python3 [MPLBACKEND]",
        "make test PYTHON=python3 [MPLBACKEND]",
    ]
    assert proc.stdout.rstrip().endswith("all checks passed")


@pytest.mark.parametrize("failing", ["make venv*", "make test*", "python -c import jax*"])
def test_ci_script_stops_at_the_first_failure(ci_checkout, failing):
    proc, calls = run_ci(*ci_checkout, fail=failing)
    assert proc.returncode != 0
    assert "all checks passed" not in proc.stdout
    assert not [c for c in calls if c.startswith("make test")] or failing == "make test*"


# --- nbval sanitize rules ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sanitize():
    plugin = pytest.importorskip("nbval.plugin")
    text = (ROOT / "tests" / "nbval_sanitize.cfg").read_text(encoding="utf-8")
    patterns = plugin.get_sanitize_patterns(text)

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
        (
            '{"train_seconds": 41.25, "steps_per_second": 97.3}',
            '{"train_seconds": <TIME>, "steps_per_second": <TIME>}',
        ),
        ("saved to /tmp/tmpab12cd/run", "saved to /tmp/<TMP>"),
        (
            "/home/me/.venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning",
            "<site-packages>/tqdm/auto.py:21: TqdmWarning",
        ),
    ],
)
def test_sanitize_rules_hide_volatile_output(sanitize, raw, clean):
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
