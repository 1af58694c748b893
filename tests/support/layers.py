"""The layers of `infra/cachelayer` and a checker that reads every import from the source.

A module may import its own subpackage and the layers below it. `components` (Pulumi) and
`ops` (live deployments) sit side by side: neither imports the other. Nothing imports `cli`.
"""

from __future__ import annotations

import ast
from pathlib import Path

# Subpackage -> the subpackages its modules may import ("" is the package root:
# errors, fields, paths). Listed bottom-up.
LAYERS: dict[str, frozenset[str]] = {
    "": frozenset(),
    "cdn": frozenset({""}),
    "config": frozenset({"", "cdn"}),
    "plan": frozenset({"", "cdn", "config"}),
    "render": frozenset({"", "cdn", "config", "plan"}),
    "components": frozenset({"", "cdn", "config", "plan", "render"}),
    "ops": frozenset({"", "cdn", "config", "plan", "render"}),
    "sandbox": frozenset({"", "cdn", "config", "plan", "render", "ops"}),
    "cli": frozenset({"", "cdn", "config", "plan", "render", "ops", "sandbox"}),
}
# `python -m cachelayer` is the CLI's entry point: the one module allowed to import cli.
ENTRY_POINTS = {"cachelayer.__main__"}


def _module_name(package: Path, path: Path) -> str:
    parts = [package.name, *path.relative_to(package).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    # `from cachelayer.ops import health` imports the module cachelayer.ops.health.
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_graph(package: Path) -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports, wherever the import sits."""
    files = {_module_name(package, path): path for path in sorted(package.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges.update(
                    name for name in _imported(node, module, path.name == "__init__.py")
                    if name in files and name != module
                )
        graph[module] = edges
    return graph


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else ""


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
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
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def check_layers(package: Path) -> list[str]:
    """One line per import that goes up or sideways, and one per import cycle."""
    graph = import_graph(package)
    problems = []
    for module, imports in sorted(graph.items()):
        if module in ENTRY_POINTS:
            continue
        layer = _layer(module)
        # A subpackage's __init__ belongs to its layer; the root __init__ imports nothing.
        allowed = LAYERS[layer] | {layer}
        for imported in sorted(imports):
            if _layer(imported) not in allowed or (imported.split(".")[:2] == [package.name, "cli"] and layer != "cli"):
                names = ", ".join(name or "root" for name in LAYERS if name in LAYERS[layer]) or "its own modules"
                problems.append(f"{module} imports {imported}: {layer or 'root'} may import only {names}")
    problems += [f"import cycle: {' -> '.join(component)}" for component in _cycles(graph)]
    return problems
