"""The newest complete backup's time, pushed to a Prometheus Pushgateway after each backup, so
the backup-age panel and the missed-backup alert measure the destination, not a node's last
save (`cachelayer backup` copies RDBs with `redis-cli --rdb`, which moves no node's
`rdb_last_save_time`).

Why a Pushgateway and not node-exporter's textfile collector: the backup is a service-level batch
job (one run for the whole cluster) that runs on a CI runner thrown away after the job. A
`*.prom` file there would vanish with the runner and no node-exporter on it is scraped; the
Pushgateway keeps the last value pushed until the next run replaces it, which is the use the
Prometheus documentation gives it ("capturing the outcome of a service-level batch job").
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

from cachelayer.ops.backup import BackupError, StoredBackup
from cachelayer.render.monitoring import BACKUP_PUSH_JOB as JOB
from cachelayer.render.monitoring import BACKUP_TIMESTAMP as NEWEST_COMPLETE


def exposition(stack: str, newest: StoredBackup) -> str:
    """The metric in Prometheus's text format (the grouping key carries `stack`, not a label here)."""
    if newest.when is None:
        raise BackupError(f"{newest.name} has no time in its name: no backup age can be reported")
    return (
        f"# HELP {NEWEST_COMPLETE} When the newest complete backup of the stack in its destination was started "
        "(Unix time, from its name).\n"
        f"# TYPE {NEWEST_COMPLETE} gauge\n"
        f"{NEWEST_COMPLETE} {newest.when.timestamp():.3f}\n"
    )


def push_url(gateway: str, stack: str) -> str:
    """PUT here replaces the whole group: /metrics/job/<job>/stack/<stack> (the grouping key
    becomes the series' `job` and `stack` labels; the scrape job keeps them with honor_labels)."""
    return f"{gateway.rstrip('/')}/metrics/job/{JOB}/stack/{urllib.parse.quote(stack, safe='')}"


def push_newest_backup(gateway: str, stack: str, newest: StoredBackup, timeout: float = 30) -> None:
    """Replaces the stack's group on the Pushgateway with the newest complete backup's time."""
    request = urllib.request.Request(push_url(gateway, stack), data=exposition(stack, newest).encode(), method="PUT",
                                     headers={"Content-Type": "text/plain; version=0.0.4"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        raise BackupError(f"the Pushgateway at {gateway} refused the backup metric: HTTP {error.code} "
                          f"{error.read()[:200].decode(errors='replace').strip()}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise BackupError(f"the Pushgateway at {gateway} could not be reached: {reason}") from None
    if status not in (200, 202):
        raise BackupError(f"the Pushgateway at {gateway} answered HTTP {status} to the backup metric")
