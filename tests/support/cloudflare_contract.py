"""The Cloudflare API contract: what the provider would send for each resource we register, checked
against Cloudflare's own published types.

Mocks accept any string, so a setting id or a field the API refuses only showed on a real zone.
The official `cloudflare` SDK (5.x, a dependency) is generated from Cloudflare's OpenAPI schema:
its request parameter types (TypedDicts with Literal enums under cloudflare/types/) are the
closest primary source we have offline. This module

1. turns a registered pulumi-cloudflare resource (type token + inputs as the engine receives
   them: camelCase wire names, numbers as floats) into the API request(s) the provider makes:
   method, path, JSON body (`requests_for`);
2. validates a body against the SDK type of that endpoint, refusing unknown keys, missing
   required keys, wrong JSON types and values outside a Literal enum (`check_value`);
3. adds the plan and documentation rules that the schema cannot express (`documented_problems`),
   each with its source; docs/cdn.md tables them with what is still unconfirmed.

One contract: the fake Cloudflare API of the real-engine rehearsal validates the bodies it
receives with `check_request` too. A resource kind without a mapping here is an error, so a new
kind cannot slip past unchecked.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired, Required, Union, get_args, get_origin, get_type_hints

import pydantic
from cloudflare.types.argo.tiered_caching_edit_params import TieredCachingEditParams
from cloudflare.types.cache.cache_purge_params import CachePurgeParams
from cloudflare.types.cache.smart_tiered_cache_edit_params import SmartTieredCacheEditParams
from cloudflare.types.page_rules.page_rule_create_params import PageRuleCreateParams
from cloudflare.types.rulesets.ruleset_create_params import RulesetCreateParams
from cloudflare.types.rulesets.ruleset_update_params import RulesetUpdateParams
from cloudflare.types.url_normalization.url_normalization_update_params import URLNormalizationUpdateParams
from cloudflare.types.zones.setting_edit_params import Variant1 as ZoneSettingEditBody
from cloudflare.types.zones.setting_get_response import SettingGetResponse
from typing_extensions import is_typeddict

from cachelayer.cdn.settings import BROWSER_TTL_MINIMUM, EDGE_TTL_MINIMUM, YEAR

# Keys of an SDK params type that travel in the URL path, not in the JSON body.
PATH_PARAMS = frozenset({"zone_id", "account_id"})


@dataclass(frozen=True)
class ApiRequest:
    """One request the provider sends for a resource."""

    resource: str  # the Pulumi resource name, for messages
    method: str
    path: str
    body: Mapping[str, Any]
    body_type: Any  # the SDK type of the body (path parameters are not in the body)
    sdk_source: str  # where that type lives, relative to site-packages/cloudflare/
    setting_id: str = ""  # zone settings: the id in the path, checked against the SDK's setting ids


# -- validating a JSON value against an SDK type -------------------------------------------------


def _alias(hint: Any) -> str | None:
    """The JSON name of a TypedDict key written `Annotated[T, PropertyInfo(alias="max-age")]`."""
    if get_origin(hint) is Annotated:
        for meta in get_args(hint)[1:]:
            alias = getattr(meta, "alias", None)
            if alias:
                return str(alias)
    return None


def _strip(hint: Any) -> tuple[Any, bool | None]:
    """The type without Annotated/Required/NotRequired wrappers, and the requiredness they say."""
    required: bool | None = None
    while True:
        origin = get_origin(hint)
        if origin is Annotated:
            hint = get_args(hint)[0]
        elif origin is Required:
            hint, required = get_args(hint)[0], True
        elif origin is NotRequired:
            hint, required = get_args(hint)[0], False
        else:
            return hint, required


def _typeddict_fields(tp: Any) -> dict[str, tuple[Any, bool]]:
    """JSON key -> (type, required) of an SDK TypedDict. The SDK writes `from __future__ import
    annotations`, so `__required_keys__` cannot see Required[...]: it is read from the hints."""
    fields = {}
    for key, hint in get_type_hints(tp, include_extras=True).items():
        inner, required = _strip(hint)
        fields[_alias(hint) or key] = (inner, tp.__total__ if required is None else required)
    return fields


def _model_fields(tp: type[pydantic.BaseModel]) -> dict[str, tuple[Any, bool]]:
    return {field.alias or key: (field.annotation, field.is_required()) for key, field in tp.model_fields.items()}


def _literal_matches(value: Any, options: Sequence[Any]) -> bool:
    # `True == 1` in Python; JSON keeps them apart, and so does the API.
    return any(value == option and type(value) is type(option) for option in options)


def _discriminated(value: Mapping[str, Any], member: Any) -> bool:
    """Whether every Literal-typed key of `member` that `value` sets holds one of its values."""
    fields = _typeddict_fields(member) if is_typeddict(member) else {}
    for key, (tp, _required) in fields.items():
        if key in value and get_origin(tp) is Literal and not _literal_matches(value[key], get_args(tp)):
            return False
    return True


def _check_object(value: Any, fields: Mapping[str, tuple[Any, bool]], name: str, where: str, skip: frozenset[str]) -> list[str]:
    if not isinstance(value, Mapping):
        return [f"{where}: expected an object ({name}), got {type(value).__name__}"]
    problems = []
    for key in value:
        if key not in fields or key in skip:
            known = ", ".join(sorted(k for k in fields if k not in skip))
            problems.append(f"{where}.{key}: not a field of {name} (known: {known})")
    for key, (tp, required) in fields.items():
        if key in skip:
            continue
        if key in value:
            problems += check_value(value[key], tp, f"{where}.{key}")
        elif required:
            problems.append(f"{where}.{key}: required by {name}, missing")
    return problems


def check_value(value: Any, tp: Any, where: str = "$", skip: frozenset[str] = frozenset()) -> list[str]:
    """Every way `value` (parsed JSON) breaks the SDK type `tp`; [] when it conforms. Unknown keys
    and enum values are refused; a type form this checker does not know is a problem too (fail
    closed). `skip` names top-level keys that are path parameters."""
    tp, _required = _strip(tp)
    origin = get_origin(tp)
    if tp is Any or tp is object:
        return []
    if tp is type(None):
        return [] if value is None else [f"{where}: expected null, got {value!r}"]
    if origin is Literal:
        options = get_args(tp)
        return [] if _literal_matches(value, options) else [f"{where}: {value!r} is not one of {list(options)}"]
    if origin is Union or origin is types.UnionType:
        members = get_args(tp)
        results = [(member, check_value(value, member, where, skip)) for member in members]
        if any(not problems for _member, problems in results):
            return []
        if isinstance(value, Mapping):
            candidates = [(m, p) for m, p in results if is_typeddict(m) and _discriminated(value, m)]
            if len(candidates) == 1:
                return candidates[0][1]
        names = ", ".join(getattr(m, "__name__", str(m)) for m in members)
        best = min(results, key=lambda mp: len(mp[1]))[1]
        return [f"{where}: matches none of {names}; closest: {'; '.join(best)}"]
    if is_typeddict(tp):
        return _check_object(value, _typeddict_fields(tp), tp.__name__, where, skip)
    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        return _check_object(value, _model_fields(tp), tp.__name__, where, skip)
    if origin is dict or origin is Mapping:
        if not isinstance(value, Mapping):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        key_type, value_type = get_args(tp)
        return [p for k, v in value.items() for p in check_value(k, key_type, f"{where}[{k!r}]") + check_value(v, value_type, f"{where}.{k}")]
    if origin in (list, Iterable, Sequence) or getattr(origin, "__name__", "") == "SequenceNotStr":
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        (item_type,) = get_args(tp)
        return [p for i, item in enumerate(value) for p in check_value(item, item_type, f"{where}[{i}]")]
    if tp is bool:
        return [] if isinstance(value, bool) else [f"{where}: expected a boolean, got {value!r}"]
    if tp is int:
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{where}: expected an integer, got {value!r}"]
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return [] if ok else [f"{where}: expected a number, got {value!r}"]
    if tp is str:
        return [] if isinstance(value, str) else [f"{where}: expected a string, got {value!r}"]
    return [f"{where}: the contract cannot check values of type {tp!r}"]


# -- zone settings: the ids and value types the SDK knows ----------------------------------------

# cloudflare/types/zones/setting_get_response.py: SettingGetResponse is a Union with one model per
# zone setting, each with `id: Literal[<setting id>]` and its `value` type. The edit body
# (types/zones/setting_edit_params.py, Variant1) is only `{"value": ...}` with a loose value type,
# so the value is checked against the model of its own id.
def zone_setting_types() -> dict[str, Any]:
    """Setting id -> the type of its value."""
    table = {}
    for model in get_args(SettingGetResponse):
        id_type, _ = _strip(model.model_fields["id"].annotation)
        ids = get_args(id_type) if get_origin(id_type) is Literal else get_args(get_args(id_type)[0])
        value = model.model_fields.get("value")
        for setting_id in ids:
            table[setting_id] = value.annotation if value is not None else Any
    return table


ZONE_SETTING_TYPES = zone_setting_types()


# -- from pulumi-cloudflare inputs to API requests ----------------------------------------------

# pulumi-cloudflare 6.x is bridged from terraform-provider-cloudflare v5, whose attribute names are
# the API's JSON names (internal/services/*/model.go, `json:"..."` tags). Pulumi sends them
# camelCased and pluralises list attributes; these are the names that are not a plain camelCase of
# the API's: TF `status_code_ttl` (a list) is Pulumi `statusCodeTtls`
# (terraform-provider-cloudflare internal/services/ruleset/model.go: json:"status_code_ttl").
WIRE_RENAMES: Mapping[str, str] = {"statusCodeTtls": "status_code_ttl"}


def _snake(name: str) -> str:
    return WIRE_RENAMES.get(name) or re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def api_json(value: Any) -> Any:
    """A wire (camelCase, numbers as floats) input value in the API's JSON shape."""
    if isinstance(value, Mapping):
        return {_snake(str(k)): api_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [api_json(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # the engine carries every number as a float; these fields are int64
    return value


def _zone(inputs: Mapping[str, Any]) -> str:
    return str(inputs.get("zoneId", "<zone_id>"))


def _ruleset(name: str, inputs: Mapping[str, Any]) -> list[ApiRequest]:
    # Create: POST /zones/{zone_id}/rulesets, body types/rulesets/ruleset_create_params.py
    # (RulesetCreateParams; each rule a member of its `Rule` union, ours
    # types/rulesets/set_cache_settings_rule_param.py SetCacheSettingsRuleParam). Update: PUT
    # /zones/{zone_id}/rulesets/{ruleset_id} with the same fields (ruleset_update_params.py).
    body = {k: api_json(inputs[w]) for w, k in (("kind", "kind"), ("name", "name"), ("phase", "phase"),
                                                ("description", "description"), ("rules", "rules")) if w in inputs}
    extra = set(inputs) - {"zoneId", "kind", "name", "phase", "description", "rules"}
    if extra:
        raise ContractGap(f"{name}: Ruleset inputs {sorted(extra)} have no mapping in the contract")
    zone = _zone(inputs)
    return [
        ApiRequest(name, "POST", f"/zones/{zone}/rulesets", body, RulesetCreateParams,
                   "types/rulesets/ruleset_create_params.py"),
        ApiRequest(name, "PUT", f"/zones/{zone}/rulesets/<ruleset_id>", body, RulesetUpdateParams,
                   "types/rulesets/ruleset_update_params.py"),
    ]  # fmt: skip


def _zone_setting(name: str, inputs: Mapping[str, Any]) -> list[ApiRequest]:
    # PATCH /zones/{zone_id}/settings/{setting_id} {"value": ...} (resources/zones/settings.py edit;
    # body types/zones/setting_edit_params.py Variant1; ids and values setting_get_response.py).
    setting_id = str(inputs.get("settingId", ""))
    body = {"value": api_json(inputs.get("value"))}
    return [ApiRequest(name, "PATCH", f"/zones/{_zone(inputs)}/settings/{setting_id}", body, ZoneSettingEditBody,
                       "types/zones/setting_edit_params.py", setting_id=setting_id)]  # fmt: skip


def _page_rule(name: str, inputs: Mapping[str, Any]) -> list[ApiRequest]:
    # POST /zones/{zone_id}/pagerules, body types/page_rules/page_rule_create_params.py. The v5
    # provider's page_rule model (internal/services/page_rule/model.go) takes `target` as one URL
    # pattern and `actions` as one object, and sends the API's shapes: targets
    # [{"target": "url", "constraint": {"operator": "matches", "value": ...}}] and one
    # {"id": <action>, "value": ...} per action set.
    actions = [{"id": _snake(k), "value": api_json(v)} for k, v in (inputs.get("actions") or {}).items()]
    body: dict[str, Any] = {
        "targets": [{"target": "url", "constraint": {"operator": "matches", "value": inputs.get("target")}}],
        "actions": actions,
    }
    for key in ("priority", "status"):
        if key in inputs:
            body[key] = api_json(inputs[key])
    return [ApiRequest(name, "POST", f"/zones/{_zone(inputs)}/pagerules", body, PageRuleCreateParams,
                       "types/page_rules/page_rule_create_params.py")]  # fmt: skip


def _simple(method: str, path: str, body_type: Any, source: str, keys: Sequence[str]) -> Any:
    def build(name: str, inputs: Mapping[str, Any]) -> list[ApiRequest]:
        extra = set(inputs) - {"zoneId", *keys}
        if extra:
            raise ContractGap(f"{name}: inputs {sorted(extra)} have no mapping in the contract")
        body = {key: api_json(inputs[key]) for key in keys if key in inputs}
        return [ApiRequest(name, method, path.format(zone=_zone(inputs)), body, body_type, source)]

    return build


class ContractGap(Exception):
    """A resource kind or input the contract has no mapping for: extend the contract."""


TRANSLATIONS = {
    "cloudflare:index/ruleset:Ruleset": _ruleset,
    "cloudflare:index/zoneSetting:ZoneSetting": _zone_setting,
    "cloudflare:index/pageRule:PageRule": _page_rule,
    # PUT /zones/{zone_id}/url_normalization (types/url_normalization/url_normalization_update_params.py)
    "cloudflare:index/urlNormalizationSettings:UrlNormalizationSettings": _simple(
        "PUT", "/zones/{zone}/url_normalization", URLNormalizationUpdateParams,
        "types/url_normalization/url_normalization_update_params.py", ("scope", "type"),
    ),
    # PATCH /zones/{zone_id}/cache/tiered_cache_smart_topology_enable (types/cache/smart_tiered_cache_edit_params.py)
    "cloudflare:index/tieredCache:TieredCache": _simple(
        "PATCH", "/zones/{zone}/cache/tiered_cache_smart_topology_enable", SmartTieredCacheEditParams,
        "types/cache/smart_tiered_cache_edit_params.py", ("value",),
    ),
    # PATCH /zones/{zone_id}/argo/tiered_caching (types/argo/tiered_caching_edit_params.py)
    "cloudflare:index/argoTieredCaching:ArgoTieredCaching": _simple(
        "PATCH", "/zones/{zone}/argo/tiered_caching", TieredCachingEditParams,
        "types/argo/tiered_caching_edit_params.py", ("value",),
    ),
}  # fmt: skip


def requests_for(resource_type: str, name: str, inputs: Mapping[str, Any]) -> list[ApiRequest]:
    """The API requests the provider makes for one registered resource; none for the provider
    resource itself (it only holds the token)."""
    if resource_type == "pulumi:providers:cloudflare":
        return []
    if resource_type not in TRANSLATIONS:
        raise ContractGap(f"{name}: no contract for {resource_type}; add its mapping to tests/support/cloudflare_contract.py")
    return list(TRANSLATIONS[resource_type](name, inputs))


def purge_request(zone_id: str, body: Mapping[str, Any]) -> ApiRequest:
    # POST /zones/{zone_id}/purge_cache, body types/cache/cache_purge_params.py (one kind per request).
    return ApiRequest("cdn purge", "POST", f"/zones/{zone_id}/purge_cache", body, CachePurgeParams,
                      "types/cache/cache_purge_params.py")  # fmt: skip


# -- checking a request -------------------------------------------------------------------------


def check_request(request: ApiRequest) -> list[str]:
    """The request's problems against the SDK types; [] when it conforms."""
    where = f"{request.resource}: {request.method} {request.path}"
    problems = check_value(dict(request.body), request.body_type, "body", skip=PATH_PARAMS)
    if request.setting_id:
        if request.setting_id not in ZONE_SETTING_TYPES:
            problems.append(
                f"setting id {request.setting_id!r} is not a zone setting "
                f"(cloudflare/types/zones/setting_get_response.py lists {len(ZONE_SETTING_TYPES)}; the API "
                "answers 1006 Unrecognized zone setting name)"
            )
        elif "value" in request.body:
            problems += check_value(request.body["value"], ZONE_SETTING_TYPES[request.setting_id], "body.value")
    return [f"{where}: {p} [{request.sdk_source}]" for p in problems]


# What the published types cannot say, with its source (docs/cdn.md tables these and marks what is
# still unconfirmed). `plan` is the zone's plan from cdn.plan.
STATUS_TTL_PLANS = frozenset({"enterprise"})  # docs disagree for other plans: see docs/cdn.md


def documented_problems(request: ApiRequest, plan: str) -> list[str]:
    problems: list[str] = []
    for index, rule in enumerate(request.body.get("rules") or [] if request.method == "POST" else []):
        if rule.get("action") != "set_cache_settings":
            continue
        params = rule.get("action_parameters") or {}
        where = f"{request.resource}: rule {rule.get('ref') or index}"
        if params.get("cache") is False and set(params) - {"cache"}:
            problems.append(
                f"{where}: a bypass (cache: false) also sends {sorted(set(params) - {'cache'})}; Cloudflare "
                "documents those only for cacheable rules (docs Cache Rules > Available settings)"
            )
        edge, browser = params.get("edge_ttl") or {}, params.get("browser_ttl") or {}
        if edge.get("status_code_ttl") and plan not in STATUS_TTL_PLANS:
            problems.append(
                f"{where}: status-code TTLs on a {plan} zone; Cloudflare's pages disagree whether plans "
                "below Enterprise accept them (docs Cache by status code vs the page-rule action)"
            )
        if edge.get("mode") == "override_origin" and not EDGE_TTL_MINIMUM[plan] <= edge.get("default", -1) <= YEAR:
            problems.append(f"{where}: edge TTL {edge.get('default')} s outside {EDGE_TTL_MINIMUM[plan]}..{YEAR} ({plan})")
        if browser.get("mode") == "override_origin" and not BROWSER_TTL_MINIMUM <= browser.get("default", -1) <= YEAR:
            problems.append(f"{where}: browser TTL {browser.get('default')} s outside {BROWSER_TTL_MINIMUM}..{YEAR}")
    return problems


def check_resources(resources: Iterable[tuple[str, str, Mapping[str, Any]]], plan: str) -> list[str]:
    """Every problem of every Cloudflare request for (type, name, wire inputs) resources."""
    problems = []
    for resource_type, name, inputs in resources:
        if not resource_type.startswith(("cloudflare:", "pulumi:providers:cloudflare")):
            continue
        for request in requests_for(resource_type, name, inputs):
            problems += check_request(request) + documented_problems(request, plan)
    return problems
