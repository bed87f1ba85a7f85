{{/* The chart's name, or nameOverride. */}}
{{- define "gpuscale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
RELEASE-gpuscale, or just the release name when it already holds the chart's name (a release named
gpuscale gives gpuscale). Object names add "-operator" to it, so they stay within 63 characters.
*/}}
{{- define "gpuscale.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "gpuscale.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 54 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The operator's Deployment, ServiceAccount and (Cluster)Roles: gpuscale-operator by default, as in deploy/rbac. */}}
{{- define "gpuscale.operator" -}}
{{- printf "%s-operator" (include "gpuscale.fullname" .) -}}
{{- end -}}

{{- define "gpuscale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gpuscale.operator" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gpuscale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpuscale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "gpuscale.labels" -}}
{{ include "gpuscale.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "gpuscale.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The gateway pods' image: the operator's own unless gatewayImage names another. */}}
{{- define "gpuscale.gatewayImage" -}}
{{- if .Values.gatewayImage.repository -}}
{{- printf "%s:%s" .Values.gatewayImage.repository (.Values.gatewayImage.tag | default .Values.image.tag | default .Chart.AppVersion) -}}
{{- else -}}
{{- include "gpuscale.image" . -}}
{{- end -}}
{{- end -}}

{{/*
The operator's rules in a namespace it watches: deploy/rbac/operator-role.yaml, which
tests/operator/test_rbac.py derives from what the operator was seen to call (tests/chart checks that these
stay equal to it). Change the rules there first, then here.
*/}}
{{- define "gpuscale.namespacedRules" -}}
# The services: kopf lists, watches and patches them (finalizer, annotations); status via /status.
- apiGroups: [gpuscale.io]
  resources: [gpuinferenceservices]
  verbs: [list, watch, patch]
- apiGroups: [gpuscale.io]
  resources: [gpuinferenceservices/status]
  verbs: [patch]
# What a service owns; delete: spec.gateway.enabled turned off removes the gateway's objects; list and
# watch: the control loops' watch of their model Deployments.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [patch]
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, patch]
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, create, patch, delete]
# The gateway's Role and RoleBinding.
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, create, patch, delete]
# get only because the gateway's Role grants it: the API server refuses to let anyone grant what they do
# not hold.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}

{{/* kopf finds the resources it serves by listing and watching the CRDs. */}}
{{- define "gpuscale.crdRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- end -}}
