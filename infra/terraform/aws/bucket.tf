# Hardening of the existing dump bucket (see var.source_bucket: this stack does not
# create it). Dumps are full copies of production tables, so the bucket only speaks
# TLS, encrypts by default, can never become public, and does not keep paying for
# the parts of multipart uploads an interrupted exporter left behind.
#
# Each resource here is the bucket's only one of its kind: applying replaces what the
# bucket had (var.manage_dump_bucket_security says how to merge or opt out).

locals {
  manage_bucket = var.manage_dump_bucket_security
  dump_kms      = var.dump_kms_key_arn != ""
}

resource "aws_s3_bucket_public_access_block" "source" {
  count                   = local.manage_bucket ? 1 : 0
  bucket                  = data.aws_s3_bucket.source.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

data "aws_iam_policy_document" "source_bucket" {
  source_policy_documents = var.dump_bucket_policy_extra_json == "" ? [] : [var.dump_bucket_policy_extra_json]

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [local.source_arn, "${local.source_arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid       = "DenyOldTls"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [local.source_arn, "${local.source_arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }
}

resource "aws_s3_bucket_policy" "source" {
  count  = local.manage_bucket ? 1 : 0
  bucket = data.aws_s3_bucket.source.id
  policy = data.aws_iam_policy_document.source_bucket.json

  # S3 rejects concurrent configuration changes of one bucket; and a policy is
  # checked against the public-access block when it is written.
  depends_on = [aws_s3_bucket_public_access_block.source]
}

resource "aws_s3_bucket_server_side_encryption_configuration" "source" {
  count  = local.manage_bucket ? 1 : 0
  bucket = data.aws_s3_bucket.source.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = local.dump_kms ? "aws:kms" : "AES256"
      kms_master_key_id = local.dump_kms ? var.dump_kms_key_arn : null
    }
    # One KMS data key per bucket instead of one KMS call per object: the exporter
    # writes thousands of parts.
    bucket_key_enabled = local.dump_kms
  }

  depends_on = [aws_s3_bucket_policy.source]
}

resource "aws_s3_bucket_lifecycle_configuration" "source" {
  count  = local.manage_bucket ? 1 : 0
  bucket = data.aws_s3_bucket.source.id

  rule {
    id     = "${var.name}-abort-incomplete-multipart"
    status = "Enabled"

    filter {
      prefix = var.dump_prefix
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = var.dump_abort_multipart_days
    }
  }

  depends_on = [aws_s3_bucket_server_side_encryption_configuration.source]
}
