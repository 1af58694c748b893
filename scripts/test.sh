#!/usr/bin/env bash
# Runs every check on a fresh Debian machine: installs what the tests need (scripts/setup.sh),
# then ruff, mypy, the workflow linters and pytest (unit, program under mocks, integration on
# real redis-server, and the prod-stack rehearsal on booted Debian hosts, tests/rehearsal: needs root).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

# The rehearsal's Debian host image (debootstrap, about 80 s on a fresh machine, then cached) is
# built while the linters run, and finished before pytest starts: no test shares the CPU with it.
image_log=$(mktemp)
image_pid=""
if [ "$(id -u)" = 0 ]; then
    PYTHONPATH=tests venv/bin/python -m rehearsal image >"$image_log" 2>&1 &
    image_pid=$!
fi

echo "== ruff"
venv/bin/ruff check infra tests benchmarks cache_library policy
echo "== mypy"
venv/bin/mypy
echo "== workflow lint"
venv/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
venv/bin/zizmor --offline --quiet .github/workflows
if [ -n "$image_pid" ]; then
    # A failed build is reported here and again, with its cause, by the rehearsal's own fixture.
    wait "$image_pid" || echo "rehearsal host image: build failed" >&2
    cat "$image_log"
fi
rm -f "$image_log"
echo "== pytest"
# The slowest tests close the report: where the run's time goes (CI keeps it under 30 minutes).
venv/bin/pytest --durations=25 "$@"
