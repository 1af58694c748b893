"""CloudflareCdn: the zone's cache rules, page rules and bandwidth settings as typed resources.

A thin shell: what to declare comes from cachelayer.cdn.rules (pure). Nested inputs are written
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

from cachelayer.cdn.rules import (
    RULESET_PHASE,
    CacheAction,
    CacheRule,
    PageRulePlan,
    StatusTtl,
    build_cache_rules,
    build_page_rules,
    url_normalization,
    zone_setting_values,
)
from cachelayer.cdn.settings import CdnSettings


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
    if not action.cache:
        # `cache: false` only: the other settings are documented for cacheable rules (BYPASS_PARAMETERS).
        return {"cache": False}
    params: RulesetRuleActionParametersArgsDict = {"cache": True}
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
    cache_key: RulesetRuleActionParametersCacheKeyArgsDict = {}
    if action.cache_by_device_type:
        cache_key["cache_by_device_type"] = True
    if action.cache_deception_armor:
        cache_key["cache_deception_armor"] = True
    if cache_key:
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


RULESET_NAME = "cachelayer cache rules"
RULESET_DESCRIPTION = "Managed by Pulumi (cachelayer): static, video, content API, private bypass"


def ruleset_name(settings: CdnSettings) -> str:
    """Ours, or the adopted entry point's own name: the provider replaces a ruleset whose name
    changes, and replacing a zone's entry point deletes every cache rule it holds."""
    return settings.cache_ruleset_name if settings.cache_ruleset_id else RULESET_NAME


def ruleset_options(settings: CdnSettings) -> pulumi.ResourceOptions:
    """An adopted entry point is imported (since pulumi/pulumi#19339 an import whose inputs differ
    succeeds and the same `up` then updates it in place) and protected, and never deleted before a
    replacement. Our own ruleset is replaced delete-first: a zone cannot hold two entry points."""
    if settings.cache_ruleset_id:
        return pulumi.ResourceOptions(
            import_=f"zones/{settings.zone_id}/{settings.cache_ruleset_id}",
            protect=True,
            delete_before_replace=False,
        )
    return pulumi.ResourceOptions(delete_before_replace=True)


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

        # One entry-point ruleset per zone and phase: this resource owns every cache rule. A zone
        # whose entry point already exists (dashboard edits leave one) adopts it by id: creating a
        # second fails with API error 20217.
        cache_rules = build_cache_rules(settings)
        ruleset = cloudflare.Ruleset(
            f"{name}-cache-rules",
            zone_id=settings.zone_id,
            kind="zone",
            phase=RULESET_PHASE,
            name=ruleset_name(settings),
            description=RULESET_DESCRIPTION,
            rules=[ruleset_rule(rule) for rule in cache_rules],
            opts=pulumi.ResourceOptions.merge(child, ruleset_options(settings)),
        )

        # The rules' paths are matched after Cloudflare URL normalization (cdn.rules.normalize_path
        # models it): pin it, so a dashboard change cannot reopen `//api/...` style bypasses.
        normalization = url_normalization(cache_rules)
        cloudflare.UrlNormalizationSettings(
            f"{name}-url-normalization",
            zone_id=settings.zone_id,
            type=normalization["type"],
            scope=normalization["scope"],
            opts=child,
        )

        # Cloudflare renumbers page rule priorities 1..n in creation order; creating them one
        # after another (each depends on the previous) keeps our numbers the ones it stores.
        page_rules: list[cloudflare.PageRule] = []
        for plan in build_page_rules(settings):
            after = pulumi.ResourceOptions(depends_on=page_rules[-1:]) if page_rules else None
            page_rules.append(
                cloudflare.PageRule(
                    f"{name}-page-{plan.ref.replace('_', '-')}",
                    zone_id=settings.zone_id,
                    target=plan.target,
                    priority=plan.priority,
                    status="active",  # the provider's default is "disabled"
                    actions=page_rule_actions(plan),
                    opts=pulumi.ResourceOptions.merge(child, after),
                )
            )

        # The provider's delete for ZoneSetting and ArgoTieredCaching does nothing: removing one
        # from code leaves the zone as it is. retain_on_delete makes preview say exactly that.
        kept = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(retain_on_delete=True))
        for setting_id, value in zone_setting_values(settings).items():
            cloudflare.ZoneSetting(
                f"{name}-{setting_id.replace('_', '-')}",
                zone_id=settings.zone_id,
                setting_id=setting_id,
                value=value,
                opts=kept,
            )

        # Smart Tiered Cache sits on top of Tiered Caching, so that is switched first.
        tiered = "on" if settings.tiered_cache else "off"
        tiered_caching = cloudflare.ArgoTieredCaching(
            f"{name}-tiered-caching", zone_id=settings.zone_id, value=tiered, opts=kept
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
