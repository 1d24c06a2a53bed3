{{/* Names ------------------------------------------------------------------------------ */}}

{{- define "sedna.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sedna.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>", e.g. include "sedna.component" (list . "gm") */}}
{{- define "sedna.component" -}}
{{- $ctx := index . 0 -}}
{{- printf "%s-%s" (include "sedna.fullname" $ctx | trunc 50 | trimSuffix "-") (index . 1) -}}
{{- end -}}

{{- define "sedna.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sedna.component" (list . "gm")) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels ----------------------------------------------------------------------------- */}}

{{- define "sedna.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "sedna.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sedna
{{- end -}}

{{/* include "sedna.componentLabels" (list . "gm") */}}
{{- define "sedna.componentLabels" -}}
{{ include "sedna.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "sedna.selectorLabels" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: {{ include "sedna.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Images ----------------------------------------------------------------------------- */}}

{{/* include "sedna.image" (list . "gm" .Values.gm.image) */}}
{{- define "sedna.image" -}}
{{- $ctx := index . 0 -}}
{{- $service := index . 1 -}}
{{- $override := index . 2 -}}
{{- $repo := $override.repository | default (printf "%s/%s%s" $ctx.Values.image.registry $ctx.Values.image.repositoryPrefix $service) -}}
{{- $tag := $override.tag | default $ctx.Values.image.tag | default $ctx.Chart.AppVersion -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{/* Addresses ---------------------------------------------------------------------------- */}}

{{- define "sedna.gmHost" -}}
{{- printf "%s.%s.svc" (include "sedna.component" (list . "gm")) .Release.Namespace -}}
{{- end -}}

{{- define "sedna.gmAddress" -}}
{{- .Values.lc.gmAddress | default (printf "%s:%d" (include "sedna.gmHost" .) (int .Values.gm.grpcPort)) -}}
{{- end -}}

{{- define "sedna.kbServer" -}}
{{- if .Values.gm.kbServer -}}
{{- .Values.gm.kbServer -}}
{{- else if .Values.kb.enabled -}}
{{- printf "http://%s.%s.svc:%d" (include "sedna.component" (list . "kb")) .Release.Namespace (int .Values.kb.grpcPort) -}}
{{- end -}}
{{- end -}}

{{- define "sedna.lcServer" -}}
{{- .Values.gm.lcServer | default (printf "http://localhost:%d" (int .Values.lc.httpPort)) -}}
{{- end -}}

{{/* Secrets ------------------------------------------------------------------------------ */}}

{{- define "sedna.postgresqlSecretName" -}}
{{- .Values.externalPostgresql.existingSecret | default (include "sedna.component" (list . "postgresql")) -}}
{{- end -}}

{{- define "sedna.redisSecretName" -}}
{{- .Values.externalRedis.existingSecret | default (include "sedna.component" (list . "redis")) -}}
{{- end -}}

{{- define "sedna.s3SecretName" -}}
{{- .Values.externalS3.existingSecret | default (include "sedna.component" (list . "s3-keys")) -}}
{{- end -}}

{{- define "sedna.tlsSecretName" -}}
{{- .Values.tls.existingSecret | default (include "sedna.component" (list . "tls")) -}}
{{- end -}}

{{- define "sedna.apiTokensSecretName" -}}
{{- .Values.gm.apiTokens.existingSecret | default (include "sedna.component" (list . "api-tokens")) -}}
{{- end -}}

{{- define "sedna.gmNodeTokensSecretName" -}}
{{- .Values.nodeTokens.existingGmSecret | default (include "sedna.component" (list . "node-tokens")) -}}
{{- end -}}

{{/* The nodes with a token, sorted: from nodeTokens.tokens, or nodeTokens.nodes with existing
Secrets. */}}
{{- define "sedna.tokenNodes" -}}
{{- if .Values.nodeTokens.existingSecretPrefix -}}
{{- toJson (sortAlpha .Values.nodeTokens.nodes) -}}
{{- else -}}
{{- toJson (sortAlpha (keys .Values.nodeTokens.tokens)) -}}
{{- end -}}
{{- end -}}

{{/* include "sedna.nodeTokenSecretName" (list . "edge-1") */}}
{{- define "sedna.nodeTokenSecretName" -}}
{{- $ctx := index . 0 -}}
{{- $node := index . 1 -}}
{{- if $ctx.Values.nodeTokens.existingSecretPrefix -}}
{{- printf "%s%s" $ctx.Values.nodeTokens.existingSecretPrefix $node -}}
{{- else -}}
{{- printf "%s-%s" (include "sedna.component" (list $ctx "node-token")) $node | trunc 253 -}}
{{- end -}}
{{- end -}}

{{/* Environment of a PostgreSQL URL: SEDNA_PG_PASSWORD then the variable NAME holding the URL.
include "sedna.postgresqlEnv" (list . "SEDNA_GM_HUB_STATE_URL") */}}
{{- define "sedna.postgresqlEnv" -}}
{{- $ctx := index . 0 -}}
{{- $var := index . 1 -}}
{{- $pg := $ctx.Values.externalPostgresql -}}
{{- if and $pg.existingSecret $pg.existingSecretUrlKey }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $pg.existingSecret }}
      key: {{ $pg.existingSecretUrlKey }}
{{- else }}
- name: SEDNA_PG_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "sedna.postgresqlSecretName" $ctx }}
      key: {{ ternary $pg.existingSecretPasswordKey "password" (not (empty $pg.existingSecret)) }}
