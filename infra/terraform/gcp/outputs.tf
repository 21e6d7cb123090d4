locals {
  sa_impersonation = "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/%s:generateAccessToken"
}

output "bucket" {
  description = "Landing bucket: the pipeline file's [relay] bucket and the DST of the relay's --dst-bucket-map."
  value       = google_storage_bucket.landing.name
}

output "topic" {
  description = "Pub/Sub topic receiving the bucket's OBJECT_FINALIZE notifications."
  value       = google_pubsub_topic.objects.id
}

output "load_watch_subscription" {
  description = "Subscription for `crossdock load --watch` (keeps only .../_SUCCESS)."
  value       = google_pubsub_subscription.load_watch.id
}

output "relay_service_account" {
  description = "Email of the relay's service account."
  value       = google_service_account.relay.email
}

output "loader_service_account" {
  description = "Email of the loader's service account."
  value       = google_service_account.loader.email
}

output "relay_aws_credential_config" {
  description = "External-account credential file for relay instances in AWS (the aws stack's gcp_credential_config_json). No secret: AWS credentials come from the instance role, exchanged through STS for a token of the relay service account."
  value = local.federate_aws ? jsonencode({
    type                              = "external_account"
    audience                          = "//iam.googleapis.com/${google_iam_workload_identity_pool_provider.aws[0].name}"
    subject_token_type                = "urn:ietf:params:aws:token-type:aws4_request"
    token_url                         = "https://sts.googleapis.com/v1/token"
    service_account_impersonation_url = format(local.sa_impersonation, google_service_account.relay.email)
    credential_source = {
      environment_id                 = "aws1"
      region_url                     = "http://169.254.169.254/latest/meta-data/placement/availability-zone"
      url                            = "http://169.254.169.254/latest/meta-data/iam/security-credentials"
      regional_cred_verification_url = "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"
      imdsv2_session_token_url       = "http://169.254.169.254/latest/api/token"
    }
  }) : null
}

output "eks_credential_configs" {
  description = "External-account credential files for EKS pods, keyed by workload (relay, load): mount as a ConfigMap with a projected service-account token at /var/run/secrets/crossdock/token whose audience is eks_token_audience (infra/k8s/overlays/example)."
  value = local.federate_eks ? {
    for w, sa in { relay = google_service_account.relay.email, load = google_service_account.loader.email } : w => jsonencode({
      type                              = "external_account"
      audience                          = "//iam.googleapis.com/${google_iam_workload_identity_pool_provider.eks[0].name}"
      subject_token_type                = "urn:ietf:params:oauth:token-type:jwt"
      token_url                         = "https://sts.googleapis.com/v1/token"
      service_account_impersonation_url = format(local.sa_impersonation, sa)
      credential_source = {
        file = "/var/run/secrets/crossdock/token"
      }
    })
  } : null
}

output "eks_token_audience" {
  description = "Audience of the projected service-account token EKS pods present to Google STS."
  value       = local.federate_eks ? "https://iam.googleapis.com/${google_iam_workload_identity_pool_provider.eks[0].name}" : null
}
