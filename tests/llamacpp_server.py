"""`llama-server` on the xllamacpp wheel: llama.cpp's own HTTP server (build 11549, embedded in the wheel),
started from the command line coderig renders for the llama.cpp preset (coderig.core.engine.llamacpp_args).

The official server image cannot be pulled here (no registry), and xllamacpp takes its settings as
llama.cpp's `common_params` struct rather than argv; this maps each llama-server flag coderig renders to
the field llama-server's own argument parser sets (llama.cpp common/arg.cpp), and refuses any other
flag or an abbreviation, so a command that runs here names only flags llama-server has.

Runs in the xllamacpp venv (.ci/model-deps.sh): `python tests/llamacpp_server.py --model F.gguf ...`.
Serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

import xllamacpp as xlc  # pyright: ignore[reportMissingImports]

# llama.cpp's cache types by name (common/arg.cpp kv_cache_types)
CACHE_TYPES = {"f16": "GGML_TYPE_F16", "bf16": "GGML_TYPE_BF16", "q8_0": "GGML_TYPE_Q8_0", "q4_0": "GGML_TYPE_Q4_0"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llama-server", allow_abbrev=False)
    p.add_argument("-m", "--model", required=True)
    p.add_argument("-a", "--alias", default="")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("-c", "--ctx-size", type=int, default=0)
    p.add_argument("--jinja", action="store_true")
    p.add_argument("--metrics", action="store_true")
    p.add_argument("-np", "--parallel", type=int, default=1)
    p.add_argument("-ctk", "--cache-type-k", choices=sorted(CACHE_TYPES), default="f16")
    p.add_argument("-ctv", "--cache-type-v", choices=sorted(CACHE_TYPES), default="f16")
    p.add_argument("--chat-template")
    p.add_argument("--chat-template-file")
    p.add_argument("-t", "--threads", type=int, default=0)
    p.add_argument("--temp", type=float)
    p.add_argument("--seed", type=int)
    return p


def params(a: argparse.Namespace) -> xlc.CommonParams:
    c = xlc.CommonParams()
    c.model.path = a.model
    if a.alias:
        c.model_alias = {a.alias}
    c.hostnames = [a.host]
    c.port = a.port
    c.n_ctx = a.ctx_size
    c.use_jinja = a.jinja
    c.endpoint_metrics = a.metrics
    c.n_parallel = a.parallel
    c.cache_type_k = getattr(xlc.ggml_type, CACHE_TYPES[a.cache_type_k])
    c.cache_type_v = getattr(xlc.ggml_type, CACHE_TYPES[a.cache_type_v])
    if a.chat_template:  # the template itself (common/arg.cpp: --chat-template)
        c.chat_template = a.chat_template
    if a.chat_template_file:  # llama-server reads the file into params.chat_template (common/arg.cpp)
        c.chat_template = Path(a.chat_template_file).read_text()
    if a.threads:
        c.cpuparams.n_threads = a.threads
        c.cpuparams_batch.n_threads = a.threads
    if a.temp is not None:
        c.sampling.temp = a.temp
    if a.seed is not None:
        c.sampling.seed = a.seed
    # the environment llama-server reads (common/arg.cpp set_env): the compose file's model.env and threads
    if key := os.environ.get("LLAMA_API_KEY"):
        c.api_keys = [key]
    threads = int(os.environ.get("LLAMA_ARG_THREADS", "0") or 0)
    if threads > 0 and not a.threads:
        c.cpuparams.n_threads = threads
        c.cpuparams_batch.n_threads = threads
    return c


def main(argv: list[str]) -> int:
    a = parser().parse_args(argv)
    server = xlc.Server(params(a))
    print(f"llama-server (xllamacpp {xlc.__version__}) listening on {server.listening_address}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
