# The Google side: the landing bucket, `_SUCCESS` notifications on Pub/Sub, and the
# relay and loader identities.

data "google_project" "this" {}

# GCS's own service agent publishes the bucket's notifications.
data "google_storage_project_service_account" "gcs" {}

locals {
  federate_aws = var.aws_account_id != ""
  federate_eks = var.eks_oidc_issuer_url != ""
  federate     = local.federate_aws || local.federate_eks
}

# ---------------------------------------------------------------------------
# Landing bucket
# ---------------------------------------------------------------------------

resource "google_storage_bucket" "landing" {
  #checkov:skip=CKV_GCP_78:Versioning is deliberately off: every object is a reproducible copy of an S3 dump (re-relaying rewrites it from the same source ETag), _SUCCESS is create-only (ifGenerationMatch=0), and the loader's _progress records are rewritten per file; noncurrent versions would only add cost.
  name                        = var.bucket_name
  location                    = var.bucket_location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.bucket_force_destroy

  versioning {
    enabled = false
  }

  dynamic "logging" {
    for_each = var.access_log_bucket == "" ? [] : [var.access_log_bucket]
    content {
      log_bucket        = logging.value
      log_object_prefix = "${var.bucket_name}/"
    }
  }

  dynamic "lifecycle_rule" {
    for_each = var.bucket_delete_after_days > 0 ? [var.bucket_delete_after_days] : []
    content {
      condition {
        age = lifecycle_rule.value
      }
      action {
        type = "Delete"
      }
    }
  }
}

# ---------------------------------------------------------------------------
# `_SUCCESS` notifications
#
# GCS notifications filter by event type and object-name *prefix* only; there is no
# suffix filter. So every OBJECT_FINALIZE under marker_prefix is published (data parts,
# manifests, progress records, ...) and the consumers keep only names ending in
# "/_SUCCESS", as `crossdock load --watch` does (crates/load/src/watch.rs). The volume
# is one small message per landed object. (The Airflow DAG polls GCS instead: several
# per-table sensors on one subscription would take each other's messages, and
# Pub/Sub filters cannot match the table segment of the name.)
# ---------------------------------------------------------------------------

resource "google_pubsub_topic" "objects" {
  #checkov:skip=CKV_GCP_83:Notifications carry only object names and metadata (no table data); Google-managed encryption at rest is sufficient and a CMEK would add a key the GCS service agent must also be granted.
  name                       = "${var.name}-landed-objects"
  message_retention_duration = "604800s" # replay markers for a week (subscription seek)
}

resource "google_pubsub_topic_iam_member" "gcs_publishes" {
  topic  = google_pubsub_topic.objects.id
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

resource "google_storage_notification" "finalize" {
  bucket             = google_storage_bucket.landing.name
  topic              = google_pubsub_topic.objects.id
  payload_format     = "JSON_API_V1"
  event_types        = ["OBJECT_FINALIZE"]
  object_name_prefix = var.marker_prefix == "" ? null : var.marker_prefix
  custom_attributes = {
    "crossdock-stack" = var.name
  }

  depends_on = [google_pubsub_topic_iam_member.gcs_publishes]
}

resource "google_pubsub_subscription" "load_watch" {
  name                       = "${var.name}-load-watch"
  topic                      = google_pubsub_topic.objects.id
  ack_deadline_seconds       = var.subscription_ack_deadline_seconds
  message_retention_duration = "604800s"
  retain_acked_messages      = true # a seek back replays markers after a bad load
  expiration_policy {
    ttl = "" # never expires while a migration is idle
  }
  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }
}

# ---------------------------------------------------------------------------
# Service accounts
#
# Both need roles/storage.objectUser on the bucket, not objectCreator + objectViewer:
#   relay  - patches each object's metadata (source bucket/key/ETag: the provenance
#            that makes redelivered events skip) after the upload: storage.objects.update;
#            re-relays a part whose source changed or whose upload was cut before the
#            patch, overwriting it: storage.objects.delete.
#   loader - rewrites _progress/… records, rejects and _LOADED on a rerun (overwrite =
#            storage.objects.delete).
# Both are granted on this bucket only.
# ---------------------------------------------------------------------------

resource "google_service_account" "relay" {
  account_id   = "${var.name}-relay"
  display_name = "crossdock relay (S3 → GCS, writes _SUCCESS)"
}

resource "google_service_account" "loader" {
  account_id   = "${var.name}-load"
  display_name = "crossdock load (_SUCCESS → Spanner/Bigtable/PostgreSQL)"
}

resource "google_storage_bucket_iam_member" "relay_objects" {
  bucket = google_storage_bucket.landing.name
  role   = "roles/storage.objectUser"
  member = google_service_account.relay.member
}

resource "google_storage_bucket_iam_member" "loader_objects" {
  bucket = google_storage_bucket.landing.name
  role   = "roles/storage.objectUser"
  member = google_service_account.loader.member
}

