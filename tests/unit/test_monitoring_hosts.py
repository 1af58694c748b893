"""The exporter units and files the hosts receive, checked by the programs that read them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cachelayer.config.settings import Settings, load_settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.plan.advice import settings_warnings
from cachelayer.plan.topology import build_topology
from cachelayer.render.monitoring import render_exporter_unit, render_password_file, stack_targets


def prod(topology: str = "cluster", **monitoring: Any) -> Settings:
    config = read_stack_config("prod")
    config["redis"] = {**config["redis"], "topology": topology}
    config["monitoring"] = monitoring
    return load_settings(config, "prod")


@pytest.mark.parametrize("topology", ["cluster", "sentinel"])
def test_exporter_units_pass_systemd_analyze_verify(topology: str, tmp_path: Path) -> None:
    assert shutil.which("systemd-analyze"), "systemd-analyze is required"
    assert shutil.which("prometheus-redis-exporter"), "run scripts/setup.sh: it installs prometheus-redis-exporter"
    settings = prod(topology)
    targets = stack_targets(settings, build_topology(settings))
    paths = []
    for target in targets:
        path = tmp_path / f"{target.process}-exporter.service"
        path.write_text(render_exporter_unit(settings, target, "/etc/redis", "/etc/redis/tls/ca.crt"))
        paths.append(str(path))
    assert len(paths) == (6 if topology == "cluster" else 9)
    result = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert problems == [], "\n".join(problems)


def test_the_password_file_maps_the_uri_the_exporter_connects_to() -> None:
    settings = prod()
    target = stack_targets(settings, build_topology(settings))[0]
    assert render_password_file(target, "pw-0123456789abcdef", tls=True) == '{"rediss://127.0.0.1:7000": "pw-0123456789abcdef"}\n'


def test_monitoring_without_scrape_networks_is_warned() -> None:
    assert any("monitoring.scrape_networks" in w for w in settings_warnings(prod()))
    assert not any("monitoring.scrape_networks" in w for w in settings_warnings(prod(scrape_networks=["10.40.0.0/24"])))
