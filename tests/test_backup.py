"""Backup storage rules without a server: S3 URLs, retention, partial backups, and the check of
RDB files with the real redis-check-rdb."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from cachelayer.backup import MANIFEST, BackupError, LocalStore, check_rdb, parse_s3_url, prune

NOW = datetime(2025, 6, 10, 2, 0, tzinfo=UTC)


def make(root: Path, name: str, complete: bool = True) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "shard-1.rdb").write_bytes(b"x")
    if complete:
        (root / name / MANIFEST).write_text("{}")


def test_s3_urls() -> None:
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b/")
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    with pytest.raises(BackupError):
        parse_s3_url("/local/dir")


def test_retention_keeps_the_newest_complete_backup_and_ignores_partial_ones(tmp_path: Path) -> None:
    for day in (1, 2, 3, 4):
        make(tmp_path, f"prod-202506{day:02d}T020000Z")
    make(tmp_path, "prod-20250609T020000Z", complete=False)  # an interrupted run
    store = LocalStore(tmp_path)
    assert [b.name for b in store.list() if b.complete] == [f"prod-202506{d:02d}T020000Z" for d in (1, 2, 3, 4)]
    assert prune(store, keep_days=None, keep_copies=2, now=NOW) == ["prod-20250602T020000Z", "prod-20250601T020000Z"]
    # Every complete backup is older than 1 day: still the newest stays.
    assert prune(store, keep_days=1, keep_copies=None, now=NOW) == ["prod-20250603T020000Z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prod-20250604T020000Z", "prod-20250609T020000Z"]
    assert prune(store, None, None, now=NOW) == []


def test_a_truncated_rdb_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.rdb"
    bad.write_bytes(b"REDIS0010\xfa\x09redis-ver")
    with pytest.raises(BackupError, match="not a valid RDB file"):
        check_rdb(bad)
