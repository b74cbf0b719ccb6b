#!/usr/bin/env bash
# Builds, on the local Docker engine, the images the dev stack's compose file names (no registry is
# reachable here), from a Debian base image (coderig/debian-base:bookworm: debootstrap + docker
# import). Tagged with the pinned names from coderig/core/versions.py:
#   python:3.12.12-slim-bookworm              Debian's python3 (the weights step; weights pre-seeded)
#   ghcr.io/ggml-org/llama.cpp:server-b9603   the model stand-in (tests/standin.py, llama.cpp errors)
#   coderig/llama-server-xllamacpp:VERSION    the REAL llama.cpp server (xllamacpp==VERSION from PyPI,
#                                             tests/llamacpp_server.py as `llama-server`), in the preset's
#                                             shape; a stack uses it through coderig:model.image
#   ghcr.io/berriai/litellm:v1.106.2-stable   the pinned litellm[proxy] from PyPI
#   nginx:1.29.3-alpine                       Debian's nginx + wget
# Usage: tests/images/build.sh (from the repo root). Idempotent; docker's layer cache makes reruns fast.
set -euo pipefail
root=$(pwd)
base=coderig/debian-base:bookworm
python_img="" llama_img="" litellm_img="" nginx_img="" litellm_version="" litellm_extra=""
xllamacpp_version=$(sed -n 's/^XLLAMACPP_VERSION = "\(.*\)".*$/\1/p' tests/realmodel.py)
real_llama_img=$(sed -n 's/^REAL_LLAMACPP_IMAGE = f"\(.*\){XLLAMACPP_VERSION}"$/\1/p' tests/realmodel.py)$xllamacpp_version
eval "$(uv run --frozen --quiet python - <<'PY'
from coderig.core import versions as v
print(f"python_img={v.WEIGHTS_IMAGE_CPU} llama_img={v.LLAMACPP_IMAGE} litellm_img={v.LITELLM_IMAGE}")
print(f"nginx_img={v.NGINX_IMAGE} litellm_version={v.LITELLM_VERSION}")
from coderig.frontdoor.run import LITELLM_EXTRA_REQUIREMENTS as extra
print("litellm_extra='" + " ".join(extra) + "'")
PY
)"
if ! docker image inspect "$base" >/dev/null 2>&1; then
  rootfs=$(mktemp -d)
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
  rm -rf "$rootfs"
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
build() {  # tag, then the Dockerfile on stdin
  if ! docker build --network host -q -t "$1" -f - "$ctx" >"$ctx/build.log" 2>&1; then
    grep -v -e DEPRECATED -e 'legacy builder' -e buildx -e docs.docker.com "$ctx/build.log" | tail -30 >&2
    echo "images: building $1 failed" >&2
    return 1
  fi
  echo "images: built $1"
}
cp "$root"/tests/standin*.py "$root"/tests/llamacpp_server.py "$ctx/"
# pip inside the build trusts what pip on this machine trusts (an egress proxy's CA, if any)
cp "${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}" "$ctx/ca-bundle.crt"
build coderig/py:bookworm <<DOCKERFILE
FROM $base
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv curl wget ca-certificates \
 && ln -sf python3 /usr/bin/python && rm -rf /var/lib/apt/lists/*
DOCKERFILE
build "$python_img" <<DOCKERFILE
FROM coderig/py:bookworm
DOCKERFILE
build "$llama_img" <<'DOCKERFILE'
FROM coderig/py:bookworm
COPY standin*.py /standin/
# llama-server's arguments mapped onto the stand-in's: --alias NAME, --host, --port, --ctx-size N
RUN printf '%s\n' '#!/bin/sh' \
 'set -- "$@"; args="--engine llama.cpp"' \
 'while [ $# -gt 0 ]; do case "$1" in' \
 '  --alias) args="$args --model $2"; shift 2 ;;' \
 '  --host|--port) args="$args $1 $2"; shift 2 ;;' \
 '  --ctx-size) args="$args --max-model-len $2"; shift 2 ;;' \
 '  --model|--parallel|--cache-type-k|--cache-type-v) shift 2 ;;' \
 '  *) shift ;;' \
 'esac; done' \
 '[ -n "${LLAMA_API_KEY:-}" ] && args="$args --api-key $LLAMA_API_KEY"' \
 'exec python3 /standin/standin.py $args' > /usr/local/bin/llama-server && chmod 755 /usr/local/bin/llama-server
ENTRYPOINT ["/usr/local/bin/llama-server"]
DOCKERFILE
build "$real_llama_img" <<DOCKERFILE
FROM coderig/py:bookworm
COPY ca-bundle.crt /tmp/ca-bundle.crt
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/xllamacpp && PIP_CERT=/tmp/ca-bundle.crt /opt/xllamacpp/bin/pip install -q --no-cache-dir \
    --only-binary :all: "xllamacpp==$xllamacpp_version" && rm /tmp/ca-bundle.crt
COPY llamacpp_server.py /opt/llama-server/llamacpp_server.py
# llama.cpp's threads wait passively (2 shared cores here); the server reads LLAMA_API_KEY / LLAMA_ARG_THREADS
ENV OMP_WAIT_POLICY=PASSIVE
ENTRYPOINT ["/opt/xllamacpp/bin/python", "/opt/llama-server/llamacpp_server.py"]
DOCKERFILE
build "$litellm_img" <<DOCKERFILE
FROM coderig/py:bookworm
COPY ca-bundle.crt /tmp/ca-bundle.crt
RUN python3 -m venv /opt/litellm && PIP_CERT=/tmp/ca-bundle.crt /opt/litellm/bin/pip install -q --no-cache-dir \
    "litellm[proxy]==$litellm_version" $litellm_extra && rm /tmp/ca-bundle.crt
ENTRYPOINT ["/opt/litellm/bin/litellm"]
DOCKERFILE
build "$nginx_img" <<DOCKERFILE
FROM $base
RUN apt-get update && apt-get install -y --no-install-recommends nginx wget ca-certificates && rm -rf /var/lib/apt/lists/*
DOCKERFILE
