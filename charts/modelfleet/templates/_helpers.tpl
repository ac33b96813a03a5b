{{/*
Names and labels, one place (cert-manager's chart does the same). A release named "modelfleet" gives the
names deploy/ uses: modelfleet-operator, modelfleet-gateway.
*/}}

{{/* The base name of every object: the release name, or <release>-modelfleet unless it already says so. */}}
{{- define "modelfleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "modelfleet.operator.fullname" -}}{{ include "modelfleet.fullname" . }}-operator{{- end -}}
{{- define "modelfleet.gateway.fullname" -}}{{ include "modelfleet.fullname" . }}-gateway{{- end -}}
{{- define "modelfleet.agent.fullname" -}}{{ include "modelfleet.fullname" . }}-agent{{- end -}}

{{/* ServiceAccount names: the chart's, or an existing one's when create is false. */}}
{{- define "modelfleet.operator.serviceAccountName" -}}
{{- .Values.operator.serviceAccount.name | default (include "modelfleet.operator.fullname" .) -}}
{{- end -}}
{{- define "modelfleet.gateway.serviceAccountName" -}}
{{- .Values.gateway.serviceAccount.name | default (include "modelfleet.gateway.fullname" .) -}}
{{- end -}}
{{- define "modelfleet.agent.serviceAccountName" -}}
{{- .Values.agent.serviceAccount.name | default (include "modelfleet.agent.fullname" .) -}}
{{- end -}}

{{/* Labels every object carries; modelfleet.componentLabels adds its name, instance and component. */}}
{{- define "modelfleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelfleet
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Selector labels of one component: include with (dict "root" $ "component" "operator"). The name is
modelfleet-<component>, as in deploy/: the alert runbooks select pods by app.kubernetes.io/name=modelfleet-operator
and =modelfleet-gateway.
*/}}
{{- define "modelfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-%s" .root.Chart.Name .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* Labels of one component's objects: the common labels, its selector labels and its component. */}}
{{- define "modelfleet.componentLabels" -}}
{{ include "modelfleet.labels" .root }}
{{ include "modelfleet.selectorLabels" . }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image reference from {repository, tag, digest}: the digest wins when set. */}}
{{- define "modelfleet.image" -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}
{{- end -}}

{{/* The claim of a pvc://<claim>/<path> artifact store, or "" for s3://. */}}
{{- define "modelfleet.artifactsClaim" -}}
{{- if hasPrefix "pvc://" .Values.artifacts.uri -}}
{{- trimPrefix "pvc://" .Values.artifacts.uri | splitList "/" | first -}}
{{- end -}}
{{- end -}}

{{/*
The Prometheus job names the alert rules and the dashboard query (job="modelfleet-operator",
job="modelfleet-gateway"), whatever the release is called: the ServiceMonitors read them from this label
(jobLabel), so a release named otherwise still matches the rules.
*/}}
{{- define "modelfleet.jobLabel" -}}modelfleet.io/job{{- end -}}

{{/* The container securityContext every modelfleet container gets (restricted Pod Security Standard). */}}
{{- define "modelfleet.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
