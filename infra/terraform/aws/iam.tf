# Least-privilege roles for the two AWS-side phases.
#
#   exporter: DescribeTable/UpdateTable/Scan on the listed tables, the autoscaling
#             MinCapacity raise/restore (DynamoDB table read capacity only), and writes
#             under the dump prefix (parts, manifests, checkpoints, the capacity lease;
#             DeleteObject removes an orphan part on --resume; HeadBucket checks the
#             bucket exists).
#   relay:    consume the event queue, read the dumps. ListBucket is there so a
#             missing object answers 404 (not 403) and the relay can tell
#             "deleted since the event" from "forbidden".
#
# s3:ListBucket is granted twice, on purpose. Listings must name a prefix inside the
# dumps (StringLike on s3:prefix). HeadBucket, and S3's "404 rather than 403 for a
# missing key" decision, are s3:ListBucket requests that carry no s3:prefix at all:
# a StringLike on an absent key is false, so they need their own statement (Null).
# IAM cannot tell those apart from a listing that omits the prefix, so both roles can
# still list key NAMES bucket-wide (never read objects outside the prefix): give
# crossdock a bucket of its own when other keys' names are sensitive.

locals {
  table_arns = [for t in var.tables : "arn:${local.partition}:dynamodb:${var.region}:${local.account_id}:table/${t}"]
  irsa       = var.eks_oidc_provider_arn != ""
  # "arn:aws:iam::123:oidc-provider/oidc.eks.REGION.amazonaws.com/id/XYZ" → "oidc.eks…/id/XYZ"
  oidc_issuer = local.irsa ? element(split("oidc-provider/", var.eks_oidc_provider_arn), 1) : ""
}

# ---------------------------------------------------------------------------
# Exporter
# ---------------------------------------------------------------------------

