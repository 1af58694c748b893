"""`cachelayer backup`, `restore` and `restore-drill` (docs/backups.md).

Exit codes (common.ExitCode): 0 done (and verified, when asked), 1 refused or failed (a corrupt
file, a non-empty target, a verification that did not match), 2 no deployment.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from cachelayer.cli.common import (
    DEFAULT_STACK,
    ExitCode,
    JsonOption,
    OutputsOption,
    SeedOption,
    StackOption,
    WorkdirOption,
    YesOption,
    confirm_target_change,
    console,
    emit_json,
    errors,
    fail,
    progress,
    reported,
    require_named_stack,
    target_of,
    usage_error,
    whole_column,
)
from cachelayer.config.backup import BackupSettings
from cachelayer.errors import CachelayerError
from cachelayer.paths import project_root

if TYPE_CHECKING:
    from cachelayer.ops.backup import Store
    from cachelayer.ops.restore import Mode, RestoreResult
    from cachelayer.ops.target import Target

OK, PROBLEM = ExitCode.OK, ExitCode.PROBLEM
DEFAULT_DIR = ".backups"  # in the project
EndpointOption = Annotated[
    str | None,
    typer.Option("--s3-endpoint", metavar="URL", show_default=False,
                 help="S3-compatible endpoint URL (default: AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL)."),
]


def register(app: typer.Typer) -> None:
    app.command("backup")(backup)
    app.command("restore")(restore_command)
    app.command("restore-drill")(restore_drill)


@contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM as Ctrl-C: the same clean-up (temporary servers stopped, files removed)."""
    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _store(location: str, endpoint: str | None, region: str | None = None) -> Store:
    from cachelayer.ops.backup import S3Store, open_store

    store = open_store(location, endpoint)
    if isinstance(store, S3Store):
        store.endpoint = endpoint or store.endpoint
        store.region = region or store.region
    return store


def stack_backup(target: Target) -> BackupSettings:
    """The stack's `cachelayer:backup` settings (defaults when the stack file is not at hand)."""
    settings = getattr(target, "settings", None)
    return settings.backup if settings is not None else BackupSettings()


def holds(destination: str | None, location: str) -> bool:
    """`location` is the S3 destination itself or inside it (s3://b/prod does not hold s3://b/prod-us)."""
    if destination is None or not destination.startswith("s3://"):
        return False
    root = destination.rstrip("/")
    return location == root or location.startswith(f"{root}/")


def source_backup_settings(location: str, target: Target, from_stack: str) -> BackupSettings:
    """The backup settings of the stack whose S3 destination holds `location`: the target's own or,
    restoring another stack's backup (another region's bucket), --from-stack's, whose endpoint and
    region reach that bucket. Anything else: the target's."""
    from cachelayer.config.backup import load_backup_settings
    from cachelayer.config.stack_file import read_stack_config

    own = stack_backup(target)
    if holds(own.destination, location) or from_stack == target.stack:
        return own
    try:
        source = load_backup_settings(read_stack_config(from_stack).get("backup"))
    except CachelayerError:
        return own  # no (valid) stack file for it here: the location says all there is
    return source if holds(source.destination, location) else own


def destination_of(backup: BackupSettings) -> str:
    """Where backups go: the stack's destination (a relative directory is the project's), else .backups/."""
    if backup.destination is None:
        return str(project_root() / DEFAULT_DIR)
    if backup.is_s3 or Path(backup.destination).is_absolute():
        return backup.destination
    return str(project_root() / backup.destination)


def _backup_to(target: Any, location: str, endpoint: str | None, from_masters: bool,
               keep_days: int | None, keep: int | None, as_json: bool) -> tuple[Store, str, dict[str, Any], list[str]]:
    """Takes the backup into `location`; (the store, where it is, its manifest, the stack's backups pruned)."""
    from cachelayer.ops.backup import LocalStore, prune, read_manifest, take_backup

    store = _store(location, endpoint, stack_backup(target).s3_region)
    local_root = store.root if isinstance(store, LocalStore) else Path(tempfile.mkdtemp(prefix="cachelayer-backup-"))
    try:
        with progress(f"Snapshotting {target.stack} shard by shard (redis-cli --rdb, redis-check-rdb)…", as_json):
            path = take_backup(target, local_root, from_masters)
        manifest = read_manifest(path)
        if not isinstance(store, LocalStore):
            with progress(f"Uploading to {store.describe()} (manifest last)…", as_json):
                store.put(path)
        pruned = prune(store, target.stack, keep_days, keep)
        return store, store.describe(path.name), manifest, pruned
    finally:
        if not isinstance(store, LocalStore):
            shutil.rmtree(local_root, ignore_errors=True)


