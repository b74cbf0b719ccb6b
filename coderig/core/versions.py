"""Every version a node pulls, pinned in one place.

Images are pinned by tag (and digest where we have verified one); LiteLLM by PyPI version.
LiteLLM 1.82.7 and 1.82.8 were compromised releases: never pin them (a test enforces this).
"""

from __future__ import annotations

LITELLM_VERSION = "1.106.2"
LITELLM_IMAGE = f"ghcr.io/berriai/litellm:v{LITELLM_VERSION}-stable"
VLLM_IMAGE = "vllm/vllm-openai:v0.28.0"
LLAMACPP_IMAGE = "ghcr.io/ggml-org/llama.cpp:server-b9603"
NGINX_IMAGE = "nginx:1.29.3-alpine"
HF_DOWNLOADER_IMAGE = "python:3.12-slim"
HF_HUB_VERSION = "0.36.0"
# Oldest NVIDIA driver the pinned vLLM image runs on: its CUDA 13.0 runtime needs the R580 branch
# (580.65.06 is CUDA 13.0's minimum on Linux). preflight.sh fails below it.
NVIDIA_DRIVER_MIN = "580.65.06"

FORBIDDEN_LITELLM_VERSIONS = frozenset({"1.82.7", "1.82.8"})
# Kubernetes API version the `kubernetes` target's manifests are written for and validated against
# (kubernetes-validate's bundled OpenAPI schemas, strict: unknown fields are errors).
KUBERNETES_SCHEMA_VERSION = "1.34.0"
