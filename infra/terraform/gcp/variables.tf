variable "name" {
  description = "Name of this migration stack; prefixes the topic, subscriptions and service accounts. Lowercase letters, digits and '-'."
  type        = string
  default     = "crossdock"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,18}$", var.name))
    error_message = "name must be 2-19 characters of a-z, 0-9 and '-' (service account IDs are at most 30 characters)."
  }
}

variable "project" {
  description = "Google Cloud project of the landing bucket, Pub/Sub and service accounts."
  type        = string
}

variable "region" {
  description = "Default region of the provider."
  type        = string
}

variable "labels" {
  description = "Extra labels for every labelled resource."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------------------
# Landing bucket
# ---------------------------------------------------------------------------

variable "bucket_name" {
  description = "GCS bucket the relay writes to (the pipeline file's [relay] bucket; by default crossdock uses the S3 bucket's name)."
  type        = string
}

variable "bucket_location" {
  description = "Location of the bucket: the region of the Spanner/Bigtable instances (no cross-region reads during the load)."
  type        = string
}

variable "bucket_delete_after_days" {
  description = "Delete landed objects this many days after creation (lifecycle rule); 0 keeps them. The landing copy is only needed until the loads are verified."
  type        = number
  default     = 0
}

variable "bucket_force_destroy" {
  description = "Let `terraform destroy` delete a non-empty bucket."
  type        = bool
  default     = false
}

variable "access_log_bucket" {
  description = "Existing bucket receiving this bucket's usage logs. Empty: no usage logs (Cloud Audit Logs still record data access if enabled for the project)."
  type        = string
  default     = ""
}

# ---------------------------------------------------------------------------
# Notifications and subscriptions
# ---------------------------------------------------------------------------

variable "marker_prefix" {
  description = "Only objects under this prefix raise notifications (e.g. one batch, \"2026-11-23/\"). Empty: the whole bucket. GCS filters by prefix only, so every finalize under it is published and consumers keep those named .../_SUCCESS."
  type        = string
  default     = ""
}

variable "subscription_ack_deadline_seconds" {
  description = "Ack deadline of the load subscriptions. `crossdock load --watch` acknowledges a marker only after its load succeeds and extends the deadline meanwhile."
  type        = number
  default     = 600
}

variable "airflow_service_account" {
  description = "Email of the service account Airflow runs as (Composer environment). When set it may read the bucket (the DAG's GCS sensors)."
  type        = string
  default     = ""
}

# ---------------------------------------------------------------------------
# Targets (grants only; the instances/databases are not created here)
# ---------------------------------------------------------------------------

variable "spanner_instance" {
  description = "Spanner instance of the relational target ('' if the pipeline uses PostgreSQL or no relational target)."
  type        = string
  default     = ""
}

variable "spanner_database" {
  description = "Spanner database the loader writes (creates tables and indexes in)."
  type        = string
  default     = ""
}

variable "bigtable_instance" {
  description = "Bigtable instance of the wide-column target ('' if none)."
  type        = string
  default     = ""
}

variable "bigtable_tables" {
  description = "Bigtable tables to create for the wide-column route (the loader creates tables only on the emulator; on Cloud Bigtable they must exist). Use the destination names of the tables routed to Bigtable."
  type        = list(string)
  default     = []
}

variable "bigtable_column_family" {
  description = "The single column family crossdock writes (the pipeline file's targets.wide_column.column_family)."
  type        = string
  default     = "d"
}

# ---------------------------------------------------------------------------
# Identities outside Google Cloud (workload identity federation; no keys)
# ---------------------------------------------------------------------------

variable "aws_account_id" {
  description = "AWS account of the relay fleet. When set, the AWS relay role may impersonate the relay service account (workload identity federation), and relay_aws_credential_config is the file the instances use."
  type        = string
  default     = ""
}

variable "aws_relay_role_name" {
  description = "Name of the AWS relay role (the aws stack's relay_role_name output; '<name>-relay')."
  type        = string
  default     = "crossdock-relay"
}

variable "eks_oidc_issuer_url" {
  description = "OIDC issuer URL of an EKS cluster running the relay and/or load pods (infra/k8s). When set, their Kubernetes service accounts may impersonate the relay and loader service accounts."
  type        = string
  default     = ""
}

variable "k8s_namespace" {
  description = "Namespace of the crossdock pods (EKS federation, GKE Workload Identity)."
  type        = string
  default     = "crossdock"
}

variable "gke_workload_identity" {
  description = "Let the Kubernetes service accounts crossdock-relay and crossdock-load of a GKE cluster in this project act as the relay and loader service accounts (GKE Workload Identity)."
  type        = bool
  default     = false
}
