"""The generated alert rules on a real rule engine: `promtool check rules` and `promtool test rules`
(Debian's `prometheus` package), one test case per alert with the series that fire it next to
series that must not. promtool compares the exact set of alerts, so a healthy instance that
fires, or a missing label, fails the case."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cachelayer.config.settings import Settings, load_settings
from cachelayer.render.monitoring import (
    BACKUP_PUSH_JOB,
    BACKUP_TIMESTAMP,
    JOB,
    LOAD_BALANCER_JOB,
    alert_rules,
    rules_yaml,
)

STACK = "test"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: run scripts/setup.sh (it installs Debian's prometheus package)", pytrace=False)
    return path


def instance(process: str, **extra: str) -> dict[str, str]:
    port = process.rsplit("-", 1)[1]
    return {"instance": f"127.0.0.1:{port}", "job": JOB, "process": process, "host": "cache-1", "stack": STACK, **extra}


def series(metric: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{metric}{{{inner}}}", "values": values}


A, B, C = instance("redis-7000"), instance("redis-7001"), instance("redis-7002")
D, E, F = instance("redis-7003"), instance("redis-7004"), instance("redis-7005")
SLAVE = {"slave_ip": "10.0.0.2", "slave_port": "7003", "slave_state": "online"}
LINK = {"master_host": "10.0.0.1", "master_port": "7000"}
LONG = "x40"  # 40 samples at 15 s: 10 minutes of data
PUSHED = {"job": BACKUP_PUSH_JOB, "instance": "127.0.0.1:9091", "stack": STACK}


def info(labels: dict[str, str], role: str, values: str = "1" + LONG) -> dict[str, str]:
    return series("redis_instance_info", {**labels, "role": role}, values)


# alert -> (input series, minutes at which to evaluate, the labels of every alert expected then)
CASES: dict[str, tuple[list[dict[str, str]], int, list[dict[str, str]]]] = {
    "RedisDown": ([series("redis_up", A, "0" + LONG), series("redis_up", B, "1" + LONG)], 5, [A]),
    "RedisExporterDown": ([series("up", A, "0" + LONG), series("up", B, "1" + LONG)], 5, [A]),
    "RedisRejectedConnections": (
        [series("redis_rejected_connections_total", A, "0x10 3x30"),
         series("redis_rejected_connections_total", B, "5" + LONG)],
        4, [A],
    ),
    "RedisMemoryHigh": (
        [series("redis_memory_used_bytes", A, "95" + LONG), series("redis_memory_max_bytes", A, "100" + LONG),
         series("redis_memory_used_bytes", B, "50" + LONG), series("redis_memory_max_bytes", B, "100" + LONG),
         # maxmemory 0 (no limit) is not "above a share of it"
         series("redis_memory_used_bytes", C, "95" + LONG), series("redis_memory_max_bytes", C, "0" + LONG)],
        5, [A],
    ),
    "RedisEvictions": (
        [series("redis_evicted_keys_total", A, "0+10" + LONG), series("redis_evicted_keys_total", B, "7" + LONG)], 5, [A],
    ),
    "RedisPersistenceError": (
        [series("redis_rdb_last_bgsave_status", A, "1" + LONG), series("redis_aof_last_write_status", A, "0" + LONG),
         series("redis_aof_last_bgrewrite_status", A, "1" + LONG),
         series("redis_rdb_last_bgsave_status", B, "1" + LONG), series("redis_aof_last_write_status", B, "1" + LONG),
         series("redis_aof_last_bgrewrite_status", B, "1" + LONG)],
        2, [A],
    ),
    "RedisNoRecentSave": (
        # promtool's clock starts at 0: a save timestamp of -100000 is 100000 s (> 25 h) ago.
        [series("redis_rdb_changes_since_last_save", A, "5" + LONG),
         series("redis_rdb_last_save_timestamp_seconds", A, "-100000" + LONG),
         # old save but nothing unsaved: nothing to lose
         series("redis_rdb_changes_since_last_save", B, "0" + LONG),
         series("redis_rdb_last_save_timestamp_seconds", B, "-100000" + LONG),
         # unsaved changes, recent save
         series("redis_rdb_changes_since_last_save", C, "5" + LONG),
         series("redis_rdb_last_save_timestamp_seconds", C, "0" + LONG)],
        5, [A],
    ),
    "RedisBackupMissed": (
        # As the Pushgateway serves it (honor_labels): the pushed job and stack, no process. The
        # newest complete backup is 100000 s (> 25 h) old; the other stack's is not ours to judge.
        [series(BACKUP_TIMESTAMP, PUSHED, "-100000" + LONG),
         series(BACKUP_TIMESTAMP, {**PUSHED, "stack": "other"}, "0" + LONG)],
        5, [{"stack": STACK}],
    ),
    "RedisBackupNeverReported": (
        # Nothing pushed for this stack for 25 h 10 min (another stack's pushes do not count).
        [series(BACKUP_TIMESTAMP, {**PUSHED, "stack": "other"}, "0x6100")],
        1510, [{"stack": STACK}],
    ),
    "RedisFailover": (
        [info(A, "slave", "1x8 _x32"), info(A, "master", "_x8 1x32"), info(B, "master"), info(C, "slave")],
        4, [{"stack": STACK, "process": "redis-7000", "host": "cache-1"}],
    ),
    "RedisMasterMissingReplicas": (
        [series("redis_connected_slaves", A, "0" + LONG), info(A, "master"),
         series("redis_connected_slaves", B, "1" + LONG), info(B, "master"),
         series("redis_connected_slaves", C, "0" + LONG), info(C, "slave")],
        5, [A],
    ),
    "RedisReplicationBroken": (
        [series("redis_master_link_up", {**A, **LINK}, "0" + LONG), info(A, "slave"),
         series("redis_master_link_up", {**B, **LINK}, "1" + LONG), info(B, "slave")],
        5, [{**A, **LINK}],
    ),
    "RedisReplicationLag": (
        [series("redis_connected_slave_lag_seconds", {**A, **SLAVE}, "45" + LONG),
         series("redis_connected_slave_lag_seconds", {**B, **SLAVE}, "2" + LONG)],
        5, [{**A, **SLAVE}],
    ),
    "RedisClusterStateNotOk": (
        [series("redis_cluster_enabled", A, "1" + LONG), series("redis_cluster_state", A, "0" + LONG),
         series("redis_cluster_enabled", B, "1" + LONG), series("redis_cluster_state", B, "1" + LONG)],
        5, [A],
    ),
    "RedisClusterSlotsFailing": (
        [series("redis_cluster_slots_pfail", A, "5461" + LONG), series("redis_cluster_slots_fail", A, "0" + LONG),
         series("redis_cluster_slots_pfail", B, "0" + LONG), series("redis_cluster_slots_fail", B, "0" + LONG)],
        5, [A],
    ),
    # Failed logins: a burst that creates the series, a rise within the window, next to a slow
    # trickle, an old total that does not grow, a restart's reset, and a Prometheus that only just
    # began scraping a node with an old total (nothing to compare with: no alert).
    "RedisAuthenticationFailures": (
        [*(series("redis_up", labels, "1" + LONG) for labels in (A, B, C, D, E)),
         series("redis_up", F, "_x24 1x16"),
         series("redis_errors_total", {**A, "err": "WRONGPASS"}, "_x24 80x16"),
         series("redis_errors_total", {**B, "err": "WRONGPASS"}, "0+1x40"),
         series("redis_errors_total", {**C, "err": "WRONGPASS"}, "500" + LONG),
         series("redis_errors_total", {**D, "err": "WRONGPASS"}, "0x20 100x20"),
         series("redis_errors_total", {**E, "err": "WRONGPASS"}, "500x20 0x20"),
         series("redis_errors_total", {**F, "err": "WRONGPASS"}, "_x24 500x16")],
        7, [A, D],
    ),
    # Refusals: the exporter's own (CONFIG GET, SLOWLOG GET on every scrape) never fire; one more
    # NOPERM than those does; so does the first NOPERM of a process without exporter refusals (a
    # sentinel), whose errorstat line only appears then; a non-ACL rejection of CONFIG GET does not.
    "RedisCommandDenied": (
        [*(series("redis_up", labels, "1" + LONG) for labels in (A, B, C, D)),
         series("redis_errors_total", {**A, "err": "NOPERM"}, "0+2x40"),
         *(series("redis_commands_rejected_calls_total", {**A, "cmd": cmd}, "0+1x40") for cmd in ("config|get", "slowlog|get")),
         series("redis_errors_total", {**B, "err": "NOPERM"}, "0+2x24 51+2x15"),
         *(series("redis_commands_rejected_calls_total", {**B, "cmd": cmd}, "0+1x40") for cmd in ("config|get", "slowlog|get")),
         series("redis_errors_total", {**C, "err": "NOPERM"}, "_x24 1x16"),
         series("redis_errors_total", {**D, "err": "NOPERM"}, "0+2x40"),
         series("redis_commands_rejected_calls_total", {**D, "cmd": "config|get"}, "0+1x20 22+1x19"),
         series("redis_commands_rejected_calls_total", {**D, "cmd": "slowlog|get"}, "0+1x40")],
        7, [B, C],
    ),
}
S1, S2 = instance("redis-sentinel-26379"), instance("redis-sentinel-26380")
LB1, LB2 = ({"instance": f"10.0.0.{i}:9101", "job": LOAD_BALANCER_JOB, "kind": "load_balancer", "stack": STACK} for i in (1, 2))
G1, G2 = {"master_name": "redis-master-1"}, {"master_name": "redis-master-2"}
SENTINEL_CASES: dict[str, tuple[list[dict[str, str]], int, list[dict[str, str]]]] = {
    "RedisSentinelNoQuorum": (
        [series("redis_sentinel_master_ckquorum_status", {**S1, **G1, "message": "NOQUORUM 1 usable Sentinels"}, "0" + LONG),
         series("redis_sentinel_master_ckquorum_status", {**S1, **G2, "message": "OK 3 usable Sentinels"}, "1" + LONG),
         series("redis_sentinel_master_ok_sentinels", {**S1, **G2, "master_address": "10.0.0.2:7001"}, "3" + LONG)],
        5, [{**S1, **G1, "message": "NOQUORUM 1 usable Sentinels"}],
    ),
    "RedisSentinelsDisagree": (
        [series("redis_sentinel_master_status", {**S1, **G1, "master_address": "10.0.0.1:7000", "master_status": "ok"},
                "1" + LONG),
         series("redis_sentinel_master_status", {**S2, **G1, "master_address": "10.0.0.4:7003", "master_status": "ok"},
                "1" + LONG),
         series("redis_sentinel_master_status", {**S1, **G2, "master_address": "10.0.0.2:7001", "master_status": "ok"},
                "1" + LONG),
         series("redis_sentinel_master_status", {**S2, **G2, "master_address": "10.0.0.2:7001", "master_status": "ok"},
                "1" + LONG)],
        5, [{"stack": STACK, **G1}],
    ),
    # HAProxy's exporter (job cachelayer-haproxy): group 1 has no master UP, group 2 two, group 3 one;
    # the read side's counts never matter; the second HAProxy cannot be scraped.
    "RedisLoadBalancerNoMaster": (
        [series("haproxy_backend_active_servers", {**LB1, "proxy": "redis-master-1-write"}, "1x4 0x36"),
         series("haproxy_backend_active_servers", {**LB1, "proxy": "redis-master-3-write"}, "1" + LONG),
         series("haproxy_backend_active_servers", {**LB1, "proxy": "redis-master-1-read"}, "0" + LONG)],
        5, [{**LB1, "proxy": "redis-master-1-write"}],
    ),
    "RedisLoadBalancerTwoMasters": (
        [series("haproxy_backend_active_servers", {**LB1, "proxy": "redis-master-2-write"}, "2" + LONG),
         series("haproxy_backend_active_servers", {**LB1, "proxy": "redis-master-3-write"}, "1" + LONG),
         series("haproxy_backend_active_servers", {**LB1, "proxy": "redis-master-2-read"}, "2" + LONG)],
        5, [{**LB1, "proxy": "redis-master-2-write"}],
    ),
    "RedisLoadBalancerDown": ([series("up", LB1, "1" + LONG), series("up", LB2, "0" + LONG)], 5, [LB2]),
}


def settings_for(topology: str) -> Settings:
    config: dict[str, Any] = {"redis": {"topology": topology}}
    return load_settings(config, STACK)


def expand(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)


def promtool_tests(settings: Settings, cases: dict[str, tuple[list[dict[str, str]], int, list[dict[str, str]]]]) -> dict[str, Any]:
    rules = {rule.name: rule for rule in alert_rules(settings)}
    tests = []
    for name, (input_series, minutes, firing) in cases.items():
        rule = rules[name]
        expected = []
        for labels in firing:
            all_labels = {**labels, "severity": rule.severity, "stack": STACK}
            expected.append(
                {
                    "exp_labels": all_labels,
                    "exp_annotations": {"summary": expand(rule.summary, all_labels), "runbook": expand(rule.runbook, all_labels)},
                }
            )
        tests.append(
            {
                "name": name,
                "interval": "15s",
                "input_series": input_series,
                # Before `for` has passed nothing fires; at `minutes` exactly the expected alerts do.
                "alert_rule_test": [
                    {"eval_time": "0m", "alertname": name, "exp_alerts": []} if rule.for_seconds else None,
                    {"eval_time": f"{minutes}m", "alertname": name, "exp_alerts": expected},
                ],
            }
        )
        tests[-1]["alert_rule_test"] = [t for t in tests[-1]["alert_rule_test"] if t is not None]
    return {"rule_files": ["rules.yml"], "evaluation_interval": "15s", "tests": tests}


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("topology", ["cluster", "sentinel"])
def test_promtool_accepts_the_rules_file(topology: str, tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(rules_yaml(settings_for(topology)))
    result = run_promtool("check", "rules", "rules.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("topology", ["cluster", "sentinel"])
def test_every_alert_fires_on_its_series_and_only_there(topology: str, tmp_path: Path) -> None:
    settings = settings_for(topology)
    names = {rule.name for rule in alert_rules(settings)}
    cases = {**CASES, **SENTINEL_CASES}
    cases = {name: case for name, case in cases.items() if name in names}
    assert names == set(cases), f"alerts without a promtool case: {sorted(names - set(cases))}"
    (tmp_path / "rules.yml").write_text(rules_yaml(settings))
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(promtool_tests(settings, cases), sort_keys=False))
    result = run_promtool("test", "rules", "tests.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("topology", ["cluster", "sentinel"])
def test_two_regions_rules_in_one_prometheus_each_fire_for_their_own_stack_only(topology: str, tmp_path: Path) -> None:
    """One Prometheus for every region (docs/regions.md): another stack's rules loaded beside this
    stack's, over this stack's series, add no alert, so none is reported twice, with the other's
    thresholds, or under the other's `stack` label."""
    settings = settings_for(topology)
    names = {rule.name for rule in alert_rules(settings)}
    # RedisBackupNeverReported (25 h of evaluations) read its own stack's pushes already.
    cases = {name: case for name, case in {**CASES, **SENTINEL_CASES}.items()
             if name in names and name != "RedisBackupNeverReported"}
    (tmp_path / "rules.yml").write_text(rules_yaml(settings))
    other = load_settings({"redis": {"topology": topology}}, "other-region")
    (tmp_path / "other.yml").write_text(rules_yaml(other))
    tests = promtool_tests(settings, cases)
    tests["rule_files"] = ["rules.yml", "other.yml"]
    for case, (_, minutes, _) in zip(tests["tests"], cases.values(), strict=True):
        # The other region's backups are reported too, until the case's evaluation: its absent()
        # alert has no reason to fire.
        reported = series(BACKUP_TIMESTAMP, {**PUSHED, "stack": "other-region"}, f"0x{minutes * 4 + 4}")
        case["input_series"] = [*case["input_series"], reported]
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = run_promtool("test", "rules", "tests.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_backup_alerts_are_quiet_on_a_fresh_backup_even_with_an_old_node_save(tmp_path: Path) -> None:
    """The backup alerts read the pushed time of the newest complete backup, not a node's last
    save: a fresh backup with a node-local save 100000 s old fires neither, and a deployment
    gets backup_max_age_seconds to report its first backup."""
    settings = settings_for("cluster")
    fresh = [series(BACKUP_TIMESTAMP, PUSHED, "0" + LONG), series("redis_rdb_last_save_timestamp_seconds", A,
                                                                   "-100000" + LONG)]
    tests = [{"name": f"{alert}: fresh", "interval": "15s", "input_series": fresh,
              "alert_rule_test": [{"eval_time": "5m", "alertname": alert, "exp_alerts": []}]}
             for alert in ("RedisBackupMissed", "RedisBackupNeverReported")]
    tests.append({"name": "first backup not due yet", "interval": "15s",
                  "input_series": [series("redis_up", A, "1" + LONG)],
                  "alert_rule_test": [{"eval_time": "9m", "alertname": "RedisBackupNeverReported", "exp_alerts": []}]})
    (tmp_path / "rules.yml").write_text(rules_yaml(settings))
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yml"], "evaluation_interval": "15s", "tests": tests}, sort_keys=False))
    result = run_promtool("test", "rules", "tests.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_rule_that_fires_on_a_healthy_node_fails_promtool(tmp_path: Path) -> None:
    """The harness itself can fail: expecting RedisDown for the healthy node B is reported."""
    settings = settings_for("cluster")
    wrong = {"RedisDown": (CASES["RedisDown"][0], 5, [B])}
    (tmp_path / "rules.yml").write_text(rules_yaml(settings))
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(promtool_tests(settings, wrong), sort_keys=False))
    result = run_promtool("test", "rules", "tests.yml", cwd=tmp_path)
    assert result.returncode != 0 and "RedisDown" in result.stdout + result.stderr


def test_thresholds_come_from_the_stack_settings() -> None:
    settings = load_settings(
        {"monitoring": {"memory_percent": 75, "replication_lag_seconds": 12, "for_seconds": 5,
                        "backup_max_age_seconds": 7200},
         "redis": {"replicas_per_master": 2, "node_count": 9}},
        STACK,
    )
    rules = {rule.name: rule for rule in alert_rules(settings)}
    assert "> 75" in rules["RedisMemoryHigh"].expr
    assert "> 12" in rules["RedisReplicationLag"].expr
    assert f'redis_connected_slaves{{stack="{STACK}"}} < 2' in rules["RedisMasterMissingReplicas"].expr
    assert "> 7200" in rules["RedisBackupMissed"].expr
    # A deployment has backup_max_age_seconds to report its first backup; the others hold for_seconds.
    assert rules.pop("RedisBackupNeverReported").for_seconds == 7200
    assert {rule.for_seconds for rule in rules.values()} <= {0, 5}


def test_every_rule_has_a_runbook_naming_a_command() -> None:
    for topology in ("cluster", "sentinel"):
        for rule in alert_rules(settings_for(topology)):
            assert "cachelayer" in rule.runbook or "systemctl" in rule.runbook, rule.name


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Each panel's query, with Grafana's variables filled in, as a recording rule promtool parses."""
    from cachelayer.render.monitoring import dashboard_json

    dashboard = json.loads(dashboard_json(settings_for("cluster")))
    titles = [panel["title"] for panel in dashboard["panels"]]
    for wanted in ("Cluster state", "Operations per second", "Hit ratio", "Memory used / maxmemory", "Evictions",
                   "Replication lag", "Failovers", "Slowlog length", "Backup age"):  # fmt: skip
        assert any(title.startswith(wanted) for title in titles), wanted
    rules = [
        {"record": f"dashboard:panel{panel['id']}", "expr": target["expr"].replace("$__rate_interval", "1m").replace("$stack", STACK)}
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool("check", "rules", "dashboard.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
