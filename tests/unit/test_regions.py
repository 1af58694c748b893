"""Several regions (docs/regions.md): the shipped second region `prod-us` loads through the real
settings loader; prod and prod-us, run under the program's mocks, share no machine, certificate,
scrape target, alert rule, dashboard or backup name; the program refuses a machine, a Cloudflare
zone or a Docker network another stack file claims, and the policy pack a second owner of a zone."""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cachelayer_policy as pack
import pytest
import yaml
from pulumi_policy.deserialize import deserialize_properties

from cachelayer.cli.backup import holds, source_backup_settings
from cachelayer.config.settings import load_settings
from cachelayer.config.siblings import project_stacks, validate_siblings, zone_owners
from cachelayer.config.stack_file import read_stack_config
from cachelayer.errors import SettingsError
from cachelayer.ops.backup import backup_name, stack_of_name
from conftest import stack_run
from support.program_harness import ProgramRun, run_program, unwrap
from support.repo import REPO_ROOT

REGIONS = ("prod", "prod-us")
ZONE = read_stack_config("prod")["cdn"]["zone_id"]


def test_the_second_region_example_loads_through_the_settings_loader() -> None:
    settings = load_settings(read_stack_config("prod-us"), "prod-us")
    assert settings.redis.target == "hosts" and settings.redis.tls
    assert settings.cdn is None, "prod manages the zone; the second region manages none"
    assert settings.backup.destination == "s3://learn-cache-backups-us/prod-us" and settings.backup.off_host
    assert settings.hosts is not None and len(settings.hosts.machines) == 6
    prod = load_settings(read_stack_config("prod"), "prod")
    assert prod.hosts is not None
    assert not {m.address for m in prod.hosts.machines} & {m.address for m in settings.hosts.machines}
    assert not {m.ssh_host_key for m in prod.hosts.machines} & {m.ssh_host_key for m in settings.hosts.machines}


@pytest.mark.parametrize("stack", project_stacks(REPO_ROOT))
def test_every_shipped_stack_file_passes_the_sibling_checks(stack: str) -> None:
    validate_siblings(load_settings(read_stack_config(stack), stack), REPO_ROOT)


def test_exactly_one_shipped_stack_manages_the_zone() -> None:
    assert zone_owners(REPO_ROOT) == {ZONE: ["prod"]}


# ------------------------------------------------------------------ prod and prod-us under mocks
def _hosts(run: ProgramRun) -> set[str]:
    return {unwrap(r.inputs)["connection"]["host"] for r in run.resources if r.type.startswith("command:remote:")}


def _ca_names(run: ProgramRun) -> set[str]:
    return {r.inputs["subject"]["commonName"] for r in run.of_type("tls:index/selfSignedCert:SelfSignedCert")}


def _exported(run: ProgramRun, name: str) -> Any:
    return run.exports[name].value


def test_the_regions_share_no_machine_certificate_authority_or_connection_seed() -> None:
    prod, us = stack_run("prod"), stack_run("prod-us")
    assert _hosts(prod) and _hosts(us) and not _hosts(prod) & _hosts(us)
    assert _ca_names(prod) == {"cachelayer prod Redis CA"} and _ca_names(us) == {"cachelayer prod-us Redis CA"}
    seeds = [set(_exported(run, "connection")["seeds"]) for run in (prod, us)]
    assert not seeds[0] & seeds[1]
    # Only the stack that manages the zone declares Cloudflare resources.
    assert any(r.type.startswith("cloudflare:") for r in prod.resources)
    assert not any(r.type.startswith("cloudflare:") for r in us.resources)


def test_the_regions_monitoring_never_mixes_in_one_prometheus() -> None:
    prod, us = stack_run("prod"), stack_run("prod-us")
    targets = {stack: _exported(run, "monitoring_targets") for stack, run in (("prod", prod), ("prod-us", us))}
    addresses = [{t for entry in targets[s] for t in entry["targets"]} for s in REGIONS]
    assert not addresses[0] & addresses[1]
    for stack in REGIONS:
        assert {entry["labels"]["stack"] for entry in targets[stack]} == {stack}
    rules = {stack: yaml.safe_load(_exported(run, "monitoring_rules")) for stack, run in (("prod", prod), ("prod-us", us))}
    assert {rules[s]["groups"][0]["name"] for s in REGIONS} == {"cachelayer-redis-prod", "cachelayer-redis-prod-us"}
    for stack in REGIONS:
        for rule in rules[stack]["groups"][0]["rules"]:
            assert rule["labels"]["stack"] == stack
            assert f'stack="{stack}"' in rule["expr"], rule["alert"]
            other = "prod-us" if stack == "prod" else 'prod"'
            assert f'stack="{other}' not in rule["expr"], rule["alert"]
    uids = {yaml.safe_load(_exported(run, "monitoring_dashboard"))["uid"] for run in (prod, us)}
    assert uids == {"cachelayer-redis-prod", "cachelayer-redis-prod-us"}


