#!/usr/bin/env bash
# Runs every check on a fresh Debian machine: installs what the tests need (scripts/setup.sh),
# then ruff, mypy and pytest (unit, program under mocks, integration on real redis-server, and
# the prod-stack rehearsal on booted Debian hosts, tests/rehearsal: needs root).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== ruff"
venv/bin/ruff check infra tests benchmarks cache_library
echo "== mypy"
venv/bin/mypy
echo "== pytest"
venv/bin/pytest "$@"
