{{/* Chart name, truncated to the 63 characters Kubernetes names allow. */}}
{{- define "sovereign-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: <release>-<chart> unless the release name already holds it. */}}
{{- define "sovereign-gateway.fullname" -}}
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

{{- define "sovereign-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sovereign-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sovereign-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sovereign-gateway.labels" -}}
helm.sh/chart: {{ include "sovereign-gateway.chart" . }}
{{ include "sovereign-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sovereign-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sovereign-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sovereign-gateway.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "sovereign-gateway.policiesConfigMap" -}}
{{- default (printf "%s-policies" (include "sovereign-gateway.fullname" .)) .Values.policies.existingConfigMap }}
{{- end }}

{{- define "sovereign-gateway.auditSecret" -}}
{{- required "audit.existingSecret is required: a Secret holding the PostgreSQL URL of the audit database (see values.yaml)" .Values.audit.existingSecret }}
{{- end }}

{{- define "sovereign-gateway.auditKeysSecret" -}}
{{- required "auditKeys.existingSecret is required: a Secret holding the audit signing key and digest secret shared by all replicas (see values.yaml)" .Values.auditKeys.existingSecret }}
{{- end }}

{{/*
gateway.yaml: .Values.config with the paths the chart owns set (policies, audit keys) and, with
the OPA sidecar, the OPA engine on 127.0.0.1:8181.
*/}}
{{- define "sovereign-gateway.gatewayYaml" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $policy := default (dict) $cfg.policy }}
{{- $_ := set $policy "path" "/etc/sovereign-gateway/policies" }}
{{- if .Values.opaSidecar.enabled }}
{{- $_ := set $policy "engine" "opa" }}
{{- $_ := set $policy "url" "http://127.0.0.1:8181" }}
{{- $_ := set $policy "opa_push" true }}
{{- end }}
{{- $_ := set $cfg "policy" $policy }}
{{- $audit := default (dict) $cfg.audit }}
{{- $_ := set $audit "signing_key_file" (printf "/etc/sovereign-gateway/audit-keys/%s" .Values.auditKeys.signingKeyKey) }}
{{- $_ := set $audit "digest_secret_file" (printf "/etc/sovereign-gateway/audit-keys/%s" .Values.auditKeys.digestSecretKey) }}
{{- $_ := set $cfg "audit" $audit }}
{{- toYaml $cfg }}
{{- end }}

{{/* Environment every gateway container gets (serve and migrate). */}}
{{- define "sovereign-gateway.env" -}}
- name: GATEWAY_CONFIG
  value: /etc/sovereign-gateway/gateway.yaml
- name: GATEWAY_HOST
  value: 0.0.0.0
- name: GATEWAY_PORT
  value: {{ .Values.containerPort | quote }}
- name: GATEWAY_AUDIT_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "sovereign-gateway.auditSecret" . }}
      key: {{ .Values.audit.urlKey }}
- name: LITELLM_LOCAL_MODEL_COST_MAP
  value: "True"
{{- end }}