def test_backup_names_say_which_region_they_belong_to() -> None:
    when = datetime(2026, 12, 2, 3, 7, tzinfo=UTC)
    assert [stack_of_name(backup_name(stack, when)) for stack in REGIONS] == list(REGIONS)
    # The regions' own destinations differ too (a shared one would still be safe: docs/backups.md).
    assert read_stack_config("prod")["backup"]["destination"] != read_stack_config("prod-us")["backup"]["destination"]


# ---------------------------------------------------------------------------------- refusals
def _refused(stack: str, overrides: dict[str, Any], root: Path = REPO_ROOT) -> str:
    run = ProgramRun(stack=stack)
    with pytest.raises(SystemExit) as stopped:
        run_program(stack, config_overrides=overrides, into=run, root=root)
    assert run.resources == [], f"registered before the refusal: {[r.name for r in run.resources]}"
    return str(stopped.value)


def test_a_second_region_naming_the_zone_is_refused_by_the_program() -> None:
    message = _refused("prod-us", {"cdn": read_stack_config("prod")["cdn"]})
    assert message.startswith("cachelayer: stack setting 'cdn.zone_id': ")
    assert f"the Cloudflare zone {ZONE} is also stack prod's (cdn.zone_id in Pulumi.prod.yaml)" in message
    assert "leave cdn out of all but one stack of the zone" in message and "\n" not in message


def test_a_second_region_naming_a_machine_of_prod_is_refused_by_the_program() -> None:
    hosts = copy.deepcopy(read_stack_config("prod-us")["hosts"])
    hosts["machines"][3]["address"] = "192.0.2.14"  # prod's cache-4
    message = _refused("prod-us", {"hosts": hosts})
    assert message.startswith("cachelayer: stack setting 'hosts.machines[3].address': ")
    assert "the machine 192.0.2.14 is also stack prod's (hosts.machines[3].address in Pulumi.prod.yaml)" in message
    assert "give each stack its own servers" in message


