"""The tree shows the architecture (issue 18): `components/` is grouped by role, and imports point
one way between the groups — reporting <- data <- models <- method <- evaluation — with no import
cycle between modules; components never import pipelines or datasets."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
COMPONENTS = SRC / "pmg_kedro" / "components"
LAYERS = ["reporting", "data", "models", "method", "evaluation"]


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of the pmg_kedro modules `path` imports (relative imports resolved)."""
    package = _module(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found |= {name, *(f"{name}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {n for n in found if n.startswith("pmg_kedro.")}


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in (SRC / "pmg_kedro").rglob("*.py")}
    return {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "components" else None


def test_components_are_grouped_by_role():
    groups = {p.name for p in COMPONENTS.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert groups == set(LAYERS)
    loose = [p.name for p in COMPONENTS.glob("*.py") if p.name != "__init__.py"]
    assert loose == [], f"modules outside the groups: {loose}"


def test_imports_between_groups_point_one_way():
    wrong = []
    for module, imported in _graph().items():
        layer = _layer(module)
        if layer is None:
            continue
        for other in imported:
            if (
                other.startswith(("pmg_kedro.pipelines", "pmg_kedro.datasets"))
                or _layer(other)
                and LAYERS.index(_layer(other)) > LAYERS.index(layer)
            ):
                wrong.append((module, other))
    assert wrong == [], f"imports against the layer order {LAYERS}: {sorted(wrong)}"


def test_no_import_cycle_between_modules():
    graph = _graph()
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the stack, 2 done
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state[nxt] == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif state[nxt] == 0:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if state[node] == 0:
            visit(node, [node])
    # a package and the submodules it re-exports are one unit, not a cycle of concern
    cycles = [c for c in cycles if not all(n.startswith(c[0]) for n in c)]
    assert cycles == [], f"import cycles: {cycles[:5]}"


@pytest.mark.parametrize("layer", LAYERS)
def test_each_group_says_what_it_holds(layer):
    doc = ast.get_docstring(ast.parse((COMPONENTS / layer / "__init__.py").read_text()))
    assert doc and len(doc) > 40


def test_node_files_stay_thin_and_functions_short():
    """Node files only assemble data (under 400 lines); no function in src/ is over 80 lines."""
    long_nodes = {
        p.parent.name: n
        for p in (SRC / "pmg_kedro" / "pipelines").glob("*/nodes.py")
        if (n := len(p.read_text().splitlines())) >= 400
    }
    assert long_nodes == {}
    long_functions = []
    for path in (SRC / "pmg_kedro").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if node.end_lineno - start + 1 > 80:
                    long_functions.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}")
    assert long_functions == []
