#!/usr/bin/env bash
# Runs every check on a fresh Debian machine: installs what the tests need (Debian's
# redis-server, redis-tools, shellcheck, iproute2, openssl; a virtualenv with
# requirements.txt), then ruff, mypy and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v redis-check-rdb >/dev/null || missing+=(redis-tools)
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v ip >/dev/null || missing+=(iproute2)
command -v openssl >/dev/null || missing+=(openssl)
command -v systemd-analyze >/dev/null || missing+=(systemd)
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
    if [ "$(id -u)" != 0 ]; then
        echo "missing: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    echo "installing ${missing[*]}"
    apt-get update -qq
    # policy-rc.d: keep the distro's redis-server service from starting on port 6379.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
fi

if [ ! -x venv/bin/python ]; then
    python3 -m venv venv
fi
venv/bin/pip install -q --disable-pip-version-check -r requirements.txt

echo "== ruff"
venv/bin/ruff check infra tests benchmarks
echo "== mypy"
venv/bin/mypy
echo "== pytest"
venv/bin/pytest "$@"
