{{/* Names. Cluster-scoped objects carry the fullname, so two releases never collide. */}}
{{- define "ephemera.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ephemera.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "ephemera.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "ephemera.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "ephemera.selector" -}}
app.kubernetes.io/name: {{ include "ephemera.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ephemera.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Service accounts: the controller (worker + watcher) and web; scheduler has one without a token. */}}
{{- define "ephemera.controllerSA" -}}{{ include "ephemera.fullname" . }}-controller{{- end -}}
{{- define "ephemera.webSA" -}}{{ include "ephemera.fullname" . }}-web{{- end -}}
{{- define "ephemera.schedulerSA" -}}{{ include "ephemera.fullname" . }}-scheduler{{- end -}}

{{- define "ephemera.userClusterRolePrefix" -}}
{{- .Values.rbac.userClusterRolePrefix | default (printf "%s-user-" (include "ephemera.fullname" .)) -}}
{{- end -}}

{{/* The access levels and their rules: files/access-rules.yaml, shared with the local cluster. */}}
{{- define "ephemera.accessRules" -}}
{{- .Files.Get "files/access-rules.yaml" -}}
{{- end -}}

{{- define "ephemera.secretName" -}}{{ include "ephemera.fullname" . }}-secrets{{- end -}}

{{/* One secret env var: from the existing Secret if named, else from the chart's Secret. */}}
{{- define "ephemera.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
{{- if .source.existingSecret.name }}
      name: {{ .source.existingSecret.name }}
      key: {{ .source.existingSecret.key }}
{{- else }}
      name: {{ include "ephemera.secretName" .root }}
      key: {{ .env }}
{{- end }}
{{- end -}}

{{/* The environment every process gets (settings are read from env vars). */}}
{{- define "ephemera.env" -}}
{{- $c := .Values.config -}}
{{- if not (or .Values.database.url .Values.database.existingSecret.name) }}
{{- fail "database: set database.url or database.existingSecret.name (an external PostgreSQL; the chart runs none)" }}
{{- end }}
{{- if not (or .Values.redis.url .Values.redis.existingSecret.name) }}
{{- fail "redis: set redis.url or redis.existingSecret.name (an external Redis; the chart runs none)" }}
{{- end }}
{{- if not $c.allowedHosts }}
{{- fail "config.allowedHosts: list the host names the portal answers to, e.g. [ephemera.example.com]" }}
{{- end }}
{{- include "ephemera.secretEnv" (dict "env" "DATABASE_URL" "source" .Values.database "root" .) }}
{{ include "ephemera.secretEnv" (dict "env" "REDIS_URL" "source" .Values.redis "root" .) }}
{{ include "ephemera.secretEnv" (dict "env" "SECRET_KEY" "source" .Values.secretKey "root" .) }}
{{- range .Values.extraSecretEnv }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .key }}
{{- end }}
- name: DEBUG
  value: "false"
- name: ALLOWED_HOSTS
  value: {{ join "," $c.allowedHosts | quote }}
{{- with $c.siteUrl }}
- name: SITE_URL
  value: {{ . | quote }}
{{- end }}
{{- with $c.csrfTrustedOrigins }}
- name: CSRF_TRUSTED_ORIGINS
  value: {{ join "," . | quote }}
{{- end }}
- name: BASE_DOMAIN
  value: {{ $c.baseDomain | quote }}
- name: INGRESS_NAMESPACE
  value: {{ $c.ingressNamespace | quote }}
- name: INGRESS_CLASS
  value: {{ $c.ingressClass | quote }}
- name: INGRESS_URL_SCHEME
  value: {{ $c.ingressUrlScheme | quote }}
- name: EPHEMERA_INSTANCE
  value: {{ $c.instance | quote }}
- name: BEHIND_PROXY
  value: {{ $c.behindProxy | quote }}
- name: SECURE_SSL_REDIRECT
  value: {{ $c.secure | quote }}
- name: SECURE_COOKIES
  value: {{ $c.secure | quote }}
- name: TIME_ZONE
  value: {{ $c.timeZone | quote }}
- name: LOG_LEVEL
  value: {{ $c.logLevel | quote }}
- name: KUBE_USER_CLUSTER_ROLE_PREFIX
  value: {{ include "ephemera.userClusterRolePrefix" . | quote }}
{{- range $name, $value := $c.extraEnv }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* Restricted Pod Security Standard: non-root 10001, no privilege escalation, read-only root. */}}
{{- define "ephemera.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "ephemera.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
A Deployment for one process. Arguments: root, component, values (web/worker/...),
serviceAccount, automount (bool), extraEnv (list), ports/probes (yaml strings).
*/}}
{{- define "ephemera.deployment" -}}
{{- $root := .root -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "ephemera.fullname" $root }}-{{ .component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ephemera.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  replicas: {{ .values.replicas }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "ephemera.selector" (dict "root" $root "component" .component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "ephemera.labels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ .component }}
      {{- with $root.Values.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ .serviceAccount }}
      automountServiceAccountToken: {{ .automount }}
      enableServiceLinks: false
      securityContext:
        {{- include "ephemera.podSecurityContext" $root | nindent 8 }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if .values.affinity }}
      affinity:
        {{- toYaml .values.affinity | nindent 8 }}
      {{- else }}
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels:
                    {{- include "ephemera.selector" (dict "root" $root "component" .component) | nindent 20 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "ephemera.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: [{{ .component | quote }}]
          env:
            {{- include "ephemera.env" $root | nindent 12 }}
            {{- with .extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- with .ports }}
          ports:
            {{- . | nindent 12 }}
          {{- end }}
          {{- with .probes }}
          {{- . | nindent 10 }}
          {{- end }}
          resources:
            {{- toYaml .values.resources | nindent 12 }}
          securityContext:
            {{- include "ephemera.containerSecurityContext" $root | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 256Mi
{{- end -}}
