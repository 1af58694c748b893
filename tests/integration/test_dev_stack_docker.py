"""The dev stack on a real Docker engine: the containers, network, volumes and uploads exactly as
the program declares them (run under the mocks) replayed on Debian's dockerd
(tests/support/docker_replay.py says why a replay), then the cluster checked from the outside
with `cachelayer health` and used through the cache library, as a developer would.

A test copy of Pulumi.dev.yaml names the local image (no registry is reachable here: the image
is the rehearsal's Debian root filesystem shaped like the official `redis` image,
tests/support/docker_engine.py) and its own ports, network and subnet."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from cachelayer.cli.app import main
from cachelayer.config.stack_file import read_stack_config
from platform_cache import Cache
from rehearsal.hosts import build_image, image_key
from support.docker_engine import DockerEngine, docker_engine
from support.docker_replay import container_logs, health_status, replay
from support.program_harness import ProgramRun, run_program, unwrap

pytestmark = [pytest.mark.integration, pytest.mark.netns]

VERSION = "7.0.15-local"  # the Debian redis-server inside the local image
HAPROXY_IMAGE = "haproxy:2.6-local"  # Debian's haproxy 2.6, shaped like the official image
BASE_PORT = 7650
SUBNET = "172.30.76.0/24"


def dev_config(**redis: Any) -> dict[str, Any]:
    shipped = read_stack_config("dev")
    return {
        "redis": {**shipped["redis"], "version": VERSION, "base_port": BASE_PORT, **redis},
        "docker": {**shipped["docker"], "network_name": "cachelayer-devtest", "subnet": SUBNET},
    }


@pytest.fixture(scope="module")
def engine() -> Iterator[DockerEngine]:
    with docker_engine() as running:
        rootfs = build_image().rootfs
        running.docker("tag", running.ensure_image(rootfs, image_key()), f"redis:{VERSION}")
        running.docker("tag", running.ensure_load_balancer_image(rootfs, image_key()), HAPROXY_IMAGE)
        yield running


@pytest.fixture(scope="module")
def deployed(engine: DockerEngine) -> Iterator[tuple[ProgramRun, dict[str, str]]]:
    run = run_program("dev", config_overrides=dev_config())
    outputs = replay(run, engine)
    yield run, outputs


def export(run: ProgramRun, name: str) -> Any:
    return unwrap(run.exports[name].value)


def test_every_container_starts_healthy_and_the_bootstrap_forms_the_cluster(
    engine: DockerEngine, deployed: tuple[ProgramRun, dict[str, str]]
) -> None:
    run, outputs = deployed
    names = [n["name"] for n in export(run, "nodes")]
    assert len(names) == 6
    deadline = time.monotonic() + 60
    while (states := {name: health_status(engine, name) for name in names}) != dict.fromkeys(names, "healthy"):
        assert time.monotonic() < deadline, {n: (s, container_logs(engine, n)) for n, s in states.items() if s != "healthy"}
        time.sleep(1)
    assert "cluster" in outputs["redis-bootstrap"], outputs["redis-bootstrap"]
    running = engine.docker("ps", "--format", "{{.Names}} {{.Ports}}").stdout
    for index in range(len(names)):
        assert f"127.0.0.1:{BASE_PORT + index}->{BASE_PORT + index}/tcp" in running, running


def test_cachelayer_health_from_outside_sees_a_healthy_cluster(
    deployed: tuple[ProgramRun, dict[str, str]], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run, _ = deployed
    first = export(run, "nodes")[0]["endpoint"]
    monkeypatch.setenv("REDIS_ADMIN_PASSWORD", export(run, "admin_password"))
    deadline = time.monotonic() + 60
    while True:
        code = main(["health", "--stack", "dev", "--seed", first, "--json"])
        document = json.loads(capsys.readouterr().out)
        if code == 0 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert code == 0, document
    assert document["ok"] is True


def test_the_cache_library_reads_and_writes_through_the_stack_output(deployed: tuple[ProgramRun, dict[str, str]]) -> None:
    run, _ = deployed
    cache = Cache.from_stack_output(export(run, "connection"))
    try:
        assert cache.set("course:42", {"title": "Intro to Redis"}, ttl=60, tags=["catalogue"])
        assert cache.get("course:42") == {"title": "Intro to Redis"}
        assert cache.invalidate_by_tags(["catalogue"]) >= 1
        assert cache.get("course:42") is None
    finally:
        cache.close()


def test_every_node_keeps_its_data_and_its_place_when_the_engine_restarts_them(
    engine: DockerEngine, deployed: tuple[ProgramRun, dict[str, str]]
) -> None:
    """The data volumes: nodes.conf, the RDB and the AOF live there, so six containers restarted
    at once come back as the same cluster with the same keys."""
    run, _ = deployed
    names = [n["name"] for n in export(run, "nodes")]
    keys = {f"kept:{i}": str(i) for i in range(200)}
    cache = Cache.from_stack_output(export(run, "connection"))
    try:
        assert cache.mset(keys, ttl=600)
    finally:
        cache.close()
    engine.docker("restart", "--time", "30", *names)
    deadline = time.monotonic() + 90
    while (states := {name: health_status(engine, name) for name in names}) != dict.fromkeys(names, "healthy"):
        assert time.monotonic() < deadline, {n: (s, container_logs(engine, n)) for n, s in states.items() if s != "healthy"}
        time.sleep(1)
    cache = Cache.from_stack_output(export(run, "connection"))
    try:
        deadline = time.monotonic() + 60
        while (found := cache.mget(list(keys))) != keys:
            assert time.monotonic() < deadline, f"{sum(v is not None for v in found.values())} of {len(keys)} keys back"
            time.sleep(1)
    finally:
        cache.close()


def test_the_sentinel_topology_forms_its_groups_and_fails_over_on_docker_and_haproxy_follows(
    engine: DockerEngine,
) -> None:
    """Sentinel topology: nodes start through the rendered start script (which asks the
    sentinels, then execs the image's entrypoint), sentinels rewrite their own config inside the
    container, and a stopped master is replaced by its replica. The HAProxy container sends a
    plain client to the group's master before and after, and its metrics endpoint answers."""
    run = run_program("dev", config_overrides={
        **dev_config(topology="sentinel", base_port=BASE_PORT + 20),
        "docker": {**read_stack_config("dev")["docker"], "network_name": "cachelayer-devtest-s", "subnet": "172.30.77.0/24"},
        "load_balancer": {"image": HAPROXY_IMAGE, "write_base_port": 7690, "read_base_port": 7695, "exporter_port": 9690},
    })  # fmt: skip
    outputs = replay(run, engine)
    assert "sentinel ok" in outputs["redis-bootstrap"], outputs["redis-bootstrap"]
    sentinel = export(run, "sentinels")[0]
    host, port = sentinel.rsplit(":", 1)
    password = unwrap(run.exports["admin_password"].value)
    watcher = redis.Redis(host=host, port=int(port), username="admin", password=password, decode_responses=True)
    group = "redis-master-1"
    master = watcher.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", group)
    connection = export(run, "connection")
    (write,) = connection["load_balancers"][0]["write"]
    assert write == "127.0.0.1:7690", connection["load_balancers"]
    # HAProxy's checks began while the bootstrap was still settling the roles: a node that said
    # role:master then stays UP until `fall` checks in a row (2 x 1 s) see it a replica.
    deadline = time.monotonic() + 15
    while _port_behind(write, connection["password"]) != int(master[1]) or _active_write_servers(9690) != 1:
        assert time.monotonic() < deadline, container_logs(engine, "redis-haproxy")
        time.sleep(0.5)

    name = next(n["name"] for n in export(run, "nodes") if n["endpoint"] == f"{master[0]}:{master[1]}")
    engine.docker("stop", "--time", "30", name)
    deadline = time.monotonic() + 90
    while (promoted := watcher.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", group)) == master:
        assert time.monotonic() < deadline, container_logs(engine, f"redis-sentinel-{port}")
        time.sleep(1)
    rewritten = engine.docker("exec", f"redis-sentinel-{port}", "sh", "-c", "cat /data/*.conf", check=False)
    assert "# Generated by CONFIG REWRITE" in rewritten.stdout, rewritten.stdout + rewritten.stderr + container_logs(engine, f"redis-sentinel-{port}")
    # The same address now reaches the promoted replica (HAProxy checks each node's role every second).
    deadline = time.monotonic() + 30
    while _port_behind(write, connection["password"]) != int(promoted[1]):
        assert time.monotonic() < deadline, container_logs(engine, "redis-haproxy")
        time.sleep(0.5)


def _active_write_servers(exporter_port: int) -> int:
    """Group 1's write side: how many servers HAProxy's exporter counts as active."""
    with urllib.request.urlopen(f"http://127.0.0.1:{exporter_port}/metrics", timeout=5) as metrics:
        text = metrics.read().decode()
    prefix = 'haproxy_backend_active_servers{proxy="redis-master-1-write"} '
    return int(next(line for line in text.splitlines() if line.startswith(prefix)).removeprefix(prefix))


def _port_behind(address: str, password: str) -> int | None:
    """The port of the node a plain client reaches through `address` once it has written a key
    there (None when it cannot write: no master behind it yet)."""
    host, port = address.rsplit(":", 1)
    client = redis.Redis(host=host, port=int(port), username="app", password=password, socket_timeout=3)
    try:
        client.set("written:through:haproxy", "1")
        return int(client.info("server")["tcp_port"])
    except redis.RedisError:
        return None
    finally:
        client.close()
