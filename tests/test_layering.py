"""The import structure of server/explainserve, read statically with `ast` (nothing is
imported): no cycle between the server's parts, no torch in the api layer, and imports that
only go down the layers of docs/architecture.md. A request flows api -> engine -> scheduling
-> workers, but a worker *pulls* its batches from the batcher (`Batcher.next_batch`), so in
the import order workers sit above scheduling: api -> engine -> workers -> scheduling ->
methods -> models, and the batcher knows nothing of devices. Every import counts, also one
inside a function: it is a dependency all the same, deferred only in time."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import ROOT

PACKAGE = ROOT / "server" / "explainserve"
LAYERS = ("api", "engine", "workers", "scheduling", "methods", "models")  # top to bottom
LEAVES = ("config", "errors", "logs", "metrics", "hooks")  # any layer may use them
ENTRY_POINTS = ("app", "cli", "__main__")  # they wire everything; nothing imports them
METHOD_FEATURES = ("explain", "maximize", "embed")  # methods/<feature>/ beside methods' base
NUMERIC = ("torch", "torchvision", "scipy")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, e.g. explainserve.api.explain
    target: str  # the imported module (or module.name for `from module import name`)
    path: Path
    line: int
    text: str  # the import statement as written

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}: {self.text}"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def absolute(package: str, level: int, module: str | None) -> str:
    """The module `from <level dots><module> import ...` names inside `package`."""
    if not level:
        return module or ""
    anchor = package.split(".")[:len(package.split(".")) - level + 1]
    return ".".join(anchor + ([module] if module else []))


def imports() -> Iterator[Import]:
    for path in sorted(PACKAGE.rglob("*.py")):
        source = module_name(path)
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        text = path.read_text()
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = absolute(package, node.level, node.module)
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            statement = ast.get_source_segment(text, node) or ""
            for target in targets:
                yield Import(source, target, path, node.lineno, " ".join(statement.split()))


ALL_IMPORTS = list(imports())


def part(module: str) -> str | None:
    """The node of the graph a module belongs to: a subpackage or a top-level module."""
    pieces = module.split(".")
    if pieces[0] != "explainserve" or len(pieces) < 2:
        return None
    name = pieces[1]
    exists = (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()
    return name if exists else None


def method_part(module: str) -> str | None:
    """methods.explain, methods.maximize, methods.embed, or methods (its base modules)."""
    pieces = module.split(".")
    if pieces[:2] != ["explainserve", "methods"]:
        return None
    if len(pieces) > 2 and pieces[2] in METHOD_FEATURES:
        return f"methods.{pieces[2]}"
    return "methods"


def edges(node_of) -> dict[tuple[str, str], list[Import]]:
    found: dict[tuple[str, str], list[Import]] = {}
    for item in ALL_IMPORTS:
        source, target = node_of(item.source), node_of(item.target)
        if source and target and source != target:
            found.setdefault((source, target), []).append(item)
    return found


def cycles(graph: dict[tuple[str, str], list[Import]]) -> list[list[str]]:
    """Every strongly connected component with more than one node (Tarjan)."""
    successors: dict[str, set[str]] = {}
    for source, target in graph:
        successors.setdefault(source, set()).add(target)
        successors.setdefault(target, set())
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(successors[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(successors):
        if node not in index:
            visit(node)
    return components


def describe(graph: dict[tuple[str, str], list[Import]], component: list[str]) -> str:
    lines = [f"cycle between {', '.join(component)}:"]
    for (source, target), items in sorted(graph.items()):
        if source in component and target in component:
            lines += [f"  {source} -> {target}: {item}" for item in dict.fromkeys(map(str, items))]
    return "\n".join(lines)


def test_the_walk_sees_the_whole_package():
    parts = {part(item.source) for item in ALL_IMPORTS}
    assert set(LAYERS) | {"app", "cli"} <= parts
    assert {"config", "errors", "logs", "metrics", "hooks"} <= {part(i.target) for i in ALL_IMPORTS}
    assert part("explainserve.methods.explain.cam") == "methods" and part("torch") is None
    assert method_part("explainserve.methods.explain.cam") == "methods.explain"
    assert method_part("explainserve.methods.base") == "methods"
    # relative imports are resolved against the importing package
    assert absolute("explainserve.api", 1, "inputs") == "explainserve.api.inputs"
    assert absolute("explainserve.methods.explain", 2, "base") == "explainserve.methods.base"
    assert absolute("explainserve.api", 2, None) == "explainserve"


def test_no_cycle_between_the_servers_parts():
    graph = edges(part)
    found = cycles(graph)
    assert not found, "\n".join(describe(graph, component) for component in found)


def test_no_cycle_between_the_method_features_and_the_methods_base():
    graph = edges(method_part)
    found = cycles(graph)
    assert not found, "\n".join(describe(graph, component) for component in found)


def test_the_api_layer_imports_no_torch_torchvision_or_scipy():
    offending = [str(item) for item in ALL_IMPORTS if part(item.source) == "api"
                 and item.target.split(".")[0] in NUMERIC]
    assert not offending, "the api layer must not import torch math:\n" + "\n".join(
        dict.fromkeys(offending))


def test_imports_only_go_down_the_layers():
    rank = {layer: depth for depth, layer in enumerate(LAYERS)}
    upward = []
    for item in ALL_IMPORTS:
        source, target = part(item.source), part(item.target)
        if source is None or target is None or source == target:
            continue
        if target in ENTRY_POINTS and source not in ENTRY_POINTS:
            upward.append(f"{item} (nothing may import the entry point {target})")
        elif source in LEAVES and target not in LEAVES:
            upward.append(f"{item} (leaf {source} imports layer {target})")
        elif source in rank and target in rank and rank[target] < rank[source]:
            upward.append(f"{item} ({source} is below {target})")
    assert not upward, "imports against the layer order:\n" + "\n".join(dict.fromkeys(upward))


@pytest.mark.parametrize("leaf", LEAVES)
def test_each_leaf_exists_as_a_top_level_module(leaf):
    assert (PACKAGE / f"{leaf}.py").is_file()


# A name may repeat where its folder says what it belongs to: one wire module, engine and
# command per feature (api/explain.py, engine/explain.py, cli/explain.py), one registry and
# builtin list per registered kind (methods/<feature>/registry.py, models/registry.py).
SHARED_NAMES = {"__init__", "builtin", "registry", *METHOD_FEATURES}


def test_module_names_repeat_only_where_the_folder_says_which_feature():
    by_name: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        by_name.setdefault(path.stem, []).append(str(path.relative_to(PACKAGE)))
    repeated = {name: sorted(paths) for name, paths in by_name.items()
                if len(paths) > 1 and name not in SHARED_NAMES}
    assert not repeated, f"module names that repeat across folders: {repeated}"
