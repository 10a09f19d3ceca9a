#!/usr/bin/env bash
# make tools: build the field's own programs from their Go modules at pinned versions, so the tests
# run against the real OPA, cosign, rekor-cli, Grype and Trivy instead of assumptions about them.
# Each binary lands in .agentfactory/tools/bin/ with a stamp naming its version; a tool whose stamp
# matches is skipped, so only the first run pays for the build. Built binaries are also kept in a
# per-user cache ($AGENTFACTORY_TOOLS_CACHE, default ~/.cache/agentfactory/tools/<name>@<version>), so a
# second clone on the same machine copies them instead of building again.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${AGENTFACTORY_TOOLS_BIN:-$PWD/.agentfactory/tools/bin}"
mkdir -p "$BIN"
CACHE="${AGENTFACTORY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agentfactory/tools}"
export GOBIN="$BIN" GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath"

# name, Go package, version and any build environment (trivy needs GOEXPERIMENT=jsonv2, as its own release build sets)
while read -r name pkg version buildenv; do
  [ -z "$name" ] && continue
  case "$name" in \#*) continue ;; esac
  case "$name" in kube-apiserver) continue ;; esac  # tools/build-kube.sh builds it (staging replaces)
  stamp="$BIN/.$name.version"
  if [ -x "$BIN/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
    continue
  fi
  if [ -x "$CACHE/$name@$version/$name" ]; then
    cp -f "$CACHE/$name@$version/$name" "$BIN/$name" && echo "$version" > "$stamp"
    echo "make tools: $name $version from $CACHE" >&2; continue
  fi
  if ! command -v go >/dev/null 2>&1; then
    echo "make tools: go is not installed; it builds $name $version from $pkg" >&2; exit 1
  fi
  start=$(date +%s)
  echo "make tools: building $name $version ($pkg) ..." >&2
  # shellcheck disable=SC2086  # buildenv is a list of NAME=value words
  env $buildenv go install -ldflags="-s -w" "$pkg@$version"
  echo "$version" > "$stamp"
  mkdir -p "$CACHE/$name@$version" && cp -f "$BIN/$name" "$CACHE/$name@$version/$name.tmp" && \
    mv -f "$CACHE/$name@$version/$name.tmp" "$CACHE/$name@$version/$name" || true
  echo "make tools: $name $version built in $(( $(date +%s) - start )) s" >&2
done < tools/versions.txt
