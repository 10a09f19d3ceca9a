#!/usr/bin/env bash
# make tools: build the field's own programs from their Go modules at pinned versions, so the tests
# run against the real OPA, cosign, rekor-cli, Grype and Trivy instead of assumptions about them.
# Each binary lands in .agentfactory/tools/bin/ with a stamp naming its version; a tool whose stamp
# matches is skipped, so only the first run pays for the build.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${AGENTFACTORY_TOOLS_BIN:-$PWD/.agentfactory/tools/bin}"
mkdir -p "$BIN"
export GOBIN="$BIN" GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath"

# name  module path (package)  version; keep in step with agentfactory/tools.py
while read -r name pkg version; do
  [ -z "$name" ] && continue
  case "$name" in \#*) continue ;; esac
  stamp="$BIN/.$name.version"
  if [ -x "$BIN/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
    continue
  fi
  if ! command -v go >/dev/null 2>&1; then
    echo "make tools: go is not installed; it builds $name $version from $pkg" >&2; exit 1
  fi
  start=$(date +%s)
  echo "make tools: building $name $version ($pkg) ..." >&2
  go install -ldflags="-s -w" "$pkg@$version"
  echo "$version" > "$stamp"
  echo "make tools: $name $version built in $(( $(date +%s) - start )) s" >&2
done < tools/versions.txt
