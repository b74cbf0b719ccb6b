"""Every version a node pulls, pinned in one place.

Images are pinned by tag (and digest where we have verified one); LiteLLM by PyPI version.
LiteLLM 1.82.7 and 1.82.8 were compromised releases: never pin them (a test enforces this).
"""

from __future__ import annotations

LITELLM_VERSION = "1.106.2"
LITELLM_IMAGE = f"ghcr.io/berriai/litellm:v{LITELLM_VERSION}-stable"
VLLM_VERSION = "0.34.0"
# What the pinned vLLM needs overridden to install from PyPI (.ci/vllm-deps.sh, for tests/vllm only; the
# image ships its own): vllm 0.34.0's metadata pins flashinfer-python==0.7.3, a version PyPI does not
# hold (0.7.2.post1 and 0.7.4 are there). flashinfer holds GPU attention kernels; nothing the tests
# run (the serve parser, the config validators, the parser registries) imports it.
VLLM_PIP_OVERRIDES = "flashinfer-python==0.7.4"
VLLM_IMAGE = f"vllm/vllm-openai:v{VLLM_VERSION}"
LLAMACPP_IMAGE = "ghcr.io/ggml-org/llama.cpp:server-b9603"
NGINX_IMAGE = "nginx:1.29.3-alpine"
# A plain Python for stdlib-only runtime code (the Kubernetes idle reaper): a patch-level tag.
PYTHON_IMAGE = "python:3.12.12-slim-bookworm"

# The weights step (coderig/runtime/fetch_weights.py) never installs anything at run time by default:
# - vLLM presets (every GPU stack, every Kubernetes stack): it runs in the pinned vLLM image, which
#   ships huggingface_hub (vLLM needs it to load models) — `python3 fetch_weights.py` as entrypoint. The
#   node pulls that image for the model server anyway, so this costs no download and adds no image.
# - the llama.cpp preset (a laptop, CPU): the vLLM image (~10 GB, x86_64/CUDA) is too big for that, and
#   the llama.cpp server image has no Python. It runs in PYTHON_IMAGE, and fetch_weights.py installs
#   huggingface_hub from WEIGHTS_REQUIREMENTS only: every distribution pinned by sha256
#   (`pip --require-hashes --only-binary :all:`, generated with
#   `uv pip compile --generate-hashes --universal` from `huggingface_hub[hf_xet]==HF_HUB_VERSION`),
#   with HF_TOKEN removed from pip's environment, and only when the weights are not already complete.
WEIGHTS_IMAGE_VLLM = VLLM_IMAGE
WEIGHTS_IMAGE_CPU = PYTHON_IMAGE
HF_HUB_VERSION = "0.36.0"
WEIGHTS_REQUIREMENTS = "weights-requirements.txt"  # next to fetch_weights.py in coderig/runtime
# Oldest NVIDIA driver the pinned vLLM image runs on: its CUDA 13.0 runtime needs the R580 branch
# (580.65.06 is CUDA 13.0's minimum on Linux). preflight.sh fails below it.
NVIDIA_DRIVER_MIN = "580.65.06"

FORBIDDEN_LITELLM_VERSIONS = frozenset({"1.82.7", "1.82.8"})
# Kubernetes API version the `kubernetes` target's manifests are written for and validated against
# (kubernetes-validate's bundled OpenAPI schemas, strict: unknown fields are errors).
KUBERNETES_SCHEMA_VERSION = "1.34.0"
