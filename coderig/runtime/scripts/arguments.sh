# shellcheck shell=bash
# The --name=value argument prelude every coderig node script starts with (inserted at its
# `# @coderig-arguments` line by coderig.runtime.script_text; SCRIPT is the script's label).
# Each --name=value sets CODERIG_NAME (upper case, '-' as '_'); -h/--help prints the script's header;
# any other argument is a usage error.
for arg in "$@"; do
  case "$arg" in
    --*=*)
      key="${arg%%=*}"
      key="${key#--}"
      key="CODERIG_$(printf '%s' "$key" | tr 'a-z-' 'A-Z_')"
      printf -v "$key" '%s' "${arg#*=}"
      export "${key?}"
      ;;
    -h | --help)
      # the script's header comment: what it does and every parameter
      if [ -f "${BASH_SOURCE[0]:-}" ]; then
        sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"
      else
        echo "SCRIPT: see the header of scripts/SCRIPT.sh in the node bundle"
      fi
      exit 0
      ;;
    *)
      echo "SCRIPT: usage error: unknown argument '$arg' (use --name=value)" >&2
      exit 2
      ;;
  esac
done
