{{/*
Helpers need only .Values and .Release (plus .Chart for labels), so a parent chart can
include the sidecar with this chart's values:
  {{ include "bulwark.sidecar" (dict "Values" .Values.bulwark "Release" .Release "Chart" .Chart) }}
*/}}

{{- define "bulwark.name" -}}
{{- default "bulwark" .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bulwark.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "bulwark.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "bulwark.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bulwark.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bulwark.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bulwark.labels" -}}
helm.sh/chart: {{ include "bulwark.chart" . }}
{{ include "bulwark.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ .Values.mode }}-sidecar
{{- end -}}

{{/* The label the PodMonitor and the metrics Service select: put it on your own pods too. */}}
{{- define "bulwark.podLabels" -}}
bulwark-sidecar: {{ include "bulwark.fullname" . }}
{{- end -}}

{{- define "bulwark.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "bulwark.upstreamName" -}}
{{- if eq .Values.mode "inbound" }}app{{ else }}remote{{ end -}}
{{- end -}}

{{/*
"true" when the inbound listener terminates TLS (inbound.tls.enabled), else empty; fails the
render on a TLS setting that cannot work.
*/}}
{{- define "bulwark.tls" -}}
{{- $tls := .Values.inbound.tls | default dict -}}
{{- if $tls.enabled -}}
{{- if ne .Values.mode "inbound" -}}
{{- fail "bulwark: inbound.tls.enabled needs mode: inbound (TLS is terminated on the inbound listener)" -}}
{{- end -}}
{{- if not $tls.secretName -}}
{{- fail "bulwark: inbound.tls.secretName is required with inbound.tls.enabled (a kubernetes.io/tls Secret you create, see docs/kubernetes.md#6-tls)" -}}
{{- end -}}
{{- if or (eq (int $tls.port) (int .Values.admin.port)) (and (include "bulwark.http" .) (eq (int $tls.port) (int .Values.inbound.port))) -}}
{{- fail (printf "bulwark: inbound.tls.port %v is already taken (inbound.port or admin.port)" $tls.port) -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{/* "true" when the config has a plain HTTP listener: always outbound; inbound unless
inbound.tls.keepHttp is false. */}}
{{- define "bulwark.http" -}}
{{- $tls := .Values.inbound.tls | default dict -}}
{{- if or (ne .Values.mode "inbound") (not $tls.enabled) (ne (toString $tls.keepHttp) "false") -}}
true
{{- end -}}
{{- end -}}

{{/* The routes of a listener, each to the one upstream unless it names another. */}}
{{- define "bulwark.routes" -}}
{{- $up := include "bulwark.upstreamName" . -}}
{{- range .Values.config.routes }}
      - {{ merge (dict) . (dict "upstream" $up) | toYaml | indent 8 | trim }}
{{- end }}
{{- end -}}

{{/* A duration of Bulwark's form (0, 250ms, 5s, 1m, 1h) in whole seconds, rounded up. */}}
{{- define "bulwark.seconds" -}}
{{- $d := toString . -}}
{{- if eq $d "0" -}}0
{{- else if hasSuffix "ms" $d -}}{{ div (add (trimSuffix "ms" $d | atoi) 999) 1000 }}
{{- else if hasSuffix "s" $d -}}{{ trimSuffix "s" $d | atoi }}
{{- else if hasSuffix "m" $d -}}{{ mul (trimSuffix "m" $d | atoi) 60 }}
{{- else if hasSuffix "h" $d -}}{{ mul (trimSuffix "h" $d | atoi) 3600 }}
{{- else -}}{{ fail (printf "bulwark: %q is not a duration (0, 250ms, 5s, 1m, 1h)" $d) }}
{{- end -}}
{{- end -}}

{{/* The Bulwark config file (docs/configuration.md), built from values. */}}
{{- define "bulwark.config" -}}
{{- $v := .Values -}}
{{- $up := include "bulwark.upstreamName" . -}}
admin:
  listen: "0.0.0.0:{{ $v.admin.port }}"
workers: {{ $v.config.workers }}
drain:
  delay: {{ $v.drain.delay }}
  timeout: {{ $v.drain.timeout }}
access_log:
  path: {{ $v.config.accessLog }}
  format: json
listeners:
  {{- if include "bulwark.http" . }}
  - name: {{ $v.mode }}
    {{- if eq $v.mode "inbound" }}
    listen: "0.0.0.0:{{ $v.inbound.port }}"
    {{- else }}
    listen: "127.0.0.1:{{ $v.outbound.port }}"
    {{- end }}
    routes:
{{- include "bulwark.routes" . }}
  {{- end }}
  {{- if include "bulwark.tls" . }}
  {{- $tls := $v.inbound.tls }}
  - name: inbound-tls
    listen: "0.0.0.0:{{ $tls.port }}"
    tls:
      cert: {{ printf "%s/tls.crt" $tls.mountPath | quote }}
      key: {{ printf "%s/tls.key" $tls.mountPath | quote }}
      {{- with $tls.clientCA }}
      client_ca: {{ printf "%s/%s" $tls.mountPath . | quote }}
      {{- end }}
      min_version: {{ $tls.minVersion | default "1.2" | toString | quote }}
    routes:
{{- include "bulwark.routes" . }}
  {{- end }}
upstreams:
  - name: {{ $up }}
    {{- if eq $v.mode "inbound" }}
    endpoints: ["127.0.0.1:{{ $v.inbound.appPort }}"]
    {{- else }}
    endpoints: [{{ $v.outbound.remote | quote }}]
    {{- end }}
    {{- $extra := $v.config.upstream | default dict }}
    {{- if eq $v.mode "outbound" }}
    {{- $extra = merge (dict) $extra (dict "dns_refresh" $v.outbound.dnsRefresh) }}
    {{- end }}
    {{- with $extra }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/* Pod template annotations: the config checksum only when the user wants pods rolled. */}}
{{- define "bulwark.podAnnotations" -}}
{{- if .Values.rollOnConfigChange -}}
checksum/config: {{ include "bulwark.config" . | sha256sum }}
{{- end -}}
{{- end -}}

{{/* Fails the render when the grace period cannot hold drain.delay + drain.timeout. */}}
{{- define "bulwark.checkGrace" -}}
{{- $need := add (include "bulwark.seconds" .Values.drain.delay | atoi) (include "bulwark.seconds" .Values.drain.timeout | atoi) -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (int $need) -}}
{{- fail (printf "bulwark: terminationGracePeriodSeconds (%v) must be larger than drain.delay + drain.timeout (%vs)" .Values.terminationGracePeriodSeconds $need) -}}
{{- end -}}
{{- end -}}

{{/*
The sidecar: one item for a pod's initContainers (a native sidecar, Kubernetes 1.29+).
  initContainers:
    {{- include "bulwark.sidecar" . | nindent 4 }}
  volumes:
    {{- include "bulwark.volume" . | nindent 4 }}
*/}}
{{- define "bulwark.sidecar" -}}
{{- include "bulwark.checkGrace" . -}}
- name: bulwark
  image: {{ include "bulwark.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  restartPolicy: Always
  args: ["-c", "/etc/bulwark/bulwark.yaml"]
  ports:
    {{- if and (eq .Values.mode "inbound") (include "bulwark.http" .) }}
    - name: http
      containerPort: {{ .Values.inbound.port }}
      protocol: TCP
    {{- end }}
    {{- if include "bulwark.tls" . }}
    - name: https
      containerPort: {{ .Values.inbound.tls.port }}
      protocol: TCP
    {{- end }}
    - name: admin
      containerPort: {{ .Values.admin.port }}
      protocol: TCP
  startupProbe:
    httpGet: { path: /ready, port: admin }
    {{- toYaml .Values.probes.startup | nindent 4 }}
  readinessProbe:
    httpGet: { path: /ready, port: admin }
    {{- toYaml .Values.probes.readiness | nindent 4 }}
  livenessProbe:
    httpGet: { path: /healthz, port: admin }
    {{- toYaml .Values.probes.liveness | nindent 4 }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    runAsNonRoot: true
    runAsUser: {{ .Values.runAsUser }}
    runAsGroup: {{ .Values.runAsUser }}
    readOnlyRootFilesystem: true
    allowPrivilegeEscalation: false
    capabilities:
      drop: [ALL]
    seccompProfile:
      type: RuntimeDefault
  volumeMounts:
    - name: bulwark-config
      mountPath: /etc/bulwark
      readOnly: true
    {{- if include "bulwark.tls" . }}
    # The TLS Secret as a directory, never a subPath: a renewed certificate then arrives
    # (the kubelet swaps ..data) and Bulwark reloads it in place.
    - name: bulwark-tls
      mountPath: {{ .Values.inbound.tls.mountPath }}
      readOnly: true
    {{- end }}
{{- end -}}

{{/* The config volume: the ConfigMap as a directory (no subPath), so updates arrive; with
inbound.tls, the TLS Secret's volume too. */}}
{{- define "bulwark.volume" -}}
- name: bulwark-config
  configMap:
    name: {{ include "bulwark.fullname" . }}
{{- if include "bulwark.tls" . }}
- name: bulwark-tls
  secret:
    secretName: {{ .Values.inbound.tls.secretName }}
{{- end }}
{{- end -}}