def _push_newest(store: Store, stack: str, gateway: str) -> str:
    """The stack's newest complete backup, as read back from the destination, to the Pushgateway."""
    from cachelayer.ops.backup import BackupError, newest_complete
    from cachelayer.ops.backup_metrics import push_newest_backup

    newest = newest_complete(store, stack)
    if newest is None:
        raise BackupError(f"{store.describe()} lists no complete backup of {stack} after the backup: nothing to report")
    push_newest_backup(gateway, stack, newest)
    return newest.name


def _off_host_refusal(target: Any, settings: BackupSettings, to: str | None) -> str | None:
    """Why a backup of a hosts-target stack may not run: its destination would stay on the machine
    that takes it (a CI runner's checkout is thrown away). An explicit --to is the operator's choice."""
    from cachelayer.config.backup import OFF_HOST_FIX

    stack_settings = getattr(target, "settings", None)
    if to is not None or stack_settings is None or stack_settings.redis.target != "hosts" or settings.off_host:
        return None
    where = settings.destination or f"{DEFAULT_DIR}/ (the default)"
    return (f"{target.stack} runs on hosts and its backup destination {where} is not off-host: {OFF_HOST_FIX}, "
            "or pass --to s3://bucket/prefix (or an absolute mounted directory)")


def _shards_table(manifest: dict[str, Any]) -> Table:
    table = Table(title=f"backup {manifest['name']} ({manifest['topology']}, Redis {manifest['redis_version']})")
    shards = manifest["shards"]
    wheres = [shard["group"] or "\n".join(f"{a}-{b}" for a, b in shard["slots"]) for shard in shards]
    sources = [f"{shard['source']['address']}\n({shard['source']['role']})" for shard in shards]
    whole_column(table, "shard", [str(shard["index"]) for shard in shards])
    whole_column(table, "slots / group", wheres)
    whole_column(table, "from", sources)
    for column in ("keys", "bytes", "sha256", "s"):
        table.add_column(column, overflow="fold")
    for shard, where, source in zip(shards, wheres, sources, strict=True):
        table.add_row(str(shard["index"]), where, source,
                      str(shard["rdb_keys"]), str(shard["bytes"]), shard["sha256"][:12], f"{shard['seconds']:.2f}")
    return table


