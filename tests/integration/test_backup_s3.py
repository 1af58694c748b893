"""Off-host copies to an S3-compatible server (moto in server mode, started here on a free
loopback port): upload with the manifest last, retention, partial uploads, and the stack's
`cachelayer:backup` settings. Ports 7950-7955, 7980-7985."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from cachelayer.cli.app import main
from cachelayer.ops.backup import MANIFEST
from cachelayer.ports import free_loopback_port
from cachelayer.sandbox.local import LocalSandbox, sandbox_settings

from .test_backup_restore import admin_cluster

pytestmark = pytest.mark.integration
BUCKET = "cachelayer-backups"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    port = free_loopback_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as patch:
        # Made-up credentials for the local server; boto3 reads them from the environment.
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client
    server.stop()


@pytest.fixture(scope="module")
def cluster(sandbox_factory: Callable[..., LocalSandbox]) -> LocalSandbox:
    sandbox = sandbox_factory(7950)
    sandbox.up()
    client = admin_cluster(sandbox)
    for i in range(300):
        client.set(f"s3:{i}", i)
    return sandbox


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    # --json never prompts: a restore, or a backup that prunes on the command line, says --yes.
    confirmed = ["--yes"] if argv[0] in ("restore", "backup") else []
    code = main([*argv, "--json", *confirmed])
    return code, json.loads(capsys.readouterr().out)


def keys_under(client: Any, prefix: str) -> list[str]:
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return sorted(o["Key"] for o in listed)


def test_s3_copies_retention_and_partial_uploads(
    s3: tuple[str, Any], cluster: LocalSandbox, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    endpoint, client = s3
    common = ["--workdir", str(cluster.workdir), "--to", f"s3://{BUCKET}/daily", "--s3-endpoint", endpoint]
    code, first = run_json(["backup", *common], capsys)
    assert code == 0, first
    name = first["manifest"]["name"]
    assert keys_under(client, f"daily/{name}/") == [f"daily/{name}/{f}" for f in
                                                   (MANIFEST, "shard-1.rdb", "shard-2.rdb", "shard-3.rdb")]
    code, second = run_json(["backup", *common, "--keep", "1"], capsys)
    assert code == 0 and second["pruned"] == [name], second
    newest = second["manifest"]["name"]
    assert keys_under(client, f"daily/{name}/") == []

    # A newer upload without its manifest (interrupted) is not a backup: not restored, not
    # counted by retention, and named explicitly it is refused.
    partial = "test-29991231T000000Z"
    client.put_object(Bucket=BUCKET, Key=f"daily/{partial}/shard-1.rdb", Body=b"REDIS0010 half a file")
    code, pruned = run_json(["backup", *common, "--keep", "1"], capsys)  # the third: prunes the second only
    assert code == 0 and pruned["pruned"] == [newest]
    third = pruned["manifest"]["name"]
    code, restored = run_json(["restore", f"s3://{BUCKET}/daily", "--s3-endpoint", endpoint, "--workdir",
                               str(cluster.workdir), "--mode", "replace", "--verify"], capsys)
    assert code == 0 and restored["source"] == f"s3://{BUCKET}/daily/{third}" and restored["restored"] == 300
    code, refused = run_json(["restore", f"s3://{BUCKET}/daily/{partial}", "--s3-endpoint", endpoint, "--workdir",
                              str(cluster.workdir), "--mode", "replace"], capsys)
    assert code == 1 and "not a complete backup" in refused["error"]
    assert keys_under(client, f"daily/{partial}/") == [f"daily/{partial}/shard-1.rdb"], "a partial upload is left alone"

    # Retention by age never deletes the newest complete backup, however old.
    code, aged = run_json(["backup", *common, "--keep-days", "0"], capsys)
    assert code == 0 and aged["pruned"] == [third]
    assert [k for k in keys_under(client, "daily/") if k.endswith(MANIFEST)] == [
        f"daily/{aged['manifest']['name']}/{MANIFEST}"]


def test_the_stacks_backup_settings_choose_the_bucket_endpoint_and_retention(
    s3: tuple[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """No --to, --s3-endpoint or --keep: `cachelayer:backup` says where and what to keep; the
    credentials come from the environment only."""
    endpoint, client = s3
    config: dict[str, Any] = {"redis": {"base_port": 7980},
                              "backup": {"destination": f"s3://{BUCKET}/stacked", "s3_endpoint": endpoint, "keep": 1}}
    settings, merged = sandbox_settings(config, "test", topology="cluster")
    sandbox = LocalSandbox(settings, tmp_path / "sandbox", config=merged)
    try:
        sandbox.up()
        admin_cluster(sandbox).set("stacked", "yes")
        workdir = ["--workdir", str(sandbox.workdir)]
        code, first = run_json(["backup", *workdir], capsys)
        assert code == 0 and first["location"] == f"s3://{BUCKET}/stacked/{first['manifest']['name']}", first
        # Another stack's backup in the same prefix, newer by name: never pruned, never picked.
        other = "prod-29990101T000000.000Z"
        for key in keys_under(client, f"stacked/{first['manifest']['name']}/"):
            body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            if key.endswith(MANIFEST):
                body = json.dumps(json.loads(body) | {"name": other, "stack": "prod"}).encode()
            client.put_object(Bucket=BUCKET, Key=f"stacked/{other}/{key.rsplit('/', 1)[1]}", Body=body)
        code, second = run_json(["backup", *workdir], capsys)
        assert code == 0 and second["pruned"] == [first["manifest"]["name"]], second  # keep: 1
        assert {k.split("/")[1] for k in keys_under(client, "stacked/")} == {second["manifest"]["name"], other}
        # A backup in the stack's destination is restored with the stack's endpoint.
        code, restored = run_json(["restore", f"s3://{BUCKET}/stacked", *workdir, "--mode", "replace", "--verify"],
                                  capsys)
        assert code == 0 and restored["verified"] is True and restored["restored"] == 1, restored
        assert restored["source"] == second["location"]
        # The drill reads back what was stored there (as the scheduled workflow does), not a snapshot.
        code, drill = run_json(["restore-drill", *workdir], capsys)
        assert code == 0 and drill["figures"]["backup"] == second["location"], drill
        assert drill["figures"]["restored_keys"] == 1
        # An explicit --keep wins over the stack's.
        code, third = run_json(["backup", *workdir, "--keep", "2"], capsys)
        assert code == 0 and third["pruned"] == [], third
    finally:
        sandbox.down()
