"""Monitoring, generated from the stack: exporter targets, Prometheus alert rules, a Grafana
dashboard. Pure (no Pulumi): the components, the local sandbox and the tests all use it.

One Redis exporter (oliver006/redis_exporter 1.45) runs per node and per sentinel and logs in as
the `monitor` user (rights in acl_policy.MONITOR_*). Every metric name below is one that
version exports; docs/monitoring.md has the alert table with each rule's runbook line.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from cachelayer.config.settings import Settings, exporter_ports
from cachelayer.plan.acl_policy import MONITOR_NODE_REFUSED
from cachelayer.plan.topology import Node, SentinelNode, Topology
from cachelayer.render.nodes import render_template

# Where the Docker exporter container finds its password (an uploaded file, never argv or env).
DOCKER_PASSWORD_FILE = "/exporter/password.json"

JOB = "cachelayer-redis"  # the scrape job's name: the rules read `up{job=...}`
# `cachelayer backup` pushes the newest complete backup's time to a Pushgateway
# (ops/backup_metrics.py); it is scraped with honor_labels, so the pushed `stack` label stays.
PUSHGATEWAY_JOB = "cachelayer-pushgateway"
BACKUP_PUSH_JOB = "cachelayer_backup"  # the `job` of the pushed group
BACKUP_TIMESTAMP = "cachelayer_backup_newest_complete_timestamp_seconds"
EXPORTER_BINARY = "prometheus-redis-exporter"  # Debian's name for redis_exporter
LOAD_BALANCER_JOB = "cachelayer-haproxy"  # HAProxy's built-in exporter (sentinel topology, load_balancer on)
Severity = Literal["critical", "warning"]


@dataclass(frozen=True)
class ExporterTarget:
    """One exporter: which process it reads and where Prometheus scrapes it."""

    process: str  # redis-7000, redis-sentinel-26379
    kind: Literal["node", "sentinel"]
    host: str  # the machine (or container) it runs on
    redis_address: str  # what the exporter connects to (host:port)
    listen: str  # where it serves /metrics (address:port)

    @property
    def labels(self) -> dict[str, str]:
        return {"process": self.process, "kind": self.kind, "host": self.host}


def exporter_targets(
    settings: Settings,
    topology: Topology,
    listen_address: Callable[[Node | SentinelNode], str],
    redis_address: Callable[[Node | SentinelNode], str],
) -> tuple[ExporterTarget, ...]:
    """The stack's exporters: node i on exporter_base_port + i, then the sentinels. The callbacks
    give, per target, the address the exporter listens on and the one it reads Redis from."""
    processes: list[Node | SentinelNode] = [*topology.nodes, *topology.sentinels]
    ports = exporter_ports(settings.redis, settings.sentinel, settings.monitoring)
    return tuple(
        ExporterTarget(
            process.name,
            "sentinel" if isinstance(process, SentinelNode) else "node",
            process.host,
            f"{redis_address(process)}:{process.port}",
            f"{listen_address(process)}:{port}",
        )
        for process, port in zip(processes, ports, strict=True)
    )


def stack_targets(settings: Settings, topology: Topology) -> tuple[ExporterTarget, ...]:
    """Where the platform's Prometheus scrapes each exporter, and what each exporter reads.

    Hosts: the exporter listens on its machine's address and reads its node over loopback.
    Docker: Prometheus scrapes the port published on docker.publish_address; the exporter reads
    its node on the stack's network."""
    if settings.redis.target == "hosts":
        return exporter_targets(settings, topology, lambda p: p.address, lambda p: "127.0.0.1")
    return exporter_targets(settings, topology, lambda p: settings.docker.publish_address, lambda p: p.address)


def exporter_args(target: ExporterTarget, tls_ca_file: str | None = None) -> list[str]:
    """The exporter's command line after its binary. No password: it reads REDIS_PASSWORD from its
    environment (a root-only EnvironmentFile on the hosts, the process environment elsewhere)."""
    scheme = "rediss" if tls_ca_file else "redis"
    args = [
        f"--redis.addr={scheme}://{target.redis_address}",
        "--redis.user=monitor",
        f"--web.listen-address={target.listen}",
        # Sentinel and node metrics come from INFO; the go runtime's own are noise here.
        "--redis-only-metrics",
    ]
    if tls_ca_file:
        # tls-auth-clients is optional on the nodes: the CA to check them is all it needs.
        args.append(f"--tls-ca-cert-file={tls_ca_file}")
    return args


