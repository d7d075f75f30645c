{{/* Chart name, truncated to 63 characters. */}}
{{- define "wsgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name: the release name when it contains the chart's name,
else <release>-<chart>; 63 characters at most.
*/}}
{{- define "wsgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "wsgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wsgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wsgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "wsgate.labels" -}}
helm.sh/chart: {{ include "wsgate.chart" . }}
{{ include "wsgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: wsgate
{{- end }}

{{- define "wsgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wsgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "wsgate.image" -}}
{{- $tag := default (printf "v%s" .Chart.AppVersion) .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The Secret of the chart's gateway Certificate. */}}
{{- define "wsgate.certificateSecretName" -}}
{{- default (printf "%s-tls" (include "wsgate.fullname" .)) .Values.gatewayCertificate.secretName }}
{{- end }}

{{/* --default-certificate: the value, else the chart's Certificate's Secret. */}}
{{- define "wsgate.defaultCertificate" -}}
{{- if .Values.defaultCertificate }}
{{- .Values.defaultCertificate }}
{{- else if .Values.gatewayCertificate.enabled }}
{{- printf "%s/%s" .Release.Namespace (include "wsgate.certificateSecretName" .) }}
{{- end }}
{{- end }}

{{/*
--watch-namespaces: watchNamespaces plus the default certificate's
namespace (the gateway reads Secrets only from the namespaces it watches),
comma-separated; empty for all namespaces.
*/}}
{{- define "wsgate.watchNamespaces" -}}
{{- if .Values.watchNamespaces }}
{{- $ns := .Values.watchNamespaces }}
{{- with include "wsgate.defaultCertificate" . }}
{{- $ns = append $ns (first (splitList "/" .)) }}
{{- end }}
{{- $ns | uniq | join "," }}
{{- end }}
{{- end }}

{{/* Whether the metrics endpoint is served. */}}
{{- define "wsgate.metricsEnabled" -}}
{{- if or .Values.metrics.enabled .Values.metrics.serviceMonitor.enabled }}true{{ end }}
{{- end }}

{{/* Checks across values that values.schema.json cannot express clearly. */}}
{{- define "wsgate.validate" -}}
{{- $s := .Values.shutdown }}
{{- if gt (int $s.drainSeconds) (sub (int $s.gracePeriodSeconds) 2 | int) }}
{{- fail (printf "shutdown.drainSeconds (%v) must be at most shutdown.gracePeriodSeconds - 2 (%v): the gateway keeps 2s of the grace period for Close frames" $s.drainSeconds (sub (int $s.gracePeriodSeconds) 2)) }}
{{- end }}
{{- if not (or .Values.listeners.ws.enabled .Values.listeners.wss.enabled) }}
{{- fail "listeners.ws.enabled and listeners.wss.enabled are both false: the gateway needs a listener" }}
{{- end }}
{{- if and .Values.service.ws.enabled (not .Values.listeners.ws.enabled) }}
{{- fail "service.ws.enabled needs listeners.ws.enabled: the Service cannot expose a listener that is off" }}
{{- end }}
{{- if and .Values.gatewayCertificate.enabled (not (or .Values.gatewayCertificate.dnsNames .Values.defaultHost)) }}
{{- fail "gatewayCertificate.enabled needs gatewayCertificate.dnsNames or defaultHost: the Certificate must name at least one host" }}
{{- end }}
{{- with .Values.edge }}
{{- if and .proxyProtocol (not .trustedProxies) }}
{{- fail "edge.proxyProtocol needs edge.trustedProxies: the source ranges of the load balancer (or of the nodes) whose PROXY headers the gateway believes; without them the gateway does not start" }}
{{- end }}
{{- if and .clientLimits.handshakeBurst (not .clientLimits.handshakeRate) }}
{{- fail "edge.clientLimits.handshakeBurst needs edge.clientLimits.handshakeRate: a burst limits nothing without a rate" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Whether an annotation of the Service (its name or value) mentions the
PROXY protocol, as the cloud controllers' annotations that turn it on do.
*/}}
{{- define "wsgate.proxyProtocolAnnotated" -}}
{{- range $k, $v := .Values.service.annotations }}
{{- if regexMatch "(?i)proxy.?protocol" (printf "%s=%s" $k $v) }}true{{ end }}
{{- end }}
{{- end }}
