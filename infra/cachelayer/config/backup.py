"""`cachelayer:backup`: where `cachelayer backup --stack S` puts the stack's cluster-wide
backups, and which it keeps (docs/backups.md).

Credentials never go here: the stack file is committed in plain text. boto3 takes them from the
environment of the command (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an instance
role); in the scheduled workflow they are repository secrets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cachelayer.errors import SettingsError
from cachelayer.fields import from_mapping

# https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html: 3-63 characters,
# lowercase letters, digits, dots and hyphens, beginning and ending with a letter or digit.
S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
S3_REGION = re.compile(r"^[a-z]{2}(-[a-z0-9]+)+$")  # eu-west-1, us-gov-west-1, auto (R2) below
CREDENTIAL_WORDS = ("key", "secret", "password", "token", "credential")


@dataclass(frozen=True)
class BackupSettings:
    """`cachelayer:backup`."""

    destination: str | None = None  # a directory (relative: to the project) or s3://bucket/prefix; None: .backups/
    s3_endpoint: str | None = None  # an S3-compatible service (MinIO, Ceph, R2); None: AWS
    s3_region: str | None = None  # None: AWS_DEFAULT_REGION, else us-east-1
    keep_days: int | None = None  # delete complete backups older than this after each backup (0: all but the newest)
    keep: int | None = None  # keep this many newest complete backups; the newest is never deleted
    pushgateway: str | None = None  # http(s) URL: the newest complete backup's time goes there after each backup

    @property
    def is_s3(self) -> bool:
        return bool(self.destination and self.destination.startswith("s3://"))

    @property
    def off_host(self) -> bool:
        """True when backups leave the machine that takes them: an S3 bucket, or an absolute
        directory (a mount the operator provides). A relative directory, or none, is a folder of
        the checkout, which a CI runner throws away."""
        return self.is_s3 or (self.destination is not None and self.destination.startswith("/"))


OFF_HOST_FIX = "set cachelayer:backup.destination to s3://bucket/prefix (docs/backups.md)"


def load_backup_settings(raw: Any) -> BackupSettings:
    if isinstance(raw, Mapping):
        for key in raw:
            if any(word in str(key).lower() for word in CREDENTIAL_WORDS):
                raise SettingsError(
                    f"backup.{key}",
                    "credentials do not go in the stack file (it is committed in plain text)",
                    "remove it, and set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY where `cachelayer backup` "
                    "runs (repository secrets in the scheduled workflow)",
                )
    settings = from_mapping(BackupSettings, raw, "backup")
    if settings.destination is not None:
        _check_destination(settings.destination)
    if settings.s3_endpoint is not None:
        address = urlsplit(settings.s3_endpoint)
        if address.scheme not in ("http", "https") or not address.hostname:
            raise SettingsError("backup.s3_endpoint", f"'{settings.s3_endpoint}' is not an http(s) URL",
                                "write the service's URL, e.g. https://minio.internal:9000")
        if not settings.is_s3:
            raise SettingsError("backup.s3_endpoint", "is set but backup.destination is not s3://...",
                                "set destination: s3://bucket/prefix, or remove s3_endpoint")
    if settings.pushgateway is not None:
        address = urlsplit(settings.pushgateway)
        if address.scheme not in ("http", "https") or not address.hostname:
            raise SettingsError("backup.pushgateway", f"'{settings.pushgateway}' is not an http(s) URL",
                                "write the Pushgateway's URL, e.g. http://monitoring.internal:9091")
        if address.username or address.password:
            raise SettingsError("backup.pushgateway", "holds credentials (the stack file is committed in plain text)",
                                "remove them from the URL")
    if settings.s3_region is not None and settings.s3_region != "auto" and not S3_REGION.match(settings.s3_region):
        raise SettingsError("backup.s3_region", f"'{settings.s3_region}' is not a region name",
                            "write one like eu-west-1 (or auto for Cloudflare R2)")
    for key, least in (("keep_days", 0), ("keep", 1)):
        value = getattr(settings, key)
        if value is not None and value < least:
            raise SettingsError(f"backup.{key}", f"is {value}", f"use {least} or more, or leave it out to keep everything")
    return settings


def _check_destination(destination: str) -> None:
    if not destination.strip():
        raise SettingsError("backup.destination", "is empty", "write a directory or s3://bucket/prefix")
    if destination.startswith("s3://"):
        bucket = destination[5:].partition("/")[0]
        if not S3_BUCKET.match(bucket) or ".." in bucket:
            raise SettingsError("backup.destination", f"'{bucket}' is not a valid S3 bucket name",
                                "use 3-63 lowercase letters, digits, dots or hyphens, starting and ending with a "
                                "letter or digit")
    elif "://" in destination:
        raise SettingsError("backup.destination", f"'{destination}' is neither a directory nor s3://...",
                            "write a directory, or s3://bucket/prefix for S3-compatible storage")
