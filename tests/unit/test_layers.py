"""The package's layers: imports flow one way (docs/architecture.md), and no module imports
itself back through others. Read from the source (AST), so an import inside a function or under
`if TYPE_CHECKING:` counts as much as one at the top."""

from __future__ import annotations

import shutil
from pathlib import Path

from support.layers import check_layers, import_graph
from support.repo import REPO_ROOT

PACKAGE = REPO_ROOT / "infra" / "cachelayer"


def test_every_import_flows_down_and_no_module_imports_itself_back() -> None:
    assert check_layers(PACKAGE) == []


def test_every_subpackage_has_a_layer() -> None:
    from support.layers import LAYERS

    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages == set(LAYERS) - {""}, "give a new subpackage its place in support/layers.py LAYERS"


def test_the_graph_sees_imports_inside_functions_and_type_checking_blocks() -> None:
    graph = import_graph(PACKAGE)
    # render/hosts.py ships ops/health.py to the hosts: it reads the file, it never imports it.
    assert "cachelayer.ops.health" not in graph["cachelayer.render.hosts"]
    assert "cachelayer.config.settings" in graph["cachelayer.plan.topology"]


def _planted(tmp_path: Path, module: str, line: str) -> list[str]:
    """What the checker reports on a copy of the package with `line` added to `module`, beyond
    what it reports on the package itself."""
    copy = tmp_path / "cachelayer"
    shutil.copytree(PACKAGE, copy, symlinks=True)
    target = copy / module
    target.write_text(target.read_text() + f"\n{line}\n")
    before = set(check_layers(PACKAGE))
    return [problem for problem in check_layers(copy) if problem not in before]


def test_an_upward_import_is_caught(tmp_path: Path) -> None:
    problems = _planted(tmp_path, "config/checks.py", "from cachelayer.plan.acl_policy import app_rules")
    assert problems == ["cachelayer.config.checks imports cachelayer.plan.acl_policy: config may import only root, cdn"]


def test_a_type_only_import_into_a_sibling_is_caught(tmp_path: Path) -> None:
    problems = _planted(tmp_path, "components/credentials.py", "if TYPE_CHECKING:\n    from cachelayer.ops.target import Target")
    assert [p.split(":")[0] for p in problems] == ["cachelayer.components.credentials imports cachelayer.ops.target"]


def test_a_cycle_inside_a_layer_is_caught(tmp_path: Path) -> None:
    problems = _planted(tmp_path, "plan/topology.py", "def _late() -> None:\n    from cachelayer.plan import advice")
    assert len(problems) == 1 and problems[0].startswith("import cycle: "), problems
    assert "cachelayer.plan.advice" in problems[0] and "cachelayer.plan.topology" in problems[0]
