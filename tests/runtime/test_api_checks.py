"""The API's runtime checks hold under ``python -O``: none of them is an ``assert`` (which -O strips), so a
failed one raises an error with its message instead of running on with a wrong value."""

from __future__ import annotations

import ast

from tests.conftest import REPO


def test_no_runtime_check_of_the_api_is_an_assert() -> None:
    sources = sorted((REPO / "runtime" / "api").glob("*.py"))
    assert len(sources) >= 10
    asserts = [f"{path.relative_to(REPO)}:{node.lineno}" for path in sources
               for node in ast.walk(ast.parse(path.read_text(), filename=str(path))) if isinstance(node, ast.Assert)]
    assert asserts == []