def load_balancer_scrape_targets(settings: Settings, addresses: Sequence[str]) -> list[dict[str, Any]]:
    """Prometheus file_sd entries of the HAProxy exporters (one per load balancer address), for
    the LOAD_BALANCER_JOB scrape; none without a load balancer."""
    if not settings.load_balancer_enabled:
        return []
    port = settings.load_balancer.exporter_port
    return [{"targets": [f"{address}:{port}"], "labels": {"stack": settings.stack, "kind": "load_balancer"}} for address in addresses]


def scrape_targets(settings: Settings, targets: Sequence[ExporterTarget]) -> list[dict[str, Any]]:
    """Prometheus file_sd entries (one per exporter), labelled with the stack and the process."""
    return [{"targets": [t.listen], "labels": {"stack": settings.stack, **t.labels}} for t in targets]


# ------------------------------------------------------------------------------------ rules
@dataclass(frozen=True)
class AlertRule:
    name: str
    expr: str
    for_seconds: int
    severity: Severity
    summary: str
    runbook: str  # what to do, and which cachelayer command helps


def _window(settings: Settings) -> str:
    # rate() needs two samples in its window: never less than twice the scrape interval.
    monitoring = settings.monitoring
    return f"{max(monitoring.rate_window_seconds, 2 * monitoring.scrape_interval_seconds)}s"


