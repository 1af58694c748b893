"""Find test modules that declare Pulumi resources at import time, before mocks are set.

Such resources are registered with no mock monitor: they never resolve, and any test reading
them passes without checking anything (see DESIGN.md). A resource is a call to a class from a
provider SDK (pulumi_*) or from cachelayer.components, made at module level.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

RESOURCE_MODULE_PREFIXES = ("pulumi_", "cachelayer.components")


@dataclass(frozen=True)
class Violation:
    line: int
    call: str


def _resource_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(names imported from resource modules, aliases of resource modules themselves)."""
    names: set[str] = set()
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(RESOURCE_MODULE_PREFIXES):
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "cachelayer" and any(
            a.name == "components" for a in node.names
        ):
            modules.add("components")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(RESOURCE_MODULE_PREFIXES):
                    modules.add(alias.asname or alias.name.split(".")[0])
    return names, modules


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _calls_run_at_import(tree: ast.Module) -> list[ast.Call]:
    """Calls made while the module is imported: not inside functions, classes or lambdas."""
    calls: list[ast.Call] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            return
        if isinstance(node, ast.Call):
            calls.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return sorted(calls, key=lambda call: (call.lineno, call.col_offset))


def resources_before_mocks(source: str) -> list[Violation]:
    tree = ast.parse(source)
    names, modules = _resource_names(tree)
    mocks_set_at: int | None = None
    violations: list[Violation] = []
    for node in _calls_run_at_import(tree):
        callee = ast.unparse(node.func)
        if callee.endswith("set_mocks"):
            mocks_set_at = node.lineno if mocks_set_at is None else mocks_set_at
            continue
        is_resource = (isinstance(node.func, ast.Name) and node.func.id in names) or (
            isinstance(node.func, ast.Attribute) and _root_name(node.func) in modules
        )
        if is_resource and (mocks_set_at is None or node.lineno < mocks_set_at):
            violations.append(Violation(node.lineno, callee))
    return violations
