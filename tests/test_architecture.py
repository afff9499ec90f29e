"""The library's shape: layers without upward imports, modules that read in one sitting.

The layers are the ones course_lib/__init__.py documents. A new module must be placed in one.
"""

import ast
import pathlib

import course_lib
import pytest

LIB = pathlib.Path(course_lib.__file__).parent
LAYERS = [
    {"pixels", "files", "parallel", "plotting", "collab", "widgets"},
    {"readers", "downloads", "data"},
    {"metrics", "ngram", "fd_lenet", "poetics", "audit"},
    {
        "vae",
        "gan",
        "rnn",
        "diffusion",
        "transformer",
        "active",
        "population",
        "preference",
        "checkpoints",
        "train",
    },
    {"recipes", "runs", "annotation", "tuning", "feedback", "latent_search"},
    {"cli", "__main__"},
]
MAX_MODULE_LINES = 420
MAX_FUNCTION_LINES = 49


def layer_of(module: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if module in names)


def modules() -> list[str]:
    return sorted(p.stem for p in LIB.glob("*.py") if p.stem != "__init__")


def course_lib_imports(tree: ast.AST) -> set[str]:
    """The course_lib modules a module imports, at any depth (lazy imports count too)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "course_lib":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("course_lib."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("course_lib.")}
    return found


def test_every_module_has_a_layer_and_is_documented():
    documented = course_lib.__doc__
    for name in modules():
        assert any(name in layer for layer in LAYERS), f"place course_lib/{name}.py in a layer"
        if name != "__main__":
            assert f"``{name}``" in documented, f"course_lib/__init__.py does not list {name}"


def upward_imports(sources: dict[str, str]) -> list[str]:
    bad = []
    for name, source in sources.items():
        for target in sorted(course_lib_imports(ast.parse(source))):
            if layer_of(target) > layer_of(name):
                bad.append(f"{name} (layer {layer_of(name)}) imports {target} ({layer_of(target)})")
    return bad


def test_no_module_imports_from_a_layer_below_its_own():
    sources = {name: (LIB / f"{name}.py").read_text(encoding="utf-8") for name in modules()}
    assert upward_imports(sources) == []


def test_the_layer_check_catches_an_upward_import():
    sources = {"pixels": "from course_lib import runs\n", "gan": "import course_lib.cli\n"}
    assert len(upward_imports(sources)) == 2
    assert upward_imports({"cli": "from course_lib.recipes import QUICK\n"}) == []


def function_lengths(source: str) -> dict[str, int]:
    tree = ast.parse(source)
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    return {n.name: n.end_lineno - n.lineno + 1 for n in nodes}


@pytest.mark.parametrize("name", modules())
def test_modules_and_functions_read_in_one_sitting(name):
    source = (LIB / f"{name}.py").read_text(encoding="utf-8")
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{name}.py: split it by concern"
    long = {f: n for f, n in function_lengths(source).items() if n > MAX_FUNCTION_LINES}
    assert long == {}, f"{name}.py: functions of 50 lines or more: {long}"
