"""tests/llamacpp_server.py reads the environment llama-server reads (llama.cpp common/arg.cpp `set_env`),
because the dev stack's compose file hands the model server its key as LLAMA_API_KEY (secrets/model.env)
and its threads as LLAMA_ARG_THREADS: with the key set, the real server refuses a request without it."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
import realmodel
from frontdoor_fixtures import free_port

pytestmark = pytest.mark.integration


def _status(url: str, key: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_llama_api_key_from_the_environment_is_enforced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if realmodel.xllamacpp_python() is None or not (realmodel.CACHE / realmodel.QWEN_05B.file).exists():
        realmodel.require("xllamacpp and the Qwen GGUF files")
    monkeypatch.setenv("LLAMA_API_KEY", "model-key-from-env")
    monkeypatch.setenv("LLAMA_ARG_THREADS", "1")
    with realmodel.serve(realmodel.QWEN_05B, free_port(), tmp_path, ctx=512) as srv:
        assert _status(srv.url + "/v1/models") == 401
        assert _status(srv.url + "/v1/models", "another-key") == 401
        assert _status(srv.url + "/v1/models", "model-key-from-env") == 200
        assert "n_threads = 1" in srv.log.read_text()  # LLAMA_ARG_THREADS reached llama.cpp
