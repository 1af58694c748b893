"""Monitoring resources: the exporters of both targets and the stack's monitoring outputs.

The hosts target's exporter files and units are in the per-host file list
(render/host_files.py), which RedisHostsDeployment deploys; the docker target gets one exporter
container per Redis container (`docker_exporters`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial

import pulumi
import pulumi_docker as docker
from pulumi_docker import ContainerNetworksAdvancedArgsDict, ContainerPortArgsDict, ContainerUploadArgsDict

from cachelayer.config.settings import Settings
from cachelayer.plan.topology import Topology
from cachelayer.render.load_balancer import load_balancer_addresses
from cachelayer.render.monitoring import (
    DOCKER_PASSWORD_FILE,
    ExporterTarget,
    dashboard_json,
    exporter_args,
    exporter_unit_name,
    load_balancer_scrape_targets,
    render_password_file,
    rules_yaml,
    scrape_targets,
    stack_targets,
)
from cachelayer.render.nodes import USERS, Passwords

# The upstream image runs as this uid (USER 59000:59000 in its Dockerfile).
EXPORTER_IMAGE_UID = "59000"


def export_outputs(settings: Settings, topology: Topology) -> None:
    """Stack outputs for the platform's Prometheus and Grafana (docs/monitoring.md)."""
    pulumi.export("monitoring_targets", scrape_targets(settings, stack_targets(settings, topology)))
    if settings.load_balancer_enabled:
        # file_sd for a second scrape job, `cachelayer-haproxy` (docs/load-balancer.md).
        pulumi.export(
            "monitoring_load_balancer_targets",
            load_balancer_scrape_targets(settings, load_balancer_addresses(settings, topology)),
        )
    pulumi.export("monitoring_rules", rules_yaml(settings))
    pulumi.export("monitoring_dashboard", dashboard_json(settings))


# ----------------------------------------------------------------------------------- docker
def docker_exporters(
    name: str,
    settings: Settings,
    topology: Topology,
    network: docker.Network,
    passwords: pulumi.Output[Passwords],
    depends_on: Sequence[pulumi.Resource],
    parent: pulumi.Resource,
) -> list[docker.Container]:
    """One upstream exporter container per Redis container, its metrics port published."""
    child = pulumi.ResourceOptions(parent=parent)
    image = docker.RemoteImage(f"{name}-exporter-image", name=settings.monitoring.exporter_image, keep_locally=True, opts=child)
    containers = []
    for target in stack_targets(settings, topology):
        port = int(target.listen.rsplit(":", 1)[1])
        inside = dataclasses.replace(target, listen=f"0.0.0.0:{port}")
        password: pulumi.Output[str] = pulumi.Output.secret(passwords.apply(partial(_password_json, target)))
        upload: ContainerUploadArgsDict = {
            "file": DOCKER_PASSWORD_FILE,
            "content": password,
            "owner": EXPORTER_IMAGE_UID,
            "group": EXPORTER_IMAGE_UID,
            "permissions": "0400",
        }
        networks: list[ContainerNetworksAdvancedArgsDict] = [{"name": network.name}]
        ports: list[ContainerPortArgsDict] = [{"internal": port, "external": port, "ip": settings.docker.publish_address}]
        containers.append(
            docker.Container(
                f"{name}-{exporter_unit_name(target)}",
                name=exporter_unit_name(target),
                image=image.image_id,
                # The password comes from the uploaded file, never the command line or environment.
                command=[*exporter_args(inside), f"--redis.password-file={DOCKER_PASSWORD_FILE}"],
                networks_advanced=networks,
                ports=ports,
                uploads=[upload],
                restart="unless-stopped",
                must_run=True,
                opts=pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on)),
            )
        )
    return containers


def _password_json(target: ExporterTarget, passwords: Passwords) -> str:
    return render_password_file(target, passwords.presented(USERS.monitor), tls=False)
