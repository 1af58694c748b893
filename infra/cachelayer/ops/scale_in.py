"""Scale-in without dropping a slot: the nodes a lowered `redis.node_count` no longer plans are
drained (their slots and keys moved to the remaining masters, key by key with MIGRATE, so every
slot stays served) and made forgotten by the cluster before their processes go away. Then every
remaining master gets its `replicas_per_master` replicas back, taken from masters that have more.

The local sandbox runs it before `up` (sandbox/targets.py); on the hosts and in Docker, the node's
delete step refuses while the node still owns slots or keys (see render_hosts.render_node_guard)."""

from __future__ import annotations

from collections.abc import Callable

from cachelayer.ops.rebalance import RebalanceError, node_id, own_line, postcheck, preflight, redis_cli_cluster
from cachelayer.ops.target import Endpoint, Target

Report = Callable[[str], None]


def retire(target: Target, leaving: tuple[Endpoint, ...], masters_wanted: int, report: Report) -> None:
    """Move the slots of the leaving masters, and of staying masters beyond `masters_wanted`, to
    the other masters in one rebalance (weight 0); `del-node` each leaving node, replicas first
    (every node forgets it and redis-cli shuts it down); the emptied staying masters become
    replicas."""
    preflight(target)
    ids = {endpoint: node_id(target, endpoint) for endpoint in target.nodes}
    staying_masters = [e for e in target.nodes if e not in leaving and ids[e][1]]
    # The highest ports go first, so the lowest (the plan's first nodes) keep serving.
    demoted = sorted(staying_masters, key=lambda e: e.port)[masters_wanted:]
    emptied = [e for e in leaving if ids[e][1]] + demoted
    anchor = next(e for e in target.nodes if e not in leaving and e not in demoted)
    if emptied:
        report(f"moving the slots of {', '.join(e.name for e in emptied)} to the remaining masters")
        weights = [f"{ids[e][0]}=0" for e in emptied]
        redis_cli_cluster(target, "rebalance", anchor.address, "--cluster-weight", *weights)
        for endpoint in emptied:
            # Redis 7 turns a master that gave away its last slot into a replica of the node that
            # took it, so its keys may be a copy now: what must be gone is its slots.
            if own_line(target, endpoint)["slots"]:
                raise RebalanceError(f"{endpoint.name} still owns slots after the rebalance")
    for endpoint in sorted(leaving, key=lambda e: ids[e][1]):  # replicas first
        report(f"removing {endpoint.name} from the cluster")
        redis_cli_cluster(target, "del-node", anchor.address, ids[endpoint][0])
    for endpoint in demoted:
        master = ids[anchor][0]
        report(f"{endpoint.name} (now empty) becomes a replica")
        with target.client(endpoint) as client:
            client.execute_command("CLUSTER REPLICATE", master)
    postcheck(target, ignore=leaving)


def restore_replicas(target: Target, wanted: int, report: Report) -> None:
    """Give every serving master `wanted` replicas back. Spare replicas are those of masters with
    more than `wanted`, and those left replicating a node that is no longer a master (a chain:
    removing or emptying a master can leave its replicas behind it). Each node is asked about
    itself, since another node's view may not have heard of the last moves yet."""
    selves = {endpoint: own_line(target, endpoint) for endpoint in target.nodes}
    serving = {d["node_id"]: e for e, d in selves.items() if "master" in d["flags"] and d["slots"]}
    replicas: dict[str, list[Endpoint]] = {ident: [] for ident in serving}
    spare: list[Endpoint] = []
    for endpoint, detail in selves.items():
        if "slave" in detail["flags"]:
            replicas.get(detail["master_id"], spare).append(endpoint)
    for own in replicas.values():
        spare += own[wanted:]
        del own[wanted:]
    for ident in sorted(serving, key=lambda i: serving[i].port):
        while len(replicas[ident]) < wanted and spare:
            moved = spare.pop(0)
            report(f"{moved.name} now replicates {serving[ident].name}")
            with target.client(moved) as client:
                client.execute_command("CLUSTER REPLICATE", ident)
            replicas[ident].append(moved)
