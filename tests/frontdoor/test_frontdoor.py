"""Pure tests of the front-door renderers and of `coderig frontdoor run`'s decisions, plus
`nginx -t` on the rendered gateway (with its keys include, with and without TLS)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parents[1]))
from frontdoor_fixtures import require_tool  # noqa: E402
from standin import plan_reply, split_args  # noqa: E402

from coderig import frontdoor
from coderig.cli import build_parser  # noqa: E402
from coderig.core.files import write_file  # noqa: E402
from coderig.core.versions import FORBIDDEN_LITELLM_VERSIONS, LITELLM_VERSION  # noqa: E402
from coderig.frontdoor import (  # noqa: E402
    CLAUDE_WILDCARD,
    GatewaySpec,
    ModelRoute,
    is_loopback,
    litellm_config,
    local_tls,  # noqa: E402
    parse_listen,
    render_gateway_conf,
    render_gateway_keys,
    render_litellm_config,
    validate_keys,
)
from coderig.frontdoor import run as frontdoor_run  # noqa: E402
from coderig.frontdoor.assemble import GatewayPaths, assemble, model_health_url, relay_command  # noqa: E402

ROUTE = ModelRoute(
    served_name="umans-coder-v0",
    backends=("http://127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1"),
    max_tokens=32000,
    temperature=0.6,
    top_p=0.95,
    chat_template_kwargs={"thinking": True},
    aliases=("deepseek-v3.2",),
)
KEYS = {"alice": "alice-0123456789abcdefXYZ", "bob": "bob.0123456789+abcdefXYZ"}
MASTER = "master-0123456789abcdefghijkl"


def spec(tmp: Path | None = None, **overrides: object) -> GatewaySpec:
    base = Path(tmp or "/srv/coderig")
    values: dict[str, object] = {
        "listen": "0.0.0.0:8443",
        "litellm": "127.0.0.1:4000",
        "model_health_url": "http://127.0.0.1:8000/health",
        "keys_include": str(base / "keys.conf"),
        "tls_cert": str(base / "server.pem"),
        "tls_key": str(base / "server.key"),
        "pid_path": str(base / "nginx.pid"),
        "error_log": str(base / "error.log"),
        "access_log": str(base / "access.log"),
        "temp_dir": str(base / "tmp"),
    }
    values.update(overrides)
    return GatewaySpec(**values)  # type: ignore[arg-type]


# ---------------------------------------------------------------- LiteLLM


def test_litellm_pin_is_not_a_compromised_release() -> None:
    assert LITELLM_VERSION not in FORBIDDEN_LITELLM_VERSIONS
    assert re.fullmatch(r"\d+\.\d+\.\d+", LITELLM_VERSION)


def test_litellm_one_deployment_per_name_and_replica() -> None:
    cfg = litellm_config(ROUTE)
    pairs = [(d["model_name"], d["litellm_params"]["api_base"]) for d in cfg["model_list"]]
    names = ["umans-coder-v0", "deepseek-v3.2", CLAUDE_WILDCARD]
    assert pairs == [(n, b) for n in names for b in ROUTE.backends]
    ids = [d["model_info"]["id"] for d in cfg["model_list"]]
    assert len(set(ids)) == len(ids)
    assert {
        (d["model_info"]["input_cost_per_token"], d["model_info"]["output_cost_per_token"]) for d in cfg["model_list"]
    } == {(0.0, 0.0)}
    for deployment in cfg["model_list"]:
        params = deployment["litellm_params"]
        # every name, claude-* included, is sent to the served model on a hosted_vllm backend
        assert params["model"] == "hosted_vllm/umans-coder-v0"
        assert params["temperature"] == 0.6 and params["top_p"] == 0.95
        assert params["max_tokens"] == 32000
        assert params["extra_body"] == {"chat_template_kwargs": {"thinking": True}}
        assert params["use_chat_completions_api"] is True
        assert params["timeout"] >= 1800 and params["stream_timeout"] >= 1800


def test_litellm_settings_no_db_master_key_from_env_drop_params() -> None:
    cfg = yaml.safe_load(render_litellm_config(ROUTE))
    assert cfg["general_settings"]["master_key"] == "os.environ/LITELLM_MASTER_KEY"
    assert "database_url" not in cfg["general_settings"]
    assert cfg["litellm_settings"]["drop_params"] is True
    assert cfg["litellm_settings"]["request_timeout"] >= 1800
    assert cfg["router_settings"]["timeout"] >= 1800 and cfg["router_settings"]["stream_timeout"] >= 1800


def test_litellm_optional_defaults_are_omitted() -> None:
    route = ModelRoute("m", ("http://h:1/v1",), max_tokens=10)
    params = litellm_config(route)["model_list"][0]["litellm_params"]
    assert "temperature" not in params and "top_p" not in params and "extra_body" not in params


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (ModelRoute("m", (), 10), "at least one"),
        (ModelRoute("m", ("http://h:1",), 10), "ending in /v1"),
        (ModelRoute("m", ("ftp://h/v1",), 10), "ending in /v1"),
        (ModelRoute("m", ("http://h:1/v1",), 0), "max_tokens"),
    ],
)
def test_litellm_route_validation(route: ModelRoute, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        litellm_config(route)


# ---------------------------------------------------------------- gateway


def _locations(conf: str) -> dict[str, str]:
    """location header -> body, matching braces outside quoted strings."""
    found = {}
    for match in re.finditer(r"location ([^{;]+)\{", conf):
        depth, i, quote = 1, match.end(), ""
        while depth:
            ch = conf[i]
            if quote:
                quote = "" if ch == quote else quote
            elif ch in "'\"":
                quote = ch
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            i += 1
        found[match.group(1).strip()] = conf[match.end() : i - 1]
    return found


def test_gateway_conf_holds_no_key_material() -> None:
    conf = render_gateway_conf(spec())
    for secret in [*KEYS.values(), MASTER]:
        assert secret not in conf
    assert "include /srv/coderig/keys.conf;" in conf


def test_every_proxying_location_replaces_both_key_headers() -> None:
    """nginx forgets inherited proxy_set_header lines in a location that sets any: each proxying
    location must itself drop x-api-key and overwrite Authorization."""
    locs = _locations(render_gateway_conf(spec(direct_chat_backends=("127.0.0.1:8000",))))
    proxying = {h: b for h, b in locs.items() if "proxy_pass" in b}
    assert len(proxying) >= 5
    for header, body in proxying.items():
        assert 'proxy_set_header x-api-key "";' in body, header
        assert "proxy_set_header Authorization " in body, header
        assert 'proxy_set_header Connection "";' in body, header
        assert "proxy_set_header X-Coderig-Developer $coderig_developer;" in body, header


def test_llm_locations_require_a_developer_and_answer_in_their_shape() -> None:
    locs = _locations(render_gateway_conf(spec()))
    messages = locs["= /v1/messages"]
    assert 'if ($coderig_developer = "")' in messages
    assert '"type": "authentication_error"' in messages
    assert "proxy_set_header Authorization $coderig_upstream_authorization;" in messages
    openai = locs["= /v1/responses"]
    assert '"code": "invalid_api_key"' in openai
    assert "limit_req zone=coderig_per_developer" in openai and "limit_req zone=coderig_per_developer" in messages
    assert "return 404" in locs["/"]  # LiteLLM's admin/UI routes are not exposed
    assert '"not_found_error"' in locs["/v1/messages"] and '"not_found"' in locs["/"]


def test_gateway_streaming_sizes_timeouts_keepalive() -> None:
    conf = render_gateway_conf(spec())
    for line in (
        "proxy_buffering off;",
        "proxy_request_buffering on;",  # a body is whole (and under the cap) before any upstream sees it
        "client_max_body_size 32m;",
        "client_body_buffer_size 1m;",  # Claude Code's bodies stay in memory
        "proxy_http_version 1.1;",
        "keepalive 128;",
        "gzip off;",
        "listen 0.0.0.0:8443 ssl;",
    ):
        assert line in conf
    assert "proxy_request_buffering off;" not in conf
    locs = _locations(conf)
    server = conf.split("server {", 1)[1]
    for body in locs.values():
        server = server.replace(body, "")
    # every client gets short timeouts: headers, body, keepalive, what nginx answers itself
    for directive in ("client_header_timeout", "client_body_timeout", "send_timeout", "keepalive_timeout"):
        (value,) = re.findall(rf"^\s*{directive} (\d+)s;", server, re.M)
        assert int(value) <= 60, directive
    assert "proxy_read_timeout" not in server and "proxy_send_timeout" not in server
    # long ones only where an authenticated request is proxied
    for header, body in locs.items():
        if "proxy_pass http://coderig_litellm/v1" in body or "proxy_pass http://coderig_model" in body:
            assert 'if ($coderig_developer = "")' in body, header
            for directive in ("proxy_read_timeout", "proxy_send_timeout", "send_timeout"):
                (value,) = re.findall(rf"^\s*{directive} (\d+)s;", body, re.M)
                assert int(value) >= 1800, (header, directive)
        else:
            assert "1800s" not in body, header
    assert "limit_req_zone $coderig_developer zone=coderig_per_developer" in conf


def test_routes_are_an_allow_list_of_exact_paths_and_methods() -> None:
    locs = _locations(render_gateway_conf(spec(direct_chat_backends=("127.0.0.1:8000",))))
    assert not any(h.startswith("~") for h in locs)  # no regex locations: exact paths only
    exact = {h.removeprefix("= "): b for h, b in locs.items() if h.startswith("= ")}
    expected = {
        "/v1/messages": "POST", "/v1/messages/count_tokens": "POST", "/v1/chat/completions": "POST",
        "/v1/responses": "POST", "/v1/models": "GET", "/api/hello": "HEAD|GET",
        "/api/event_logging/batch": "POST", "/healthz": "GET|HEAD", "/healthz/front": "GET|HEAD",
    }  # fmt: skip
    assert {p: r.path for p, r in zip(expected, frontdoor.ROUTES, strict=True)} == {p: p for p in expected}
    for path, methods in expected.items():
        body = exact[path]
        assert f"if ($request_method !~ ^(?:{methods})$)" in body, path
        assert "return 405 " in body and f'add_header Allow "{methods.replace("|", ", ")}" always;' in body
        assert body.index("return 405") < body.find("proxy_pass") or "proxy_pass" not in body
        if "proxy_pass http://coderig_" in body and not path.startswith("/healthz"):
            # the upstream path is the route's own, not the client's raw request target
            assert re.search(rf"proxy_pass http://coderig_(litellm|model){re.escape(path)};", body), path
    with pytest.raises(ValueError, match="twice"):
        render_gateway_conf(spec(), routes=(*frontdoor.ROUTES, frontdoor.ROUTES[0]))


def test_tls_is_mozilla_intermediate() -> None:
    conf = render_gateway_conf(spec())
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in conf
    (ciphers,) = re.findall(r"ssl_ciphers (\S+);", conf)
    for suite in ciphers.split(":"):
        assert suite.startswith("ECDHE-") and ("GCM" in suite or "CHACHA20" in suite), suite
    assert "ECDHE-ECDSA-AES128-GCM-SHA256" in ciphers.split(":")
    assert "ssl_prefer_server_ciphers off;" in conf and "ssl_session_tickets off;" in conf


def test_probes_and_healthz() -> None:
    conf = render_gateway_conf(spec())
    locs = _locations(conf)
    assert "return 200" in locs["= /api/hello"] and "proxy_pass" not in locs["= /api/hello"]
    assert "return 200" in locs["= /api/event_logging/batch"]
    healthz = locs["= /healthz"]
    assert "auth_request /_coderig_model_health;" in healthz and "if ($coderig_developer" not in healthz
    model_health = locs["= /_coderig_model_health"]
    assert "proxy_pass http://127.0.0.1:8000/health;" in model_health
    # both upstream checks come from a cache refreshed at most once a second, one refresh at a time
    for body in (healthz, model_health):
        for line in ("proxy_cache coderig_health;", "proxy_cache_valid any 1s;", "proxy_cache_lock on;",
                     "proxy_buffering on;", "proxy_cache_use_stale updating;"):  # fmt: skip
            assert line in body
    assert "limit_req zone=coderig_healthz" in healthz
    assert "proxy_cache_path /srv/coderig/tmp/coderig_health " in conf
    assert "keys_zone=coderig_health:" in conf


def test_access_log_is_json_and_never_logs_a_key() -> None:
    conf = render_gateway_conf(spec())
    fmt = next(line for line in conf.splitlines() if "log_format coderig_json" in line)
    assert "escape=json" in fmt
    for field in (
        '"developer":"$coderig_developer"',
        '"status":"$status"',
        '"duration_s":"$request_time"',
        '"bytes_sent":"$bytes_sent"',
    ):
        assert field in fmt
    for leaky in ("$http_authorization", "$http_x_api_key", "$request_uri", "$args", "$request "):
        assert leaky not in fmt
    assert "access_log /srv/coderig/access.log coderig_json;" in conf


def test_direct_chat_routes_openai_native_chat_straight_to_the_model() -> None:
    plain = _locations(render_gateway_conf(spec()))
    assert "proxy_pass http://coderig_litellm/v1/chat/completions;" in plain["= /v1/chat/completions"]
    direct = _locations(render_gateway_conf(spec(direct_chat_backends=("127.0.0.1:8000", "127.0.0.1:8001"))))
    body = direct["= /v1/chat/completions"]
    assert "proxy_pass http://coderig_model/v1/chat/completions;" in body
    assert 'proxy_set_header Authorization "";' in body  # the master key never reaches the model server
    conf = render_gateway_conf(spec(direct_chat_backends=("127.0.0.1:8000", "127.0.0.1:8001")))
    assert "server 127.0.0.1:8000 max_fails=1 fail_timeout=30s;" in conf
    assert "server 127.0.0.1:8001 max_fails=1 fail_timeout=30s;" in conf
    assert "hash $coderig_affinity consistent;" in conf  # one session, one replica (its prefix cache)
    assert "proxy_next_upstream error timeout non_idempotent;" in body and "proxy_next_upstream_tries 2;" in body


def test_every_model_path_goes_through_the_relay_and_native_routes_replay_unknown_models_to_litellm() -> None:
    native = spec(
        direct_chat_backends=("127.0.0.1:8000", "10.0.0.6:8000"),
        native_routes=("messages", "count_tokens", "responses"),
        native_relays=("127.0.0.1:4100", "127.0.0.1:4101"),
        direct_chat_authorization=True,
    )
    conf = render_gateway_conf(native)
    locs = _locations(conf)
    for path, upstream, fallback in (
        ("/v1/messages", "coderig_model", "@coderig_litellm_messages"),
        ("/v1/messages/count_tokens", "coderig_model", "@coderig_litellm_count_tokens"),
        ("/v1/responses", "coderig_model", "@coderig_litellm_responses"),
    ):
        body = locs[f"= {path}"]
        assert f"proxy_pass http://{upstream}{path};" in body
        assert "proxy_request_buffering on;" in body  # replayable: the fallback and the failover resend it
        assert f"error_page 404 = {fallback};" in body and "proxy_intercept_errors on;" in body
        assert "proxy_set_header Authorization $coderig_model_authorization;" in body
        assert "proxy_pass http://coderig_litellm;" in locs[fallback] and f"rewrite ^ {path} break;" in locs[fallback]
        assert "proxy_set_header Authorization $coderig_upstream_authorization;" in locs[fallback]
    assert "proxy_pass http://coderig_model/v1/chat/completions;" in locs["= /v1/chat/completions"]
    # the model servers' one upstream holds the relays, never the model servers themselves
    upstream = conf.split("upstream coderig_model {", 1)[1].split("}", 1)[0]
    assert "server 127.0.0.1:4100 max_fails=1 fail_timeout=30s;" in upstream
    assert "server 127.0.0.1:4101 max_fails=1 fail_timeout=30s;" in upstream and "8000" not in upstream
    assert "hash $coderig_affinity consistent;" in upstream
    assert "map $http_x_claude_code_session_id $coderig_affinity {" in conf and '"" $request_id;' in conf
    with pytest.raises(ValueError, match="native_relays"):
        two = ("127.0.0.1:1", "127.0.0.1:2")
        render_gateway_conf(spec(direct_chat_backends=("127.0.0.1:8000",), native_relays=two))
    with pytest.raises(ValueError, match="unknown"):
        render_gateway_conf(
            spec(direct_chat_backends=("127.0.0.1:8000",), native_routes=("batches",), native_relays=("127.0.0.1:1",))
        )


def test_plain_http_and_paths_are_parameters() -> None:
    conf = render_gateway_conf(
        spec(tls_cert=None, tls_key=None, listen="[::1]:9000", user="nginx", daemon=True, temp_dir=None)
    )
    assert "listen [::1]:9000;" in conf and "ssl_certificate" not in conf
    assert conf.startswith("user nginx;") and "daemon off;" not in conf and "_temp_path /" not in conf
    assert "proxy_cache_path /tmp/coderig_health " in conf  # no temp dir: the health cache in /tmp
    with pytest.raises(ValueError, match="together"):
        render_gateway_conf(spec(tls_key=None))


def test_keys_include_maps_both_headers_case_sensitively() -> None:
    text = render_gateway_keys(KEYS, MASTER)
    assert '"~^(?i:bearer) +alice-0123456789abcdefXYZ$" "alice";' in text
    assert r'"~^bob\.0123456789\+abcdefXYZ$" "bob";' in text  # regex metacharacters escaped
    assert f'default "Bearer {MASTER}";' in text
    # removing a developer removes exactly their lines
    without_bob = render_gateway_keys({"alice": KEYS["alice"]}, MASTER)
    assert "bob" not in without_bob and without_bob.count('"alice"') == 2


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"alice": "short"}, "16-512"),
        ({"alice": 'quote"0123456789abcdef'}, "16-512"),
        ({"alice": "space 0123456789abcdef"}, "16-512"),
        ({"alice": "dollar$0123456789abcdef"}, "16-512"),
        ({"bad name": "0123456789abcdef0123"}, "developer name"),
        ({"a": "0123456789abcdef0123", "b": "0123456789abcdef0123"}, "share a key"),
    ],
)
def test_keys_validation(keys: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_keys(keys)


def test_nginx_accepts_the_rendered_config_with_tls_and_keys(tmp_path: Path) -> None:
    nginx = require_tool("nginx")
    (tmp_path / "tmp").mkdir()
    (tmp_path / "keys.conf").write_text(render_gateway_keys(KEYS, MASTER))
    # the certificate `frontdoor run` makes (server.pem / server.key signed by its CA, in tmp_path)
    frontdoor_run.ensure_tls(tmp_path, "localhost", [])
    for variant in (
        spec(tmp_path, listen="127.0.0.1:18443"),
        spec(tmp_path, listen="127.0.0.1:18080", tls_cert=None, tls_key=None, direct_chat_backends=("127.0.0.1:8000",)),
    ):
        conf = tmp_path / "nginx.conf"
        conf.write_text(render_gateway_conf(variant))
        result = subprocess.run(
            [nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr


def test_nginx_rejects_the_config_without_its_keys_include(tmp_path: Path) -> None:
    nginx = require_tool("nginx")
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_gateway_conf(spec(tmp_path, tls_cert=None, tls_key=None)))
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0


# ---------------------------------------------------------------- frontdoor run decisions


def test_parse_listen_and_loopback() -> None:
    assert parse_listen("127.0.0.1:8443") == ("127.0.0.1", 8443)
    assert parse_listen("[::1]:443") == ("::1", 443)
    for bad in ("8443", "host:", "host:99999", "::1:443"):
        with pytest.raises(ValueError):
            parse_listen(bad)
    for host in ("127.0.0.1", "127.8.9.10", "::1", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "10.0.0.5", "127.0.0.1.evil.test", "127.evil.test", "localhost.evil.test",
                 "LOCALHOST", "127.1", "::ffff:127.0.0.1", "::", "", "128.0.0.1"):  # fmt: skip
        assert not is_loopback(host), host


def test_plain_http_only_on_loopback() -> None:
    assert frontdoor_run.listen_error("127.0.0.1:8080", plain_http=True) is None
    assert frontdoor_run.listen_error("[::1]:8080", plain_http=True) is None
    assert frontdoor_run.listen_error("localhost:8080", plain_http=True) is None
    assert frontdoor_run.listen_error("0.0.0.0:8443", plain_http=False) is None
    for listen in ("0.0.0.0:8080", "127.0.0.1.evil.test:18543", "127.evil:80"):
        err = frontdoor_run.listen_error(listen, plain_http=True)
        assert err and "loopback" in err, listen
    assert frontdoor_run.listen_error("nonsense", plain_http=False)


def test_stale_prefixes_of_killed_runs_are_removed(tmp_path: Path) -> None:
    from coderig.frontdoor import lifecycle

    dead = subprocess.Popen(["true"])
    dead.wait()
    gone, alive, fresh, other = (tmp_path / f"{lifecycle.PREFIX_NAME}{n}" for n in ("gone", "alive", "fresh", "x"))
    for d in (gone, alive, fresh):
        d.mkdir()
    (gone / lifecycle.RUNNER_PID).write_text(f"{dead.pid}\n")
    (gone / "gateway-keys.conf").write_text("secret")
    (alive / lifecycle.RUNNER_PID).write_text(f"{os.getpid()}\n")
    other.write_text("not a directory")
    assert lifecycle.clean_stale_prefixes(tmp_path) == [gone]
    assert not gone.exists() and alive.exists() and fresh.exists() and other.exists()
    os.utime(fresh, (0, 0))  # no pid file at all, and old: a run killed before it wrote one
    assert lifecycle.clean_stale_prefixes(tmp_path) == [fresh]


def test_keys_include_has_no_name_on_disk(tmp_path: Path) -> None:
    from coderig.frontdoor import lifecycle

    include = lifecycle.KeysInclude(tmp_path, "first")
    assert list(tmp_path.iterdir()) == []
    assert Path(include.path).read_text() == "first"
    include.replace("second")
    assert Path(include.path).read_text() == "second" and list(tmp_path.iterdir()) == []
    include.close()


def test_run_helpers() -> None:
    assert model_health_url("http://127.0.0.1:8000/v1", "/health") == "http://127.0.0.1:8000/health"
    assert model_health_url("http://h:1/v1/", "healthz") == "http://h:1/healthz"
    assert frontdoor.upstream_hostport("http://127.0.0.1:8000/v1") == "127.0.0.1:8000"
    assert frontdoor.upstream_hostport("http://model/v1") == "model:80"
    dns, ips = local_tls.tls_names("10.0.0.5", ["gpu1.example.internal"])
    assert "10.0.0.5" in ips and "127.0.0.1" in ips and "gpu1.example.internal" in dns
    env = frontdoor_run.litellm_env("mk", {"PATH": "/bin"})
    assert env["LITELLM_MASTER_KEY"] == "mk" and env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    cmd = frontdoor_run.litellm_command("/x/litellm", Path("/c.yaml"), 4000, 2)
    assert cmd[-4:] == ["--num_workers", "2", "--timeout_worker_healthcheck", "300"] and "127.0.0.1" in cmd
    assert "--timeout_worker_healthcheck" not in frontdoor_run.litellm_command("l", Path("c"), 1, 1)


def test_keys_file_errors_name_the_file() -> None:
    assert frontdoor_run.parse_keys(json.dumps(KEYS), "k.json") == KEYS
    for text in ("[]", "{", '{"alice": 1}', '{"alice": "short"}'):
        with pytest.raises(ValueError, match="k.json|16-512"):
            frontdoor_run.parse_keys(text, "k.json")


def test_cli_registers_frontdoor_run() -> None:
    args = build_parser().parse_args(
        [
            "frontdoor",
            "run",
            "--backend",
            "http://127.0.0.1:8000/v1",
            "--model",
            "m",
            "--listen",
            "127.0.0.1:8443",
            "--keys-file",
            "k.json",
            "--plain-http",
        ]
    )
    assert args.func is not None and args.plain_http and args.backend == ["http://127.0.0.1:8000/v1"]
    assert args.timeout >= 1800


# ---------------------------------------------------------------- the stand-in's script


def test_standin_answers_a_create_request_with_a_write_call_then_text() -> None:
    tools = [{"type": "function", "function": {"name": n}} for n in ("Bash", "Write")]
    body = {
        "messages": [
            {"role": "system", "content": "Primary working directory: /w"},
            {"role": "user", "content": "Create a file notes.txt containing hi there"},
            {"role": "user", "content": "<system-reminder>env</system-reminder>"},
        ],
        "tools": tools,
    }
    plan = plan_reply(body, 16)
    assert plan.tool_name == "Write" and plan.tool_args == {"file_path": "/w/notes.txt", "content": "hi there\n"}
    body["messages"] += [{"role": "assistant", "content": None}, {"role": "tool", "content": "ok"}]
    assert plan_reply(body, 16).text == "Done."


def test_standin_shell_tool_and_directives() -> None:
    body = {
        "messages": [{"role": "user", "content": "create a file /t/a.txt containing x"}],
        "tools": [{"type": "function", "function": {"name": "exec_command"}}],
    }
    plan = plan_reply(body, 16)
    assert plan.tool_name == "exec_command" and "/t/a.txt" in plan.tool_args["cmd"]
    knobs = plan_reply({"messages": [{"role": "user", "content": "[standin tokens=5 first_delay=2]"}]}, 16)
    assert knobs.tokens == 5 and knobs.first_delay == 2
    assert plan_reply({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}, 16).tokens == 3
    args = json.dumps({"file_path": "/a", "content": "b" * 40})
    assert len(split_args(args)) > 3 and "".join(split_args(args)) == args


def test_model_gate_is_optional_and_answers_503_with_retry_after() -> None:
    assert "auth_request /_coderig_model_health;" not in _locations(render_gateway_conf(spec()))["= /v1/messages"]
    conf = render_gateway_conf(spec(model_gate_retry_after_s=15, direct_chat_backends=("127.0.0.1:8000",)))
    locs = _locations(conf)
    for header in ("= /v1/messages", "= /v1/chat/completions", "= /v1/responses", "= /v1/models"):
        body = locs[header]
        # the key check (rewrite phase) still comes first: no key is a 401 even with the model down
        assert body.index('if ($coderig_developer = "")') < body.index("auth_request /_coderig_model_health;")
    assert "add_header Retry-After 15 always;" in locs["@coderig_gate_anthropic"]
    assert '"overloaded_error"' in locs["@coderig_gate_anthropic"]
    assert '"upstream_unavailable"' in locs["@coderig_gate_openai"]


def test_litellm_venv_requirements_are_pinned() -> None:
    reqs = frontdoor_run.litellm_requirements(LITELLM_VERSION)
    assert reqs[0] == f"litellm[proxy]=={LITELLM_VERSION}"
    assert all("==" in r for r in reqs)


def test_secret_files_are_written_0600(tmp_path: Path) -> None:
    target = tmp_path / "gateway-keys.conf"
    target.write_text("old")
    target.chmod(0o644)
    write_file(target, render_gateway_keys(KEYS, MASTER))
    assert target.stat().st_mode & 0o777 == 0o600 and MASTER in target.read_text()


def test_direct_chat_to_keyed_model_servers_sends_the_model_key_not_the_developers() -> None:
    keys = render_gateway_keys({"alice": "crk-" + "a" * 40}, "sk-" + "m" * 40, model_key="v" * 32)
    assert 'map $coderig_developer $coderig_model_authorization {\n    default "Bearer ' + "v" * 32 in keys
    assert "$coderig_model_authorization" not in render_gateway_keys({"alice": "crk-" + "a" * 40}, "sk-" + "m" * 40)
    with pytest.raises(ValueError, match="model key"):
        render_gateway_keys({"alice": "crk-" + "a" * 40}, "sk-" + "m" * 40, model_key="short")
    conf = render_gateway_conf(
        GatewaySpec(listen="127.0.0.1:1", litellm="127.0.0.1:2", model_health_url="http://127.0.0.1:3/health",
                    keys_include="/k", direct_chat_backends=("127.0.0.1:3",), direct_chat_authorization=True)
    )  # fmt: skip
    direct = conf.split("location = /v1/chat/completions", 1)[1].split("location ", 1)[0]
    assert "proxy_set_header Authorization $coderig_model_authorization;" in direct
    assert "proxy_pass http://coderig_model/v1/chat/completions;" in direct


def test_direct_chat_only_for_plain_http_backends_at_v1() -> None:
    assert frontdoor.direct_chat_backend("http://127.0.0.1:8000/v1") == "127.0.0.1:8000"
    assert frontdoor.direct_chat_backend("http://model/v1/") == "model:80"
    assert frontdoor.direct_chat_backend("https://kserve.internal/v1") is None  # nginx would speak http to it
    assert frontdoor.direct_chat_backend("http://h:8000/prefix/v1") is None  # the prefix would be lost
    conf = render_gateway_conf(
        GatewaySpec(listen="127.0.0.1:1", litellm="127.0.0.1:2", model_health_url="http://127.0.0.1:3/health",
                    keys_include="/k", direct_chat_backends=("127.0.0.1:3",))
    )  # fmt: skip
    # pooled upstream connections are dropped before uvicorn's 5 s idle close
    assert conf.count(f"keepalive_timeout {frontdoor.UPSTREAM_IDLE_S}s;") == 2 and frontdoor.UPSTREAM_IDLE_S < 5


def test_frontdoor_run_keeps_https_backends_on_litellm(capsys: pytest.CaptureFixture[str]) -> None:
    local = ["http://127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1"]
    opts = run_options(local)
    assert frontdoor_run.direct_chat(opts) == ("127.0.0.1:8000", "127.0.0.1:8001")
    assert frontdoor_run.direct_chat(dataclasses.replace(opts, direct_chat=False)) == ()
    assert frontdoor_run.direct_chat(run_options([*local, "https://kserve.internal/v1"])) == ()
    assert "through LiteLLM" in capsys.readouterr().err


def run_options(backends: list[str], **kw: Any) -> frontdoor_run.RunOptions:
    base: dict[str, Any] = dict(
        backends=backends, model="m", listen="127.0.0.1:8443", keys_file=Path("k.json"), plain_http=False,
        state_dir=Path("s"), aliases=[], max_tokens=1024, timeout_s=600, litellm_timeout_s=600, litellm_workers=1,
        litellm_port=0, rate_per_second=10, rate_burst=100, tls_names=[], health_path="/health", direct_chat=True,
        startup_timeout_s=60,
    )  # fmt: skip
    return frontdoor_run.RunOptions(**(base | kw))


def test_frontdoor_run_builds_its_front_door_with_assemble() -> None:
    """`frontdoor run` and every stack go through the same `assemble`: what run hands it is its inputs,
    and the gateway's /healthz asks the model server through the keepalive relay."""
    inputs = frontdoor_run.inputs_of(run_options(["http://127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1"]), 4000, 9300)
    route, spec = assemble(inputs, GatewayPaths(keys_include="/k"))
    assert spec.native_relays == ("127.0.0.1:9300", "127.0.0.1:9301")
    assert spec.direct_chat_backends == ("127.0.0.1:8000", "127.0.0.1:8001")
    assert spec.model_health_url == "http://127.0.0.1:9300/health"  # through the relay in front of replica 0
    # LiteLLM reaches each model server through its relay too (every path has that one hop)
    assert (
        route.backends == ("http://127.0.0.1:9300/v1", "http://127.0.0.1:9301/v1") and spec.litellm == "127.0.0.1:4000"
    )
    external = frontdoor_run.inputs_of(run_options(["https://llm.example/v1"], health_path="/v1/models"), 4000, 9300)
    assert assemble(external, GatewayPaths(keys_include="/k"))[1].model_health_url == "https://llm.example/v1/models"
    assert relay_command(spec, "py", 0.5)[-4:] == ["--interval", "0.5", "--silence", "600"]
