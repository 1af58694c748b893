"""The cachelayer policy pack: `pulumi preview --policy-pack policy`. Builds the PolicyPack only;
the validators live in cachelayer_policy.py, which the tests import (docs/delivery.md)."""

import sys
from pathlib import Path

# The validators reuse the project's own tables (ACL allowlist, CDN limits): infra/ is where
# the `cachelayer` package lives, as for the Pulumi program.
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "infra")]

from cachelayer_policy import POLICIES  # noqa: E402
from pulumi_policy import (  # noqa: E402
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyPack,
    ResourceValidationPolicy,
    StackValidationPolicy,
)

PLAN_SCHEMA = PolicyConfigSchema(properties={"plan": {"type": "string", "enum": ["free", "pro", "business", "enterprise"]}})

policies = []
for rule in POLICIES:
    level = EnforcementLevel.MANDATORY if rule.mandatory else EnforcementLevel.ADVISORY
    if rule.stack:
        policies.append(StackValidationPolicy(rule.name, rule.description, rule.validate, level))
    else:
        schema = PLAN_SCHEMA if rule.name == "cdn-ttls-within-plan" else None
        policies.append(ResourceValidationPolicy(rule.name, rule.description, rule.validate, level, schema))

PolicyPack("cachelayer", enforcement_level=EnforcementLevel.MANDATORY, policies=policies)
