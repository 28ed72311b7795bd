#!/usr/bin/env bash
# Validates what Bulwark ships for monitoring, offline:
#   1. promtool check rules on deploy/prometheus/rules.yaml;
#   2. promtool test rules on deploy/prometheus/rules_test.yaml (every alert fires and stays
#      quiet where it should, with its exact labels and annotations);
#   3. a live scrape: the real bulwark in front of bulwark-testd, with every metric-bearing
#      block on and a little traffic (scripts/observability_scrape.py), and promtool check
#      metrics on it;
#   4. scripts/check_observability.py: the Grafana dashboard (deploy/grafana/bulwark.json) and
#      the rules use only metric names, labels and values that scrape has, ranges are
#      $__rate_interval, every alert has its runbook section and its tests, and the metrics
#      table of docs/reference.md matches the scrape.
# Installs what it needs if missing (scripts/deps.sh): Debian's prometheus (promtool) and
# python3-yaml.
#
# Environment: BULWARK_BIN (default build/bulwark), BULWARK_TESTD (build/bulwark-testd),
# DASHBOARD (deploy/grafana/bulwark.json), RULES_DIR (deploy/prometheus: rules.yaml and
# rules_test.yaml), REFERENCE (docs/reference.md), RUNBOOKS (docs/runbooks.md). Exit 1 on any
# failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export BULWARK_BIN=${BULWARK_BIN:-$root/build/bulwark}
export BULWARK_TESTD=${BULWARK_TESTD:-$root/build/bulwark-testd}
DASHBOARD=${DASHBOARD:-$root/deploy/grafana/bulwark.json}
RULES_DIR=${RULES_DIR:-$root/deploy/prometheus}
REFERENCE=${REFERENCE:-$root/docs/reference.md}
RUNBOOKS=${RUNBOOKS:-$root/docs/runbooks.md}

fail() { echo "validate-observability: FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }

[[ -x $BULWARK_BIN ]] || fail "no Bulwark binary at $BULWARK_BIN (build it, or set BULWARK_BIN)"
[[ -x $BULWARK_TESTD ]] || fail "no bulwark-testd at $BULWARK_TESTD (build it, or set BULWARK_TESTD)"
for f in "$DASHBOARD" "$RULES_DIR/rules.yaml" "$RULES_DIR/rules_test.yaml" "$REFERENCE" "$RUNBOOKS"; do
  [[ -f $f ]] || fail "no $f"
done

# ---- tools ------------------------------------------------------------------------------
# shellcheck source=scripts/deps.sh
source "$root/scripts/deps.sh"
(
  flock 9  # ctest may run two of these at once, and dpkg takes one installer at a time
  command -v promtool >/dev/null || install_packages prometheus
  python3 -c 'import yaml' 2>/dev/null || install_packages python3-yaml
) 9>"${TMPDIR:-/tmp}/bulwark-validate-observability.lock"
command -v promtool >/dev/null || fail "promtool is missing (Debian package prometheus)"
echo "promtool: $(promtool --version 2>&1 | head -1)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ---- rules ------------------------------------------------------------------------------
step "promtool check rules $RULES_DIR/rules.yaml"
promtool check rules "$RULES_DIR/rules.yaml" || fail "promtool check rules failed"
step "promtool test rules $RULES_DIR/rules_test.yaml"
promtool test rules "$RULES_DIR/rules_test.yaml" || fail "promtool test rules failed"

# ---- a live scrape -----------------------------------------------------------------------
step "live scrape: $BULWARK_BIN in front of $BULWARK_TESTD"
python3 "$root/scripts/observability_scrape.py" "$work/metrics.txt" || fail "could not scrape a running Bulwark"
step "promtool check metrics ($(grep -c '^# TYPE ' "$work/metrics.txt") families, $(grep -vc '^#' "$work/metrics.txt") samples)"
promtool check metrics <"$work/metrics.txt" || fail "promtool check metrics found problems in /metrics"

# ---- dashboard and rules against the scrape -------------------------------------------------
step "dashboard $DASHBOARD and rules against the scrape"
python3 "$root/scripts/check_observability.py" --metrics "$work/metrics.txt" --dashboard "$DASHBOARD" \
  --rules "$RULES_DIR/rules.yaml" --tests "$RULES_DIR/rules_test.yaml" \
  --reference "$REFERENCE" --runbooks "$RUNBOOKS" ||
  fail "the dashboard or the rules do not match what Bulwark exports (lines INVALID above)"

echo "validate-observability: OK"