def _project(tmp_path: Path, files: dict[str, dict[str, Any]]) -> Path:
    shutil.copy(REPO_ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    for stack, document in files.items():
        (tmp_path / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(document))
    return tmp_path


def _stack_document(stack: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())
    return document


def test_two_docker_stacks_on_one_network_name_are_refused(tmp_path: Path) -> None:
    """The data volumes carry the network's name: on one Docker engine the two would share them."""
    root = _project(tmp_path, {"dev": _stack_document("dev"), "dev-eu": _stack_document("dev")})
    message = _refused("dev-eu", {}, root)
    assert "'docker.network_name'" in message and "is also stack dev's" in message
    assert "e.g. cachelayer-dev-eu" in message
    own = copy.deepcopy(_stack_document("dev"))
    own["config"]["cachelayer:docker"]["network_name"] = "cachelayer-dev-eu"
    own["config"]["cachelayer:docker"]["subnet"] = "172.30.71.0/24"
    (root / "Pulumi.dev-eu.yaml").write_text(yaml.safe_dump(own))
    assert run_program("dev-eu", root=root).of_type("docker:index/network:Network")


def test_sibling_checks_compare_addresses_and_zones_as_values(tmp_path: Path) -> None:
    """2001:DB8::1 and 2001:db8:0::1 are one machine; a zone id is the same in either case."""
    us = _stack_document("prod-us")
    us["config"]["cachelayer:hosts"]["machines"][0]["address"] = "2001:DB8::1"
    root = _project(tmp_path, {"prod-us": us})
    mine = read_stack_config("prod")
    mine["hosts"]["machines"][0]["address"] = "2001:db8:0::1"
    with pytest.raises(SettingsError, match=r"the machine 2001:db8::1 is also stack prod-us's"):
        validate_siblings(load_settings(mine, "prod"), root)
    us["config"]["cachelayer:cdn"] = {"zone_id": ZONE.upper(), "zone_name": "learn.example.com"}
    (root / "Pulumi.prod-us.yaml").write_text(yaml.safe_dump(us))
    with pytest.raises(SettingsError, match=r"'cdn.zone_id'.* is also stack prod-us's"):
        validate_siblings(load_settings(read_stack_config("prod"), "prod"), root)


def test_a_sibling_with_a_mistake_of_its_own_blocks_nobody(tmp_path: Path) -> None:
    """Only the claims are read from a sibling: its own preview reports its own mistakes."""
    root = _project(tmp_path, {"broken": {"config": {"cachelayer:redis": {"target": "hosts", "node_count": "six"},
                                                     "cachelayer:hosts": {"machines": "none"}}}})
    (root / "Pulumi.unreadable.yaml").write_text("config: [unclosed\n")
    validate_siblings(load_settings(read_stack_config("prod"), "prod"), root)
    assert zone_owners(root) == {}


# ------------------------------------------------------------------------------ the policy pack
@dataclass
class Opts:
    protect: bool = False
    additional_secret_outputs: list[str] = field(default_factory=list)


@dataclass
class Analyzed:
    """A recorded resource as the analyzer's PolicyResource shows it to the zone rule."""

    resource_type: str
    props: dict[str, Any]
    name: str
    urn: str
    opts: Opts = field(default_factory=Opts)


@dataclass
class Stack:
    resources: list[Analyzed]


def as_analyzed(run: ProgramRun) -> Stack:
    return Stack([Analyzed(r.type, deserialize_properties(copy.deepcopy(r.inputs)), r.name,
                           f"urn:pulumi:{run.stack}::cachelayer::{r.type}::{r.name}") for r in run.resources])


def violations(stack: Stack, root: Path = REPO_ROOT) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    pack.one_stack_per_zone(stack, lambda message, urn=None: found.append((message, urn)), root)
    return found


def test_the_policy_accepts_the_shipped_stacks_one_zone_owner() -> None:
    prod = as_analyzed(stack_run("prod"))
    assert any(r.resource_type.startswith("cloudflare:") for r in prod.resources)
    assert violations(prod) == []
    assert violations(as_analyzed(stack_run("prod-us"))) == []


def test_the_policy_refuses_a_zone_that_another_stack_file_names(tmp_path: Path) -> None:
    """The analyzer sees one stack's resources: the other owner comes from the project's stack files."""
    us = _stack_document("prod-us")
    us["config"]["cachelayer:cdn"] = _stack_document("prod")["config"]["cachelayer:cdn"]
    root = _project(tmp_path, {"prod": _stack_document("prod"), "prod-us": us})
    found = violations(as_analyzed(stack_run("prod")), root)
    assert len(found) == 1
    message, urn = found[0]
    assert message.startswith(f"zone {ZONE} is managed by stack prod and by stack prod-us too (cdn.zone_id in Pulumi.prod-us.yaml)")
    assert urn is not None and urn.startswith("urn:pulumi:prod::cachelayer::cloudflare:")


# ---------------------------------------------------------------------- restoring across regions
def test_restoring_another_regions_backup_reaches_that_regions_bucket() -> None:
    """`restore s3://<prod's bucket>/... --into prod-us --from-stack prod` reads prod's bucket with
    prod's endpoint and region (the backup's region), not prod-us's."""
    prod_us: Any = SimpleNamespace(stack="prod-us", settings=load_settings(read_stack_config("prod-us"), "prod-us"))
    prods = "s3://learn-cache-backups/prod/prod-20261202T030700.000Z"
    assert source_backup_settings(prods, prod_us, "prod").s3_region == "eu-west-1"
    assert source_backup_settings("s3://learn-cache-backups-us/prod-us", prod_us, "prod-us").s3_region == "us-east-1"
    # Without --from-stack the backup is refused later (another stack's); its own settings stay.
    assert source_backup_settings(prods, prod_us, "prod-us").s3_region == "us-east-1"
    # A prefix is a folder, not the start of a name: prod's destination does not hold prod-us's.
    assert holds("s3://learn-cache-backups/prod", "s3://learn-cache-backups/prod/prod-20261202T030700.000Z")
    assert not holds("s3://learn-cache-backups/prod", "s3://learn-cache-backups/prod-us/prod-us-20261202T030700.000Z")
