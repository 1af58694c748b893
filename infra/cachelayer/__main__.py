"""`python -m cachelayer ...`: the operator CLI, as the `cachelayer` command (venv/bin/cachelayer)
that `pip install -e .` (scripts/setup.sh) installs.

Not the Pulumi program: that is infra/__main__.py, which the Pulumi language host runs."""

import sys

from cachelayer.cli.app import main

sys.exit(main())