def alert_rules(settings: Settings) -> tuple[AlertRule, ...]:
    """The stack's alerts: thresholds from `monitoring`, shape from `redis`/`sentinel`."""
    m, redis, stack = settings.monitoring, settings.redis, settings.stack
    hold, window = m.for_seconds, _window(settings)
    health = f"venv/bin/cachelayer health --stack {stack}"
    report = f"venv/bin/cachelayer report --stack {stack}"
    rules = [
        AlertRule(
            "RedisDown",
            "redis_up == 0",
            hold,
            "critical",
            "{{ $labels.process }} on {{ $labels.host }} does not answer its exporter",
            f"`{health}`; on the host `systemctl status {{{{ $labels.process }}}}` and its log in /var/log/redis; "
            "start it again (`systemctl start`); a master is failed over meanwhile",
        ),
        AlertRule(
            "RedisExporterDown",
            f'up{{job="{JOB}"}} == 0',
            hold,
            "warning",
            "the exporter of {{ $labels.process }} cannot be scraped",
            "on the host `systemctl status {{ $labels.process }}-exporter`; check the firewall lets monitoring.scrape_networks in; "
            f"the node itself: `{health}`",
        ),
        AlertRule(
            "RedisRejectedConnections",
            f"increase(redis_rejected_connections_total[{window}]) > 0",
            0,
            "warning",
            "{{ $labels.process }} refused connections (maxclients reached)",
            f"`{report}` (connected and rejected clients); find the client that leaks connections; "
            "raise maxclients only with LimitNOFILE",
        ),
        AlertRule(
            "RedisMemoryHigh",
            f"redis_memory_used_bytes / (redis_memory_max_bytes > 0) * 100 > {m.memory_percent}",
            hold,
            "warning",
            f"{{{{ $labels.process }}}} uses more than {m.memory_percent}% of maxmemory",
            f"`{report}` (biggest keys, fragmentation); expire or shrink the keys, or raise redis.maxmemory "
            f"(`pulumi up` applies it live) or add shards (`venv/bin/cachelayer rebalance --stack {stack}`)",
        ),
        AlertRule(
            "RedisEvictions",
            f"rate(redis_evicted_keys_total[{window}]) > {m.evictions_per_second}",
            hold,
            "warning",
            "{{ $labels.process }} is evicting keys to stay under maxmemory",
            f"`{report}` (memory, biggest keys); the cache is too small for its working set: raise redis.maxmemory or add shards",
        ),
        AlertRule(
            "RedisPersistenceError",
            "redis_rdb_last_bgsave_status == 0 or redis_aof_last_write_status == 0 or redis_aof_last_bgrewrite_status == 0",
            0,
            "critical",
            "{{ $labels.process }} failed to write its RDB or AOF",
            f"`{health}` (persistence); on the host: disk space and permissions of /var/lib/redis/<port>, "
            "the node's log; then `redis-cli BGSAVE` as admin",
        ),
        AlertRule(
            "RedisNoRecentSave",
            f"redis_rdb_changes_since_last_save > 0 and time() - redis_rdb_last_save_timestamp_seconds > {m.save_max_age_seconds}",
            0,
            "warning",
            f"{{{{ $labels.process }}}} has changes not saved to its own disk for {m.save_max_age_seconds // 3600} h "
            "(the node-local 02:00 save missed)",
            f"`{health} --max-save-age {m.save_max_age_seconds}`; on the host `systemctl status redis-backup.service` "
            "and `journalctl -u redis-backup`; run it by hand: `systemctl start redis-backup.service`",
        ),
        AlertRule(
            "RedisBackupMissed",
            # The newest complete backup in the destination, as `cachelayer backup` read it back
            # and pushed it to the Pushgateway: not a node's last save, which the backup never moves.
            f'time() - max by (stack) ({BACKUP_TIMESTAMP}{{stack="{stack}"}}) > {m.backup_max_age_seconds}',
            0,
            "critical",
            f"the newest complete backup of {stack} in its destination is older than "
            f"{m.backup_max_age_seconds // 3600} h (the scheduled backup missed)",
            f"the last run of the backup workflow (`.github/workflows/backup.yml`) and its log; run it by hand: "
            f"`venv/bin/cachelayer backup --stack {stack}`, then `venv/bin/cachelayer restore-drill --stack {stack}`",
        ),
        AlertRule(
            "RedisBackupNeverReported",
            # Nothing pushed for as long as a backup may be missed: no backup ran since the
            # deployment, the push failed, or the Pushgateway lost it (it keeps pushes in memory).
            f'absent({BACKUP_TIMESTAMP}{{stack="{stack}"}})',
            m.backup_max_age_seconds,
            "critical",
            f"no backup of {stack} was reported to the Pushgateway for {m.backup_max_age_seconds // 3600} h",
            f"the backup workflow's last runs (a failed push fails the run); `venv/bin/cachelayer backup --stack "
            f"{stack}` pushes the newest complete backup's time again (backup.pushgateway or --pushgateway)",
        ),
        AlertRule(
            "RedisFailover",
            # An instance seen in two roles within the window: a failover promoted or demoted it.
            f"count by (stack, process, host) (group by (stack, process, host, role) "
            f"(last_over_time(redis_instance_info[{m.failover_window_seconds}s]))) > 1",
            0,
            "warning",
            "{{ $labels.process }} changed role (failover) in the last "
            f"{m.failover_window_seconds // 60} min",
            f"`{health}` (who is master now, replicas linked); find why the old master failed in its log; "
            f"planned switch-backs: `venv/bin/cachelayer failover --stack {stack} --dry-run`",
        ),
    ]
    if redis.replicas_per_master > 0:
        rules += [
            AlertRule(
                "RedisMasterMissingReplicas",
                f'redis_connected_slaves < {redis.replicas_per_master} and on (instance) redis_instance_info{{role="master"}}',
                hold,
                "critical",
                f"master {{{{ $labels.process }}}} has fewer than {redis.replicas_per_master} linked replica(s): "
                "one more failure loses its shard",
                f"`{health}` (replicas); start the missing replica on its host (`systemctl start redis-<port>`); "
                "it resyncs by itself",
            ),
            AlertRule(
                "RedisReplicationBroken",
                'redis_master_link_up == 0 and on (instance) redis_instance_info{role="slave"}',
                hold,
                "critical",
                "replica {{ $labels.process }} lost the link to its master",
                f"`{health}` (replicas, replica_lag); the master may be down (see RedisDown) or unreachable: "
                "check the firewall and the replica's log for the sync error",
            ),
            AlertRule(
                "RedisReplicationLag",
                f"redis_connected_slave_lag_seconds > {m.replication_lag_seconds}",
                hold,
                "warning",
                f"a replica of {{{{ $labels.process }}}} has not acknowledged for over {m.replication_lag_seconds} s",
                f"`{health} --max-lag {m.replication_lag_seconds}`; look for a slow disk, a full sync in progress "
                "or network trouble between the two hosts",
            ),
        ]
    if redis.is_cluster:
        rules += [
            AlertRule(
                "RedisClusterStateNotOk",
                "redis_cluster_enabled == 1 and redis_cluster_state == 0",
                hold,
                "critical",
                "{{ $labels.process }} says cluster_state is fail: some slots are not served",
                f"`{health}` (cluster_state, slots, node_flags); a master without a replica to promote needs "
                f"its node started; when node_flags shows the master flagged fail, promote one of its own replicas: "
                f"`venv/bin/cachelayer failover REPLICA --stack {stack} --force` (asks first; never another shard's)",
            ),
            AlertRule(
                "RedisClusterSlotsFailing",
                "redis_cluster_slots_fail > 0 or redis_cluster_slots_pfail > 0",
                hold,
                "critical",
                "{{ $labels.process }} sees slots on a failing (PFAIL/FAIL) master",
                f"`{health}` (node_flags); the master is down or partitioned; its replica takes over after "
                "cluster_node_timeout, else start the node",
            ),
        ]
    else:
        quorum = settings.sentinel.quorum
        rules += [
            AlertRule(
                "RedisSentinelNoQuorum",
                # CKQUORUM also fails when no majority of sentinels is reachable to authorise a failover.
                f"redis_sentinel_master_ckquorum_status == 0 or redis_sentinel_master_ok_sentinels < {quorum}",
                hold,
                "critical",
                f"fewer than {quorum} sentinels (the quorum) are up for {{{{ $labels.master_name }}}}: no failover is possible",
                f"`{health}` (sentinel_quorum, runs SENTINEL CKQUORUM); start the stopped sentinels "
                "(`systemctl start redis-sentinel-<port>`)",
            ),
            AlertRule(
                "RedisSentinelsDisagree",
                "count by (stack, master_name) (count by (stack, master_name, master_address) "
                "(redis_sentinel_master_status)) > 1",
                hold,
                "critical",
                "the sentinels name different masters for {{ $labels.master_name }}",
                f"`{health}` (sentinel_agreement); a partitioned sentinel or one after a restart: check its log; "
                f"`venv/bin/cachelayer drift --stack {stack}` for their settings",
            ),
        ]
    rules += load_balancer_alert_rules(settings)
    rules += access_alert_rules(settings)
    return tuple(dataclasses.replace(rule, expr=scoped_to_stack(rule.expr, stack)) for rule in rules)