def backup(
    context: typer.Context,
    stack: StackOption = DEFAULT_STACK,
    to: Annotated[str | None, typer.Option(
        "--to", metavar="WHERE", show_default=False,
        help="A directory, or s3://bucket/prefix. Default: the stack's backup.destination, else .backups/.")] = None,
    from_masters: Annotated[bool, typer.Option(
        show_default=False, help="Snapshot the masters (they fork) instead of a healthy replica.")] = False,
    keep_days: Annotated[int | None, typer.Option(
        min=0, metavar="N", show_default=False,
        help="Delete backups older than N days there (0: all but the newest). Default: the stack's "
        "backup.keep_days.")] = None,
    keep: Annotated[int | None, typer.Option(
        min=1, metavar="N", show_default=False,
        help="Keep the N newest backups there. Default: the stack's backup.keep.")] = None,
    s3_endpoint: EndpointOption = None,
    pushgateway: Annotated[str | None, typer.Option(
        "--pushgateway", metavar="URL", show_default=False,
        help="Push the newest complete backup's time there (the backup-age alert). Default: the stack's "
        "backup.pushgateway.")] = None,
    seed: SeedOption = None,
    workdir: WorkdirOption = None,
    outputs: OutputsOption = None,
    as_json: JsonOption = False,
    yes: YesOption = False,
) -> None:
    """Back the deployment up, shard by shard.

    One checked RDB per shard, snapshotted from a healthy replica, and a manifest.json, into a
    directory or an S3 bucket; then the retention runs. The newest complete backup is never deleted.
    """
    target = target_of(stack, seed, workdir, outputs, as_json)
    require_named_stack(context, target, as_json)  # backups are named by the stack
    settings = stack_backup(target)
    refusal = _off_host_refusal(target, settings, to)
    if refusal is not None:
        raise fail(refusal, as_json, code=PROBLEM)
    location = to or destination_of(settings)
    gateway = pushgateway or settings.pushgateway
    # The stack's endpoint applies to its own destination, not to another --to.
    endpoint = s3_endpoint or (settings.s3_endpoint if location == settings.destination else None)
    # The stack file's retention is reviewed policy and runs unattended; one given here deletes
    # backups on the operator's word: confirmed like any other deletion.
    asked = ([f"older than {keep_days} day(s)"] if keep_days is not None else []) + (
        [f"beyond the {keep} newest"] if keep is not None else [])
    if asked:
        confirm_target_change(context, f"back up, then delete the backups {' and '.join(asked)} in {location}",
                              target, yes=yes, as_json=as_json)
    keep_days = keep_days if keep_days is not None else settings.keep_days
    keep = keep if keep is not None else settings.keep
    try:
        with reported(as_json, PROBLEM):
            store, where, manifest, pruned = _backup_to(target, location, endpoint, from_masters, keep_days, keep,
                                                        as_json)
    except OSError as error:  # the destination: a full disk, no permission
        raise fail(str(error), as_json, code=PROBLEM) from None
    pushed: str | None = None
    push_error: str | None = None
    if gateway:
        try:
            pushed = _push_newest(store, target.stack, gateway)
        except (CachelayerError, OSError) as error:  # saved, but the alert would not know: fail the run
            push_error = f"saved {where}, but the backup age was not reported: {error}"
    if as_json:
        emit_json({"command": "backup", "target": target.describe(), "ok": push_error is None, "location": where,
                    "manifest": manifest, "pruned": pruned, "pushed": pushed, "push_error": push_error})
        raise typer.Exit(code=OK if push_error is None else PROBLEM)
    console.print(_shards_table(manifest))
    console.print(f"[green]saved[/] {where}; shards were snapshotted one after another (not one point in time)",
                  highlight=False, soft_wrap=True)
    for name in pruned:
        console.print(f"pruned {name}", highlight=False)
    if push_error is not None:
        raise fail(push_error, code=PROBLEM)
    if pushed is not None:
        console.print(f"reported {pushed} as the newest complete backup to {gateway}", highlight=False)
    else:
        errors.print("no Pushgateway (backup.pushgateway or --pushgateway): the backup-age alert does not see this "
                     "backup", highlight=False)
    raise typer.Exit(code=OK)


def _restore_table(result: RestoreResult) -> Table:
    table = Table(title=f"restore of {result.source} ({result.mode})")
    for column in ("shard", "in backup", "restored", "existing", "expired", "keys/s", "verify"):
        table.add_column(column, overflow="fold")
    for shard in result.shards:
        rate = shard.restored / shard.seconds if shard.seconds else 0
        verdict = "-" if shard.verified is None else (
            f"[green]ok[/] ({shard.sampled} sampled)" if shard.verified
            else f"[red]FAILED[/] counts {'match' if shard.counts_match else 'differ'}, {len(shard.mismatches)} differ")
        table.add_row(shard.label, str(shard.source_keys), str(shard.restored), str(shard.existing),
                      str(shard.expired), f"{rate:,.0f}", verdict)
    return table


def _run_restore(location: str, target: Any, from_stack: str, mode: Mode, verify: bool, batch: int, sample: int,
                 endpoint: str | None, as_json: bool, parallel: int | None) -> RestoreResult:
    from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, Task, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as RichProgress
    from rich.text import Text

    from cachelayer.ops.restore import Progress, open_backup, restore

    class KeysPerSecond(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(f"{task.speed or 0:,.0f} keys/s")

    class Bars(Progress):
        """The restore's progress: one bar per shard, on stderr."""

        def __init__(self, bar: RichProgress) -> None:
            self.bar = bar

        def start(self, label: str, total: int) -> Any:
            return self.bar.add_task(label, total=total)

        def advance(self, task: Any, keys: int) -> None:
            self.bar.advance(task, keys)

    announce = None if as_json else (lambda line: errors.print(f"[dim]{line}[/]", highlight=False))
    settings = source_backup_settings(location, target, from_stack)
    if holds(settings.destination, location):
        # A backup in the stack's own destination (or --from-stack's): its endpoint and region,
        # unless --s3-endpoint says.
        endpoint = endpoint or settings.s3_endpoint
    with open_backup(location, endpoint, settings.s3_region, stack=from_stack) as (source, files):
        if as_json:
            return restore(files, target, mode, verify, source, batch, sample, announce=announce, parallel=parallel)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), KeysPerSecond(),
                   TimeElapsedColumn())
        with RichProgress(*columns, console=errors, transient=False) as bar:
            return restore(files, target, mode, verify, source, batch, sample, Bars(bar), announce=announce,
                           parallel=parallel)


