#!/usr/bin/env bash
# The tools that check deploy/ offline in the test suite: helm and kubeconform built from the Go
# module proxy, promtool out of Debian's prometheus package, and the schemas the manifests are
# checked against, taken from Go modules (Kubernetes' OpenAPI document, KEDA's and the Prometheus
# operator's CRDs, the Compose specification). Versions: deploy/tools.lock.
#
#   scripts/install_deploy_tools.sh [BIN_DIR]   # BIN_DIR (scripts/install.sh: the venv's bin)
#                                               # gets links to the tools, so PATH finds them
#
# Everything lands in ~/.cache/interest-stream/tools (INTEREST_TOOLS_DIR): bin/ and data/. Quick
# when done (a stamp per version). Never fails: a tool that cannot be had (no Go, no network, no
# apt-get) gets a warning here, and the tests that need it skip with the reason. Prints nothing on
# stdout (scripts/install.sh's last stdout line is the venv's bin dir).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${INTEREST_TOOLS_DIR:-$HOME/.cache/interest-stream/tools}"
link_dir="${1:-}"
# shellcheck source=../deploy/tools.lock
. "$here/deploy/tools.lock"
mkdir -p "$tools/bin" "$tools/data" || exit 0

warn() { echo "warning: $* (the deploy checks that need it are skipped)" >&2; }

# Go's module and build caches go to a scratch folder removed at exit: only the binaries and the
# few data files are kept (the caches of a helm build are ~1.4 GB).
scratch=""
cleanup() {
  if [ -n "$scratch" ]; then
    chmod -R u+w "$scratch" 2>/dev/null
    rm -rf "$scratch"
  fi
}
trap cleanup EXIT
use_go() {
  if ! command -v go >/dev/null 2>&1; then
    return 1
  fi
  if [ -z "$scratch" ]; then
    scratch="$(mktemp -d)"
  fi
  export GOMODCACHE="$scratch/mod" GOCACHE="$scratch/build" GOFLAGS=-modcacherw GOTOOLCHAIN=local
  export GOPATH="$scratch/gopath"
}

# go_tool NAME PACKAGE VERSION: `go install PACKAGE@VERSION` into $tools/bin.
go_tool() {
  local name="$1" pkg="$2" version="$3"
  [ -x "$tools/bin/$name" ] && [ -e "$tools/bin/.$name-$version" ] && return 0
  use_go || { warn "no Go toolchain to build $name"; return 0; }
  echo "building $name $version from the Go module proxy (once; helm takes ~2 min)" >&2
  if GOBIN="$tools/bin" timeout 1200 go install "$pkg@$version" >&2; then
    rm -f "$tools/bin/.$name-"*
    touch "$tools/bin/.$name-$version"
  else
    warn "could not build $name $version (offline?)"
  fi
}

# go_data MODULE VERSION NAME PATH...: copy PATHs of the module's zip to $tools/data/NAME@VERSION.
go_data() {
  local module="$1" version="$2" dest="$tools/data/$3@$2"
  shift 3
  [ -e "$dest/.complete" ] && return 0
  use_go || { warn "no Go toolchain to fetch $module"; return 0; }
  if ! (cd "$scratch" && timeout 600 go mod download "$module@$version" >&2); then
    warn "could not download $module@$version (offline?)"
    return 0
  fi
  local src="$GOMODCACHE/$module@$version" p
  rm -rf "$dest"
  for p in "$@"; do
    mkdir -p "$dest/$(dirname "$p")" && cp -R "$src/$p" "$dest/$p" || { warn "$module has no $p"; return 0; }
  done
  touch "$dest/.complete"
}

# promtool: the binary out of Debian's prometheus package, unpacked (nothing installed or started).
promtool_tool() {
  command -v promtool >/dev/null 2>&1 && return 0
  [ -x "$tools/bin/promtool" ] && return 0
  if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
    warn "promtool needs Debian's prometheus package (apt-get); none here"
    return 0
  fi
  local deb
  deb="$(mktemp -d)"
  if ! (cd "$deb" && apt-get download prometheus >/dev/null 2>&1); then
    # An empty or stale package list: refresh it where we may.
    [ "$(id -u)" = 0 ] && apt-get update -qq >&2
    (cd "$deb" && apt-get download prometheus >/dev/null 2>&1)
  fi
  if ls "$deb"/prometheus_*.deb >/dev/null 2>&1 && dpkg-deb -x "$deb"/prometheus_*.deb "$deb/x"; then
    cp "$deb/x/usr/bin/promtool" "$tools/bin/promtool"
  else
    warn "could not download Debian's prometheus package for promtool"
  fi
  rm -rf "$deb"
}

go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"
promtool_tool
go_data k8s.io/kubernetes "$KUBERNETES_VERSION" kubernetes api/openapi-spec/swagger.json
go_data github.com/kedacore/keda/v2 "$KEDA_VERSION" keda config/crd/bases
go_data github.com/prometheus-operator/prometheus-operator "$PROMETHEUS_OPERATOR_VERSION" \
  prometheus-operator example/prometheus-operator-crd
go_data github.com/compose-spec/compose-go/v2 "$COMPOSE_GO_VERSION" compose-go schema/compose-spec.json

if [ -n "$link_dir" ] && [ -d "$link_dir" ]; then
  for name in helm kubeconform promtool; do
    if [ -x "$tools/bin/$name" ]; then
      ln -sf "$tools/bin/$name" "$link_dir/$name"
    fi
  done
fi
exit 0