- name: {{ $var }}
  value: {{ printf "postgresql://%s:$(SEDNA_PG_PASSWORD)@%s:%d/%s%s" $pg.user $pg.host (int $pg.port) $pg.database (ternary (printf "?sslmode=%s" $pg.sslmode) "" (not (empty $pg.sslmode))) | quote }}
{{- end }}
{{- end -}}

{{/* Environment of the external connections every Sedna service gets. */}}
{{- define "sedna.connectionEnv" -}}
{{- if .Values.externalRedis.enabled }}
{{- $r := .Values.externalRedis }}
{{- /* The aggregator's names: the URL carries no password, REDIS_PASSWORD does. */}}
- name: REDIS_URL
  value: {{ printf "%s://%s:%d/%d" ($r.tls | ternary "rediss" "redis") $r.host (int $r.port) (int $r.db) | quote }}
{{- if or $r.password $r.existingSecret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "sedna.redisSecretName" . }}
      key: {{ ternary $r.existingSecretPasswordKey "password" (not (empty $r.existingSecret)) }}
{{- end }}
{{- end }}
{{- if .Values.externalS3.enabled }}
- name: S3_ENDPOINT_URL
  value: {{ include "sedna.s3EndpointUrl" . | quote }}
- name: ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "sedna.s3SecretName" . }}
      key: ACCESS_KEY_ID
- name: SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "sedna.s3SecretName" . }}
      key: SECRET_ACCESS_KEY
{{- end }}
{{- end -}}

{{- define "sedna.s3EndpointUrl" -}}
{{- $e := .Values.externalS3.endpoint -}}
{{- if contains "://" $e -}}
{{- $e -}}
{{- else -}}
{{- printf "%s://%s" (.Values.externalS3.useHttps | ternary "https" "http") $e -}}
{{- end -}}
{{- end -}}

{{/* Pods -------------------------------------------------------------------------------- */}}

