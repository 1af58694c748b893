"""CloudflareCdn: the zone's cache rules, page rules and bandwidth settings as typed resources.

A thin shell: what to declare comes from cachelayer.cdn_rules (pure). Nested inputs are written
as the provider's `*ArgsDict` TypedDicts, so a type checker refuses a misspelt key (at runtime
the provider would silently ignore it).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_cloudflare as cloudflare
from pulumi_cloudflare._inputs import (
    PageRuleActionsArgsDict,
    RulesetRuleActionParametersArgsDict,
    RulesetRuleActionParametersBrowserTtlArgsDict,
    RulesetRuleActionParametersCacheKeyArgsDict,
    RulesetRuleActionParametersEdgeTtlArgsDict,
    RulesetRuleActionParametersEdgeTtlStatusCodeTtlArgsDict,
    RulesetRuleActionParametersOriginRangeRequestsArgsDict,
    RulesetRuleActionParametersServeStaleArgsDict,
    RulesetRuleArgsDict,
)

from ..cdn_rules import (
    RULESET_PHASE,
    CacheAction,
    CacheRule,
    PageRulePlan,
    StatusTtl,
    build_cache_rules,
    build_page_rules,
    zone_setting_values,
)
from ..cdn_settings import CdnSettings


@dataclass(frozen=True)
class CloudflareCdnArgs:
    settings: CdnSettings
    # A secret Output (config.require_secret); None uses the ambient provider (CLOUDFLARE_API_TOKEN).
    api_token: pulumi.Input[str] | None = None


def _status_ttl(s: StatusTtl) -> RulesetRuleActionParametersEdgeTtlStatusCodeTtlArgsDict:
    if s.code_range is not None:
        return {"status_code_range": {"from_": s.code_range[0], "to": s.code_range[1]}, "value": s.value}
    return {"status_code": s.code, "value": s.value}


def action_parameters(action: CacheAction) -> RulesetRuleActionParametersArgsDict:
    """The typed twin of CacheAction.parameters(); a test checks the two agree on the wire."""
    params: RulesetRuleActionParametersArgsDict = {"cache": action.cache}
    if not action.cache:
        return params
    if action.edge_ttl is not None:
        edge: RulesetRuleActionParametersEdgeTtlArgsDict = {"mode": "override_origin", "default": action.edge_ttl}
        if action.status_ttls:
            edge["status_code_ttls"] = [_status_ttl(s) for s in action.status_ttls]
        params["edge_ttl"] = edge
    if action.browser_ttl is not None:
        browser: RulesetRuleActionParametersBrowserTtlArgsDict = (
            {"mode": "bypass"}
            if action.browser_ttl == 0
            else {"mode": "override_origin", "default": action.browser_ttl}
        )
        params["browser_ttl"] = browser
    if action.cache_by_device_type:
        cache_key: RulesetRuleActionParametersCacheKeyArgsDict = {"cache_by_device_type": True}
        params["cache_key"] = cache_key
    if action.origin_range_requests:
        ranges: RulesetRuleActionParametersOriginRangeRequestsArgsDict = {"mode": "on"}
        params["origin_range_requests"] = ranges
    if action.serve_stale:
        stale: RulesetRuleActionParametersServeStaleArgsDict = {"disable_stale_while_updating": False}
        params["serve_stale"] = stale
    return params


def ruleset_rule(rule: CacheRule) -> RulesetRuleArgsDict:
    return {
        "ref": rule.ref,
        "description": rule.description,
        "expression": rule.expression,
        "action": "set_cache_settings",
        "action_parameters": action_parameters(rule.action),
        "enabled": True,
    }


def page_rule_actions(plan: PageRulePlan) -> PageRuleActionsArgsDict:
    actions: PageRuleActionsArgsDict = {}
    if plan.cache_level is not None:
        actions["cache_level"] = plan.cache_level
    if plan.edge_cache_ttl is not None:
        actions["edge_cache_ttl"] = plan.edge_cache_ttl
    if plan.browser_cache_ttl is not None:
        actions["browser_cache_ttl"] = plan.browser_cache_ttl
    if plan.bypass_cache_on_cookie is not None:
        actions["bypass_cache_on_cookie"] = plan.bypass_cache_on_cookie
    return actions


class CloudflareCdn(pulumi.ComponentResource):
    """One zone's CDN behaviour: one cache-settings ruleset, page rules, zone settings, tiered cache."""

    ruleset_id: pulumi.Output[str]
    page_rule_ids: pulumi.Output[list[str]]
    zone_id: pulumi.Output[str]

    def __init__(self, name: str, args: CloudflareCdnArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("cachelayer:cdn:CloudflareCdn", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)
        if args.api_token is not None:
            provider = cloudflare.Provider(
                f"{name}-provider",
                # Secret even if a caller passes a plain string: it must never reach state in clear.
                api_token=pulumi.Output.secret(args.api_token),
                opts=pulumi.ResourceOptions(parent=self),
            )
            child = pulumi.ResourceOptions(parent=self, provider=provider)

        # One entry-point ruleset per zone and phase: this resource owns every cache rule.
        ruleset = cloudflare.Ruleset(
            f"{name}-cache-rules",
            zone_id=settings.zone_id,
            kind="zone",
            phase=RULESET_PHASE,
            name="cachelayer cache rules",
            description="Managed by Pulumi (cachelayer): static, video, content API, private bypass",
            rules=[ruleset_rule(rule) for rule in build_cache_rules(settings)],
            opts=child,
        )

        page_rules = [
            cloudflare.PageRule(
                f"{name}-page-{plan.ref.replace('_', '-')}",
                zone_id=settings.zone_id,
                target=plan.target,
                priority=plan.priority,
                status="active",  # the provider's default is "disabled"
                actions=page_rule_actions(plan),
                opts=child,
            )
            for plan in build_page_rules(settings)
        ]

        for setting_id, value in zone_setting_values(settings).items():
            cloudflare.ZoneSetting(
                f"{name}-{setting_id.replace('_', '-')}",
                zone_id=settings.zone_id,
                setting_id=setting_id,
                value=value,
                opts=child,
            )

        # Smart Tiered Cache sits on top of Tiered Caching, so that is switched first.
        tiered = "on" if settings.tiered_cache else "off"
        tiered_caching = cloudflare.ArgoTieredCaching(
            f"{name}-tiered-caching", zone_id=settings.zone_id, value=tiered, opts=child
        )
        cloudflare.TieredCache(
            f"{name}-smart-tiered-cache",
            zone_id=settings.zone_id,
            value=tiered,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[tiered_caching])),
        )

        self.ruleset_id = ruleset.id
        self.page_rule_ids = pulumi.Output.all(*[rule.id for rule in page_rules]).apply(list)
        self.zone_id = pulumi.Output.from_input(settings.zone_id)
        self.register_outputs(
            {"ruleset_id": self.ruleset_id, "page_rule_ids": self.page_rule_ids, "zone_id": self.zone_id}
        )
