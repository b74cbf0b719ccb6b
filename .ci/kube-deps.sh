#!/usr/bin/env bash
# A real Kubernetes control plane for the kubernetes tests (tests/targets/kubernetes/test_kube_real*.py),
# sourced by .ci/run (`set -euo pipefail`, repo root). No release binary can be downloaded here, so
# everything is built from the Go module proxy, once per version, into a cache outside the repo:
#   kube-apiserver, kube-controller-manager,   k8s.io/kubernetes v1.34.4 (tools/kube/k8s: a wrapper
#   kube-scheduler, kubectl                    module replacing the 31 staging modules with v0.34.4)
#   etcd                                       go.etcd.io/etcd/server/v3 v3.6.4 (tools/kube/etcd)
#   kwok                                       sigs.k8s.io/kwok v0.7.0 (tools/kube/kwok): fake nodes/pods
#   pulumi-resource-kubernetes                 github.com/pulumi/pulumi-kubernetes/provider/v4 at the
#                                              pseudo-version the proxy serves (tools/kube/pulumi-kubernetes;
#                                              its schema and terraform mapping embedded as its generate.go does)
# Cold on 2 cores: see docs/kubernetes.md "A real control plane in the tests" for measured times and sizes;
# warm (this cache complete): well under a second. Then PATH gets the bin dir and CODERIG_KUBE_BIN
# names it (tests/kube_cluster.py starts the processes; nothing is started here).
_kube_deps() {
  local kube_version=1.34.4 etcd_version=3.6.4 kwok_version=0.7.0
  local root key cache bin log t0 ldflags f
  root=$(pwd)
  if ! command -v go >/dev/null 2>&1; then
    echo "kube-deps: go is not installed (needs Go >= 1.26.6)" >&2
    return 1
  fi
  # The cache key covers the versions, the Go version, this script and the control plane's wrapper modules.
  key=$( (echo "$kube_version $etcd_version $kwok_version $(go env GOVERSION)"
    cd "$root" && { echo .ci/kube-deps.sh; find tools/kube/k8s tools/kube/etcd tools/kube/kwok -type f \( -name '*.go' -o -name go.mod -o -name go.sum \); } |
    LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-12)
  cache="${CODERIG_TOOLS_CACHE:-$HOME/.cache/coderig/tools}/kube-$kube_version-$key"
  bin="$cache/bin"

  if ! [ -e "$cache/.complete" ]; then
    rm -rf "$cache"
    mkdir -p "$cache/log" "$cache/bin.tmp"
    mkdir -p "$cache/src"
    cp -r "$root/tools/kube/k8s" "$root/tools/kube/etcd" "$root/tools/kube/kwok" "$cache/src/"
    _kube_deps_build() {  # name dir command...
      local name=$1 dir=$2
      shift 2
      log="$cache/log/$name.log"
      t0=$SECONDS
      if (cd "$dir" && GOFLAGS=-mod=mod "$@") >"$log" 2>&1; then
        echo "kube-deps: built $name in $((SECONDS - t0))s"
      else
        echo "kube-deps: building $name failed after $((SECONDS - t0))s; $log ends:" >&2
        tail -n 30 "$log" >&2
        return 1
      fi
    }
    # The version stamps hack/lib/version.sh sets (kubectl version and /version read them).
    ldflags="-s -w"
    for f in "gitVersion=v$kube_version" "gitMajor=${kube_version%%.*}" \
      "gitMinor=$(echo "$kube_version" | cut -d. -f2)" gitTreeState=clean "buildDate=1970-01-01T00:00:00Z"; do
      ldflags+=" -X k8s.io/component-base/version.$f -X k8s.io/client-go/pkg/version.$f"
    done
    # One go build for the four commands, so their shared packages compile once.
    _kube_deps_build kubernetes "$cache/src/k8s" go build -trimpath -o "$cache/bin.tmp/" -ldflags "$ldflags" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl || return 1
    _kube_deps_build etcd "$cache/src/etcd" go build -trimpath -o "$cache/bin.tmp/etcd" \
      -ldflags "-s -w" go.etcd.io/etcd/server/v3 || return 1
    _kube_deps_build kwok "$cache/src/kwok" go build -trimpath -o "$cache/bin.tmp/kwok" \
      -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$kwok_version -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=$kube_version" \
      sigs.k8s.io/kwok/cmd/kwok || return 1
    rm -rf "$bin" "$cache/src"
    mv "$cache/bin.tmp" "$bin"
    touch "$cache/.complete"
  fi
  export PATH="$bin:$PATH"
  export CODERIG_KUBE_BIN="$bin"
  echo "kube-deps: $("$bin/kubectl" version --client | head -1), etcd $("$bin/etcd" --version | head -1 | awk '{print $3}'), kwok from $bin"
}

# The Pulumi Kubernetes provider, in its own cache entry. A failure here is reported and leaves the
# provider off PATH (tests/kube/test_kube_up.py then fails in CI naming this script); the control
# plane above is still used by the other kubernetes tests.
_kube_provider_deps() {
  local provider_version=4.0.0-20260115033456-f47bc2d6f199
  local root key cache provider_dir cmd log t0
  root=$(pwd)
  key=$( (echo "$provider_version $(go env GOVERSION)"
    cd "$root" && { echo .ci/kube-deps.sh; find tools/kube/pulumi-kubernetes -type f \( -name '*.go' -o -name go.mod -o -name go.sum \); } |
    LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-12)
  cache="${CODERIG_TOOLS_CACHE:-$HOME/.cache/coderig/tools}/pulumi-kubernetes-$provider_version-$key"
  if ! [ -e "$cache/.complete" ]; then
    rm -rf "$cache"
    mkdir -p "$cache/bin.tmp"
    cp -r "$root/tools/kube/pulumi-kubernetes" "$cache/src"
    log="$cache/build.log"
    t0=$SECONDS
    # The provider embeds its schema (version set) and terraform mapping, minified: what the module's
    # cmd/pulumi-resource-kubernetes/generate.go writes before its release build.
    cmd="$cache/src/cmd/pulumi-resource-kubernetes"
    if ! provider_dir=$(cd "$cache/src" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' \
        github.com/pulumi/pulumi-kubernetes/provider/v4 2>"$log") ||
      ! python3 - "$provider_dir/cmd/pulumi-resource-kubernetes" "$cmd" "$provider_version" <<'PY' >>"$log" 2>&1 ||
import json, sys
src, dst, version = sys.argv[1:]
schema = json.load(open(f"{src}/schema.json"))
schema["version"] = version
json.dump(schema, open(f"{dst}/schema-embed.json", "w"), separators=(",", ":"))
json.dump(json.load(open(f"{src}/terraform-mapping.json")), open(f"{dst}/terraform-mapping-embed.json", "w"),
          separators=(",", ":"))
PY
      ! (cd "$cache/src" && GOFLAGS=-mod=mod go build -trimpath -o "$cache/bin.tmp/pulumi-resource-kubernetes" \
        -ldflags "-s -w -X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$provider_version" \
        ./cmd/pulumi-resource-kubernetes) >>"$log" 2>&1; then
      echo "kube-deps: building pulumi-resource-kubernetes failed after $((SECONDS - t0))s (left off PATH); $log ends:" >&2
      tail -n 30 "$log" >&2
      return 0
    fi
    echo "kube-deps: built pulumi-resource-kubernetes in $((SECONDS - t0))s"
    rm -rf "$cache/src"
    mv "$cache/bin.tmp" "$cache/bin"
    touch "$cache/.complete"
  fi
  export PATH="$cache/bin:$PATH"
  echo "kube-deps: pulumi-resource-kubernetes $provider_version from $cache/bin"
}

_kube_deps || return 1
_kube_provider_deps
unset -f _kube_deps _kube_deps_build _kube_provider_deps