def restore_command(
    context: typer.Context,
    backup_location: Annotated[str, typer.Argument(
        metavar="BACKUP", help="A backup directory, a folder of them (newest), s3://..., or the hosts' .rdb files.")],
    into: Annotated[str, typer.Option("--into", metavar="NAME", help="The stack to restore into.")] = DEFAULT_STACK,
    from_stack: Annotated[str | None, typer.Option(
        "--from-stack", metavar="NAME", show_default=False,
        help="The stack the backup was taken of, when not --into's: a folder gives that stack's newest backup, "
        "and a backup of any other stack is refused.")] = None,
    mode: Annotated[str, typer.Option(metavar="MODE", help="fail-if-not-empty, skip-existing or replace.")
                    ] = "fail-if-not-empty",
    verify: Annotated[bool, typer.Option(
        "--verify/--no-verify",
        help="Check counts per shard (they must add up) and compare a sample by DUMP payload.")] = True,
    batch: Annotated[int, typer.Option(metavar="N", help="Keys per SCAN batch and pipeline.")] = 1000,
    sample: Annotated[int, typer.Option(metavar="N", help="Keys per shard compared by --verify.")] = 100,
    parallel: Annotated[int | None, typer.Option(
        min=1, metavar="N", show_default=False,
        help="Shards restored at once (each in a temporary redis-server's memory). "
        "Default: up to 4, as many as fit in half the free memory.")] = None,
    s3_endpoint: EndpointOption = None,
    seed: SeedOption = None,
    workdir: WorkdirOption = None,
    outputs: OutputsOption = None,
    as_json: JsonOption = False,
    yes: YesOption = False,
) -> None:
    """Restore a backup into a stack, whatever its shape.

    Each shard's RDB is loaded into a temporary redis-server and its keys RESTOREd (ABSTTL) into
    the target through its masters. Refuses a non-empty target unless --mode says, and a backup
    of another stack than --into unless --from-stack names it. Verifies by default.
    """
    from cachelayer.ops.restore import MODES

    if mode not in MODES:
        raise usage_error(f"--mode must be one of {', '.join(MODES)}, not {mode!r}", as_json)
    target = target_of(into, seed, workdir, outputs, as_json)
    overwrite = "; keys that exist are OVERWRITTEN" if mode == "replace" else ""
    confirm_target_change(context, f"restore {backup_location} into it (--mode {mode}{overwrite})", target,
                          yes=yes, as_json=as_json, stack_option="into")
    try:
        with reported(as_json, PROBLEM), _interruptible():
            result = _run_restore(backup_location, target, from_stack or target.stack, mode, verify, batch, sample,
                                  s3_endpoint, as_json, parallel)
    except OSError as error:  # the backup's files: missing, unreadable
        raise fail(str(error), as_json, code=PROBLEM) from None
    ok = result.verified is not False
    if as_json:
        emit_json({"command": "restore", "target": target.describe(), "ok": ok, **result.as_json()})
        raise typer.Exit(code=OK if ok else PROBLEM)
    console.print(_restore_table(result))
    console.print(f"restored {result.restored} keys in {result.seconds:.1f} s ({result.keys_per_second:,.0f} keys/s); "
                  f"target keys {result.target_keys_before} → {result.target_keys_after}", highlight=False)
    if not ok:
        raise fail("verification failed: the restored data does not match the backup", code=PROBLEM)
    raise typer.Exit(code=OK)


def free_base_port(first: int = 17000, last: int = 18000, sentinels: bool = False) -> int:
    """A base port with 6 node ports, their bus ports (+10000) and, for sentinel, +20000 free."""
    from cachelayer.ports import PortsTakenError, free_port_block
    from cachelayer.sandbox.errors import SandboxError

    try:
        return free_port_block(first, last, size=6, offsets=(10000,), step=10,
                               extra=(20000, 20001, 20002) if sentinels else (), shuffle=False)
    except PortsTakenError:
        raise SandboxError(f"no free block of ports in {first}-{last}: pass --base-port") from None


