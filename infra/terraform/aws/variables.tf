# ---------------------------------------------------------------------------
# Where and what
# ---------------------------------------------------------------------------

variable "name" {
  description = "Name of this migration stack; prefixes every resource (queue, roles, fleet). Lowercase letters, digits and '-'."
  type        = string
  default     = "crossdock"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name must be 2-31 characters of a-z, 0-9 and '-', starting with a letter."
  }
}

variable "region" {
  description = "AWS region of the DynamoDB tables, the dump bucket and the queue."
  type        = string
}

variable "tags" {
  description = "Extra tags for every resource (merged into the provider's default_tags)."
  type        = map(string)
  default     = {}
}

variable "source_bucket" {
  description = "Existing S3 bucket the exporter dumps into (the pipeline file's [source] bucket). This stack does not create it: dump buckets usually fall under an organisation's bucket module (logging, replication, retention). Its notification configuration IS managed here, and S3 allows only one per bucket: merge any existing notifications into this stack first."
  type        = string
}

variable "dump_prefix" {
  description = "Key prefix of the dumps inside the bucket: empty, or ending with '/' (the pipeline file's [source] prefix). Events, exporter writes and relay reads are limited to it."
  type        = string
  default     = ""

  validation {
    condition     = var.dump_prefix == "" || endswith(var.dump_prefix, "/")
    error_message = "dump_prefix must be empty or end with '/'."
  }
}

variable "tables" {
  description = "DynamoDB table names the exporter may read and whose read capacity it may raise (every [[tables]] name of the pipeline file)."
  type        = list(string)

  validation {
    condition     = length(var.tables) > 0 && alltrue([for t in var.tables : can(regex("^[A-Za-z0-9_.-]{3,255}$", t))])
    error_message = "tables must list at least one DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)."
  }
}

# ---------------------------------------------------------------------------
# Queue
# ---------------------------------------------------------------------------

variable "queue_visibility_timeout_seconds" {
  description = "Default visibility timeout of the event queue. The relay extends it with a heartbeat while a copy runs, so this only bounds how long a message stays hidden after a relay dies without releasing it (SIGKILL, lost instance)."
  type        = number
  default     = 300

  validation {
    condition     = var.queue_visibility_timeout_seconds >= 30 && var.queue_visibility_timeout_seconds <= 43200
    error_message = "queue_visibility_timeout_seconds must be within 30..43200 (SQS allows at most 12 h)."
  }
}

variable "queue_retention_seconds" {
  description = "How long undelivered events are kept on the queue and on the dead-letter queue (max 14 days). Long, so a relay outage over a weekend loses nothing."
  type        = number
  default     = 1209600
}

variable "max_receive_count" {
  description = "Receives before a message moves to the dead-letter queue. A drain (spot notice, scale-in, SIGTERM) releases in-flight messages and each release costs a receive, so keep this well above the number of interruptions a message may see; genuinely bad messages (malformed, non-dump keys) still land in the DLQ within minutes because the relay retries them every --retry-delay seconds."
  type        = number
  default     = 10

  validation {
    condition     = var.max_receive_count >= 3 && var.max_receive_count <= 1000
    error_message = "max_receive_count must be within 3..1000."
  }
}

variable "alarm_actions" {
  description = "ARNs (SNS topics) notified when the dead-letter queue holds messages or the queue's oldest message is older than oldest_message_alarm_seconds. Empty: alarms are created without actions (visible in the console)."
  type        = list(string)
  default     = []
}

variable "oldest_message_alarm_seconds" {
  description = "Alarm when the oldest message on the event queue is older than this: the relay fleet is down or cannot keep up."
  type        = number
  default     = 3600
}

# ---------------------------------------------------------------------------
# Who may act as the exporter and the relay
# ---------------------------------------------------------------------------

variable "exporter_trusted_role_arns" {
  description = "IAM role ARNs allowed to assume the exporter role (the CI runner's role, an operator's SSO role). Empty: only the EKS service account below, if set."
  type        = list(string)
  default     = []
}

