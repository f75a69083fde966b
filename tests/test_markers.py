"""`make test-fast` deselects by marker, so a `slow`/`integration` mark must sit on a test, where pytest reads it."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SELECTING_MARKS = {"slow", "integration"}


def _selecting_marks(decorator: ast.expr) -> set[str]:
    """`slow`/`integration` when `decorator` is `pytest.mark.NAME` or `pytest.mark.NAME(...)`."""
    node = decorator.func if isinstance(decorator, ast.Call) else decorator
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "mark"
        and node.attr in SELECTING_MARKS
    ):
        return {node.attr}
    return set()


def misplaced_marks(source: str) -> list[str]:
    """Functions and classes of `source` that carry a selecting mark but are not collected as tests."""
    misplaced = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        marks = set().union(*(_selecting_marks(d) for d in node.decorator_list))
        is_test = node.name.startswith("Test" if isinstance(node, ast.ClassDef) else "test_")
        if marks and not is_test:
            misplaced.append(f"{node.name} (line {node.lineno}): {', '.join(sorted(marks))}")
    return misplaced


def test_the_checker_finds_a_mark_on_a_helper():
    source = "import pytest\n\n@pytest.mark.slow\ndef helper():\n    pass\n\n@pytest.mark.slow\ndef test_x():\n    pass\n"
    assert misplaced_marks(source) == ["helper (line 4): slow"]


def test_slow_and_integration_marks_are_on_tests():
    problems = {
        str(path.relative_to(TESTS)): found
        for path in sorted(TESTS.rglob("*.py"))
        if (found := misplaced_marks(path.read_text()))
    }
    assert problems == {}
