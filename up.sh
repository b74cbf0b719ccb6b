#!/usr/bin/env bash
# The main job: `pulumi up` on a stack (default: dev) with a project-local file backend and a
# passphrase secrets provider. No Pulumi Cloud account is used.
#   ./up.sh            # dev stack
#   ./up.sh prod       # any Pulumi.<stack>.yaml
# Set PULUMI_CONFIG_PASSPHRASE for shared stacks; for a fresh dev checkout one is generated and
# kept in .pulumi-state/passphrase (mode 0600).
# Order: check prerequisites and print the capacity plan (neither writes a file), then create
# .pulumi-state and deploy. Without the Pulumi CLI it prints the plan and what works without it.
set -euo pipefail
cd "$(dirname "$0")"
stack="${1:-dev}"
shift || true
config="Pulumi.$stack.yaml"

command -v uv >/dev/null || {
  echo "up.sh: uv is not installed: pip install uv (see README: Prerequisites)" >&2
  exit 1
}
[ -f "$config" ] || { echo "up.sh: no $config here (one stack file per environment)" >&2; exit 2; }

# The plan needs no Pulumi and writes nothing: an invalid stack file stops here (exit 2), a model
# that does not fit too (exit 1), before anything is created.
uv run coderig plan --config "$config"

if ! command -v pulumi >/dev/null; then
  cat >&2 <<MSG

up.sh: the Pulumi CLI is not installed, so nothing was deployed (and nothing was created here).
  Without Pulumi you can still:
    uv run coderig render --config $config --out rendered/
        every file the stack deploys (compose bundle, nginx and LiteLLM configs, scripts, manifests)
    uv run coderig frontdoor run --backend http://HOST:PORT/v1 --model NAME --listen 0.0.0.0:8443 \\
        --keys-file keys.json --bundles-dir bundles/
        the same front door (TLS gateway + LiteLLM) before an OpenAI-compatible endpoint you already
        run; it writes each developer's bundle for \`coderig onboard\` (README: coderig frontdoor run)
  To deploy: install the Pulumi CLI (https://www.pulumi.com/docs/install/, or
  \`curl -fsSL https://get.pulumi.com | sh\`), then run ./up.sh $stack again.
MSG
  exit 1
fi

state="$PWD/.pulumi-state"
mkdir -p "$state"
chmod 700 "$state"
export PULUMI_BACKEND_URL="${PULUMI_BACKEND_URL:-file://$state}"
if [ -z "${PULUMI_CONFIG_PASSPHRASE:-}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then
  if [ ! -s "$state/passphrase" ]; then
    (umask 077 && head -c 32 /dev/urandom | base64 > "$state/passphrase")
  fi
  export PULUMI_CONFIG_PASSPHRASE_FILE="$state/passphrase"
fi

pulumi stack select --create "$stack" --secrets-provider passphrase
pulumi up --yes --stack "$stack" "$@"
