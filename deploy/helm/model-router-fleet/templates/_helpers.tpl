{{/* Names and shared pod pieces of the model-router-fleet chart. */}}

{{- define "fleet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fleet.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The stream-name stem of a subject prefix, as fleet_shared.subjects.Subjects derives it. */}}
{{- define "fleet.streamStem" -}}
{{- .Values.fleet.subjectPrefix | upper | replace "." "_" | replace "-" "_" -}}
{{- end -}}

{{- define "fleet.natsUrl" -}}
{{- .Values.fleet.natsUrl | default (printf "nats://%s:4222" (.Values.nats.fullnameOverride | default "nats")) -}}
{{- end -}}

{{- define "fleet.image" -}}
{{- printf "%s/%s:%s" .root.Values.image.repository .service (.root.Values.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}

{{/* Pod annotations: Prometheus scraping of the ops endpoint. */}}
{{- define "fleet.podAnnotations" -}}
{{- if .Values.monitoring.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.fleet.metricsPort | quote }}
prometheus.io/path: /metrics
{{- end }}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end -}}

{{/* The container's ports and probes: /healthz (liveness), /readyz (readiness). */}}
{{- define "fleet.probes" -}}
ports:
  - {name: ops, containerPort: {{ .Values.fleet.metricsPort }}}
livenessProbe:
  httpGet: {path: /healthz, port: ops}
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: ops}
  periodSeconds: 5
  failureThreshold: 2
startupProbe:
  httpGet: {path: /healthz, port: ops}
  periodSeconds: 2
  failureThreshold: 30
{{- end -}}

{{- define "fleet.securityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
{{- end -}}
