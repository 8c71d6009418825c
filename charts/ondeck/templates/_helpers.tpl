{{/* Names: "<release>" when the release name already says ondeck, else "<release>-ondeck". */}}
{{- define "ondeck.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ondeck.fullname" -}}
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

{{- define "ondeck.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ondeck.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels of everything the chart installs; the operator's objects add their component. */}}
{{- define "ondeck.labels" -}}
app.kubernetes.io/name: {{ include "ondeck.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "ondeck.operatorLabels" -}}
{{ include "ondeck.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "ondeck.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ondeck.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ondeck.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
What the operator does, and nothing more: the same rules as manifests/install.yaml, which
scripts/gen-crd writes from ondeck.operator.kube.RBAC_RULES (tests/observe checks they agree).
Apply = create + patch, prune = list + delete; Deployments are watched for readiness; Secrets
are only read by name (get), for the retrain webhook's signing key, never listed or watched.
*/}}
{{- define "ondeck.rbacRules" -}}
- apiGroups: [apps]
  resources: [deployments]
  verbs: [create, patch, list, delete, watch]
- apiGroups: [""]
  resources: [services]
  verbs: [create, patch, list, delete]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [create, patch, list, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [create, patch, list, delete]
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors]
  verbs: [create, patch, list, delete]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [create, patch, list, delete]
- apiGroups: [networking.istio.io]
  resources: [virtualservices]
  verbs: [create, patch, list, delete]
- apiGroups: [ondeck.io]
  resources: [modeldeployments]
  verbs: [list, watch, patch]
- apiGroups: [ondeck.io]
  resources: [modeldeployments/status]
  verbs: [patch]
- apiGroups: [ondeck.io]
  resources: [modeldeployments/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
