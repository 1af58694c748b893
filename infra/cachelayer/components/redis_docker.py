"""The dev stack's Redis: one container per node (and per sentinel) on a Docker network."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_command as command
import pulumi_docker as docker
from pulumi_docker import (
    ContainerHealthcheckArgsDict,
    ContainerNetworksAdvancedArgsDict,
    ContainerPortArgsDict,
    ContainerUploadArgsDict,
    ContainerVolumeArgsDict,
    NetworkIpamConfigArgsDict,
)

from cachelayer.components.monitoring import docker_exporters
from cachelayer.config.settings import Settings
from cachelayer.plan.topology import Topology
from cachelayer.render.container_files import (
    HAPROXY_COMMAND,
    HAPROXY_IMAGE_UID,
    LOAD_BALANCER_CONTAINER,
    container_plans,
    load_balancer_container_file,
)
from cachelayer.render.load_balancer import load_balancer_groups
from cachelayer.render.nodes import (
    USERS,
    Passwords,
    Paths,
    cli_tls_flags,
    docker_paths,
    render_bootstrap_script,
)


def secret_upload(file: str, content: pulumi.Input[str], owner: str = "999") -> ContainerUploadArgsDict:
    """A file holding secrets, readable by the image's own user only (redis: uid 999)."""
    return {"file": file, "content": content, "owner": owner, "group": owner, "permissions": "0640"}


@dataclass
class RedisDockerArgs:
    settings: Settings
    topology: Topology
    passwords: pulumi.Output[Passwords]  # secret


def health_check_command(port: int, tls_flags: tuple[str, ...]) -> str:
    """Alive means the node answers, even if only to say it wants a password: the check then
    needs no secret in the container's environment."""
    cli = " ".join(["redis-cli", *tls_flags, "-p", str(port), "ping"])
    return f"{cli} 2>&1 | grep -qE 'PONG|NOAUTH'"


