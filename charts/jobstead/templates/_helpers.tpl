{{- define "jobstead.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jobstead.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "jobstead.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "jobstead.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "jobstead.labels" -}}
app.kubernetes.io/name: {{ include "jobstead.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "jobstead.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jobstead.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "jobstead.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "jobstead.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator's permissions, shared by the Role and ClusterRole forms: exactly
what it uses (tests/e2e/test_rbac.py runs it with these and nothing else).
kopf lists, watches and patches its resources (finalizers, annotations, status)
and never gets or updates them; Events are only created, in the core group.
*/}}
{{- define "jobstead.rules" -}}
- apiGroups: [jobstead.io]
  resources: [jobhandlers, cronschedules]
  verbs: [list, watch, patch]
- apiGroups: [jobstead.io]
  resources: [jobhandlers/status, cronschedules/status]
  verbs: [patch]
# Worker Deployments are owned by their JobHandler with blockOwnerDeletion; where the
# OwnerReferencesPermissionEnforcement admission plugin runs, that takes this.
- apiGroups: [jobstead.io]
  resources: [jobhandlers/finalizers]
  verbs: [update]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, create, patch]
# Database Secrets named by the resources (spec.database.secretRef), read one by one by
# name and re-read to follow a rotation: get only, never list (the operator holds no
# Secret that no resource names). Granted per watched namespace (Role) when
# watchNamespaces is set; cluster-wide (ClusterRole) otherwise.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# Worker pods: gone ones hand their jobs back; busy ones get a pod-deletion-cost.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}