def restore_drill(
    stack: StackOption = DEFAULT_STACK,
    backups: Annotated[str | None, typer.Option(
        "--backups", metavar="WHERE", show_default=False,
        help="Where the stack's backups are (a directory or s3://bucket/prefix). Default: the stack's "
        "backup.destination, else .backups/.")] = None,
    base_port: Annotated[int | None, typer.Option(
        metavar="PORT", show_default=False,
        help="Ports of the throwaway sandbox (default: a free block from 17000).")] = None,
    sample: Annotated[int, typer.Option(metavar="N", help="Keys per shard compared by DUMP payload.")] = 100,
    s3_endpoint: EndpointOption = None,
    seed: SeedOption = None,
    workdir: WorkdirOption = None,
    outputs: OutputsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Restore the stack's newest stored backup into a throwaway sandbox, verify.

    Reads back what `cachelayer backup` stored: the newest complete backup of the stack in its
    destination (not a fresh snapshot), restored into a throwaway local sandbox of the stack's
    topology; the check compares counts and sampled DUMP payloads, reports the figures and
    cleans up. Exit 1 when any step fails.
    """
    from cachelayer.ops.backup import BackupError, newest_complete
    from cachelayer.ops.restore import open_backup, restore
    from cachelayer.sandbox.local import LocalSandbox, sandbox_settings
    from cachelayer.sandbox.targets import target_of_sandbox

    target = target_of(stack, seed, workdir, outputs, as_json)
    settings_backup = stack_backup(target)
    location = backups or destination_of(settings_backup)
    endpoint = s3_endpoint or (settings_backup.s3_endpoint if location == settings_backup.destination else None)
    scratch = Path(tempfile.mkdtemp(prefix="cachelayer-drill-"))
    figures: dict[str, Any] = {}
    sandbox: LocalSandbox | None = None
    try:
        with _interruptible():
            store = _store(location, endpoint, settings_backup.s3_region)
            newest = newest_complete(store, target.stack)
            if newest is None:
                raise BackupError(f"{store.describe()} holds no complete backup of {target.stack}: run "
                                  f"`cachelayer backup --stack {target.stack}` first")
            figures["backup"] = store.describe(newest.name)
            if newest.when is not None:
                figures["backup_age_seconds"] = round(time.time() - newest.when.timestamp())
            if not as_json:
                console.print(f"restoring {figures['backup']}, the newest complete backup of {target.stack}",
                              highlight=False, soft_wrap=True)
            port = base_port or free_base_port(sentinels=target.kind == "sentinel")
            config: dict[str, Any] = {"redis": {"maxmemory": "4gb"}}
            if target.kind == "sentinel":
                config["sentinel"] = {"ports": [port + 20000 + i for i in range(3)]}
            settings, merged = sandbox_settings(config, f"{stack}-drill", target.kind, port)
            sandbox = LocalSandbox(settings, scratch / "sandbox", config=merged)
            with progress(f"Starting a throwaway {target.kind} sandbox on {port}…", as_json):
                figures["sandbox_seconds"] = round(sandbox.up().seconds, 3)
            drill_target = target_of_sandbox(sandbox, "restore drill sandbox")
            with (open_backup(figures["backup"], endpoint, settings_backup.s3_region, stack=target.stack)
                  as (source, files), progress("Downloading, restoring and verifying…", as_json)):
                result = restore(files, drill_target, "fail-if-not-empty", True, source, sample=sample)
    except (CachelayerError, OSError) as error:  # every step's refusal, and the scratch directory's
        raise fail(f"restore drill failed: {error}", as_json, code=PROBLEM) from None
    finally:
        if sandbox is not None:
            sandbox.down(purge=True)
        shutil.rmtree(scratch, ignore_errors=True)
    figures |= {"backup_keys": sum(s.source_keys for s in result.shards),
                "restore_seconds": round(result.seconds, 3), "restored_keys": result.restored,
                "keys_per_second": round(result.keys_per_second), "expired": sum(s.expired for s in result.shards),
                "sampled": sum(s.sampled for s in result.shards), "verified": bool(result.verified)}
    ok = bool(result.verified)
    if as_json:
        emit_json({"command": "restore-drill", "target": target.describe(), "ok": ok, "figures": figures,
                    "restore": result.as_json()})
        raise typer.Exit(code=OK if ok else PROBLEM)
    console.print(_restore_table(result))
    table = Table(title=f"restore drill of {target.stack}: {'[green]passed' if ok else '[red]FAILED'}")
    whole_column(table, "figure", list(figures))
    whole_column(table, "value", [str(v) for v in figures.values()], justify="right")
    for name, value in figures.items():
        table.add_row(name, str(value))
    console.print(table)
    raise typer.Exit(code=OK if ok else PROBLEM)
