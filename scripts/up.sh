#!/usr/bin/env bash
# The main job: deploy a stack (default dev). With the Pulumi CLI (and, for dev, a Docker
# engine) this is `pulumi up`. Without them the dev stack falls back to the local sandbox:
# the same rendered configs and bootstrap script, as real redis-server processes on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
stack="${1:-dev}"
scripts/setup.sh

if command -v pulumi >/dev/null && { [ "$stack" != dev ] || docker info >/dev/null 2>&1; }; then
    exec pulumi up --stack "$stack"
fi
if [ "$stack" != dev ]; then
    echo "stack $stack needs the Pulumi CLI (https://www.pulumi.com/docs/install/); only dev has a local sandbox" >&2
    exit 1
fi
echo "no Pulumi CLI or Docker engine here: starting the dev stack as a local sandbox"
exec venv/bin/cachelayer sandbox up --stack dev
