"""render/conf.py reads a config or ACL file as redis-server does (the real server's reading is
compared in tests/integration/test_restart_only.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cachelayer.config.settings import load_settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.ops.drift import directives
from cachelayer.plan.topology import build_topology
from cachelayer.render.conf import ConfError, acl_users, conf_values, read_redis_conf, split_args
from cachelayer.render.nodes import render_redis_conf, sandbox_paths
from cachelayer.render.rollout import live_values, restart_fingerprint


def test_the_last_line_wins_for_a_single_valued_directive() -> None:
    conf = conf_values("port 7000\nbind 127.0.0.1\nport 0\nbind 10.0.0.1 ::1\nmaxmemory 1gb\nMAXMEMORY 2gb\n")
    assert conf == {"port": "0", "bind": "10.0.0.1 ::1", "maxmemory": "2gb"}


def test_save_points_accumulate_and_save_empty_drops_them() -> None:
    assert conf_values("save 900 1\nsave 300 10\n")["save"] == "900 1 300 10"
    assert conf_values('save 900 1\nsave ""\nsave 60 5\n')["save"] == "60 5"
    assert conf_values('save 900 1\nsave ""\n')["save"] == ""
    assert conf_values('save "900 1"\nsave 60 5\n')["save"] == "900 1 60 5"


def test_output_buffer_limits_are_set_per_class() -> None:
    conf = conf_values(
        "client-output-buffer-limit replica 256mb 64mb 60\n"
        "client-output-buffer-limit pubsub 32mb 8mb 60 normal 0 0 0\n"
        "client-output-buffer-limit slave 1mb 1mb 1\n"
    )
    assert conf["client-output-buffer-limit"] == "normal 0 0 0 slave 1mb 1mb 1 pubsub 32mb 8mb 60"


def test_per_line_directives_keep_every_line() -> None:
    conf = read_redis_conf("include /a.conf\nrename-command FLUSHALL \"\"\ninclude /b.conf\n")
    assert conf["include"].args == ("/a.conf", "/b.conf")
    assert conf["rename-command"].args == ("FLUSHALL", "")


def test_lines_are_split_as_sdssplitargs_does() -> None:
    assert split_args('logfile "/var/log/a b.log"') == ["logfile", "/var/log/a b.log"]
    assert split_args(r'x "a\x41\n" ' + r"'it\'s'") == ["x", "aA\n", "it's"]
    assert split_args("  \t ") == []
    for bad in ('dir "/a"b', "dir '/a", 'dir "/a'):
        with pytest.raises(ConfError):
            split_args(bad)
    with pytest.raises(ConfError, match="line 2"):
        conf_values('port 0\ndir "/a"b\n')


def test_quotes_are_gone_from_values_and_kept_as_written() -> None:
    conf = read_redis_conf('# comment\n   \nlogfile "/var/log/redis.log"\n')
    assert conf["logfile"].value == "/var/log/redis.log"
    assert conf["logfile"].written == '"/var/log/redis.log"'


def test_a_user_declared_twice_is_refused_as_redis_refuses_it() -> None:
    with pytest.raises(ConfError, match="user app is declared twice"):
        acl_users("user default off\nuser app on\nuser app off\n")
    with pytest.raises(ConfError, match="user app is declared twice"):
        read_redis_conf("user app on\nport 0\nuser app off\n")


def test_an_acl_file_holds_only_user_lines() -> None:
    assert acl_users("port 0\nuser app on +get\n") == {"app": ["on", "+get"]}
    with pytest.raises(ConfError, match="line 1 of an ACL file"):
        acl_users("# users\nuser app on +get\n", acl_file=True)


def prod_conf() -> str:
    settings = load_settings(read_stack_config("prod"), "prod")
    topology = build_topology(settings)
    return render_redis_conf(settings, topology, topology.nodes[0], sandbox_paths(Path("/x"), "n"))


def test_drift_and_rollout_read_a_repeated_directive_as_redis_does() -> None:
    """Drift used to join a repeated `bind` (Redis keeps the last), rollout kept only the last
    `save` line (Redis adds them up): a rollout then CONFIG SET only the last line's points."""
    conf = prod_conf() + "bind 10.1.1.1\nsave 7200 1\n"
    assert directives(conf)["bind"] == "10.1.1.1"
    assert live_values(conf)["save"] == "3600 1 300 100 60 10000 7200 1"
    assert restart_fingerprint(conf) != restart_fingerprint(prod_conf()), "bind is applied by a restart"
