"""No test module may declare resources before mocks are set (the DESIGN.md trap)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.mock_order_check import resources_before_mocks

TESTS_DIR = Path(__file__).resolve().parent
TEST_MODULES = sorted(p for p in TESTS_DIR.rglob("*.py") if p.name != "mock_order_check.py")


@pytest.mark.parametrize("module", TEST_MODULES, ids=lambda p: str(p.relative_to(TESTS_DIR)))
def test_module_declares_no_resource_before_mocks(module: Path) -> None:
    violations = resources_before_mocks(module.read_text())
    assert not violations, f"{module.name}: resources declared at import, before set_mocks: {violations}"


def test_check_finds_a_resource_declared_before_mocks() -> None:
    source = """
import pulumi
import pulumi_docker as docker
from cachelayer.components.cdn import CloudflareCdn

network = docker.Network("net")
cdn = CloudflareCdn("cdn", args)
pulumi.runtime.set_mocks(MyMocks())
"""
    found = resources_before_mocks(source)
    assert [(v.line, v.call) for v in found] == [(6, "docker.Network"), (7, "CloudflareCdn")]


def test_check_accepts_resources_after_mocks_and_inside_tests() -> None:
    source = """
import pulumi
import pulumi_docker as docker

pulumi.runtime.set_mocks(MyMocks())
network = docker.Network("net")

def test_network():
    return docker.Network("inside")
"""
    assert resources_before_mocks(source) == []


def test_check_sees_resources_inside_module_level_blocks() -> None:
    source = """
import pulumi_random as random
if True:
    password = random.RandomPassword("p", length=20)
"""
    assert [v.call for v in resources_before_mocks(source)] == ["random.RandomPassword"]
