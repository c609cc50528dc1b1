{{/* Names, labels and the pieces both worker kinds share. */}}

{{- define "interest-stream.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "interest-stream.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "interest-stream.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "interest-stream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one worker kind: (dict "root" $ "component" "stream"). */}}
{{- define "interest-stream.selector" -}}
app.kubernetes.io/name: {{ include "interest-stream.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "interest-stream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "interest-stream.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The selected embed variant's values (gpu or cpu). */}}
{{- define "interest-stream.embedVariant" -}}
{{- $v := index .Values.embed.variants .Values.embed.variant -}}
{{- if not $v -}}
{{- fail (printf "embed.variant must be one of %s, not %q" (keys .Values.embed.variants | sortAlpha | join ", ") .Values.embed.variant) -}}
{{- end -}}
{{- toYaml $v -}}
{{- end -}}

{{/* image: (dict "root" $ "image" .Values.stream.image) */}}
{{- define "interest-stream.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/*
A worker kind's autoscaling must fit the topic: a consumer group gives each partition to one
member, so replicas past the partition count idle (KEDA also stops there unless told otherwise).
(dict "root" $ "kind" "stream" "max" 12)
*/}}
{{- define "interest-stream.checkPartitions" -}}
{{- if gt (int .max) (int .root.Values.kafka.partitions) -}}
{{- fail (printf "%s maxReplicaCount %d exceeds kafka.partitions %d: the extra workers would get no partition" .kind (int .max) (int .root.Values.kafka.partitions)) -}}
{{- end -}}
{{- end -}}

{{/* KEDA's name for the SASL mechanism. */}}
{{- define "interest-stream.kedaSasl" -}}
{{- $m := dict "PLAIN" "plaintext" "SCRAM-SHA-256" "scram_sha256" "SCRAM-SHA-512" "scram_sha512" -}}
{{- $s := get $m (upper .Values.kafka.saslMechanism) -}}
{{- if not $s -}}
{{- fail (printf "kafka.saslMechanism %q: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512" .Values.kafka.saslMechanism) -}}
{{- end -}}
{{- $s -}}
{{- end -}}

{{- define "interest-stream.saslEnabled" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol -}}true{{- end -}}
{{- end -}}

{{- define "interest-stream.tlsEnabled" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") -}}true{{- end -}}
{{- end -}}

{{/* Whether KEDA needs a TriggerAuthentication (credentials or a CA to trust). */}}
{{- define "interest-stream.kedaAuth" -}}
{{- if or (and (include "interest-stream.saslEnabled" .) .Values.kafka.credentials.existingSecret) (and (include "interest-stream.tlsEnabled" .) .Values.kafka.tls.existingSecret) -}}true{{- end -}}
{{- end -}}

{{/* Environment from Secrets, shared by both kinds (values never land in the manifests). */}}
{{- define "interest-stream.secretEnv" -}}
{{- if and (include "interest-stream.saslEnabled" .) .Values.kafka.credentials.existingSecret }}
- name: INTEREST_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.credentials.existingSecret }}
      key: {{ .Values.kafka.credentials.usernameKey }}
- name: INTEREST_KAFKA_SASL_PASSWORD_FILE
  value: /etc/interest-stream/kafka-credentials/{{ .Values.kafka.credentials.passwordKey }}
{{- end }}
{{- if and (include "interest-stream.tlsEnabled" .) .Values.kafka.tls.existingSecret }}
- name: INTEREST_KAFKA_SSL_CAFILE
  value: /etc/interest-stream/kafka-tls/{{ .Values.kafka.tls.caKey }}
{{- if .Values.kafka.tls.certKey }}
- name: INTEREST_KAFKA_SSL_CERTFILE
  value: /etc/interest-stream/kafka-tls/{{ .Values.kafka.tls.certKey }}
- name: INTEREST_KAFKA_SSL_KEYFILE
  value: /etc/interest-stream/kafka-tls/{{ required "kafka.tls.keyKey goes with kafka.tls.certKey (mutual TLS)" .Values.kafka.tls.keyKey }}
{{- end }}
{{- end }}
{{- if .Values.qdrant.apiKey.existingSecret }}
- name: INTEREST_QDRANT_API_KEY_FILE
  value: /etc/interest-stream/qdrant-key/{{ .Values.qdrant.apiKey.key }}
{{- end }}
{{- if .Values.qdrant.tls.existingSecret }}
- name: INTEREST_QDRANT_CA_FILE
  value: /etc/interest-stream/qdrant-tls/{{ .Values.qdrant.tls.caKey }}
{{- end }}
{{- end -}}

{{/* Secret files: the Kafka CA (and client certificate), the SASL password, Qdrant's API key
     and CA. Files, not
     environment variables: nothing to leak through a process listing or a crash dump. */}}
{{- define "interest-stream.tlsVolume" -}}
{{- if and (include "interest-stream.tlsEnabled" .) .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- if and (include "interest-stream.saslEnabled" .) .Values.kafka.credentials.existingSecret }}
- name: kafka-credentials
  secret:
    secretName: {{ .Values.kafka.credentials.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.kafka.credentials.passwordKey }}
        path: {{ .Values.kafka.credentials.passwordKey }}
{{- end }}
{{- if .Values.qdrant.apiKey.existingSecret }}
- name: qdrant-key
  secret:
    secretName: {{ .Values.qdrant.apiKey.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.qdrant.apiKey.key }}
        path: {{ .Values.qdrant.apiKey.key }}
{{- end }}
{{- if .Values.qdrant.tls.existingSecret }}
- name: qdrant-tls
  secret:
    secretName: {{ .Values.qdrant.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "interest-stream.tlsMount" -}}
{{- if and (include "interest-stream.tlsEnabled" .) .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: /etc/interest-stream/kafka-tls
  readOnly: true
{{- end }}
{{- if and (include "interest-stream.saslEnabled" .) .Values.kafka.credentials.existingSecret }}
- name: kafka-credentials
  mountPath: /etc/interest-stream/kafka-credentials
  readOnly: true
{{- end }}
{{- if .Values.qdrant.apiKey.existingSecret }}
- name: qdrant-key
  mountPath: /etc/interest-stream/qdrant-key
  readOnly: true
{{- end }}
{{- if .Values.qdrant.tls.existingSecret }}
- name: qdrant-tls
  mountPath: /etc/interest-stream/qdrant-tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* Pod annotations for annotation-based Prometheus discovery: (dict "root" $ "port" 8766). */}}
{{- define "interest-stream.scrapeAnnotations" -}}
{{- if .root.Values.metrics.annotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}
