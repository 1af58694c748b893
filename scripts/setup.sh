#!/usr/bin/env bash
# Installs what this project needs on a fresh Debian machine: Debian's redis-server and
# redis-tools (the sandbox and the integration tests run them), prometheus and
# prometheus-redis-exporter and prometheus-pushgateway (the monitoring tests and `sandbox up --monitoring`), shellcheck, iproute2,
# openssl, systemd-analyze, nftables and python3-redis (the tests use them), systemd-nspawn, debootstrap and ssh (the rehearsal),
# Debian's Docker engine (the dev stack for real), haproxy (the Sentinel topology's load balancer),
# and a virtualenv `venv/` with requirements.txt
# (the same one Pulumi.yaml names). Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-check-rdb >/dev/null || missing+=(redis-tools)
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v ip >/dev/null || missing+=(iproute2)
command -v openssl >/dev/null || missing+=(openssl)
command -v systemd-analyze >/dev/null || missing+=(systemd)
# The hosts' firewall: unit tests check the rendered ruleset with `nft -c` (tests/unit/test_firewall_limits.py).
command -v nft >/dev/null || missing+=(nftables)
# Monitoring: promtool checks and tests the alert rules; the sandbox runs both (docs/monitoring.md).
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || missing+=(prometheus)
command -v prometheus-redis-exporter >/dev/null || missing+=(prometheus-redis-exporter)
# `cachelayer backup` pushes its newest complete backup's time there (the backup-age alert's test).
command -v prometheus-pushgateway >/dev/null || missing+=(prometheus-pushgateway)
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
# The prod hosts' health check runs on Debian's python3-redis; the tests run it the same way.
/usr/bin/python3 -c 'import redis' 2>/dev/null || missing+=(python3-redis)
# The prod-stack rehearsal (tests/rehearsal): booted Debian hosts, reached over SSH.
command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
# The Sentinel topology's load balancer: the sandbox runs it, unit tests check its config with `haproxy -c`.
command -v haproxy >/dev/null || missing+=(haproxy)
# The dev stack on a real Docker engine (tests/support/docker_engine.py runs a private dockerd).
command -v dockerd >/dev/null || missing+=(docker.io)
if ((${#missing[@]})); then
    if [ "$(id -u)" != 0 ]; then
        echo "missing: ${missing[*]}. Run this as root, or: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    echo "installing ${missing[*]}"
    apt-get update -qq
    # Keep the distro's own services (redis-server on 6379, prometheus on 9090, the exporter on
    # 9121, the Pushgateway on 9091, haproxy) from starting on install.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
fi

if [ ! -x venv/bin/python ]; then
    python3 -m venv venv
fi
# Exact versions with hashes, resolved from requirements.txt, so two machines get the same SDKs
# (and so the same provider plugins). Refresh after editing requirements.txt:
#   uv pip compile --universal --generate-hashes --python-version 3.11 requirements.txt -o requirements.lock
venv/bin/pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
# The `cachelayer` command (venv/bin/cachelayer) and the cache library whose key rules it uses,
# editable: they run this checkout's code and templates.
venv/bin/pip install -q --disable-pip-version-check -e cache_library -e .
