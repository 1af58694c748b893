"""The sentinel-topology start script: rendered content, POSIX sh lint, and its decision run for
real against a stand-in `redis-cli` (canned sentinel answers) and a stand-in server that
records the arguments it was exec'd with."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from cachelayer.config.settings import Settings, load_settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.plan.topology import Topology, build_topology
from cachelayer.render.hosts import render_node_start
from cachelayer.render.nodes import Passwords, render_auth_conf, render_node_start_script, sandbox_paths

PASSWORDS = Passwords("app-pw-0123456789", "admin-pw-0123456789", "repl-pw-0123456789", "sentinel-pw-0123456789",
                      "monitor-pw-0123456789")
FAKE_CLI = """#!/bin/sh
# Answers `sentinel master <group>` from $FAKE_DIR/answer-<port>; no file: refused.
echo "$*" >> "$FAKE_DIR/argv"
while [ $# -gt 0 ]; do
    [ "$1" = "-p" ] && port="$2"
    shift
done
echo "$REDISCLI_AUTH" > "$FAKE_DIR/auth-$port"
if [ ! -e "$FAKE_DIR/answer-$port" ]; then
    echo "Could not connect to Redis at 127.0.0.1:$port: Connection refused" >&2
    exit 1
fi
cat "$FAKE_DIR/answer-$port"
"""
FAKE_SERVER = """#!/bin/sh
echo "$*" > "$FAKE_DIR/exec"
"""


def stack_settings(stack: str, **redis: object) -> Settings:
    config = read_stack_config(stack)
    config["redis"] = {**config["redis"], "topology": "sentinel", **redis}
    return load_settings(config, stack)


def test_rendered_for_a_planned_master_and_a_planned_replica() -> None:
    settings = stack_settings("prod")  # TLS on
    topology = build_topology(settings)
    master, replica = topology.nodes[0], topology.nodes[3]
    master_text, replica_text = render_node_start(settings, topology, master), render_node_start(settings, topology, replica)
    assert 'PLANNED=""' in master_text
    assert f'PLANNED="{master.address} {master.port}"' in replica_text
    assert f'SELF="{replica.address} {replica.port}"' in replica_text
    for text, node in ((master_text, master), (replica_text, replica)):
        for sentinel in topology.sentinels:
            assert f"ask {sentinel.address} {sentinel.port} &" in text
        assert f"sentinel master {node.group}" in text
        assert "redis-cli --user replication --tls --cacert /etc/redis/tls/ca.crt" in text
        assert f"AUTH_FILE=/etc/redis/{node.name}-auth.conf" in text
        assert f"MARKER=/var/lib/redis/{node.port}/.cachelayer-started" in text
        assert f"exec /usr/bin/redis-server /etc/redis/{node.name}.conf --replicaof no one" in text
        assert "MAJORITY=2" in text and "WAIT_SECONDS=60" in text


def test_is_posix_sh_and_passes_shellcheck(tmp_path: Path) -> None:
    assert shutil.which("shellcheck"), "shellcheck is required (apt-get install shellcheck)"
    settings = stack_settings("prod")
    topology = build_topology(settings)
    for node in topology.nodes:
        script = tmp_path / f"{node.name}-start.sh"
        script.write_text(render_node_start(settings, topology, node))
        lint = subprocess.run(["shellcheck", "--shell=sh", str(script)], capture_output=True, text=True)
        assert lint.returncode == 0, f"{node.name}:\n{lint.stdout}"
        syntax = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert syntax.returncode == 0, syntax.stderr


# --- the decision, run for real -----------------------------------------------------------------


def rig(
    tmp_path: Path, node_index: int, answers: dict[int, str], started_before: bool, data: str = "", wait: int = 1
) -> tuple[Path, Topology]:
    """Render node `node_index`'s script (dev stack, 1 s wait) into tmp_path with the fakes;
    `data` names a file or directory of Redis's to put in the data dir."""
    settings = stack_settings("dev")
    topology = build_topology(settings)
    node = topology.nodes[node_index]
    paths = sandbox_paths(tmp_path, node.name)
    Path(paths.data_dir).mkdir(parents=True)
    Path(paths.auth_file).write_text(render_auth_conf(node.name, PASSWORDS))
    if started_before:
        Path(paths.started_marker).touch()
    if data == "dump.rdb":
        (Path(paths.data_dir) / data).write_bytes(b"REDIS0010")
    elif data:
        (Path(paths.data_dir) / data).mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("redis-cli", FAKE_CLI), ("fake-server", FAKE_SERVER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    for index, answer in answers.items():
        (tmp_path / f"answer-{topology.sentinels[index].port}").write_text(answer)
    script = Path(paths.start_script)
    script.write_text(render_node_start_script(settings, topology, node, paths, [str(bin_dir / "fake-server")], wait))
    return script, topology


def run(tmp_path: Path, script: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "FAKE_DIR": str(tmp_path)}
    env.pop("REDISCLI_AUTH", None)
    return subprocess.run(["sh", str(script)], capture_output=True, text=True, env=env, timeout=30)


def view(address: str, port: int, epoch: int, flags: str = "master") -> str:
    """What `redis-cli sentinel master redis-master-1` prints (field/value lines, abridged)."""
    fields = {"name": "redis-master-1", "ip": address, "port": port, "runid": "abc", "flags": flags,
              "num-slaves": 1, "config-epoch": epoch, "quorum": 2}
    return "".join(f"{key}\n{value}\n" for key, value in fields.items())


# Node 3, the planned replica of node 0, promoted in epoch 1; node 0 as master, in epochs 0 and 2.
NEW_MASTER = view("172.30.70.13", 7003, 1)
NODE_0 = view("172.30.70.10", 7000, 0)
NODE_0_LATER = view("172.30.70.10", 7000, 2)


@pytest.mark.parametrize(
    ("node_index", "answers", "started_before", "expected"),
    [
        # (a) the old master after a failover: a replica of the new one, marker or not.
        (0, {0: NEW_MASTER, 1: NEW_MASTER, 2: NEW_MASTER}, True, "--replicaof 172.30.70.13 7003"),
        (0, {0: NEW_MASTER}, True, "--replicaof 172.30.70.13 7003"),
        # ... even while the other two have not heard of the failover yet: the newest epoch wins,
        # not the majority of answers.
        (0, {0: NEW_MASTER, 1: NODE_0, 2: NODE_0}, True, "--replicaof 172.30.70.13 7003"),
        # (b) the promoted master restarted within down-after: still the master.
        (3, {0: NEW_MASTER, 1: NEW_MASTER, 2: NEW_MASTER}, True, "--replicaof no one"),
        (3, {0: NEW_MASTER, 1: NEW_MASTER}, True, "--replicaof no one"),
        # A tie (one epoch, two masters) goes to the other node: a replica can be reconfigured,
        # a second master loses writes.
        (3, {0: NEW_MASTER, 1: view("172.30.70.10", 7000, 1)}, True, "--replicaof 172.30.70.10 7000"),
        # The newest configuration against a stale one.
        (0, {0: NODE_0_LATER, 1: NODE_0_LATER, 2: NEW_MASTER}, True, "--replicaof no one"),
        (3, {0: NODE_0_LATER, 1: NEW_MASTER, 2: NEW_MASTER}, True, "--replicaof 172.30.70.10 7000"),
        # First start, no sentinel: the planned role.
        (3, {}, False, "--replicaof 172.30.70.10 7000"),
        (0, {}, False, "--replicaof no one"),
        # Error replies are no answer.
        (3, {0: "NOPERM this user has no permissions\n", 1: "\n"}, False, "--replicaof 172.30.70.10 7000"),
    ],
)
def test_picks_the_role_the_sentinels_give(
    tmp_path: Path, node_index: int, answers: dict[int, str], started_before: bool, expected: str
) -> None:
    script, topology = rig(tmp_path, node_index, answers, started_before)
    result = run(tmp_path, script)
    assert result.returncode == 0, result.stderr
    node = topology.nodes[node_index]
    assert (tmp_path / "exec").read_text().strip() == f"{sandbox_paths(tmp_path, node.name).conf_file} {expected}"
    assert Path(sandbox_paths(tmp_path, node.name).started_marker).exists()
    # The sentinels were asked with the replication password, from the environment, never argv.
    assert {p.read_text().strip() for p in tmp_path.glob("auth-*")} == {PASSWORDS.replication}
    argv = (tmp_path / "argv").read_text()
    assert "sentinel master redis-master-1" in argv and PASSWORDS.replication not in argv


def test_a_node_that_ran_before_never_guesses(tmp_path: Path) -> None:
    # One sentinel saying "you are master" is no majority; none answering is no answer.
    for case, answers in enumerate(({}, {0: NODE_0})):
        workdir = tmp_path / str(case)
        workdir.mkdir()
        script, _ = rig(workdir, 0, answers, started_before=True)
        result = run(workdir, script)
        assert result.returncode == 1
        assert "not starting" in result.stderr and "redis-master-1" in result.stderr
        assert not (workdir / "exec").exists(), "the server was started on a guess"


@pytest.mark.parametrize("data", ["dump.rdb", "appendonlydir"])
def test_a_node_with_data_but_no_marker_ran_before_and_never_guesses(tmp_path: Path, data: str) -> None:
    """A node deployed before the start script existed has data and no marker: after a
    failover its planned role may be wrong, so it waits for the sentinels like any other."""
    script, _ = rig(tmp_path, 0, {}, started_before=False, data=data)
    result = run(tmp_path, script)
    assert result.returncode == 1, result.stderr
    assert "not starting" in result.stderr
    assert not (tmp_path / "exec").exists(), "the server was started on a guess"


def test_a_master_the_sentinels_see_down_waits_for_news_before_starting_as_master(tmp_path: Path) -> None:
    """Named master but flagged down: a failover may be under way, or the sentinel that knows of
    it did not answer. It waits for the news to settle (here 2 s of a 4 s wait), then starts."""
    down = view("172.30.70.10", 7000, 0, flags="master,s_down,o_down")
    script, _ = rig(tmp_path, 0, {0: down, 1: down}, started_before=True, wait=4)
    began = time.monotonic()
    result = run(tmp_path, script)
    waited = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "exec").read_text().strip().endswith("--replicaof no one")
    assert waited >= 1, f"it started as master after {waited:.1f} s without waiting for news"