class RedisDockerDeployment(pulumi.ComponentResource):
    """Six node containers (plus, in sentinel topology, three sentinels and the HAProxy in front
    of them) and the bootstrap that forms the cluster once they all answer."""

    container_names: pulumi.Output[list[str]]
    bootstrap_output: pulumi.Output[str]

    def __init__(self, name: str, args: RedisDockerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("cachelayer:docker:RedisDockerDeployment", name, None, opts)
        settings, topology, passwords = args.settings, args.topology, args.passwords
        child = pulumi.ResourceOptions(parent=self)
        tls_flags = cli_tls_flags(settings, f"{docker_paths('').conf_dir}/tls")

        image = docker.RemoteImage(f"{name}-image", name=settings.image, keep_locally=True, opts=child)
        ipam: NetworkIpamConfigArgsDict = {"subnet": settings.docker.subnet}
        network = docker.Network(
            f"{name}-network", name=settings.docker.network_name, driver="bridge", ipam_configs=[ipam], opts=child
        )

        containers: list[docker.Container] = []
        for plan in container_plans(settings, topology):
            uploads: list[ContainerUploadArgsDict] = [
                secret_upload(file.path, passwords.apply(file.secret)) if file.secret is not None
                else {"file": file.path, "content": file.text}
                for file in plan.files
            ]
            # The node's RDB and AOF: protected, so neither a replace nor `pulumi destroy` drops them
            # unnoticed (`pulumi destroy --exclude-protected` keeps them; docs/delivery.md).
            volume = None if plan.is_sentinel else docker.Volume(
                f"{name}-{plan.process.name}-data",
                name=f"{settings.docker.network_name}-{plan.process.name}-data",
                opts=pulumi.ResourceOptions(parent=self, protect=True),
            )
            port: ContainerPortArgsDict = {
                "internal": plan.process.port, "external": plan.process.port, "ip": settings.docker.publish_address
            }
            containers.append(
                self._container(
                    name, plan.process.name, plan.paths, image, network, plan.process.address, [port], uploads,
                    tls_flags, plan.process.port, volume, list(plan.command), sentinel=plan.is_sentinel,
                )
            )

        script = render_bootstrap_script(settings, topology, f"{docker_paths('').conf_dir}/tls")
        first = topology.nodes[0]
        bootstrap = command.local.Command(
            f"{name}-bootstrap",
            # The password travels in the environment (REDISCLI_AUTH), never on a command line.
            create=f"docker exec -i --env REDISCLI_AUTH {first.name} sh -s",
            stdin=script,
            environment={"REDISCLI_AUTH": passwords.apply(lambda p: p.presented(USERS.admin))},
            # Re-run when the set of nodes changes; the script leaves an existing cluster alone.
            triggers=[node.endpoint for node in topology.nodes] + [s.endpoint for s in topology.sentinels],
            logging=command.local.Logging.STDOUT_AND_STDERR,
            opts=pulumi.ResourceOptions(parent=self, depends_on=containers),
        )
        if settings.load_balancer_enabled:
            self._load_balancer(name, settings, topology, network, passwords, containers)
        if settings.monitoring_enabled:
            # Monitoring: one exporter container per Redis container (components/monitoring.py).
            docker_exporters(name, settings, topology, network, passwords, containers, self)
        self.container_names = pulumi.Output.all(*(c.name for c in containers))
        self.bootstrap_output = bootstrap.stdout
        self.register_outputs({"container_names": self.container_names, "bootstrap_output": self.bootstrap_output})

    def _load_balancer(
        self,
        name: str,
        settings: Settings,
        topology: Topology,
        network: docker.Network,
        passwords: pulumi.Output[Passwords],
        nodes: list[docker.Container],
    ) -> docker.Container:
        """HAProxy in front of the Sentinel groups (docs/load-balancer.md), from the official image.
        A changed config (a new monitor password) replaces the container: its clients reconnect."""
        config = load_balancer_container_file(settings, topology)
        assert config is not None and config.secret is not None, "load balancer on"
        lb = settings.load_balancer
        image = docker.RemoteImage(f"{name}-load-balancer-image", name=lb.image, keep_locally=True,
                                   opts=pulumi.ResourceOptions(parent=self))
        published = [
            *(port for group in load_balancer_groups(settings, topology) for port in (group.write_port, group.read_port)),
            lb.exporter_port,
        ]
        ports: list[ContainerPortArgsDict] = [
            {"internal": port, "external": port, "ip": settings.docker.publish_address} for port in published
        ]
        networks: list[ContainerNetworksAdvancedArgsDict] = [{"name": network.name}]
        return docker.Container(
            f"{name}-{LOAD_BALANCER_CONTAINER}",
            name=LOAD_BALANCER_CONTAINER,
            image=image.image_id,
            command=list(HAPROXY_COMMAND),
            networks_advanced=networks,
            ports=ports,
            uploads=[secret_upload(config.path, passwords.apply(config.secret), owner=HAPROXY_IMAGE_UID)],
            restart="unless-stopped",
            must_run=True,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=nodes,
                # The container's name is fixed: the old one must go before its replacement starts.
                delete_before_replace=True,
            ),
        )

    def _container(
        self,
        name: str,
        process: str,
        paths: Paths,
        image: docker.RemoteImage,
        network: docker.Network,
        address: str,
        ports: list[ContainerPortArgsDict],
        uploads: list[ContainerUploadArgsDict],
        tls_flags: tuple[str, ...],
        port: int,
        volume: docker.Volume | None,
        command_line: list[str],
        sentinel: bool = False,
    ) -> docker.Container:
        networks: list[ContainerNetworksAdvancedArgsDict] = [{"name": network.name, "ipv4_address": address}]
        healthcheck: ContainerHealthcheckArgsDict = {
            "tests": ["CMD-SHELL", health_check_command(port, tls_flags)],
            "interval": "5s",
            "timeout": "3s",
            "retries": 5,
            "start_period": "5s",
        }
        volumes: list[ContainerVolumeArgsDict] = (
            [{"volume_name": volume.name, "container_path": paths.data_dir}] if volume is not None else []
        )
        return docker.Container(
            f"{name}-{process}",
            name=process,
            image=image.image_id,
            command=command_line,
            networks_advanced=networks,
            ports=ports,
            uploads=uploads,
            volumes=volumes,
            restart="unless-stopped",
            healthcheck=healthcheck,
            must_run=True,
            opts=pulumi.ResourceOptions(
                parent=self,
                # Sentinel rewrites its own config: upload it once, never replace it on a re-render.
                ignore_changes=["uploads"] if sentinel else None,
            ),
        )
