{{/*
Name of the CSI driver. The node plugin serves exactly this name, so it is
not a value.
*/}}
{{- define "phantom.driverName" -}}
secrets.phantom.dev
{{- end }}

{{- define "phantom.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every object name: the release name, followed by the chart name
unless the release name already contains it. Kept to 40 characters so that
the longest suffix ("-webhook") and the pod hash suffixes still fit in a
63-character label value.
*/}}
{{- define "phantom.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := include "phantom.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "phantom.nodeName" -}}
{{ include "phantom.fullname" . }}-node
{{- end }}

{{- define "phantom.webhookName" -}}
{{ include "phantom.fullname" . }}-webhook
{{- end }}

{{- define "phantom.openbaoCAName" -}}
{{ include "phantom.fullname" . }}-openbao-ca
{{- end }}

{{- define "phantom.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object. Callers add app.kubernetes.io/component.
*/}}
{{- define "phantom.labels" -}}
helm.sh/chart: {{ include "phantom.chart" . }}
app.kubernetes.io/name: {{ include "phantom.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: phantom
{{- end }}

{{/*
Labels of the objects that the webhook's reconciler also maintains (the
CSIDriver and the MutatingWebhookConfiguration). The reconciler sets
app.kubernetes.io/name and app.kubernetes.io/part-of to "phantom" on them,
so they carry those values whatever nameOverride says. A label that the
reconciler rewrites would flip on every upgrade and conflict with a
server-side helm upgrade.
*/}}
{{- define "phantom.reconciledLabels" -}}
helm.sh/chart: {{ include "phantom.chart" .root }}
app.kubernetes.io/name: phantom
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: phantom
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Selector labels of one component. Call with (dict "root" $ "component" "node").
*/}}
{{- define "phantom.selectorLabels" -}}
app.kubernetes.io/name: {{ include "phantom.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "phantom.componentLabels" -}}
{{ include "phantom.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Image reference of one component. Call with (dict "root" $ "image" .Values.node.image).
*/}}
{{- define "phantom.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/*
Token lifetime as the Go duration that the webhook's --token-expiration flag
takes.
*/}}
{{- define "phantom.tokenExpiration" -}}
{{- printf "%ds" (int64 .Values.csiDriver.tokenRequest.expirationSeconds) }}
{{- end }}

{{/*
Fields shared by both entries of the MutatingWebhookConfiguration.
*/}}
{{- define "phantom.webhookEntry" -}}
clientConfig:
  service:
    name: {{ include "phantom.webhookName" . }}
    namespace: {{ .Release.Namespace }}
    path: /mutate
    port: 443
rules:
  - operations: ["CREATE"]
    apiGroups: [""]
    apiVersions: ["v1"]
    resources: ["pods"]
    scope: Namespaced
admissionReviewVersions: ["v1"]
sideEffects: None
failurePolicy: Fail
matchPolicy: Equivalent
reinvocationPolicy: IfNeeded
timeoutSeconds: 5
{{- end }}

{{/*
Namespaces that the webhook never sees: kube-system and the release
namespace, where injecting could block the pods the webhook itself needs.
*/}}
{{- define "phantom.excludedNamespaces" -}}
{{- if eq .Release.Namespace "kube-system" -}}
["kube-system"]
{{- else -}}
["kube-system", {{ .Release.Namespace | quote }}]
{{- end }}
{{- end }}

{{/*
Label selector string ("k1=v1,k2=v2", keys sorted) of a map of labels.
*/}}
{{- define "phantom.labelSelector" -}}
{{- $terms := list }}
{{- range $key := keys . | sortAlpha }}
{{- $terms = append $terms (printf "%s=%s" $key (index $ $key)) }}
{{- end }}
{{- join "," $terms }}
{{- end }}