variable "eks_oidc_provider_arn" {
  description = "ARN of an EKS cluster's IAM OIDC provider (IRSA). When set, the Kubernetes service accounts below may assume the exporter and relay roles (infra/k8s). Empty: no Kubernetes trust."
  type        = string
  default     = ""
}

variable "k8s_namespace" {
  description = "Kubernetes namespace of the crossdock workloads (IRSA trust)."
  type        = string
  default     = "crossdock"
}

variable "k8s_exporter_service_account" {
  description = "Kubernetes service account of the export Job (IRSA trust)."
  type        = string
  default     = "crossdock-export"
}

variable "k8s_relay_service_account" {
  description = "Kubernetes service account of the relay Deployment (IRSA trust)."
  type        = string
  default     = "crossdock-relay"
}

# ---------------------------------------------------------------------------
# Relay fleet (EC2 spot, auto-scaling group)
# ---------------------------------------------------------------------------

variable "relay_fleet_enabled" {
  description = "Create the EC2 spot relay fleet. Set false when the relay runs on Kubernetes (infra/k8s) instead; the queue and roles are created either way."
  type        = bool
  default     = true
}

variable "vpc_id" {
  description = "VPC of the relay fleet. Required when relay_fleet_enabled."
  type        = string
  default     = ""
}

variable "subnet_ids" {
  description = "Private subnets (one per availability zone, more zones = more spot pools) for the relay fleet. They need outbound HTTPS to S3, SQS, STS and Google APIs (NAT gateway, plus an S3 gateway endpoint to keep dump reads off the NAT)."
  type        = list(string)
  default     = []
}

variable "relay_instance_types" {
  description = "Instance types the spot fleet may use; several similar sizes widen the spot pools. Compression is CPU-bound: compute-optimised types with 4-8 vCPUs suit one relay process."
  type        = list(string)
  default     = ["c6i.xlarge", "c6a.xlarge", "c5.xlarge", "c5a.xlarge", "m6i.xlarge", "m6a.xlarge"]
}

variable "relay_ami_id" {
  description = "AMI of the relay instances. Empty: the latest official Debian 12 (bookworm) amd64 AMI, which matches the glibc of the release build (Dockerfile: rust:1.95-bookworm)."
  type        = string
  default     = ""
}

variable "relay_root_volume_gb" {
  description = "Root volume size of a relay instance. The relay streams (nothing is staged on disk); the volume holds the OS and logs."
  type        = number
  default     = 16
}

variable "relay_min_size" {
  description = "Fewest relay instances. At least 1: the target-tracking policy divides the backlog by the number of in-service instances."
  type        = number
  default     = 1

  validation {
    condition     = var.relay_min_size >= 1
    error_message = "relay_min_size must be at least 1 (backlog-per-instance scaling cannot start from zero); set relay_fleet_enabled = false to have no fleet."
  }
}

variable "relay_max_size" {
  description = "Most relay instances (see `crossdock plan` for the number the deadline needs)."
  type        = number
  default     = 20
}

variable "relay_target_backlog_per_instance" {
  description = "Target of the queue-depth scaling: visible messages per in-service instance. One message is one dump file (≤ 128 MiB by default); an instance with --concurrency C that copies a part in S seconds clears C/S messages a second, so target ≈ acceptable lag (s) × C / S."
  type        = number
  default     = 40
}

variable "crossdock_download_url" {
  description = "HTTPS URL of the crossdock Linux x86_64 binary installed on relay instances (a release asset, or the binary extracted from the container image and published where instances can fetch it)."
  type        = string
  default     = ""

  validation {
    condition     = var.crossdock_download_url == "" || startswith(var.crossdock_download_url, "https://")
    error_message = "crossdock_download_url must be an https:// URL."
  }
}

variable "crossdock_sha256" {
  description = "SHA-256 (hex) of the binary at crossdock_download_url; user data refuses a binary that does not match."
  type        = string
  default     = ""

  validation {
    condition     = var.crossdock_sha256 == "" || can(regex("^[0-9a-f]{64}$", var.crossdock_sha256))
    error_message = "crossdock_sha256 must be 64 lowercase hex digits."
  }
}