resource "google_pubsub_subscription_iam_member" "loader_watch" {
  subscription = google_pubsub_subscription.load_watch.id
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.loader.member
}

resource "google_spanner_database_iam_member" "loader" {
  count    = var.spanner_instance != "" && var.spanner_database != "" ? 1 : 0
  instance = var.spanner_instance
  database = var.spanner_database
  # Read/write data and update the schema (CREATE TABLE, CREATE INDEX after the data).
  role   = "roles/spanner.databaseUser"
  member = google_service_account.loader.member
}

resource "google_bigtable_instance_iam_member" "loader" {
  count    = var.bigtable_instance != "" ? 1 : 0
  instance = var.bigtable_instance
  role     = "roles/bigtable.user"
  member   = google_service_account.loader.member
}

resource "google_bigtable_table" "wide_column" {
  for_each      = var.bigtable_instance != "" ? toset(var.bigtable_tables) : toset([])
  name          = each.value
  instance_name = var.bigtable_instance

  column_family {
    family = var.bigtable_column_family
  }
}

# Airflow (Composer) watches the bucket for markers (infra/airflow, GCS sensor).
resource "google_storage_bucket_iam_member" "airflow_viewer" {
  count  = var.airflow_service_account != "" ? 1 : 0
  bucket = google_storage_bucket.landing.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${var.airflow_service_account}"
}

# ---------------------------------------------------------------------------
# Workload identity federation: AWS relay instances and EKS pods, without keys.
# ---------------------------------------------------------------------------

resource "google_iam_workload_identity_pool" "crossdock" {
  count                     = local.federate ? 1 : 0
  workload_identity_pool_id = "${var.name}-pool"
  display_name              = "crossdock (${var.name})"
  description               = "AWS relay instances and EKS pods of the crossdock migration"
}

resource "google_iam_workload_identity_pool_provider" "aws" {
  #checkov:skip=CKV_GCP_125:False positive: the check is about GitHub Actions OIDC issuers and fails on any provider without an oidc block (this is an aws provider). Trust is limited to one AWS account (aws.account_id) and, by attribute_condition, to the relay role.
  count                              = local.federate_aws ? 1 : 0
  workload_identity_pool_id          = google_iam_workload_identity_pool.crossdock[0].workload_identity_pool_id
  workload_identity_pool_provider_id = "aws"
  display_name                       = "AWS ${var.aws_account_id}"

  aws {
    account_id = var.aws_account_id
  }

  attribute_mapping = {
    "google.subject"     = "assertion.arn"
    "attribute.aws_role" = "assertion.arn.contains('assumed-role') ? assertion.arn.extract('assumed-role/{role}/') : ''"
  }
  # Only the relay role of this account, whatever the instance (session name).
  attribute_condition = "attribute.aws_role == '${var.aws_relay_role_name}'"
}

resource "google_service_account_iam_member" "relay_from_aws" {
  count              = local.federate_aws ? 1 : 0
  service_account_id = google_service_account.relay.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principalSet://iam.googleapis.com/${google_iam_workload_identity_pool.crossdock[0].name}/attribute.aws_role/${var.aws_relay_role_name}"
}

resource "google_iam_workload_identity_pool_provider" "eks" {
  count                              = local.federate_eks ? 1 : 0
  workload_identity_pool_id          = google_iam_workload_identity_pool.crossdock[0].workload_identity_pool_id
  workload_identity_pool_provider_id = "eks"
  display_name                       = "EKS service accounts"

  oidc {
    issuer_uri = var.eks_oidc_issuer_url
  }

  attribute_mapping = {
    "google.subject" = "assertion.sub" # system:serviceaccount:NAMESPACE:NAME
  }
  attribute_condition = "assertion.sub.startsWith('system:serviceaccount:${var.k8s_namespace}:')"
}

resource "google_service_account_iam_member" "relay_from_eks" {
  count              = local.federate_eks ? 1 : 0
  service_account_id = google_service_account.relay.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principal://iam.googleapis.com/${google_iam_workload_identity_pool.crossdock[0].name}/subject/system:serviceaccount:${var.k8s_namespace}:crossdock-relay"
}

resource "google_service_account_iam_member" "loader_from_eks" {
  count              = local.federate_eks ? 1 : 0
  service_account_id = google_service_account.loader.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principal://iam.googleapis.com/${google_iam_workload_identity_pool.crossdock[0].name}/subject/system:serviceaccount:${var.k8s_namespace}:crossdock-load"
}

# GKE Workload Identity (relay or loader pods on GKE in this project).
resource "google_service_account_iam_member" "relay_from_gke" {
  count              = var.gke_workload_identity ? 1 : 0
  service_account_id = google_service_account.relay.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project}.svc.id.goog[${var.k8s_namespace}/crossdock-relay]"
}

resource "google_service_account_iam_member" "loader_from_gke" {
  count              = var.gke_workload_identity ? 1 : 0
  service_account_id = google_service_account.loader.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project}.svc.id.goog[${var.k8s_namespace}/crossdock-load]"
}
