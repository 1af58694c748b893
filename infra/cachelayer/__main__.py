"""`python -m cachelayer ...` (with infra/ on PYTHONPATH): the operator CLI.

Not the Pulumi program: that is infra/__main__.py, which the Pulumi language host runs."""

import sys

from .cli import main

sys.exit(main())