# A metric selector of the rules (every metric they read is redis_*, haproxy_*, cachelayer_* or `up`), with its
# label matchers if any; quoted strings are matched first so that nothing inside one is rewritten.
_SELECTOR = re.compile(r'(?P<string>"(?:[^"\\]|\\.)*")|\b(?P<metric>redis_\w+|haproxy_\w+|cachelayer_\w+|up)\b(?P<matchers>\{[^}]*\})?(?!\s*\()')


def scoped_to_stack(expr: str, stack: str) -> str:
    """`expr` reading the series of `stack` only. One Prometheus scrapes every stack (each region's
    targets carry their `stack` label): an unscoped rule would judge another region's processes
    with this stack's thresholds, and its `stack` label would name the wrong stack."""

    def scope(match: re.Match[str]) -> str:
        if match.group("string") is not None:
            return match.group(0)
        matchers = (match.group("matchers") or "{}")[1:-1].strip()
        if re.search(r"\bstack\s*=", matchers):
            return match.group(0)
        inner = f'stack="{stack}"' + (f",{matchers}" if matchers else "")
        return f"{match.group('metric')}{{{inner}}}"

    return _SELECTOR.sub(scope, expr)


def load_balancer_alert_rules(settings: Settings) -> list[AlertRule]:
    """HAProxy in front of the Sentinel groups: its write side must have exactly one master."""
    if not settings.load_balancer_enabled:
        return []
    hold, stack = settings.monitoring.for_seconds, settings.stack
    health = f"venv/bin/cachelayer health --stack {stack}"
    write = 'proxy=~"redis-master-[0-9]+-write"'
    return [
        AlertRule(
            "RedisLoadBalancerNoMaster",
            f"haproxy_backend_active_servers{{{write}}} == 0",
            hold,
            "critical",
            "HAProxy on {{ $labels.instance }} has no master UP for {{ $labels.proxy }}: plain clients cannot write",
            f"`{health}` (who is master); if Sentinel has a master, HAProxy's check cannot log in or reach it: "
            "`journalctl -u haproxy` on the host (the monitor password, the firewall between the hosts)",
        ),
        AlertRule(
            "RedisLoadBalancerTwoMasters",
            f"haproxy_backend_active_servers{{{write}}} > 1",
            hold,
            "critical",
            "HAProxy on {{ $labels.instance }} sees two nodes saying role:master for {{ $labels.proxy }} "
            "(split brain): writes go to both",
            f"`{health}` (sentinel_agreement); the node Sentinel does not name as master must become its "
            "replica: `SENTINEL FAILOVER` only after the partition is fixed",
        ),
        AlertRule(
            "RedisLoadBalancerDown",
            f'up{{job="{LOAD_BALANCER_JOB}"}} == 0',
            hold,
            "critical",
            "HAProxy's exporter on {{ $labels.instance }} cannot be scraped: its clients may have no way in",
            "on the host `systemctl status haproxy` and `journalctl -u haproxy`; `haproxy -c -f /etc/haproxy/haproxy.cfg`",
        ),
    ]