data "aws_iam_policy_document" "exporter_trust" {
  dynamic "statement" {
    for_each = length(var.exporter_trusted_role_arns) > 0 ? [1] : []
    content {
      sid     = "CiAndOperators"
      actions = ["sts:AssumeRole", "sts:TagSession"]
      principals {
        type        = "AWS"
        identifiers = var.exporter_trusted_role_arns
      }
    }
  }

  dynamic "statement" {
    for_each = local.irsa ? [1] : []
    content {
      sid     = "KubernetesExportJob"
      actions = ["sts:AssumeRoleWithWebIdentity"]
      principals {
        type        = "Federated"
        identifiers = [var.eks_oidc_provider_arn]
      }
      condition {
        test     = "StringEquals"
        variable = "${local.oidc_issuer}:sub"
        values   = ["system:serviceaccount:${var.k8s_namespace}:${var.k8s_exporter_service_account}"]
      }
      condition {
        test     = "StringEquals"
        variable = "${local.oidc_issuer}:aud"
        values   = ["sts.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role" "exporter" {
  name                 = "${var.name}-exporter"
  description          = "crossdock export: scan the listed DynamoDB tables into s3://${var.source_bucket}/${var.dump_prefix}, raising and restoring their read capacity."
  assume_role_policy   = data.aws_iam_policy_document.exporter_trust.json
  max_session_duration = 43200 # a large table's export runs for hours

  lifecycle {
    precondition {
      condition     = length(var.exporter_trusted_role_arns) > 0 || local.irsa
      error_message = "Nobody could assume the exporter role: set exporter_trusted_role_arns and/or eks_oidc_provider_arn."
    }
  }
}

data "aws_iam_policy_document" "exporter" {
  statement {
    sid       = "ReadAndResizeTheListedTables"
    actions   = ["dynamodb:DescribeTable", "dynamodb:Scan", "dynamodb:UpdateTable"]
    resources = local.table_arns
  }

  statement {
    sid = "ReadAutoscalingSettings"
    # Describe* supports no resource-level permissions: "*" is the only valid resource.
    actions   = ["application-autoscaling:DescribeScalableTargets"]
    resources = ["*"]
  }

  statement {
    sid = "RaiseAndRestoreMinCapacity"
    # A scalable target's ARN ends in a random ID, and Application Auto Scaling has no
    # condition key for the resource ID ("table/NAME"), so the grant is narrowed in
    # two ways instead: the conditions below allow only DynamoDB table read capacity
    # (no ECS service, no Lambda concurrency, no other dimension); and Application
    # Auto Scaling checks that the caller itself may dynamodb:DescribeTable and
    # dynamodb:UpdateTable the table it registers, which this role may only for the
    # listed tables (ReadAndResizeTheListedTables).
    actions   = ["application-autoscaling:RegisterScalableTarget"]
    resources = ["arn:${local.partition}:application-autoscaling:${var.region}:${local.account_id}:scalable-target/*"]
    condition {
      test     = "StringEquals"
      variable = "application-autoscaling:service-namespace"
      values   = ["dynamodb"]
    }
    condition {
      test     = "StringEquals"
      variable = "application-autoscaling:scalable-dimension"
      values   = ["dynamodb:table:ReadCapacityUnits"]
    }
  }

  statement {
    sid       = "ListTheDumpPrefix"
    actions   = ["s3:ListBucket"]
    resources = [local.source_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.dump_prefix}*"]
    }
  }

  statement {
    sid = "HeadBucketAndMissingKeys404"
    # Requests without s3:prefix: HeadBucket (the exporter's bucket check) and the
    # 404 for a checkpoint or lease that does not exist yet (see the top of the file).
    actions   = ["s3:ListBucket"]
    resources = [local.source_arn]
    condition {
      test     = "Null"
      variable = "s3:prefix"
      values   = ["true"]
    }
  }

  statement {
    sid       = "WriteDumpsLeasesAndCheckpoints"
    actions   = ["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = [local.dump_objects_arn]
  }

  dynamic "statement" {
    for_each = local.dump_kms ? [1] : []
    content {
      sid = "EncryptTheDumps"
      # GenerateDataKey to write; Decrypt to read checkpoints and leases back and to
      # complete multipart uploads. Only through S3.
      actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
      resources = [var.dump_kms_key_arn]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["s3.${var.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "exporter" {
  name   = "crossdock-export"
  role   = aws_iam_role.exporter.id
  policy = data.aws_iam_policy_document.exporter.json
}

# ---------------------------------------------------------------------------
# Relay
# ---------------------------------------------------------------------------

data "aws_iam_policy_document" "relay_trust" {
  statement {
    sid     = "RelayInstances"
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }

  dynamic "statement" {
    for_each = local.irsa ? [1] : []
    content {
      sid     = "KubernetesRelayDeployment"
      actions = ["sts:AssumeRoleWithWebIdentity"]
      principals {
        type        = "Federated"
        identifiers = [var.eks_oidc_provider_arn]
      }
      condition {
        test     = "StringEquals"
        variable = "${local.oidc_issuer}:sub"
        values   = ["system:serviceaccount:${var.k8s_namespace}:${var.k8s_relay_service_account}"]
      }
      condition {
        test     = "StringEquals"
        variable = "${local.oidc_issuer}:aud"
        values   = ["sts.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role" "relay" {
  # The gcp stack's workload identity pool trusts this exact role name.
  name               = "${var.name}-relay"
  description        = "crossdock relay: consume ${aws_sqs_queue.events.name} and read the dumps it names."
  assume_role_policy = data.aws_iam_policy_document.relay_trust.json
}

data "aws_iam_policy_document" "relay" {
  statement {
    sid = "ConsumeTheEventQueue"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
    ]
    resources = [aws_sqs_queue.events.arn]
  }

  statement {
    sid       = "ReadTheDumps"
    actions   = ["s3:GetObject"]
    resources = [local.dump_objects_arn]
  }

  statement {
    sid = "MissingObjectsAnswer404"
    # S3 answers 404 for a missing key only to callers with s3:ListBucket; that
    # check carries no s3:prefix (see the top of the file).
    actions   = ["s3:ListBucket"]
    resources = [local.source_arn]
    condition {
      test     = "Null"
      variable = "s3:prefix"
      values   = ["true"]
    }
  }

  statement {
    sid       = "ListTheDumpPrefix"
    actions   = ["s3:ListBucket"]
    resources = [local.source_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.dump_prefix}*"]
    }
  }

  dynamic "statement" {
    for_each = local.dump_kms ? [1] : []
    content {
      sid       = "DecryptTheDumps"
      actions   = ["kms:Decrypt"]
      resources = [var.dump_kms_key_arn]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["s3.${var.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "relay" {
  name   = "crossdock-relay"
  role   = aws_iam_role.relay.id
  policy = data.aws_iam_policy_document.relay.json
}

resource "aws_iam_instance_profile" "relay" {
  name = "${var.name}-relay"
  role = aws_iam_role.relay.name
}