variable "relay_pipeline_toml" {
  description = "Text of the pipeline file (e.g. file(\"../../../pipelines/production.toml\")): the relay reads its [source] bucket, prefix and region and its [relay] bucket, codec and level from it, written to /etc/crossdock/pipeline.toml on each instance. Its [source] bucket and prefix must be source_bucket and dump_prefix. The relay needs none of the targets' $${VAR} values."
  type        = string
  default     = ""
}

variable "relay_concurrency" {
  description = "--concurrency of each relay process: files copied at once. About the instance's vCPUs for zstd; compression threads are shared."
  type        = number
  default     = 4
}

variable "relay_extra_args" {
  description = "Further `crossdock relay` flags, one list element per word (e.g. [\"--chunk-mib\", \"16\"])."
  type        = list(string)
  default     = []
}

variable "relay_metrics_port" {
  description = "Port of the relay's /metrics and /healthz (--metrics-addr 0.0.0.0:PORT). Reachable only from metrics_source_security_group_ids."
  type        = number
  default     = 9898
}

variable "metrics_source_security_group_ids" {
  description = "Security groups (Prometheus, the load balancer of a scraper) allowed to reach the relay's metrics port. Empty: no inbound rule at all."
  type        = list(string)
  default     = []
}

variable "gcp_credential_config_json" {
  description = "Google external-account (workload identity federation) credential configuration for the relay instances: the gcp stack's `relay_aws_credential_config` output. It holds no secret (it names the pool, provider and service account; AWS credentials come from the instance role). Empty: the relay uses whatever Application Default Credentials the AMI provides."
  type        = string
  default     = ""
}

variable "queue_metrics_reader_role_arns" {
  description = "Roles that may read the event queue's depth (sqs:GetQueueAttributes), e.g. the KEDA operator's IRSA role when the relay runs on Kubernetes (infra/k8s ScaledObject)."
  type        = list(string)
  default     = []
}

variable "relay_on_demand_base_capacity" {
  description = "Relay instances kept on-demand whatever the spot market does (the rest is spot). 0: all spot; raise it if spot capacity is short near a deadline."
  type        = number
  default     = 0
}

# ---------------------------------------------------------------------------
# Dump bucket hardening (bucket.tf)
# ---------------------------------------------------------------------------

variable "manage_dump_bucket_security" {
  description = "Manage the dump bucket's policy (TLS only), default encryption, public-access block and a lifecycle rule aborting incomplete multipart uploads. S3 keeps ONE of each per bucket and this stack then owns it: merge an existing bucket policy through dump_bucket_policy_extra_json and existing lifecycle rules into this stack first, or set false when the organisation's bucket module already manages them."
  type        = bool
  default     = true
}

variable "dump_bucket_policy_extra_json" {
  description = "An existing bucket policy (JSON) whose statements are kept in the policy this stack writes (statement ids must differ from this stack's: DenyInsecureTransport, DenyOldTls). Empty: only this stack's statements."
  type        = string
  default     = ""
}

variable "dump_kms_key_arn" {
  description = "KMS key for the dump bucket's default encryption (SSE-KMS with an S3 bucket key); the exporter and relay roles get the key use they need, through S3 only. Empty: SSE-S3 (AES-256, S3-managed keys)."
  type        = string
  default     = ""

  validation {
    condition     = var.dump_kms_key_arn == "" || can(regex("^arn:[a-z-]+:kms:", var.dump_kms_key_arn))
    error_message = "dump_kms_key_arn must be a KMS key ARN (arn:…:kms:…)."
  }
}

variable "dump_abort_multipart_days" {
  description = "Days after which S3 aborts multipart uploads left incomplete under the dump prefix (an exporter killed mid-part leaves one behind; its parts are billed until aborted). Longer than any single part upload takes."
  type        = number
  default     = 7

  validation {
    condition     = var.dump_abort_multipart_days >= 1 && var.dump_abort_multipart_days <= 365
    error_message = "dump_abort_multipart_days must be between 1 and 365."
  }
}
