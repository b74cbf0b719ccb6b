"""`coderig frontdoor run`'s own words: its --help, where it says the bundles are, and its refusal to
front a backend that does not serve --model (every request would get the backend's 404)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from frontdoor_fixtures import free_port, standin_server

from coderig.cli import build_parser, main
from coderig.cli import frontdoor as cli_frontdoor


def run_help(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        main(["frontdoor", "run", "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_help_says_native_routes_go_straight_to_the_backend(capsys: pytest.CaptureFixture[str]) -> None:
    text = run_help(capsys)
    assert "always go through LiteLLM" not in text
    native = build_parser().parse_args(["frontdoor", "run", "--backend", "u", "--model", "m", "--listen", "a:1",
                                        "--keys-file", "k"]).native_routes  # fmt: skip
    assert native == "messages,count_tokens,responses"  # what the help below describes as the default
    assert "follow --native-routes (by default straight to the backend too" in text
    assert re.search(r"--native-routes LIST routes the backend serves itself .* sent there straight from the gateway",
                     text)  # fmt: skip


def test_bundles_line_names_the_file_a_developer_onboards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bundles"
    args = build_parser().parse_args(["frontdoor", "run", "--backend", "http://127.0.0.1:9/v1", "--model", "m",
                                      "--listen", "127.0.0.1:8443", "--keys-file", "k", "--bundles-dir", str(out),
                                      "--max-model-len", "32768", "--plain-http"])  # fmt: skip
    write = cli_frontdoor.bundle_writer(args)
    assert write is not None
    write("http://127.0.0.1:8443", None, {"alice": "a-long-random-token-for-alice"})
    line = capsys.readouterr().out
    named = re.search(r"a developer runs: coderig onboard (\S+)", line)
    assert named and Path(named.group(1)) == out / "alice.json"
    assert json.loads(Path(named.group(1)).read_text())["developer"] == "alice"


def test_frontdoor_run_refuses_a_model_the_backend_does_not_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text('{"alice": "a-long-random-token-for-alice"}')
    with standin_server(model="qwen-2") as standin:
        backend = standin.url
        assert cli_frontdoor.served_models(backend) == ["qwen-2"]
        rc = main(["frontdoor", "run", "--backend", backend, "--model", "qwen-3", "--listen",
                   f"127.0.0.1:{free_port()}", "--plain-http", "--keys-file", str(keys),
                   "--state-dir", str(tmp_path / "state")])  # fmt: skip
        err = capsys.readouterr().err
        assert rc == 2, err
        assert "--model 'qwen-3' is not served by" in err and "'qwen-2'" in err and "use --model qwen-2" in err
        assert not (tmp_path / "state").exists()  # refused before anything started
        assert cli_frontdoor.unserved_model([backend], "qwen-2") is None


def test_a_backend_that_does_not_list_its_models_is_left_to_healthz() -> None:
    # nothing listens there: the check cannot know, so it does not refuse (the gateway's /healthz says unready)
    assert cli_frontdoor.unserved_model([f"http://127.0.0.1:{free_port()}/v1"], "qwen-2") is None
