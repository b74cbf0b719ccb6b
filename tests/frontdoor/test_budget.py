"""The gateway's daily-budget check as rendered (coderig.frontdoor.budget): on every model route and
only there, asking the relay's usage listener the node runs, with the name and limit and never a key;
nothing of it when no developer has a budget."""

from __future__ import annotations

import dataclasses
import re

import pytest
from conftest import ssh_config

from coderig.core import planner
from coderig.frontdoor import render_gateway_conf
from coderig.frontdoor.assemble import relay_command
from coderig.targets import parse_settings
from coderig.targets.compose import machines
from coderig.targets.compose import spec as node

MODEL_ROUTES = ("/v1/messages", "/v1/messages/count_tokens", "/v1/chat/completions", "/v1/responses")


def node_gateway(developers: list[object]) -> node.frontdoor.GatewaySpec:
    s = parse_settings({**ssh_config(), "sshPrivateKey": "k", "developers": developers})
    spec = machines.node_specs(s, planner.plan_stack(s))[0]
    return node.front_door(s, spec)[1]


def location(conf: str, header: str) -> str:
    start = conf.index(f"location {header} {{")
    return conf[start : conf.index("\n        }", start)]


def test_every_model_route_asks_the_relay_the_node_runs_and_only_names_the_developer() -> None:
    gw = node_gateway(["alice", {"name": "bob", "dailyTokens": 2_000_000}])
    conf = render_gateway_conf(gw)
    assert gw.daily_tokens == (("bob", 2_000_000),)
    # the check goes to the relay's usage listener as the node starts it
    command = relay_command(gw, usage=True)
    listener = command[command.index("--metrics") + 1]
    assert f"upstream coderig_budget {{\n        server {listener} max_fails=0;\n        keepalive 4;" in conf
    assert "proxy_pass http://coderig_budget/budget;" in conf
    for path in MODEL_ROUTES:
        body = location(conf, f"= {path}")
        assert "auth_request /_coderig_budget;" in body, path
        shape = "anthropic" if path.startswith("/v1/messages") else "openai"
        assert f"error_page 403 = @coderig_budget_{shape};" in body, path
        # after the key check and the rate limit: an unknown key or a flood never reaches the relay
        assert body.index('$coderig_developer = ""') < body.index("limit_req ") < body.index("auth_request "), path
    assert "auth_request" not in location(conf, "= /v1/models")
    check = location(conf, "= /_coderig_budget")
    assert "internal;" in check and "proxy_pass_request_body off;" in check
    assert 'proxy_set_header Authorization "";' in check and 'proxy_set_header x-api-key "";' in check
    assert "X-Coderig-Daily-Tokens $coderig_daily_tokens;" in check
    assert re.search(
        r'map \$coderig_developer \$coderig_daily_tokens \{\n\s+default "";\n\s+"bob" "2000000";\n\s*\}', conf
    )
    anthropic = next(x for x in conf.splitlines() if "location @coderig_budget_anthropic" in x)
    assert (
        "return 429 " in anthropic and '"type": "rate_limit_error", "message": "$coderig_budget_message"' in anthropic
    )
    assert "add_header Retry-After $coderig_budget_retry always;" in anthropic
    assert "add_header x-should-retry false always;" in anthropic
    openai = next(x for x in conf.splitlines() if "location @coderig_budget_openai" in x)
    assert '"code": "rate_limit_exceeded"' in openai and "$coderig_budget_message" in openai


def test_no_budget_no_check() -> None:
    conf = render_gateway_conf(node_gateway(["alice", {"name": "bob"}]))
    assert "coderig_budget" not in conf and "coderig_daily_tokens" not in conf


def test_a_spec_that_cannot_hold_a_budget_is_refused() -> None:
    gw = node_gateway([{"name": "bob", "dailyTokens": 5}])
    with pytest.raises(ValueError, match="needs budget_check"):
        render_gateway_conf(dataclasses.replace(gw, budget_check=""))
    with pytest.raises(ValueError, match="one auth_request"):
        render_gateway_conf(dataclasses.replace(gw, model_gate_retry_after_s=15))
