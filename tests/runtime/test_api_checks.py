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


def test_the_api_modules_import_one_another_one_way() -> None:
    """No module of the API imports, through any chain, a module that imports it (an import under
    ``TYPE_CHECKING`` counts: it is a cycle the type checker follows)."""
    import grimp

    graph = grimp.build_graph("runtime", cache_dir=None)
    modules = sorted(graph.find_descendants("runtime.api"))
    assert {"runtime.api.context", "runtime.api.pusher"} <= set(modules)
    cycles = [f"{module} -> {imported} -> ... -> {module}" for module in modules
              for imported in sorted(graph.find_modules_directly_imported_by(module))
              if imported.startswith("runtime.api.") and graph.chain_exists(importer=imported, imported=module)]
    assert cycles == []
