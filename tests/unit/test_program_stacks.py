"""Every stack file in the repo loads under mocks, as `pulumi up` would load it."""

from __future__ import annotations

from cachelayer.config.settings import PASSWORD_KEYS
from support.program_harness import ProgramRun, contains_plain, unwrap


def generated_passwords() -> list[str]:
    return [f"generated-redis-credentials-{key.replace('_', '-')}-0123456789abcdef" for key in PASSWORD_KEYS]


def test_stack_declares_redis_and_credentials(any_stack_run: ProgramRun) -> None:
    run = any_stack_run
    types = {r.type for r in run.resources}
    assert "cachelayer:credentials:RedisCredentials" in types, run.stack
    assert types & {"cachelayer:docker:RedisDockerDeployment", "cachelayer:hosts:RedisHostsDeployment"}, run.stack
    assert len(run.exports["nodes"].value) == 6, run.stack


def test_no_secret_in_plain_text_in_any_registered_input(any_stack_run: ProgramRun) -> None:
    run = any_stack_run
    needles = [*generated_passwords(), *run.secrets.values()]
    for resource in run.resources:
        for needle in needles:
            assert not contains_plain(resource.inputs, needle), f"{run.stack}: {resource.name} holds a secret in plain text"


def test_credentials_are_exported_as_secrets_only(any_stack_run: ProgramRun) -> None:
    run = any_stack_run
    needles = [*generated_passwords(), *run.secrets.values()]
    for name, export in run.exports.items():
        text = repr(unwrap(export.value))
        if any(needle in text for needle in needles):
            assert export.secret, f"{run.stack}: export {name} carries a credential but is not secret"
    assert run.exports["admin_password"].secret and run.exports["connection"].secret


def test_every_resource_belongs_to_a_component_and_is_named_after_it(any_stack_run: ProgramRun) -> None:
    """Children are parented to their component and named from its name, so two components
    never collide and a component's delete takes its children along."""
    run = any_stack_run
    components = {r.name for r in run.resources if r.type.startswith("cachelayer:")}
    for resource in run.resources:
        parent = run.parents.get(resource.name)
        if resource.name in components:
            assert parent == f"cachelayer-{run.stack}", f"{run.stack}: component {resource.name} under {parent}"
        else:
            assert parent in components, f"{run.stack}: {resource.name} is not inside a component (parent {parent})"
            assert resource.name.startswith(f"{parent}-"), f"{run.stack}: {resource.name} not named after {parent}"


def test_harness_loads_the_main_directory_that_pulumi_yaml_names() -> None:
    import yaml

    from support.program_harness import MAIN_DIR
    from support.repo import REPO_ROOT

    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "cachelayer"
    assert (REPO_ROOT / project["main"]).resolve() == MAIN_DIR.resolve()
    assert project["runtime"]["options"]["virtualenv"] == "venv", "scripts/setup.sh builds venv/"
