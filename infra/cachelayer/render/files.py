"""Every file a node or host of a stack receives, and every script a deploy runs there. Pure.

`cachelayer render` writes them to a directory so a pull request can show what changes on a
server: Pulumi's own diff shows a changed command resource as one opaque string. The components
ship exactly these contents: redis_hosts.py builds its resources from the very list the hosts
part comes from (render/host_files.py); for redis_docker.py, tests/unit/test_rendered_files.py
runs the program under mocks and checks that every file and script it declares is listed here.

Paths are `containers/<process>/<path in the container>`, `hosts/<machine>/<path on the host>`,
`hosts/<machine>/stdin/<script>` for scripts piped to a shell, and `local/<script>` for what
runs on the deploying machine. With `placeholder_passwords()` no secret appears in the output:
passwords read `<secret:app_password>` and their ACL hashes `<sha256 of app_password>`.
"""

from __future__ import annotations

from pathlib import Path

from cachelayer.config.settings import PASSWORD_KEYS, Settings
from cachelayer.errors import UsageError
from cachelayer.plan.topology import Topology
from cachelayer.render.container_files import LOAD_BALANCER_CONTAINER, container_plans, load_balancer_container_file
from cachelayer.render.host_files import host_deploy_files
from cachelayer.render.monitoring import DOCKER_PASSWORD_FILE, exporter_unit_name, render_password_file, stack_targets
from cachelayer.render.nodes import (
    USERS,
    Passwords,
    docker_paths,
    password_hash,
    render_bootstrap_script,
)


def placeholder_passwords() -> Passwords:
    """Stand-ins that name the secret they replace (quoting-safe: no quote or backslash)."""
    return Passwords(*(f"<secret:{key}>" for key in PASSWORD_KEYS))


def rendered_files(settings: Settings, topology: Topology, passwords: Passwords) -> dict[str, str]:
    """Relative path -> content of everything the stack ships to its processes."""
    files = _docker_files(settings, topology, passwords) if settings.redis.target == "docker" else (
        _host_files(settings, topology, passwords)
    )
    return dict(sorted(files.items()))


def mask_hashes(files: dict[str, str], passwords: Passwords) -> dict[str, str]:
    """Replace the SHA-256 of each (placeholder) password by its name, so a reader does not
    take the hash of a placeholder for a real one."""
    names = {password_hash(getattr(passwords, key.removesuffix("_password"))): key for key in PASSWORD_KEYS}
    masked = {}
    for path, content in files.items():
        for digest, key in names.items():
            content = content.replace(digest, f"<sha256 of {key}>")
        masked[path] = content
    return masked


RENDER_MARKER = ".cachelayer-render"  # in a directory `cachelayer render` wrote: the files it wrote


def write_tree(files: dict[str, str], out: Path) -> None:
    """Write the files under `out` (mode and owner are not part of the diff: only contents).

    `out` must be new, empty, or a previous render (its marker lists what that render wrote):
    only those files are replaced, so a file the stack no longer ships does not linger, and
    nothing else in the directory is ever deleted."""
    marker = out / RENDER_MARKER
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file: name a directory (new, empty, or a previous render)")
    if out.is_dir() and any(out.iterdir()) and not marker.is_file():
        raise UsageError(
            f"--out {out} holds files that no render wrote: name a new or empty directory, or a previous render"
        )
    previous = marker.read_text().splitlines() if marker.is_file() else []
    for relative in previous:
        stale = out / relative
        if relative not in files and stale.is_file() and stale.resolve().is_relative_to(out.resolve()):
            stale.unlink()
            for folder in stale.parents:
                if folder == out or any(folder.iterdir()):
                    break
                folder.rmdir()
    for relative, content in files.items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    marker.write_text("".join(f"{relative}\n" for relative in sorted(files)))


def _docker_files(settings: Settings, topology: Topology, passwords: Passwords) -> dict[str, str]:
    files = {
        f"containers/{plan.process.name}{file.path}": file.content(passwords)
        for plan in container_plans(settings, topology)
        for file in plan.files
    }
    load_balancer = load_balancer_container_file(settings, topology)
    if load_balancer is not None:
        files[f"containers/{LOAD_BALANCER_CONTAINER}{load_balancer.path}"] = load_balancer.content(passwords)
    if settings.monitoring_enabled:
        for target in stack_targets(settings, topology):
            files[f"containers/{exporter_unit_name(target)}{DOCKER_PASSWORD_FILE}"] = render_password_file(
                target, passwords.presented(USERS.monitor), tls=False
            )
    files["local/bootstrap.sh"] = render_bootstrap_script(settings, topology, f"{docker_paths('').conf_dir}/tls")
    return files


def _host_files(settings: Settings, topology: Topology, passwords: Passwords) -> dict[str, str]:
    return host_deploy_files(settings, topology).rendered(passwords)
