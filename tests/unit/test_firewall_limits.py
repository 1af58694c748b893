"""The hosts' nftables ruleset with the per-source connection limits (issue 24, part 2): what
`nft` itself makes of the rendered file. The booted-host proof that it throttles a flood and
spares the application and the peers is tests/rehearsal/test_connection_limits.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cachelayer.config.checks import INT_RANGES
from cachelayer.config.settings import Settings, load_settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.plan.topology import build_topology
from cachelayer.render.hosts import host_plans, render_nftables


def prod_settings(topology: str = "cluster", hosts: dict[str, Any] | None = None) -> Settings:
    config = read_stack_config("prod")
    config["redis"] = {**config["redis"], "topology": topology}
    config["hosts"] = {**config["hosts"], **(hosts or {})}
    return load_settings(config, "prod")


def ruleset(settings: Settings, host: int = 0) -> str:
    topology = build_topology(settings)
    return render_nftables(settings, topology, host_plans(settings, topology)[host])


def nft(args: list[str], path: Path) -> subprocess.CompletedProcess[str]:
    """nft in a network namespace of its own (`unshare -n`): nothing touches this machine's rules."""
    assert shutil.which("nft"), "nft is required (scripts/setup.sh installs nftables)"
    assert os.geteuid() == 0, "nft needs root (CAP_NET_ADMIN in a new network namespace)"
    return subprocess.run(["unshare", "-n", "nft", *args, "-f", str(path)], capture_output=True, text=True)


def loaded(text: str, tmp_path: Path) -> str:
    """The ruleset as the kernel holds it after loading `text` (nft list of its table)."""
    path = tmp_path / "rules.nft"
    path.write_text(text)
    script = tmp_path / "load.sh"
    script.write_text(f"set -e\nnft -f {path}\nnft list table inet cachelayer_redis\n")
    result = subprocess.run(["unshare", "-n", "sh", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


VARIANTS = {
    "cluster": lambda: prod_settings(),
    "sentinel": lambda: prod_settings("sentinel"),
    "ipv6-machines-and-app-network": lambda: prod_settings(hosts={
        "machines": [{**m, "address": f"2001:db8::{11 + i}"} for i, m in enumerate(read_stack_config("prod")["hosts"]["machines"])],
        "app_networks": ["2001:db8:1::/64", "198.51.100.0/24"],
    }),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_ruleset_passes_nft_check(variant: str, tmp_path: Path) -> None:
    path = tmp_path / "rules.nft"
    path.write_text(ruleset(VARIANTS[variant]()))
    result = nft(["-c"], path)
    assert result.returncode == 0, f"{variant}: {result.stderr}"


def test_a_broken_ruleset_fails_the_same_check(tmp_path: Path) -> None:
    # The check above can fail: the same file with a rate nft refuses.
    path = tmp_path / "rules.nft"
    path.write_text(ruleset(prod_settings()).replace("limit rate over 100/second", "limit rate over 0/second"))
    assert nft(["-c"], path).returncode != 0


def test_peers_are_the_machines_only_and_pass_before_any_limit() -> None:
    text = ruleset(prod_settings())
    peers = re.search(r"set peers_v4 \{[^}]*elements = \{ ([^}]*) \}", text)
    assert peers is not None
    assert peers.group(1).split(", ") == [f"192.0.2.{11 + i}" for i in range(6)]  # not 198.51.100.0/24
    chain = text[text.index("chain admitted") : text.index("chain input")]
    peer_accept = chain.index("ip saddr @peers_v4 counter accept")
    assert peer_accept < chain.index("update @new_connections_v4") < chain.index("add @open_connections_v4")
    # Only new connections are counted against the bucket; established traffic passes first.
    assert chain.index("ct state != new accept") < peer_accept


def test_allowed_sources_and_scrapers_go_through_the_limits_others_are_dropped() -> None:
    chain = ruleset(prod_settings()).split("chain input", 1)[1]
    assert "ip saddr @allowed_v4 goto admitted" in chain
    assert "tcp dport @exporter_ports ip saddr @scrape_v4 goto admitted" in chain
    assert " accept\n" not in chain.replace('iif "lo" accept\n', "").replace("tcp dport != @redis_ports accept\n", "")


def test_the_stack_settings_reach_the_loaded_ruleset(tmp_path: Path) -> None:
    text = loaded(ruleset(prod_settings(hosts={"connection_rate_per_source": 7, "connection_burst_per_source": 33,
                                               "connections_per_source": 12})), tmp_path)  # fmt: skip
    assert "ip saddr limit rate over 7/second burst 33 packets" in text
    assert "ip6 saddr limit rate over 7/second burst 33 packets" in text
    assert "ip saddr . tcp dport ct count over 12" in text and "ip6 saddr . tcp dport ct count over 12" in text


def test_the_bounds_of_the_settings_load_unchanged_into_the_kernel(tmp_path: Path) -> None:
    # nft wraps a burst or count above 2**32 - 1 silently; the highest values the settings accept
    # must come back as written, the lowest too.
    for key in ("connection_rate_per_source", "connection_burst_per_source", "connections_per_source"):
        assert INT_RANGES[f"hosts.{key}"].high <= 2**32 - 1
    high = {key.split(".")[1]: INT_RANGES[key].high for key in INT_RANGES if key.startswith("hosts.conn")}
    text = loaded(ruleset(prod_settings(hosts=high)), tmp_path)
    assert f"limit rate over {high['connection_rate_per_source']}/second burst {2**32 - 1} packets" in text
    assert f"ct count over {2**32 - 1} }}" in text
    low = loaded(ruleset(prod_settings(hosts={"connection_rate_per_source": 1, "connection_burst_per_source": 1,
                                              "connections_per_source": 1})), tmp_path)  # fmt: skip
    assert "limit rate over 1/second burst 1 packets" in low and "ct count over 1 }" in low
