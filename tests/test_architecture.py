"""The library speaks config keys and files and never prints; only cli.py words flags."""

import ast
import re

import pytest

from tests.conftest import REPO

LIBRARY = sorted(path for path in (REPO / "digitnet").rglob("*.py") if path.name != "cli.py")


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
