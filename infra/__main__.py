"""The cachelayer Pulumi program: composition only (settings -> components -> exports)."""

import pulumi

from cachelayer.components.cdn import CloudflareCdn, CloudflareCdnArgs
from cachelayer.components.credentials import RedisCredentials, RedisCredentialsArgs
from cachelayer.components.monitoring import export_outputs
from cachelayer.components.program_config import project_config, secret_settings
from cachelayer.components.redis_docker import RedisDockerArgs, RedisDockerDeployment
from cachelayer.components.redis_hosts import RedisHostsArgs, RedisHostsDeployment
from cachelayer.config.settings import load_settings, validate_deployment
from cachelayer.config.siblings import validate_siblings
from cachelayer.errors import SettingsError
from cachelayer.paths import project_root
from cachelayer.plan.advice import settings_warnings
from cachelayer.plan.topology import build_topology
from cachelayer.render.load_balancer import connection_load_balancers
from cachelayer.render.nodes import USERS

secrets = secret_settings()
try:
    settings = load_settings(project_config(), pulumi.get_stack())
    validate_deployment(settings, {key for key, value in secrets.items() if value is not None})
    # One region's stack never takes another's zone, machines or Docker network (docs/regions.md).
    validate_siblings(settings, project_root())
except SettingsError as error:
    # One clear line naming the key, before any resource exists.
    raise SystemExit(f"cachelayer: {error}") from None
for warning in settings_warnings(settings):
    pulumi.log.warn(f"cachelayer: {warning}")

topology = build_topology(settings)
credentials = RedisCredentials("redis-credentials", RedisCredentialsArgs(given=secrets))

if settings.redis.target == "docker":
    RedisDockerDeployment("redis", RedisDockerArgs(settings, topology, credentials.passwords))
else:
    ssh_key = secrets["ssh_private_key"]
    assert ssh_key is not None, "validate_deployment checked it"
    hosts = RedisHostsDeployment("redis", RedisHostsArgs(settings, topology, credentials.passwords, ssh_key))
    if hosts.ca_cert_pem is not None:
        # Public: `cachelayer health|drift` and CI verify the nodes' certificates with it.
        pulumi.export("ca_cert_pem", hosts.ca_cert_pem)

if settings.cdn is not None:
    token = secrets["cloudflare_api_token"]  # validate_deployment required it on the hosts target
    cdn = CloudflareCdn("cdn", CloudflareCdnArgs(settings=settings.cdn, api_token=token))
    pulumi.export("cdn_zone_id", cdn.zone_id)
    pulumi.export("cdn_ruleset_id", cdn.ruleset_id)

pulumi.export("topology", topology.kind)
pulumi.export("target", settings.redis.target)
pulumi.export("nodes", [{"name": n.name, "endpoint": n.endpoint, "role": n.role, "shard": n.shard + 1} for n in topology.nodes])
pulumi.export("sentinels", [s.endpoint for s in topology.sentinels])
if settings.redis.target == "docker":
    pulumi.export(
        "published_endpoints", [f"{settings.docker.publish_address}:{n.port}" for n in topology.nodes + topology.sentinels]
    )
# What an application needs to connect; the password is a secret output.
pulumi.export(
    "connection",
    {
        "user": USERS.app,
        "password": credentials.app_password,
        "seeds": [n.endpoint for n in topology.masters],
        "sentinels": [s.endpoint for s in topology.sentinels],
        "sentinel_groups": [m.group for m in topology.masters] if topology.kind == "sentinel" else [],
        # For clients without Sentinel: HAProxy's write and read address per group (docs/load-balancer.md).
        "load_balancers": connection_load_balancers(settings, topology),
        "tls": settings.redis.tls,
    },
)
if settings.monitoring_enabled:
    export_outputs(settings, topology)  # scrape targets, rules file, Grafana dashboard
pulumi.export("admin_user", USERS.admin)
pulumi.export("admin_password", credentials.admin_password)
