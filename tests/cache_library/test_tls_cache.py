"""platform_cache over TLS: a sandbox cluster with the stack's `redis.tls: true`, reached through
the `connection` output's `tls` flag (sync and asyncio)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from redis.exceptions import RedisClusterException

from cachelayer.sandbox.local import LocalSandbox, sandbox_settings
from platform_cache import Cache, CacheConfig, SessionUnavailableError, from_stack_output
from support.tls_certificates import make_test_certificates

from .conftest import make_client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSandbox]:
    certificates = make_test_certificates(tmp_path_factory.mktemp("tls"))
    settings, config = sandbox_settings(
        {"redis": {"base_port": 7860, "tls": True}}, "test", topology="cluster", tls_dir=certificates
    )
    sandbox = LocalSandbox(settings, tmp_path_factory.mktemp("sandbox-7860"), config=config, tls_dir=certificates)
    try:
        sandbox.up()
        yield sandbox
    finally:
        sandbox.down()


def test_the_cache_speaks_tls_when_the_stack_does(tls_sandbox: LocalSandbox, flavour: str) -> None:
    assert tls_sandbox.tls_dir is not None
    connection = json.dumps(
        {
            "user": "app",
            "password": tls_sandbox.passwords.app,
            "seeds": [n.endpoint for n in tls_sandbox.topology.masters],
            "sentinels": [],
            "sentinel_groups": [],
            "tls": True,
        }
    )
    config = from_stack_output(connection, tls_ca_certs=str(tls_sandbox.tls_dir / "ca.crt"))
    assert config.tls
    cache: Any = make_client(flavour, config)
    try:
        assert cache.mset({f"c{i}": {"i": i} for i in range(50)}, tags=["tls"], namespace=flavour)
        assert cache.mget([f"c{i}" for i in range(50)], namespace=flavour) == {f"c{i}": {"i": i} for i in range(50)}
        assert cache.invalidate_by_tags(["tls"]) == 1
        assert cache.get("c1", namespace=flavour) is None
    finally:
        cache.close()


def test_plain_connections_are_refused_by_a_tls_stack(tls_sandbox: LocalSandbox) -> None:
    """The TLS flag matters: without it no node answers. The cache still starts (it connects on
    first use) and fails like an unreachable Redis: reads a miss, sessions closed."""
    config = CacheConfig(seeds=(tls_sandbox.topology.masters[0].endpoint,), password=tls_sandbox.passwords.app)
    with Cache(config) as cache:
        assert cache.get("k", default="from-db") == "from-db"
        with pytest.raises(SessionUnavailableError) as error:
            cache.get_session("sid")
        assert isinstance(error.value.__cause__, RedisClusterException)
