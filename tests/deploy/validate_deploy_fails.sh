#!/usr/bin/env bash
# Shows that scripts/validate-deploy.sh fails, saying why, when a manifest is broken: each
# case copies deploy/ (or the chart) to a temporary directory, breaks one thing, points the
# script at the copy and expects exit 1 with the message. An unbroken copy must pass first,
# so a failure below comes from the breakage alone.
# Environment as for validate-deploy.sh (BULWARK_BIN, BULWARK_DEPLOY_TOOLS).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
validate=$root/scripts/validate-deploy.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$root/tests/break_cases.sh"

fresh() {  # a clean copy of deploy/ and the chart
  rm -rf "$tmp/deploy" "$tmp/chart"
  cp -r "$root/deploy" "$tmp/deploy"
  cp -r "$root/helm/bulwark" "$tmp/chart"
}
run() { DEPLOY_DIR=$tmp/deploy CHART_DIR=$tmp/chart bash "$validate" >"$tmp/out" 2>&1; }

expect_unbroken_passes "deploy/ and the chart"

fresh
break_file "$tmp/deploy/inbound.yaml" 's/^          restartPolicy: Always .*/&\n          imagePullPolicyy: Always/'
expect_fail "unknown field in a container" "initContainers[0].imagePullPolicyy: unknown field (not in V1Container)"

fresh
break_file "$tmp/deploy/inbound.yaml" 's/^  replicas: 2$/  replicas: "2"/'
expect_fail "wrong type" '.spec.replicas: expected a number, found string "2"'

fresh
break_file "$tmp/deploy/podmonitor.yaml" 's/^    - port: admin$/    - prot: admin/'
expect_fail "unknown field in a PodMonitor" "podMetricsEndpoints[0].prot: unknown field"

fresh
break_file "$tmp/deploy/outbound.yaml" 's/^            timeout: 10s$/            timeout: 10 seconds/'
expect_fail "Bulwark config refused by bulwark --check" "outbound.yaml--bulwark-outbound--bulwark.yaml:12:18: listeners[0].routes[0].timeout: invalid duration"

fresh
break_file "$tmp/deploy/inbound.yaml" 's|{ name: bulwark-config, mountPath: /etc/bulwark, readOnly: true }|{ name: bulwark-config, mountPath: /etc/bulwark, readOnly: true, subPath: bulwark.yaml }|'
expect_fail "config mounted with subPath" "must not use subPath"

fresh
break_file "$tmp/deploy/inbound.yaml" 's|^            - { name: bulwark-tls, mountPath: /etc/bulwark/tls, readOnly: true }$|            - { name: bulwark-tls, mountPath: /etc/bulwark/tls/tls.crt, subPath: tls.crt, readOnly: true }\n            - { name: bulwark-tls, mountPath: /etc/bulwark/tls/tls.key, subPath: tls.key, readOnly: true }|'
expect_fail "TLS Secret mounted with subPath" "volumeMount bulwark-tls holds TLS file /etc/bulwark/tls/tls.crt (listeners[1].tls.cert) with subPath"

fresh
break_file "$tmp/deploy/outbound.yaml" 's,^          # \(cert\|key\): /etc/bulwark/client/,          \1: /etc/bulwark/client/,'
expect_fail "client certificate without its Secret's volume" "TLS file /etc/bulwark/client/tls.crt (upstreams[1].tls.cert) is not in ConfigMap bulwark-outbound mounted at /etc/bulwark"

fresh
break_file "$tmp/deploy/outbound.yaml" 's/^      terminationGracePeriodSeconds: 45 /      terminationGracePeriodSeconds: 20 /'
expect_fail "grace period shorter than the drain" "terminationGracePeriodSeconds 20 must exceed drain.delay + drain.timeout (25s)"

fresh
break_file "$tmp/chart/templates/service.yaml" 's/^  type: {{ .Values.demo.service.type }}$/&\n  sessionAffinityy: None/'
expect_fail "unknown field rendered by the chart" "spec.sessionAffinityy: unknown field (not in V1ServiceSpec)"

fresh
break_file "$tmp/chart/templates/monitoring.yaml" 's/{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com\/v1" }}/{{- if true }}/'
expect_fail "PodMonitor rendered without the monitoring API" "defaults: a PodMonitor was rendered without monitoring.coreos.com/v1"

fresh
break_file "$tmp/chart/values.yaml" 's/^rollOnConfigChange: false$/rollOnConfigChange: true/'
expect_fail "chart default rolls the pods instead of reloading" "defaults: checksum/config rendered, but only the roll set may roll the pods"

fresh
break_file "$tmp/chart/templates/_helpers.tpl" 's/^{{- if .Values.rollOnConfigChange -}}$/{{- if false -}}/'
expect_fail "roll set without its checksum" "roll: no checksum/config annotation although rollOnConfigChange is true"

fresh
break_file "$tmp/deploy/podmonitor.yaml" '/^      honorLabels: true$/d'
expect_fail "PodMonitor without honorLabels" "podmonitor.yaml must set honorLabels: true"

fresh
break_file "$tmp/chart/templates/monitoring.yaml" '/^      honorLabels: true  # as for the PodMonitor$/d'
expect_fail "chart ServiceMonitor without honorLabels" "monitoring: the PodMonitor and the ServiceMonitor must set honorLabels: true"

finish
