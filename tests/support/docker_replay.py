"""Replays the Docker resources a program run declared (under the mocks) on a real Docker engine.

Why a replay and not `pulumi up`: the Go module proxy here serves the Pulumi CLI but not the
Python language host nor pulumi-docker's provider module, so the real engine cannot run the
program (docs/delivery.md). What the replay keeps real is the part the component can get wrong:
every container, network, volume and upload exactly as declared meets a real dockerd, and the
bootstrap command runs as pulumi-command's local Command runs it (shell, stdin, environment).

Semantics followed (pulumi-docker 5 / the Terraform docker provider it bridges): a network and a
volume are created first; a container is created, its uploads copied in (mode from `permissions`,
else 0644, 0744 when `executable`; owner and group as given, else root), then started; a
`command:local:Command` runs its `create` with `/bin/sh -c`, its stdin and its environment.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import time
from typing import Any

from support.docker_engine import DockerEngine
from support.program_harness import ProgramRun, unwrap

CONTAINER = "docker:index/container:Container"
NETWORK = "docker:index/network:Network"
VOLUME = "docker:index/volume:Volume"
IMAGE = "docker:index/remoteImage:RemoteImage"
LOCAL_COMMAND = "command:local:Command"


def _upload_tar(uploads: list[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for upload in uploads:
            data = str(upload["content"]).encode()
            info = tarfile.TarInfo(str(upload["file"]).lstrip("/"))
            info.size = len(data)
            info.mode = int(upload["permissions"], 8) if upload.get("permissions") else (
                0o744 if upload.get("executable") else 0o644
            )
            info.uid = int(upload.get("owner") or 0)
            info.gid = int(upload.get("group") or 0)
            info.mtime = int(time.time())
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _create_container(engine: DockerEngine, inputs: dict[str, Any], images: dict[str, str]) -> str:
    name = str(inputs["name"])
    image = images[str(inputs["image"])]
    args = ["create", "--name", name]
    for network in inputs.get("networksAdvanced") or []:
        args += ["--network", str(network["name"])]
        if network.get("ipv4Address"):
            args += ["--ip", str(network["ipv4Address"])]
    for port in inputs.get("ports") or []:
        args += ["-p", f"{port.get('ip', '0.0.0.0')}:{int(port['external'])}:{int(port['internal'])}"]
    for volume in inputs.get("volumes") or []:
        args += ["--mount", f"type=volume,source={volume['volumeName']},target={volume['containerPath']}"]
    if inputs.get("restart"):
        args += ["--restart", str(inputs["restart"])]
    check = inputs.get("healthcheck")
    if check:
        kind, *test = check["tests"]
        assert kind == "CMD-SHELL", f"{name}: healthcheck {kind} is not replayed"
        args += ["--health-cmd", " ".join(test), "--health-interval", check["interval"],
                 "--health-timeout", check["timeout"], "--health-retries", str(int(check["retries"])),
                 "--health-start-period", check["startPeriod"]]  # fmt: skip
    engine.docker(*args, image, *[str(a) for a in inputs.get("command") or []])
    uploads = inputs.get("uploads") or []
    if uploads:
        # Without `-a` (CopyUIDGID), as the provider's CopyToContainer: the daemon keeps each
        # entry's uid and gid; with it, everything would belong to the image's USER.
        copied = subprocess.run(
            ["docker", "cp", "-", f"{name}:/"], input=_upload_tar(uploads), env=engine.environment,
            capture_output=True, check=False,
        )  # fmt: skip
        assert copied.returncode == 0, f"{name}: docker cp failed: {copied.stderr.decode()}"
    engine.docker("start", name)
    return name


def replay(run: ProgramRun, engine: DockerEngine) -> dict[str, str]:
    """Every Docker resource and local command of `run`, in dependency order; returns each local
    command's output by name."""
    # A container names its image by the RemoteImage's id (`sha256:<resource name>` under the mocks).
    images = {f"sha256:{r.name}": unwrap(r.inputs)["name"] for r in run.of_type(IMAGE)}
    for network in run.of_type(NETWORK):
        inputs = unwrap(network.inputs)
        subnets = [f"--subnet={c['subnet']}" for c in inputs.get("ipamConfigs") or []]
        engine.docker("network", "create", "--driver", inputs.get("driver", "bridge"), *subnets, inputs["name"])
    for volume in run.of_type(VOLUME):
        engine.docker("volume", "create", unwrap(volume.inputs)["name"])
    for container in run.of_type(CONTAINER):
        _create_container(engine, unwrap(container.inputs), images)
    outputs = {}
    for command in run.of_type(LOCAL_COMMAND):
        inputs = unwrap(command.inputs)
        environment = {**engine.environment, **(inputs.get("environment") or {})}
        result = subprocess.run(
            ["/bin/sh", "-c", inputs["create"]], input=inputs.get("stdin"), env=environment,
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"{command.name} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        outputs[command.name] = result.stdout + result.stderr
    return outputs


def container_logs(engine: DockerEngine, name: str) -> str:
    logs = engine.docker("logs", "--tail", "40", name, check=False)
    return logs.stdout + logs.stderr


def health_status(engine: DockerEngine, name: str) -> str:
    return engine.docker("inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip()