{{- define "sedna.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}

{{/* gRPC-health probes (TCP under TLS: kubelet's gRPC probe speaks plaintext only).
include "sedna.probes" (list . port .Values.gm) */}}
{{- define "sedna.probes" -}}
{{- $ctx := index . 0 -}}
{{- $port := index . 1 -}}
{{- $component := index . 2 -}}
{{- $check := dict "grpc" (dict "port" (int $port)) -}}
{{- if $ctx.Values.tls.enabled -}}
{{- $check = dict "tcpSocket" (dict "port" (int $port)) -}}
{{- end }}
livenessProbe:
  {{- toYaml (merge (deepCopy $check) $component.livenessProbe) | nindent 2 }}
readinessProbe:
  {{- toYaml (merge (deepCopy $check) $component.readinessProbe) | nindent 2 }}
{{- end -}}

{{/* The settings every service's config file starts with. include "sedna.baseConfig" (list . grpcPort metricsPort) */}}
{{- define "sedna.baseConfig" -}}
{{- $ctx := index . 0 -}}
{{- dict "host" "0.0.0.0" "port" (int (index . 1)) "metrics_host" "0.0.0.0" "metrics_port" (int (index . 2)) "log_level" $ctx.Values.logLevel "log_format" $ctx.Values.logFormat | toYaml -}}
{{- end -}}

{{/* Fail early on combinations that cannot work. */}}
{{- define "sedna.validate" -}}
{{- if and (eq .Values.gm.hubState.type "postgresql") (not (or .Values.externalPostgresql.host .Values.externalPostgresql.existingSecretUrlKey)) -}}
{{- fail "gm.hubState.type=postgresql needs externalPostgresql.host (or externalPostgresql.existingSecret with existingSecretUrlKey)" -}}
{{- end -}}
{{- if and .Values.kb.enabled (eq .Values.kb.database.type "postgresql") (not (or .Values.externalPostgresql.host .Values.externalPostgresql.existingSecretUrlKey)) -}}
{{- fail "kb.database.type=postgresql needs externalPostgresql.host (or externalPostgresql.existingSecret with existingSecretUrlKey)" -}}
{{- end -}}
{{- if and .Values.externalPostgresql.existingSecretUrlKey (not .Values.externalPostgresql.existingSecret) -}}
{{- fail "externalPostgresql.existingSecretUrlKey needs externalPostgresql.existingSecret" -}}
{{- end -}}
{{- if and .Values.externalRedis.enabled (not .Values.externalRedis.host) -}}
{{- fail "externalRedis.enabled needs externalRedis.host" -}}
{{- end -}}
{{- if and .Values.externalS3.enabled (not .Values.externalS3.endpoint) -}}
{{- fail "externalS3.enabled needs externalS3.endpoint" -}}
{{- end -}}
{{- if and .Values.externalS3.enabled (not .Values.externalS3.existingSecret) (not (and .Values.externalS3.accessKeyId .Values.externalS3.secretAccessKey)) -}}
{{- fail "externalS3.enabled needs externalS3.existingSecret or both externalS3.accessKeyId and externalS3.secretAccessKey" -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) (not (and .Values.tls.cert .Values.tls.key .Values.tls.ca)) -}}
{{- fail "tls.enabled needs tls.existingSecret or all of tls.cert, tls.key and tls.ca" -}}
{{- end -}}
{{- if and .Values.gm.apiTokens.enabled (not .Values.gm.apiTokens.existingSecret) (not .Values.gm.apiTokens.tokens) -}}
{{- fail "gm.apiTokens.enabled needs gm.apiTokens.tokens or gm.apiTokens.existingSecret" -}}
{{- end -}}
{{- if .Values.nodeTokens.enabled -}}
{{- if .Values.nodeTokens.existingSecretPrefix -}}
{{- if not (and .Values.nodeTokens.nodes .Values.nodeTokens.existingGmSecret) -}}
{{- fail "nodeTokens.existingSecretPrefix needs nodeTokens.nodes and nodeTokens.existingGmSecret" -}}
{{- end -}}
{{- else if not .Values.nodeTokens.tokens -}}
{{- fail "nodeTokens.enabled needs nodeTokens.tokens (node: token) or nodeTokens.existingSecretPrefix" -}}
{{- end -}}
{{- end -}}
{{- end -}}
