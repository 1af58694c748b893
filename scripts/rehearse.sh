#!/usr/bin/env bash
# Rehearses the prod stack on booted Debian hosts (systemd-nspawn, 10.233.0.0/24), outside pytest.
#   scripts/rehearse.sh [SCENARIO] [--keep|--down]
# SCENARIO: a test of tests/rehearsal/test_prod_rehearsal.py (a name fragment, e.g. `fresh`,
# `renewed`); the scenarios before it run first, as they build on each other. Default: all.
# --keep leaves the hosts up for inspection (ssh -i <key> deploy@10.233.0.11) until Enter;
# --down removes what a killed rehearsal left (rh-* namespaces, rhbr0, nspawn processes).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="infra:tests${PYTHONPATH:+:$PYTHONPATH}"
scenario="" keep=no
for arg in "$@"; do
    case "$arg" in
        --keep) keep=yes ;;
        --down) exec venv/bin/python -m rehearsal down ;;
        -*) echo "unknown option $arg" >&2; exit 2 ;;
        *) scenario="$arg" ;;
    esac
done
exec venv/bin/python -m rehearsal run --scenario "$scenario" --keep "$keep"
