#!/usr/bin/env bash
# Smoke test of the Pulumi toolchain .ci/pulumi-deps.sh builds: a throwaway Python project with a
# local file backend creates a random.RandomPassword, a tls.PrivateKey and a command.local.Command,
# checks that a second `up` changes nothing, destroys it, and checks that no plugin was downloaded.
# Usage: tools/pulumi/smoke.sh  (from the repo root, after `uv sync`; uses ./.venv)
set -euo pipefail
root=$(pwd)
# shellcheck source=/dev/null
source "$root/.ci/pulumi-deps.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PULUMI_HOME="$work/home" PULUMI_BACKEND_URL="file://$work/state" PULUMI_CONFIG_PASSPHRASE=x
mkdir -p "$work/project" "$work/state"
cd "$work/project"
cat >Pulumi.yaml <<YAML
name: smoke
runtime:
  name: python
  options:
    virtualenv: $root/.venv
YAML
cat >__main__.py <<'PY'
import pulumi
import pulumi_command as command
import pulumi_random as random
import pulumi_tls as tls

password = random.RandomPassword("password", length=20, special=False)
key = tls.PrivateKey("key", algorithm="ED25519")
hello = command.local.Command("hello", create="echo hello from command", delete="echo bye")

pulumi.export("password_length", password.result.apply(len))
pulumi.export("public_key", key.public_key_openssh)
pulumi.export("stdout", hello.stdout)
PY
pulumi stack init dev --non-interactive
pulumi up --yes --non-interactive --skip-preview
[ "$(pulumi stack output stdout)" = "hello from command" ]
pulumi preview --non-interactive --expect-no-changes
pulumi up --yes --non-interactive --expect-no-changes
pulumi destroy --yes --non-interactive
if [ -n "$(find "$PULUMI_HOME" -path '*plugins*' -print -quit)" ]; then
  echo "smoke: a plugin was installed into $PULUMI_HOME" >&2
  exit 1
fi
echo "smoke: ok"
