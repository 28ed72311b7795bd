#!/usr/bin/env bash
# Runs the browser tests (tests/browser/*.mjs, or the ones named) in Debian's Chromium,
# headless, against the real bulwark and bulwark-testd binaries.
# Installs what is missing: Debian's chromium (and nodejs, npm) through scripts/deps.sh, and
# the npm packages pinned by tests/browser/package.json and package-lock.json (playwright-core,
# which drives the system Chromium and downloads no browser of its own) into a cache under the
# build directory, with npm ci.
#
# Environment: BULWARK_BIN (default build/bulwark), BULWARK_TESTD (build/bulwark-testd),
# BULWARK_BROWSER_TOOLS (build/browser-tools), CHROMIUM (/usr/bin/chromium),
# BULWARK_SCREENSHOT=PATH (the status-page test saves its screenshot there; unset: none).
# drill_report.mjs also runs scripts/drill.sh with BULWARK_DRILL (build/bulwark-drill), or
# reads DRILL_REPORT=FILE.html; BULWARK_SCREENSHOT_DRILL=PATH saves its screenshot.
# Exit 1 on any failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export BULWARK_BIN=${BULWARK_BIN:-$root/build/bulwark}
export BULWARK_TESTD=${BULWARK_TESTD:-$root/build/bulwark-testd}
export BULWARK_BROWSER_TOOLS=${BULWARK_BROWSER_TOOLS:-$root/build/browser-tools}
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
TOOLS=$BULWARK_BROWSER_TOOLS

fail() { echo "browser-test: FAIL: $*" >&2; exit 1; }

[[ -x $BULWARK_BIN ]] || fail "no Bulwark binary at $BULWARK_BIN (build it, or set BULWARK_BIN)"
[[ -x $BULWARK_TESTD ]] || fail "no bulwark-testd at $BULWARK_TESTD (build it, or set BULWARK_TESTD)"

# ---- tools ------------------------------------------------------------------------------
# shellcheck source=scripts/deps.sh
source "$root/scripts/deps.sh"
command -v node >/dev/null || install_packages nodejs
command -v npm >/dev/null || install_packages npm
mkdir -p "$TOOLS"
(
  flock 9  # ctest may run two users of the cache at once; apt and npm both want it alone
  if [[ $CHROMIUM == /usr/bin/chromium && ! -x $CHROMIUM ]]; then
    install_packages chromium || { echo "browser-test: FAIL: cannot install Debian's chromium" >&2; exit 1; }
  fi
  stamp="$TOOLS/.installed-$(cat tests/browser/package.json tests/browser/package-lock.json | cksum | cut -d' ' -f1)"
  if [[ ! -f $stamp ]]; then
    echo "== installing the npm packages of tests/browser/package-lock.json into $TOOLS"
    cp tests/browser/package.json tests/browser/package-lock.json "$TOOLS/"
    (cd "$TOOLS" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
      { echo "browser-test: FAIL: npm ci failed in $TOOLS" >&2; exit 1; }
    rm -f "$TOOLS"/.installed-*
    touch "$stamp"
  fi
) 9>"$TOOLS/.lock"
[[ -x $CHROMIUM ]] || fail "no Chromium at $CHROMIUM (set CHROMIUM)"

# ---- tests --------------------------------------------------------------------------------
tests=("$@")
[[ ${#tests[@]} -gt 0 ]] || tests=("$root"/tests/browser/*.mjs)
for t in "${tests[@]}"; do
  echo "== $t"
  node "$t" || fail "$t"
done
echo "browser-test: OK (${#tests[@]} test file(s))"
