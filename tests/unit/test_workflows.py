"""The workflow files: every cachelayer command they run exists, third-party actions are pinned by
commit, and the guard rails the issue asks for are there (the linters run in scripts/test.sh)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cachelayer.cli.app import main
from cachelayer.config.siblings import project_stacks
from cachelayer.config.stack_file import read_stack_config
from support.repo import REPO_ROOT

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
# In the order the deployments run: dev, then the regions.
STACKS = ["dev", *sorted(s for s in project_stacks(REPO_ROOT) if s != "dev")]
HOSTS_STACKS = [s for s in STACKS if read_stack_config(s, REPO_ROOT).get("redis", {}).get("target") == "hosts"]


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return document


def steps(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in document["jobs"].values() for step in job.get("steps", [])]


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.yml")), ids=lambda p: p.name)
def test_actions_pinned_and_cachelayer_commands_exist(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    for step in steps(document):
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
        for command in re.findall(r"cachelayer ((?:delivery )?[a-z-]+)", step.get("run", "")):
            assert main([*command.split(), "--help"]) == 0, f"{path.name}: cachelayer {command}"


def test_deploy_runs_dev_then_each_region_one_at_a_time_and_gates_on_health_and_drift() -> None:
    jobs = load("deploy.yml")["jobs"]
    assert set(jobs) == set(STACKS), "every stack file gets its deploy job, and only those"
    # One region after the other: a change that breaks prod never reaches prod-us.
    assert jobs["prod"]["needs"] == "dev" and jobs["prod-us"]["needs"] == "prod"
    for stack in STACKS:
        assert jobs[stack]["environment"].split()[0] == stack
        assert jobs[stack]["env"]["STACK"] == stack
        assert jobs[stack]["concurrency"] == {"group": f"deploy-{stack}", "cancel-in-progress": False}
        up_step = next(s for s in jobs[stack]["steps"] if s.get("with", {}).get("command") == "up")
        assert up_step["with"]["stack-name"] == stack and up_step["with"]["policyPacks"] == "policy"
        runs = [s.get("run", "") for s in jobs[stack]["steps"]]
        up = next(i for i, s in enumerate(jobs[stack]["steps"]) if s.get("with", {}).get("command") == "up")
        assert any("cachelayer health" in r for r in runs[up:]) and any("cachelayer drift" in r for r in runs[up:])


def test_no_expression_inside_run_scripts() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        for step in steps(yaml.safe_load(path.read_text())):
            assert "${{" not in step.get("run", ""), f"{path.name}: {step.get('name')}: pass it through env"


def test_every_job_has_its_own_least_permissions() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        document = yaml.safe_load(path.read_text())
        assert document["permissions"] == {}, path.name
        for name, job in document["jobs"].items():
            assert "contents" in job["permissions"], f"{path.name}: {name}"
            assert not {k for k, v in job["permissions"].items() if v == "write"} - {"pull-requests", "issues"}


def test_preview_comments_with_the_policy_pack_and_drift_files_the_issue() -> None:
    preview = next(s for s in steps(load("preview.yml")) if s.get("with", {}).get("command") == "preview")
    assert preview["with"]["policyPacks"] == "policy" and preview["with"]["comment-on-pr"] is True
    drift = "\n".join(s.get("run", "") for s in steps(load("drift.yml")))
    assert "--preview-only --expect-no-changes" in drift and "delivery drift-issue" in drift


def test_backup_runs_after_the_hosts_saves_then_the_drill_reads_it_back_with_the_buckets_own_credentials() -> None:
    document: dict[Any, Any] = load("backup.yml")
    schedule = document[True]["schedule"]  # YAML 1.1 reads the key `on` as true
    assert schedule == [{"cron": "7 3 * * *"}]  # after the hosts' 02:00 node-local saves
    job = document["jobs"]["backup"]
    # Each hosts stack (region) on its own, never during its own deployment.
    assert job["strategy"]["matrix"]["stack"] == HOSTS_STACKS and job["strategy"]["fail-fast"] is False
    assert job["env"]["STACK"] == "${{ matrix.stack }}" and job["environment"] == "${{ matrix.stack }}-scheduled"
    assert job["concurrency"] == {"group": "deploy-${{ matrix.stack }}", "cancel-in-progress": False}
    runs = [s.get("run", "") for s in job["steps"]]
    backup = next(i for i, r in enumerate(runs) if "cachelayer backup --stack" in r)
    drill = next(i for i, r in enumerate(runs) if "cachelayer restore-drill --stack" in r)
    assert backup < drill
    bucket = {
        "AWS_ACCESS_KEY_ID": "${{ secrets.BACKUP_AWS_ACCESS_KEY_ID }}",
        "AWS_SECRET_ACCESS_KEY": "${{ secrets.BACKUP_AWS_SECRET_ACCESS_KEY }}",
    }
    assert job["steps"][backup]["env"] == bucket | {"PUSHGATEWAY_URL": "${{ vars.BACKUP_PUSHGATEWAY_URL }}"}
    assert '--pushgateway "$PUSHGATEWAY_URL"' in runs[backup]
    # The drill reads the backup just stored from the bucket (no snapshot of its own): it needs the
    # same credentials, and the backup step names no other destination than the stack's (--to).
    assert job["steps"][drill]["env"] == bucket
    assert "--to" not in runs[backup] and "--backups" not in runs[drill]


def test_preview_and_drift_cover_every_stack_file_and_the_rendered_diff_reads_them() -> None:
    """A new region's stack file is previewed and watched for drift without anyone remembering to
    (the lists are explicit, since each stack needs its protected environments: docs/delivery.md)."""
    assert load("preview.yml")["jobs"]["preview"]["strategy"]["matrix"]["stack"] == STACKS
    assert load("drift.yml")["jobs"]["drift"]["strategy"]["matrix"]["stack"] == STACKS
    rendered = "\n".join(s.get("run", "") for s in load("preview.yml")["jobs"]["rendered-diff"]["steps"])
    assert rendered.count("for file in head/Pulumi.*.yaml") == 2 and '"${stacks[@]}"' in rendered
    # The TLS CA of any stack that exports one (the hosts stacks), not of a stack named prod only.
    drift = "\n".join(s.get("run", "") for s in load("drift.yml")["jobs"]["drift"]["steps"])
    assert '"$STACK" = prod' not in drift and 'pulumi stack output --stack "$STACK" ca_cert_pem' in drift


def _reads_secrets(job: dict[str, Any]) -> set[str]:
    text = yaml.safe_dump(job)
    return set(re.findall(r"secrets\.([A-Z0-9_]+)", text)) - {"GITHUB_TOKEN"}


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.yml")), ids=lambda p: p.name)
def test_every_job_that_reads_a_secret_names_the_environment_holding_it(path: Path) -> None:
    """Secrets live in environments (branch rules, required reviewers), never at repository
    level, where any branch's code could read them."""
    for name, job in load(path.name)["jobs"].items():
        if _reads_secrets(job):
            assert job.get("environment"), f"{path.name}: job {name} reads {sorted(_reads_secrets(job))} without an environment"


def test_a_pull_requests_prod_preview_waits_for_a_reviewer_and_scheduled_jobs_never_use_a_preview_environment() -> None:
    preview = load("preview.yml")["jobs"]["preview"]
    assert preview["environment"] == "preview-${{ matrix.stack }}"
    assert "prod" in preview["strategy"]["matrix"]["stack"]
    delivery = (REPO_ROOT / "docs" / "delivery.md").read_text()
    assert "`preview-prod`" in delivery and "required reviewers" in delivery
    for name in ("drift.yml", "backup.yml"):
        for job in load(name)["jobs"].values():
            assert job["environment"].endswith("-scheduled"), name