# ------------------------------------------------------------------------- suspicious access
# Redis 7.0 (Debian 12) has no acl_access_denied_* fields in INFO (they came with 7.2); its INFO
# errorstats counts refusals by error code, and exporter 1.45 exports them as redis_errors_total:
# WRONGPASS is a failed AUTH or HELLO AUTH, NOPERM a command, key or channel the ACL refused. The
# exporter itself is refused CONFIG GET and SLOWLOG GET on every scrape (MONITOR_NODE_REFUSED): the
# same INFO snapshot counts those in redis_commands_rejected_calls_total, so they are taken out.
_OWN_REFUSALS = "|".join(rule.replace("|", "[|]") for rule, _ in MONITOR_NODE_REFUSED)  # config[|]get|slowlog[|]get


def _auth_failures(offset: str = "") -> str:
    return f'sum without (err) (redis_errors_total{{err="WRONGPASS"}}{offset})'


def _denials(offset: str = "") -> str:
    """NOPERM refusals of every client but the exporter's own (a counter, per process)."""
    noperm = f'sum without (err) (redis_errors_total{{err="NOPERM"}}{offset})'
    own = f'sum without (cmd) (redis_commands_rejected_calls_total{{cmd=~"{_OWN_REFUSALS}"}}{offset})'
    return f"({noperm} - ({own} or {noperm} * 0))"


def _grew_by_more_than(counter: Callable[[str], str], threshold: float, window: str) -> str:
    """The counter rose by more than `threshold` within `window`: its rise over the window's lowest
    value (a restart's reset counts as a new low, never as a rise), or, for a series that did not
    exist `window` ago on a process that was scraped then (Redis adds an errorstat line at its
    first error), its whole value. increase() would miss that first rise."""
    now, before = counter(""), counter(f" offset {window}")
    return (
        f"({now} - min_over_time({now}[{window}:]) > {threshold:g}) "
        f"or ((({now} > {threshold:g}) unless {before}) and on (instance) (redis_up offset {window}))"
    )


def access_alert_rules(settings: Settings) -> list[AlertRule]:
    """Failed authentications above a rate; any refused command (docs/security.md)."""
    m, stack = settings.monitoring, settings.stack
    window = _window(settings)
    seconds = int(window.removesuffix("s"))
    allowed = m.auth_failures_per_minute * seconds / 60
    report = f"venv/bin/cachelayer report --stack {stack}"
    return [
        AlertRule(
            "RedisAuthenticationFailures",
            _grew_by_more_than(_auth_failures, allowed, window),
            0,
            "critical",
            f"{{{{ $labels.process }}}} refused more than {m.auth_failures_per_minute} logins a minute "
            "(wrong password or unknown user)",
            f"`{report}` (ACL LOG: user, client address of each refused login); a client with an old password "
            "after a rotation: give it the current one; an unknown address: block it in the firewall and rotate "
            "the user's password (docs/security.md)",
        ),
        AlertRule(
            "RedisCommandDenied",
            _grew_by_more_than(_denials, 0, window),
            0,
            "warning",
            "{{ $labels.process }} refused a command, key or channel to a logged-in user (ACL)",
            f"`{report}` (ACL LOG: user, client address, command or key refused); from `app`: an application bug "
            "or a stolen password probing (rotate it); the users of the platform itself only ever run what "
            "their ACL allows",
        ),
    ]


