"""Model-server command lines (vLLM, llama.cpp) for a validated stack. Pure.

The model server always binds to loopback: only the gateway is reachable from outside.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence

from coderig.core import mtp, templates, versions
from coderig.core.catalog import LLAMACPP_CACHE_TYPE, Preset
from coderig.core.layout import Layout
from coderig.core.settings import ModelSettings

# Claude Code asks for claude-haiku-*/claude-sonnet-*/claude-opus-* in background calls: the front door
# routes every such name to the served model.
CLAUDE_WILDCARD = "claude-*"
MODEL_HOST = "127.0.0.1"
MODEL_PORT = 8000
LITELLM_PORT = 4000
KEEPALIVE_PORT = 4100  # the SSE keepalive relay: one loopback port per model replica from here up

# The client APIs each engine serves itself at the pinned version, which the gateway sends straight
# to it (coderig.frontdoor.native): vLLM 0.28 and 0.34 serve /v1/messages (+ count_tokens) and /v1/responses;
# llama.cpp server b9603 serves the Anthropic pair (ggml-org/llama.cpp#17570) but not /v1/responses
# (ggml-org/llama.cpp#19138), which stays on LiteLLM's translation.
NATIVE_APIS: dict[str, tuple[str, ...]] = {
    "vllm": ("messages", "count_tokens", "responses"),
    "llama.cpp": ("messages", "count_tokens"),
}
CACHE_MOUNT = "/cache"  # the weights volume inside containers; HF_HOME lives below it
HF_HOME = f"{CACHE_MOUNT}/hf"


def vllm_args(
    model: ModelSettings,
    layout: Layout,
    host: str = MODEL_HOST,
    port: int = MODEL_PORT,
    tier: Sequence[str] = (),
) -> list[str]:
    """Arguments after `vllm serve`. The parallel layout is the plan's (`planner.plan_stack(...).layout`),
    `tier` the plan's host KV tier flags (`kv_tier.flags(plan.kv_tier)`); tool calling and reasoning
    parsers and MTP (coderig.core.mtp) come from the preset. --gpu-memory-utilization is always
    passed (coderig's 0.90 default): unset, vLLM 0.34 uses 1.0 with its extensible KV cache on CUDA and
    0.92 otherwise (config/cache.py: resolved_gpu_memory_utilization), so the plan's arithmetic is what runs."""
    p = model.spec
    args = [
        p.hf_repo,
        "--served-model-name",
        model.served_name,
        "--host",
        host,
        "--port",
        str(port),
        *layout.flags(),
        "--max-model-len",
        str(model.max_model_len),
        "--gpu-memory-utilization",
        f"{model.gpuMemoryUtilization:.2f}",
        "--kv-cache-dtype",
        "fp8" if model.kvCacheDtype == "fp8" else "auto",
        "--enable-prefix-caching",
        "--enable-auto-tool-choice",
        *tier,
        *mtp.flags(p, model.mtp_on),
    ]
    if model.revision != "main":  # the weights step fetched this revision; load exactly it (offline)
        args += ["--revision", model.revision, "--tokenizer-revision", model.revision]
    args += _parser_flags(p)
    args += _chat_template_flags(model)
    args += _default_flags(p)
    args += list(p.extra_args)
    args += list(model.extraArgs)
    return args


def _parser_flags(p: Preset) -> list[str]:
    out: list[str] = []
    if p.tool_call_parser:
        out += ["--tool-call-parser", p.tool_call_parser]
    if p.reasoning_parser:
        out += ["--reasoning-parser", p.reasoning_parser]
    if p.tokenizer_mode:
        out += ["--tokenizer-mode", p.tokenizer_mode]
    return out


def _chat_template_flags(model: ModelSettings) -> list[str]:
    """The chosen coderig chat template's text (coderig.core.templates): the same flag on both servers."""
    name = templates.chosen(model.chatTemplate, model.spec.chat_template)
    return ["--chat-template", templates.text(name)] if name else []


def _default_flags(p: Preset) -> list[str]:
    """The preset's sampling and thinking defaults, on the server itself, so every path (LiteLLM,
    a direct /v1/chat/completions, an external caller) gets them; a request's own values win."""
    out: list[str] = []
    sampling = {k: v for k, v in (("temperature", p.temperature), ("top_p", p.top_p)) if v is not None}
    if sampling:
        out += ["--override-generation-config", json.dumps(sampling, separators=(",", ":"))]
    if p.chat_template_kwargs:
        out += ["--default-chat-template-kwargs", json.dumps(p.chat_template_kwargs, separators=(",", ":"))]
    return out


def llamacpp_args(model: ModelSettings, gguf_path: str, host: str = MODEL_HOST, port: int = MODEL_PORT) -> list[str]:
    """Arguments for `llama-server` (the official server image's entrypoint).

    One slot (`--parallel 1`): without a unified KV cache llama-server gives each of N slots
    ctx-size / N tokens, and Claude Code's first request alone is ~12-14k tokens, so the one slot
    gets the whole context; further requests queue. (The pinned build also has `--kv-unified`, which
    lets slots share one pool, but then two long requests can exhaust it mid-generation.)"""
    return [
        "--model",
        gguf_path,
        "--alias",
        model.served_name,
        "--host",
        host,
        "--port",
        str(port),
        "--ctx-size",
        str(model.max_model_len),
        "--jinja",  # the model's chat template, needed for tool calls
        "--metrics",
        "--parallel",
        "1",
        "--cache-type-k",
        LLAMACPP_CACHE_TYPE,
        "--cache-type-v",
        LLAMACPP_CACHE_TYPE,
        *_chat_template_flags(model),  # after --jinja: llama-server then takes any Jinja template
        *model.extraArgs,
    ]


def gguf_path(preset: Preset, cache_mount: str = CACHE_MOUNT) -> str:
    """Where the weights step leaves the GGUF file (a stable link into the HF cache)."""
    if not preset.gguf_file:
        raise ValueError(f"{preset.id} has no GGUF file")
    return f"{cache_mount}/models/{preset.gguf_file}"


def command_line(model: ModelSettings, layout: Layout, tier: Sequence[str] = ()) -> str:
    """The model server's command as one shell-quoted line (what `coderig render` writes)."""
    p = model.spec
    if p.engine == "llama.cpp":
        return shlex.join(["llama-server", *llamacpp_args(model, gguf_path(p))])
    return shlex.join(["vllm", "serve", *vllm_args(model, layout, tier=tier)])


WEIGHTS_SCRIPT_DIR = "/coderig"  # where fetch_weights.py (and its requirements file) are mounted


def model_image(model: ModelSettings) -> str:
    """The model server's image: `coderig:model.image` when set, else the one pinned for the engine."""
    return model.image or (versions.LLAMACPP_IMAGE if model.spec.engine == "llama.cpp" else versions.VLLM_IMAGE)


def weights_image(model: ModelSettings) -> str:
    """The weights step's image: one that already has huggingface_hub (see coderig.core.versions); for
    vLLM the model server's own image, so an image override is pulled once, not twice."""
    return versions.WEIGHTS_IMAGE_CPU if model.spec.engine == "llama.cpp" else model_image(model)


def weights_entrypoint() -> list[str]:
    """The weights step's entrypoint, whatever the image's own (vLLM's is `vllm serve`)."""
    return ["python3", f"{WEIGHTS_SCRIPT_DIR}/fetch_weights.py"]


def weights_env(model: ModelSettings, cache_mount: str = CACHE_MOUNT) -> dict[str, str]:
    """The weights step's environment (fetch_weights.py), the same on every target."""
    preset = model.spec
    env: dict[str, str] = {
        "HF_HOME": f"{cache_mount}/hf",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "CODERIG_REPO": preset.hf_repo,
        "CODERIG_REVISION": model.revision,
        "CODERIG_WEIGHTS_BYTES": str(preset.weight_bytes),
        "PYTHONUNBUFFERED": "1",
    }
    if weights_image(model) == versions.WEIGHTS_IMAGE_CPU:
        # the one image without huggingface_hub: allowed to install it, from hash-pinned requirements only
        env["CODERIG_PIP_REQUIREMENTS"] = f"{WEIGHTS_SCRIPT_DIR}/{versions.WEIGHTS_REQUIREMENTS}"
    if preset.engine == "llama.cpp" and preset.gguf_file:
        env["CODERIG_ALLOW_PATTERNS"] = preset.gguf_file
        env["CODERIG_LINK_FILE"] = preset.gguf_file
        env["CODERIG_LINK_TO"] = gguf_path(preset, cache_mount)
    return env
