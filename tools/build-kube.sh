#!/usr/bin/env bash
# build-kube.sh: build kube-apiserver (and kubectl of the same release) from the k8s.io/kubernetes Go
# module, so `make e2e-kube` has a real API server calling the admission webhook.
#
# `go install k8s.io/kubernetes/cmd/kube-apiserver@vX` refuses: k8s.io/kubernetes requires its staging
# modules at v0.0.0 and `replace`s them with ./staging/... paths, which only work inside its own tree.
# So a throw-away module requires k8s.io/kubernetes vX and replaces each staging module with its
# published twin k8s.io/<name> v0.<minor>.<patch>, read from k8s.io/kubernetes' own go.mod.
#
# Usage: tools/build-kube.sh [version]   (default: the kube-apiserver line of tools/versions.txt, else below)
# The binaries land in .agentfactory/tools/bin/ with stamps .kube-apiserver.version / .kubectl.version;
# a binary whose stamp matches is not rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${AGENTFACTORY_TOOLS_BIN:-$PWD/.agentfactory/tools/bin}"
DEFAULT_VERSION=v1.37.2
version="${1:-$(awk '$1=="kube-apiserver"{print $3}' tools/versions.txt 2>/dev/null)}"
version="${version:-$DEFAULT_VERSION}"
case "$version" in
  v1.*.*) ;;
  *) echo "build-kube: version '$version' is not of the form v1.<minor>.<patch>" >&2; exit 2 ;;
esac
# Which programs: kube-apiserver always; kubectl too unless KUBE_BUILD_KUBECTL=0 (the kubectl on PATH may be
# out of the supported +-1 minor skew with this server).
programs=(kube-apiserver)
[ "${KUBE_BUILD_KUBECTL:-1}" = 1 ] && programs+=(kubectl)

# Also kept per user (as tools/install.sh does), so another clone on this machine copies instead of building.
CACHE="${AGENTFACTORY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agentfactory/tools}"
mkdir -p "$BIN"
todo=()
for p in "${programs[@]}"; do
  if [ -x "$BIN/$p" ] && [ "$(cat "$BIN/.$p.version" 2>/dev/null)" = "$version" ]; then continue; fi
  if [ -x "$CACHE/$p@$version/$p" ]; then
    cp -f "$CACHE/$p@$version/$p" "$BIN/$p" && echo "$version" > "$BIN/.$p.version"
    echo "build-kube: $p $version from $CACHE" >&2; continue
  fi
  todo+=("$p")
done
[ ${#todo[@]} -eq 0 ] && exit 0
command -v go >/dev/null 2>&1 || { echo "build-kube: go is not installed; it builds ${todo[*]} $version" >&2; exit 1; }

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
mkdir -p "$BIN"
work="$(mktemp -d "${TMPDIR:-/tmp}/build-kube.XXXXXX")"
trap 'rm -rf "$work"' EXIT
staging="v0.${version#v1.}"   # v1.37.2 -> v0.37.2

cd "$work"
go mod init agentfactory.local/build-kube >/dev/null 2>&1
# k8s.io/kubernetes' own go.mod names every staging module it replaces with a ./staging path.
upstream_mod="$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
[ -f "$upstream_mod" ] || { echo "build-kube: could not download k8s.io/kubernetes@$version's go.mod" >&2; exit 1; }
mapfile -t staged < <(sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#\1#p' "$upstream_mod")
[ ${#staged[@]} -gt 0 ] || { echo "build-kube: no staging replaces found in $upstream_mod" >&2; exit 1; }
# The same go directive / godebug defaults as upstream, so the build behaves as the release does.
godir="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$upstream_mod")"
go mod edit -go="$godir"
godebug="$(sed -n 's/^godebug \(.*\)$/\1/p' "$upstream_mod")"
[ -n "$godebug" ] && go mod edit -godebug="$godebug"
go mod edit -require="k8s.io/kubernetes@$version"
for m in "${staged[@]}"; do go mod edit -replace="$m=$m@$staging"; done
cat > tools.go <<'EOF'
//go:build tools

// Package tools pins the programs this throw-away module builds.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF
go mod tidy -e >/dev/null 2>tidy.log || { cat tidy.log >&2; exit 1; }

ldflags="-s -w"
ldflags+=" -X k8s.io/component-base/version.gitVersion=$version"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$version" | cut -d. -f2)"
ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$version"
ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
for p in "${todo[@]}"; do
  start=$(date +%s)
  echo "build-kube: building $p $version (k8s.io/kubernetes/cmd/$p, staging modules at $staging) ..." >&2
  go build -ldflags="$ldflags" -o "$work/$p" "k8s.io/kubernetes/cmd/$p"
  mkdir -p "$CACHE/$p@$version" && cp -f "$work/$p" "$CACHE/$p@$version/$p.tmp" && \
    mv -f "$CACHE/$p@$version/$p.tmp" "$CACHE/$p@$version/$p" || true
  mv -f "$work/$p" "$BIN/$p"
  echo "$version" > "$BIN/.$p.version"
  echo "build-kube: $p $version built in $(( $(date +%s) - start )) s" >&2
done