def _duration(seconds: int) -> str:
    return f"{seconds}s"


def rules_document(settings: Settings) -> dict[str, Any]:
    group: dict[str, Any] = {
        "name": f"cachelayer-redis-{settings.stack}",
        "interval": _duration(settings.monitoring.scrape_interval_seconds),
        "rules": [],
    }
    for rule in alert_rules(settings):
        entry: dict[str, Any] = {"alert": rule.name, "expr": rule.expr}
        if rule.for_seconds:
            entry["for"] = _duration(rule.for_seconds)
        entry["labels"] = {"severity": rule.severity, "stack": settings.stack}
        entry["annotations"] = {"summary": rule.summary, "runbook": rule.runbook}
        group["rules"].append(entry)
    return {"groups": [group]}


def rules_yaml(settings: Settings) -> str:
    """The Prometheus rules file (`promtool check rules` accepts it)."""
    return yaml.safe_dump(rules_document(settings), sort_keys=False, width=1000)


def pushgateway_scrape(address: str) -> dict[str, Any]:
    """The scrape job for the Pushgateway `cachelayer backup` pushes to: honor_labels keeps the
    pushed `job` and `stack` instead of the scrape's own."""
    return {"job_name": PUSHGATEWAY_JOB, "honor_labels": True, "static_configs": [{"targets": [address]}]}


def prometheus_config(
    settings: Settings,
    rules_file: str,
    targets_file: str,
    pushgateway: str | None = None,
    load_balancer_targets_file: str | None = None,
) -> str:
    """A Prometheus configuration scraping the exporters listed in `targets_file` (file_sd), the
    Pushgateway at `pushgateway` (host:port) when given, and the HAProxy exporters listed in
    `load_balancer_targets_file` when given."""
    interval = _duration(settings.monitoring.scrape_interval_seconds)
    scrapes: list[dict[str, Any]] = [
        {"job_name": JOB, "file_sd_configs": [{"files": [targets_file], "refresh_interval": "30s"}]},
    ]
    if load_balancer_targets_file:
        scrapes.append(
            {"job_name": LOAD_BALANCER_JOB, "file_sd_configs": [{"files": [load_balancer_targets_file], "refresh_interval": "30s"}]}
        )
    if pushgateway:
        scrapes.append(pushgateway_scrape(pushgateway))
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [rules_file],
        "scrape_configs": scrapes,
    }
    return yaml.safe_dump(config, sort_keys=False)


# -------------------------------------------------------------------------------- dashboard
_PANELS: tuple[tuple[str, str, str, str], ...] = (
    # title, PromQL, legend, unit
    ("Cluster state (1 = ok)", 'redis_cluster_state{stack="$stack"}', "{{process}}", "short"),
    ("Nodes up", 'redis_up{stack="$stack"}', "{{process}}", "short"),
    ("Operations per second", 'rate(redis_commands_processed_total{stack="$stack"}[$__rate_interval])', "{{process}}", "ops"),
    (
        "Hit ratio",
        'rate(redis_keyspace_hits_total{stack="$stack"}[$__rate_interval]) / (rate(redis_keyspace_hits_total{stack="$stack"}'
        '[$__rate_interval]) + rate(redis_keyspace_misses_total{stack="$stack"}[$__rate_interval]))',
        "{{process}}",
        "percentunit",
    ),
    ("Memory used / maxmemory", 'redis_memory_used_bytes{stack="$stack"} / redis_memory_max_bytes{stack="$stack"}',
     "{{process}}", "percentunit"),
    ("Evictions per second", 'rate(redis_evicted_keys_total{stack="$stack"}[$__rate_interval])', "{{process}}", "ops"),
    ("Replication lag (s since last ack)", 'redis_connected_slave_lag_seconds{stack="$stack"}',
     "{{process}} → {{slave_ip}}:{{slave_port}}", "s"),
    # Roles an instance had within the last hour: 2 means it was failed over (as RedisFailover reads it).
    ("Failovers (roles seen in the last hour)",
     'count by (process) (group by (process, role) (last_over_time(redis_instance_info{stack="$stack"}[1h])))',
     "{{process}}", "short"),
    ("Linked replicas per master", 'redis_connected_slaves{stack="$stack"} and on (instance) redis_instance_info{role="master"}',
     "{{process}}", "short"),
    ("Slowlog length", 'redis_slowlog_length{stack="$stack"}', "{{process}}", "short"),
    # The newest complete backup in the destination, as `cachelayer backup` pushed it (not a node's last save).
    ("Backup age (s since the newest complete backup)", f'time() - {BACKUP_TIMESTAMP}{{stack="$stack"}}', "{{stack}}",
     "s"),
    ("Rejected connections", 'increase(redis_rejected_connections_total{stack="$stack"}[$__rate_interval])', "{{process}}",
     "short"),
)


