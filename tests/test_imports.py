"""No import cycle among converge's modules, counting the imports functions make when they run.

The graph is read from the source with :mod:`ast`: an edge ``a -> b`` for every ``import converge.b``
or ``from converge.b import name`` in ``a`` (``from converge.x import sub`` is an edge to the
submodule ``converge.x.sub`` when there is one), at module level or inside a function, so a lazy
import that only hides a cycle from Python's import machinery is still one here. Imports under
``if TYPE_CHECKING:`` never run and are left out. A package's ``__init__`` is the package's node,
and its re-exports are edges from it to its submodules. Importing ``converge.x.y`` also runs
``converge.x``'s ``__init__``, but that parent edge is left out: every submodule that imports a
sibling would otherwise close a loop through its own package, which Python handles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import converge

SOURCE = Path(converge.__file__).parent
Edge = tuple[str, str, int]
"""(importing module, imported module, line of the import statement)."""
def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(SOURCE.rglob("*.py"))}


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree``, at any depth, except those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.If) and is_type_checking(node.test):
            children = [child for child in children if child not in node.body]
        stack.extend(children)
    return found


def imported(name: str, statement: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> list[str]:
    """The converge modules ``statement`` in module ``name`` imports."""
    if isinstance(statement, ast.Import):
        return [alias.name for alias in statement.names if alias.name in known]
    base = statement.module or ""
    if statement.level:
        package = name if known[name].name == "__init__.py" else name.rpartition(".")[0]
        for _ in range(statement.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    if base not in known:
        return []
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in statement.names]


def import_graph() -> dict[str, list[Edge]]:
    known = modules()
    graph: dict[str, list[Edge]] = {name: [] for name in known}
    for name, path in known.items():
        for statement in imports(ast.parse(path.read_text(), filename=str(path))):
            for target in imported(name, statement, known):
                if target != name:
                    graph[name].append((name, target, statement.lineno))
    return graph


def cycles(graph: dict[str, list[Edge]]) -> list[list[Edge]]:
    """One cycle in each strongly connected component of ``graph`` that has one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for _, target, _ in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in graph:
        if node not in index:
            visit(node)
    return [cycle_in(graph, component) for component in components]


def cycle_in(graph: dict[str, list[Edge]], component: set[str]) -> list[Edge]:
    """A shortest cycle through the first module (by name) of a strongly connected ``component``."""
    start = min(component)
    paths: dict[str, list[Edge]] = {start: []}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in graph[node]:
                target = edge[1]
                if target == start:
                    return [*paths[node], edge]
                if target in component and target not in paths:
                    paths[target] = [*paths[node], edge]
                    following.append(target)
        frontier = following
    raise AssertionError(f"{sorted(component)} is not strongly connected")


def describe(cycle: list[Edge], known: dict[str, Path]) -> str:
    steps = [f"  {source} -> {target}  ({known[source].relative_to(SOURCE.parent.parent)}:{line})"
             for source, target, line in cycle]
    return "\n".join(steps)


def test_a_lazy_cycle_is_found_with_the_lines_that_make_it() -> None:
    graph = {
        "converge.a": [("converge.a", "converge.b", 3)],
        "converge.b": [("converge.b", "converge.c", 5)],
        "converge.c": [("converge.c", "converge.a", 40), ("converge.c", "converge.d", 2)],
        "converge.d": [],
    }
    assert cycles(graph) == [[("converge.a", "converge.b", 3), ("converge.b", "converge.c", 5),
                              ("converge.c", "converge.a", 40)]]
    assert cycles({**graph, "converge.c": [("converge.c", "converge.d", 2)]}) == []


def test_the_graph_sees_lazy_imports_but_not_type_checking_ones() -> None:
    graph = import_graph()
    targets = {name: {target for _, target, _ in edges} for name, edges in graph.items()}
    assert "converge.models.durr.model" in targets["converge.models.durr"]
    assert "converge.models.durr.training" not in targets["converge.models.durr"]
    assert "converge.zoo" in targets["converge.train.trainer"]  # imported inside Trainer._export
    assert "converge.models.base" not in targets["converge.models.registry"]  # under TYPE_CHECKING


def test_there_is_no_import_cycle() -> None:
    known = modules()
    graph = import_graph()
    found = cycles(graph)
    report = "\n\n".join(describe(cycle, known) for cycle in found)
    assert not found, f"{len(found)} import cycle(s) among converge's modules:\n{report}"
