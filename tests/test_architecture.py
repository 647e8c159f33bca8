"""The library speaks config keys and files and never prints; only cli.py words flags."""

import ast
import re
import subprocess

import pytest

from tests.conftest import REPO

LIBRARY = sorted(path for path in (REPO / "digitnet").rglob("*.py") if path.name != "cli.py")
PACKAGES = sorted({path.parent for path in LIBRARY})  # digitnet/ and each subpackage


def strings_in(node: ast.AST) -> list[str]:
    return [part.value for part in ast.walk(node)
            if isinstance(part, ast.Constant) and isinstance(part.value, str)]


@pytest.mark.parametrize("path", LIBRARY, ids=lambda path: str(path.relative_to(REPO)))
def test_library_raises_name_no_flags_and_nothing_prints(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            for text in strings_in(node.exc):
                assert not re.search(r"(^|[\s(])--[a-z]", text), \
                    f"{path.name}:{node.lineno} raises a message naming a flag: {text!r}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id != "print", f"{path.name}:{node.lineno} prints (use logging)"


def module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path, top_level_only: bool) -> set[str]:
    """The digitnet modules `path` imports (at module level only, if asked)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("digitnet")}


def test_nothing_imports_the_cli_and_module_imports_form_no_cycle():
    modules = {module_name(path): path for path in (REPO / "digitnet").rglob("*.py")}
    # programs of their own, which set up the CLI's output: `python -m digitnet` runs the CLI,
    # a `digitnet sweep --jobs K` worker shows its progress as the CLI does
    programs = {"digitnet.__main__", "digitnet.sweep.child"}
    for name, path in modules.items():
        if name not in programs:
            assert "digitnet.cli" not in imports(path, top_level_only=False), name
    graph = {name: imports(path, top_level_only=True) & modules.keys()
             for name, path in modules.items()}

    def visit(name, trail):
        assert name not in trail, " -> ".join([*trail, name])
        for other in graph[name]:
            visit(other, [*trail, name])

    for name in graph:
        visit(name, [])


@pytest.mark.parametrize("package", PACKAGES, ids=lambda path: str(path.relative_to(REPO)))
def test_no_source_folder_is_git_ignored(package):
    # ruff (make lint) skips ignored paths and git would not add a new file in one: a `runs/`
    # pattern once matched digitnet/runs/ as well as the runs folder at the top
    new_file = (package / "new_module.py").relative_to(REPO)
    checked = subprocess.run(["git", "-C", str(REPO), "check-ignore", "--no-index", "-q",
                              str(new_file)])
    assert checked.returncode == 1, f"{new_file} would be ignored by git and by ruff"


@pytest.mark.parametrize("package", PACKAGES, ids=lambda path: str(path.relative_to(REPO)))
def test_every_package_has_its_init_in_git(package):
    # without it a clone sees a namespace package, which find_packages leaves out of a wheel
    init = (package / "__init__.py").relative_to(REPO)
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "--error-unmatch", str(init)],
                             capture_output=True)
    assert tracked.returncode == 0, f"{init} is not in git"
