"""The package's layering, checked on its import graph (imports inside functions included).

Layers, lowest first; a module may import its own layer and the layers below, never above,
and the graph has no cycles. The README's "Architecture" section shows the same list.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "simulator"

LAYERS = [
    # foundations: error types, seeding, progress bars, the number formatter
    ["simulator.errors", "simulator.seeding", "simulator.progress", "simulator.formatting"],
    # pure math: manifolds, geometry, attack algorithms and their statistics
    ["simulator.manifolds", "simulator.geometry", "simulator.attacks"],
    # the scene and real-experiment schema (the only home of defaults), YAML, overrides, resolve
    ["simulator.config"],
    # the synthetic world: label rules, data sets, models
    ["simulator.labels", "simulator.data", "simulator.models"],
    ["simulator.training"],
    # the run directory: one format, one loader, atomic writes
    ["simulator.runs"],
    # stages: compute and return records (measure, attack, verdict; the real-image stages;
    # the decision boundary as a mesh in a 3-D frame)
    ["simulator.stages", "simulator.real", "simulator.boundary"],
    ["simulator.experiments"],
    # presentation: reads stored results only
    ["simulator.render", "simulator.report"],
    # the only sequencer of stages
    ["simulator.pipeline"],
    # many runs of the pipeline: sweep files' runs, backends, tables, plots
    ["simulator.sweeps"],
]

# Function-level imports allowed only for heavy or optional libraries (never for project modules
# except these facades: the package's __init__ re-exports the public API lazily).
FACADES = {"simulator"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import of a project module in `path`."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, node.lineno))
            found += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]
    return [(target, line) for target, line in found if target == "simulator" or target.startswith("simulator.")]


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def resolve(target: str, modules: dict[str, Path]) -> str | None:
    """The project module an import names (`from a.b import c` may name a function c of a.b)."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def layer_of(module: str) -> int | None:
    for index, prefixes in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    return None


def import_graph() -> dict[str, dict[str, int]]:
    modules = project_modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, {})
        for target, line in imports_of(path):
            resolved = resolve(target, modules)
            # importing a subpackage's member from inside it (or the package root) is not an edge
            if resolved and resolved != name and not name.startswith(resolved + "."):
                edges.setdefault(resolved, line)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for neighbour in graph.get(node, {}):
            if neighbour not in index:
                visit(neighbour)
                low[node] = min(low[node], low[neighbour])
            elif neighbour in on_stack:
                low[node] = min(low[node], index[neighbour])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer():
    unplaced = sorted(name for name in project_modules() if name not in FACADES and layer_of(name) is None)
    assert not unplaced, f"modules outside every layer (add them to LAYERS and the README): {unplaced}"


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_layers_only_import_downward():
    upward = []
    for module, edges in import_graph().items():
        if module in FACADES:
            continue
        for target, line in edges.items():
            if target in FACADES:
                upward.append(f"{module}:{line} imports the package facade {target}")
            elif layer_of(target) > layer_of(module):
                upward.append(f"{module}:{line} imports {target} (layer {layer_of(target)} > {layer_of(module)})")
    assert not upward, "imports into a higher layer:\n" + "\n".join(sorted(upward))


def test_function_level_imports_only_defer_heavy_libraries():
    """A project import inside a function dodges a cycle or a layer; only libraries may be deferred."""
    inside = []
    for name, path in project_modules().items():
        if name in FACADES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.level or (inner.module or "").startswith("simulator")):
                        inside.append(f"{name}:{inner.lineno} from {inner.module}")
                    elif isinstance(inner, ast.Import) and any(a.name.startswith("simulator") for a in inner.names):
                        inside.append(f"{name}:{inner.lineno}")
    assert not inside, "project imports inside functions:\n" + "\n".join(sorted(set(inside)))


def test_the_checker_sees_a_cycle_and_an_upward_import():
    graph = {"simulator.stages.a": {"simulator.pipeline": 1}, "simulator.pipeline": {"simulator.stages.a": 2}}
    assert cycles(graph) == [["simulator.pipeline", "simulator.stages.a"]]
    assert layer_of("simulator.pipeline") > layer_of("simulator.stages.a")
