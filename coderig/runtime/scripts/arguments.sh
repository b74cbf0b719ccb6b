# shellcheck shell=bash
# The --name=value argument prelude every coderig node script starts with (inserted at its
# `# @coderig-arguments` line by coderig.runtime.script_text; SCRIPT is the script's label).
# Each --name=value sets CODERIG_NAME (upper case, '-' as '_'); any other argument is a usage error.
for arg in "$@"; do
  case "$arg" in
    --*=*)
      key="${arg%%=*}"
      key="${key#--}"
      key="CODERIG_$(printf '%s' "$key" | tr 'a-z-' 'A-Z_')"
      printf -v "$key" '%s' "${arg#*=}"
      export "${key?}"
      ;;
    *)
      echo "SCRIPT: usage error: unknown argument '$arg' (use --name=value)" >&2
      exit 2
      ;;
  esac
done
