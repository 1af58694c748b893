"""The dev stack (Docker target) under mocks: the resource graph the program declares."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from cachelayer.config.settings import load_settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.plan.topology import build_topology
from cachelayer.render.nodes import docker_paths, render_bootstrap_script, render_node_start_script, render_redis_conf
from support.program_harness import ProgramRun, Recorded, contains_plain, is_secret_value, unwrap

CONTAINER = "docker:index/container:Container"
COMMAND = "command:local:Command"
PORTS = list(range(7000, 7006))


def containers(run: ProgramRun) -> dict[str, Recorded]:
    return {r.inputs["name"]: r for r in run.of_type(CONTAINER)}


def upload(container: Recorded, suffix: str) -> dict[str, Any]:
    """One uploaded file, secrets unwrapped (the secret tests look at the wire form)."""
    matches = [u for u in unwrap(container.inputs["uploads"]) if u["file"].endswith(suffix)]
    assert len(matches) == 1, f"{container.name}: expected one upload ending {suffix}, got {container.inputs['uploads']}"
    return matches[0]


def test_six_node_containers_named_after_their_port(dev_run: ProgramRun) -> None:
    assert sorted(containers(dev_run)) == [f"redis-{port}" for port in PORTS]


def test_image_is_pinned_and_used_by_every_container(dev_run: ProgramRun) -> None:
    (image,) = dev_run.of_type("docker:index/remoteImage:RemoteImage")
    assert image.inputs["name"] == "redis:7.2.5"
    for name, container in containers(dev_run).items():
        assert container.inputs["image"] == f"sha256:{image.name}", name


def test_ports_are_published_on_loopback_only(dev_run: ProgramRun) -> None:
    for port in PORTS:
        container = containers(dev_run)[f"redis-{port}"]
        assert container.inputs["ports"] == [{"internal": port, "external": port, "ip": "127.0.0.1"}], container.name


def test_each_node_has_its_own_volume_restart_policy_and_health_check(dev_run: ProgramRun) -> None:
    volumes = {r.inputs["name"] for r in dev_run.of_type("docker:index/volume:Volume")}
    assert len(volumes) == 6
    for port in PORTS:
        container = containers(dev_run)[f"redis-{port}"]
        (volume,) = container.inputs["volumes"]
        assert volume["containerPath"] == "/data" and volume["volumeName"] in volumes, container.name
        assert container.inputs["restart"] == "unless-stopped", container.name
        check = container.inputs["healthcheck"]["tests"]
        assert check[0] == "CMD-SHELL" and f"-p {port} ping" in check[1], container.name
    mounted = [c.inputs["volumes"][0]["volumeName"] for c in containers(dev_run).values()]
    assert len(set(mounted)) == 6, "two nodes share a data volume"


def test_containers_sit_on_the_stack_network_at_the_announced_address(dev_run: ProgramRun) -> None:
    (network,) = dev_run.of_type("docker:index/network:Network")
    assert network.inputs["ipamConfigs"] == [{"subnet": "172.30.70.0/24"}]
    for index, port in enumerate(PORTS):
        container = containers(dev_run)[f"redis-{port}"]
        (attachment,) = container.inputs["networksAdvanced"]
        assert attachment == {"name": network.inputs["name"], "ipv4Address": f"172.30.70.{10 + index}"}, container.name
        conf = upload(container, f"redis-{port}.conf")["content"]
        assert f"cluster-announce-ip 172.30.70.{10 + index}\n" in conf, container.name
        assert f"cluster-announce-port {port}\n" in conf and f"cluster-announce-bus-port {port + 10000}\n" in conf


def test_uploaded_redis_conf_is_the_core_rendering(dev_run: ProgramRun) -> None:
    settings = load_settings(read_stack_config("dev"), "dev")
    topology = build_topology(settings)
    for node in topology.nodes:
        container = containers(dev_run)[node.name]
        paths = docker_paths(node.name)
        assert container.inputs["command"] == ["redis-server", paths.conf_file], node.name
        expected = render_redis_conf(settings, topology, node, paths)
        assert upload(container, f"{node.name}.conf")["content"] == expected, node.name
        assert "maxmemory 2gb\n" in expected and "maxmemory-policy allkeys-lru\n" in expected


def test_secret_files_are_uploaded_as_secrets_readable_by_redis_only(dev_run: ProgramRun) -> None:
    for port in PORTS:
        container = containers(dev_run)[f"redis-{port}"]
        wire = container.inputs["uploads"]
        for suffix in (".acl", "-auth.conf"):
            item = upload(container, f"redis-{port}{suffix}")
            # Pulumi may lift the secret to the whole list; either way the file is never plain.
            assert is_secret_value(wire) or is_secret_value(item["content"]), f"{container.name}{suffix} is not secret"
            assert (item["owner"], item["group"], item["permissions"]) == ("999", "999", "0640")
        acl = unwrap(upload(container, ".acl")["content"])
        assert acl.startswith("user default off\n"), container.name


def test_cluster_create_runs_after_every_container_without_a_password_on_its_command_line(dev_run: ProgramRun) -> None:
    (bootstrap,) = dev_run.of_type(COMMAND)
    node_resources = {c.name for c in containers(dev_run).values()}
    assert node_resources <= set(dev_run.depends_on[bootstrap.name]), dev_run.depends_on[bootstrap.name]
    assert bootstrap.inputs["create"] == "docker exec -i --env REDISCLI_AUTH redis-7000 sh -s"
    environment = bootstrap.inputs["environment"]
    assert is_secret_value(environment), "REDISCLI_AUTH must reach the provider as a secret"
    assert list(unwrap(environment)) == ["REDISCLI_AUTH"]
    settings = load_settings(read_stack_config("dev"), "dev")
    expected = render_bootstrap_script(settings, build_topology(settings), "/usr/local/etc/redis/tls")
    assert bootstrap.inputs["stdin"] == expected
    endpoints = " ".join(f"172.30.70.{10 + i}:{p}" for i, p in enumerate(PORTS))
    assert f"--cluster create {endpoints} \\\n        --cluster-replicas 1 --cluster-yes" in expected


def test_cluster_create_reruns_when_the_node_set_changes(program: Any) -> None:
    six = program("dev")
    eight = program("dev", config_overrides={"redis": {"node_count": 8, "topology": "cluster"}})
    (before,) = six.of_type(COMMAND)
    (after,) = eight.of_type(COMMAND)
    assert before.inputs["triggers"] != after.inputs["triggers"]
    assert "172.30.70.17:7007" in after.inputs["triggers"]
    assert len(eight.of_type(CONTAINER)) == 8


def test_no_password_in_plain_text_in_any_registered_input(dev_run: ProgramRun) -> None:
    passwords = [f"generated-redis-credentials-{k}-0123456789abcdef" for k in ("app-password", "admin-password", "replication-password", "sentinel-password")]
    # The check means something only if clear passwords do reach resources (wrapped): the admin
    # one in REDISCLI_AUTH, the replication one in masterauth. The others travel as hashes only.
    for password in passwords[1:3]:
        assert any(contains_plain(unwrap(r.inputs), password) for r in dev_run.resources), f"{password} never used"
    for password in passwords:
        for resource in dev_run.resources:
            assert not contains_plain(resource.inputs, password), f"{resource.name} holds {password} in plain text"


def test_given_passwords_are_used_instead_of_generated_ones_and_stay_secret(program: Any) -> None:
    given = "a-given-app-password-of-32-chars!"
    run = program("dev", secrets={"app_password": given})
    generated = {r.name for r in run.of_type("random:index/randomPassword:RandomPassword")}
    assert "redis-credentials-app-password" not in generated
    assert "redis-credentials-admin-password" in generated
    for resource in run.resources:
        assert not contains_plain(resource.inputs, given), resource.name
    acl = unwrap(upload(containers(run)["redis-7000"], ".acl")["content"])
    assert given not in acl, "the ACL file must hold the hash, not the password"
    assert run.exports["connection"].secret and run.exports["connection"].value["password"] == given


def test_exports_name_the_endpoints_and_keep_credentials_secret(dev_run: ProgramRun) -> None:
    assert dev_run.exports["topology"].value == "cluster"
    assert [n["endpoint"] for n in dev_run.exports["nodes"].value] == [f"172.30.70.{10 + i}:{p}" for i, p in enumerate(PORTS)]
    assert dev_run.exports["published_endpoints"].value == [f"127.0.0.1:{p}" for p in PORTS]
    assert dev_run.exports["admin_password"].secret
    assert dev_run.exports["connection"].secret
    assert not dev_run.exports["nodes"].secret


def test_dev_declares_no_cdn_without_a_zone(dev_run: ProgramRun) -> None:
    assert not [r for r in dev_run.resources if r.type.startswith("cloudflare:")]
    assert "cdn_zone_id" not in dev_run.exports


def test_sentinel_topology_adds_three_sentinels_whose_config_is_written_once(program: Any) -> None:
    run = program("dev", config_overrides={"redis": {"topology": "sentinel"}})
    by_name = containers(run)
    sentinels = [by_name[f"redis-sentinel-{p}"] for p in (26379, 26380, 26381)]
    for sentinel in sentinels:
        assert sentinel.inputs["command"][-1] == "--sentinel", sentinel.name
        assert "uploads" in run.ignore_changes[sentinel.name], "sentinel.conf must not be replaced after Sentinel rewrote it"
        assert is_secret_value(sentinel.inputs["uploads"]), "sentinel.conf holds the sentinel password"
        (conf,) = unwrap(sentinel.inputs["uploads"])
        text = conf["content"]
        for group, port in (("redis-master-1", 7000), ("redis-master-2", 7001), ("redis-master-3", 7002)):
            assert f"sentinel monitor {group} 172.30.70.{10 + port - 7000} {port} 2\n" in text
    replica_conf = upload(by_name["redis-7003"], "redis-7003.conf")["content"]
    assert "cluster-enabled" not in replica_conf
    # The role is not in the config: each node's start script asks the sentinels for it.
    assert not any(line.startswith("replicaof") for line in replica_conf.splitlines())
    settings = load_settings(read_stack_config("dev") | {"redis": {**read_stack_config("dev")["redis"], "topology": "sentinel"}}, "dev")
    topology = build_topology(settings)
    for node in topology.nodes:
        paths = docker_paths(node.name)
        container = by_name[node.name]
        assert container.inputs["command"] == ["sh", paths.start_script], node.name
        start = upload(container, f"{node.name}-start.sh")
        assert start["content"] == render_node_start_script(
            settings, topology, node, paths, ["docker-entrypoint.sh", "redis-server"]
        ), node.name
        assert f"exec docker-entrypoint.sh redis-server {paths.conf_file} --replicaof no one" in start["content"]
        assert "ask 172.30.70.16 26379 &" in start["content"]
    (bootstrap,) = run.of_type(COMMAND)
    assert {s.name for s in sentinels} <= set(run.depends_on[bootstrap.name])
    assert "until sentinel_ready 172.30.70.16 26379 redis-master-1; do" in bootstrap.inputs["stdin"]


def test_sentinel_topology_adds_haproxy_from_the_official_image_with_its_ports_on_loopback(
    program: Any, tmp_path: Path
) -> None:
    run = program("dev", config_overrides={"redis": {"topology": "sentinel"}, "monitoring": {"enabled": True}})
    balancer = containers(run)["redis-haproxy"]
    images = {r.name: r.inputs["name"] for r in run.of_type("docker:index/remoteImage:RemoteImage")}
    assert images[balancer.inputs["image"].removeprefix("sha256:")] == "haproxy:2.6"
    assert balancer.inputs["command"] == ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
    published = [(p["internal"], p["external"], p["ip"]) for p in balancer.inputs["ports"]]
    assert published == [(p, p, "127.0.0.1") for p in (7100, 7200, 7101, 7201, 7102, 7202, 9101)]
    assert balancer.inputs["networksAdvanced"] == [{"name": "cachelayer-dev"}]
    # Its role check logs in as monitor: the file is a secret, the image's haproxy user's (uid 99) only.
    assert is_secret_value(balancer.inputs["uploads"])
    (config,) = unwrap(balancer.inputs["uploads"])
    assert (config["owner"], config["group"], config["permissions"]) == ("99", "99", "0640")
    assert "tcp-check send 'AUTH monitor generated-redis-credentials-monitor-password-" in config["content"]
    assert "server redis-7000 172.30.70.10:7000 check" in config["content"]
    nodes = {containers(run)[f"redis-{port}"].name for port in PORTS}
    assert nodes <= set(run.depends_on[balancer.name])
    assert run.delete_before_replace[balancer.name], "a fixed container name: the old one must go first"
    # Debian's haproxy (2.6, as the image) accepts the file as uploaded.
    (tmp_path / "haproxy.cfg").write_text(config["content"])
    checked = subprocess.run(["haproxy", "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    connection = unwrap(run.exports["connection"].value)
    assert connection["load_balancers"][0] == {
        "group": "redis-master-1", "write": ["127.0.0.1:7100"], "read": ["127.0.0.1:7200"]
    }
    # The platform's Prometheus scrapes its exporter (job cachelayer-haproxy, docs/load-balancer.md).
    assert run.exports["monitoring_load_balancer_targets"].value == [
        {"targets": ["127.0.0.1:9101"], "labels": {"stack": "dev", "kind": "load_balancer"}}
    ]


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"redis": {"node_count": 5}}, "redis.node_count"),
        ({"redis": {"maxmemory_polcy": "allkeys-lru"}}, "redis.maxmemory_polcy"),
        ({"redis": {"topology": "sentinel", "cluster_enabled": True}}, "redis.cluster_enabled"),
        ({"redsi": {}}, "redsi"),
    ],
)
def test_bad_settings_stop_the_program_before_any_resource(program: Any, overrides: dict[str, Any], key: str) -> None:
    run = ProgramRun(stack="dev")
    with pytest.raises(SystemExit) as stopped:
        program("dev", config_overrides=overrides, into=run)
    assert f"stack setting '{key}'" in str(stopped.value)
    assert run.resources == [], f"resources declared despite bad settings: {[r.name for r in run.resources]}"
