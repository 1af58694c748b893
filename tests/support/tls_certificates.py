"""Throwaway TLS material for tests: a CA and a 127.0.0.1 certificate made with openssl, named
as on the hosts (ca.crt, redis.crt, redis.key), for server and client use like pulumi-tls's."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def make_test_certificates(directory: Path) -> Path:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is missing: run scripts/test.sh, which installs it")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    commands = [
        ["req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=cachelayer-test-ca"],
        ["req", *curve, "-keyout", "redis.key", "-out", "redis.csr", "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", "redis.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "redis.crt", "-days", "2", "-extfile", "ext.cnf"],
    ]  # fmt: skip
    for command in commands:
        done = subprocess.run(["openssl", *command], cwd=directory, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"openssl {' '.join(command)}: {done.stderr}"
    return directory
