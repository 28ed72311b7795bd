#!/usr/bin/env bash
# Shows that scripts/validate-observability.sh fails, saying why, when the dashboard or the
# rules use something Bulwark does not export: each case copies the dashboard, the rules and
# the runbooks to a temporary directory, breaks one thing, points the script at the copy and
# expects exit 1 with the message. An unbroken copy must pass first, so a failure below comes
# from the breakage alone.
# Environment as for validate-observability.sh (BULWARK_BIN, BULWARK_TESTD).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
validate=$root/scripts/validate-observability.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$root/tests/break_cases.sh"

fresh() {  # clean copies
  rm -rf "$tmp/grafana" "$tmp/prometheus" "$tmp/runbooks.md"
  cp -r "$root/deploy/grafana" "$tmp/grafana"
  cp -r "$root/deploy/prometheus" "$tmp/prometheus"
  cp "$root/docs/runbooks.md" "$tmp/runbooks.md"
}
run() {
  DASHBOARD=$tmp/grafana/bulwark.json RULES_DIR=$tmp/prometheus RUNBOOKS=$tmp/runbooks.md \
    bash "$validate" >"$tmp/out" 2>&1
}

expect_unbroken_passes "the dashboard, rules and runbooks"

d=$tmp/grafana/bulwark.json
fresh
break_file "$d" 's/rate(bulwark_shed_total{/rate(bulwark_shed_requests_total{/'
expect_fail "unknown metric in a panel" "unknown metric bulwark_shed_requests_total (not in the scrape of a running Bulwark)"

fresh
break_file "$d" '0,/outcome!=\\"success\\"/s//outcome!=\\"succeeded\\"/'
expect_fail "label value Bulwark never exports" 'bulwark_upstream_requests_total{outcome!="succeeded"}: no such value'

fresh
break_file "$d" '0,/\[\$__rate_interval\]/s//[5m]/'
expect_fail "a fixed range in a panel" "range [5m]: dashboard ranges must be [\$__rate_interval]"

fresh
break_file "$d" 's/bulwark_local_replies_total{route=~/bulwark_local_replies_total{upstream=~\\"$upstream\\",route=~/'
expect_fail "a label the metric does not have" "bulwark_local_replies_total has no label upstream"

fresh
break_file "$d" 's/"uid": "\${datasource}"/"uid": "prometheus"/'
expect_fail "a panel on a fixed data source" "panel 'Requests/s': not on the \${datasource} data source"

fresh
break_file "$d" 's/"uid": "bulwark-overview"/"uid": "bulwark"/'
expect_fail "another uid" "uid is 'bulwark', not \"bulwark-overview\""

fresh
break_file "$d" '$d'
expect_fail "invalid JSON" "not valid JSON"

fresh
# renamed in the rules and their tests alike: promtool is satisfied, the live scrape is not
break_file "$tmp/prometheus/rules.yaml" 's/bulwark_retry_budget_exhausted_total/bulwark_retry_budgets_exhausted_total/'
break_file "$tmp/prometheus/rules_test.yaml" 's/bulwark_retry_budget_exhausted_total/bulwark_retry_budgets_exhausted_total/'
expect_fail "unknown metric in a rule (its tests renamed too)" "BulwarkRetryBudgetExhausted: unknown metric bulwark_retry_budgets_exhausted_total"

fresh
break_file "$tmp/prometheus/rules.yaml" 's/sum without (instance, pod, priority) (rate(bulwark_shed_total\[5m\]))$/sum without (instance, pod, priority, status) (rate(bulwark_shed_total[5m]))/'
expect_fail "grouping by a label no metric has" "BulwarkHighShedRate: grouping by status, a label no Bulwark metric has"

fresh
break_file "$tmp/runbooks.md" 's/^## BulwarkHighShedRate$/## High shed rate/'
expect_fail "runbook section missing" "runbook_url anchor #bulwarkhighshedrate is not a heading of the runbooks"

fresh
break_file "$tmp/prometheus/rules.yaml" 's/severity: critical/severity: page/'
break_file "$tmp/prometheus/rules_test.yaml" 's/severity: critical/severity: page/'
expect_fail "severity outside critical, warning, info" "severity label is 'page'"

finish