def dashboard_json(settings: Settings) -> str:
    """A Grafana dashboard (import it: Dashboards → New → Import, pick the Prometheus data source)."""
    panels = []
    for index, (title, expr, legend, unit) in enumerate(_PANELS):
        panels.append(
            {
                "id": index + 1,
                "type": "timeseries",
                "title": title,
                "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [{"refId": "A", "expr": expr, "legendFormat": legend}],
            }
        )
    dashboard = {
        "__inputs": [
            {"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "pluginId": "prometheus"}
        ],
        "title": f"cachelayer Redis ({settings.stack})",
        "uid": f"cachelayer-redis-{settings.stack}"[:40],
        "tags": ["cachelayer", "redis"],
        "timezone": "utc",
        "schemaVersion": 38,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "stack",
                    "type": "custom",
                    "query": settings.stack,
                    "current": {"text": settings.stack, "value": settings.stack},
                }
            ]
        },
        "panels": panels,
    }
    return json.dumps(dashboard, indent=2) + "\n"


# ------------------------------------------------------------------------------------- hosts
HOST_EXPORTER_BINARY = f"/usr/bin/{EXPORTER_BINARY}"


def exporter_unit_name(target: ExporterTarget) -> str:
    return f"{target.process}-exporter"


def exporter_password_file(target: ExporterTarget, conf_dir: str) -> str:
    """Root-only (0600) on the host; systemd's LoadCredential hands it to the exporter."""
    return f"{conf_dir}/{exporter_unit_name(target)}.json"


def render_password_file(target: ExporterTarget, password: str, tls: bool) -> str:
    """The exporter's --redis.password-file: a JSON map of the Redis URI to the password."""
    scheme = "rediss" if tls else "redis"
    return json.dumps({f"{scheme}://{target.redis_address}": password}) + "\n"


def render_exporter_unit(settings: Settings, target: ExporterTarget, conf_dir: str, tls_ca_file: str | None) -> str:
    # The CA arrives through LoadCredential too (%d): /etc/redis is not readable by the exporter.
    args = exporter_args(target, "%d/ca.crt" if tls_ca_file else None)
    return render_template(
        "redis-exporter.service.j2",
        stack=settings.stack,
        target=target,
        binary=HOST_EXPORTER_BINARY,
        args=args,
        password_file=exporter_password_file(target, conf_dir),
        tls_ca_file=tls_ca_file,
    )


def alerts_markdown(stack: str = "prod") -> str:
    """The alert table of docs/monitoring.md, for both topologies with the default thresholds."""
    from cachelayer.config.settings import load_settings  # here: settings is the caller's concern everywhere else

    seen: dict[str, tuple[AlertRule, str]] = {}
    for topology in ("cluster", "sentinel"):
        for rule in alert_rules(load_settings({"redis": {"topology": topology}}, stack)):
            where = "both" if rule.name in seen else topology
            seen[rule.name] = (rule, where)
    lines = ["| alert | severity | topology | fires when (PromQL, for) | runbook |", "| --- | --- | --- | --- | --- |"]
    for rule, where in seen.values():
        held = f", for {rule.for_seconds} s" if rule.for_seconds else ""
        expr = rule.expr.replace("|", "\\|")
        lines.append(f"| {rule.name} | {rule.severity} | {where} | `{expr}`{held} | {rule.runbook.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
