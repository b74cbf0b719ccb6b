#!/usr/bin/env bash
# The main job: `pulumi up` on a stack (default: dev) with a project-local file backend and a
# passphrase secrets provider. No Pulumi Cloud account is used.
#   ./up.sh            # dev stack
#   ./up.sh prod       # any Pulumi.<stack>.yaml
# Set PULUMI_CONFIG_PASSPHRASE for shared stacks; for a fresh dev checkout one is generated and
# kept in .pulumi-state/passphrase (mode 0600).
set -euo pipefail
cd "$(dirname "$0")"
stack="${1:-dev}"
shift || true

state="$PWD/.pulumi-state"
mkdir -p "$state"
chmod 700 "$state"
export PULUMI_BACKEND_URL="file://$state"
if [ -z "${PULUMI_CONFIG_PASSPHRASE:-}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then
  if [ ! -s "$state/passphrase" ]; then
    (umask 077 && head -c 32 /dev/urandom | base64 > "$state/passphrase")
  fi
  export PULUMI_CONFIG_PASSPHRASE_FILE="$state/passphrase"
fi

command -v pulumi >/dev/null || { echo "up.sh: the Pulumi CLI is not installed (see README: Prerequisites)" >&2; exit 1; }
command -v uv >/dev/null || { echo "up.sh: uv is not installed (see README: Prerequisites)" >&2; exit 1; }

uv run coderig plan --config "Pulumi.$stack.yaml"
pulumi stack select --create "$stack" --secrets-provider passphrase
pulumi up --yes --stack "$stack" "$@"
