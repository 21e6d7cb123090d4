# S3 ObjectCreated events of the dump prefix → SQS, with a dead-letter queue.
#
# Every object the exporter writes under the prefix raises one event. `_capacity.json`
# and `_checkpoint/…` cannot be excluded by an S3 filter (one prefix and one suffix per
# rule, rules may not overlap), so the relay receives and ignores them
# (crossdock_relay_ignored_total); they are small and few.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

data "aws_s3_bucket" "source" {
  bucket = var.source_bucket
}

locals {
  account_id       = data.aws_caller_identity.current.account_id
  partition        = data.aws_partition.current.partition
  source_arn       = data.aws_s3_bucket.source.arn
  dump_objects_arn = "${data.aws_s3_bucket.source.arn}/${var.dump_prefix}*"
}

resource "aws_sqs_queue" "events_dlq" {
  name                      = "${var.name}-events-dlq"
  message_retention_seconds = var.queue_retention_seconds
  # SSE-SQS: encrypted at rest with SQS-owned keys, no key policy to manage.
  sqs_managed_sse_enabled = true
}

resource "aws_sqs_queue" "events" {
  name                       = "${var.name}-events"
  visibility_timeout_seconds = var.queue_visibility_timeout_seconds
  message_retention_seconds  = var.queue_retention_seconds
  receive_wait_time_seconds  = 20
  # S3 can publish to SSE-SQS queues (not to queues under the AWS-managed aws/sqs KMS key).
  sqs_managed_sse_enabled = true

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.events_dlq.arn
    maxReceiveCount     = var.max_receive_count
  })
}

# Only the event queue may redrive into the DLQ; the console's "start DLQ redrive"
# (docs/operations.md, DLQ replay) moves messages back to it.
resource "aws_sqs_queue_redrive_allow_policy" "events_dlq" {
  queue_url = aws_sqs_queue.events_dlq.id

  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.events.arn]
  })
}

data "aws_iam_policy_document" "events_queue" {
  statement {
    sid       = "AllowS3EventsFromTheDumpBucket"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.events.arn]

    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [local.source_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }

  dynamic "statement" {
    for_each = length(var.queue_metrics_reader_role_arns) > 0 ? [1] : []
    content {
      sid       = "QueueDepthForAutoscalers"
      effect    = "Allow"
      actions   = ["sqs:GetQueueAttributes"]
      resources = [aws_sqs_queue.events.arn]
      principals {
        type        = "AWS"
        identifiers = var.queue_metrics_reader_role_arns
      }
    }
  }
}

resource "aws_sqs_queue_policy" "events" {
  queue_url = aws_sqs_queue.events.id
  policy    = data.aws_iam_policy_document.events_queue.json
}

# One notification configuration per bucket: this resource owns it.
resource "aws_s3_bucket_notification" "source" {
  bucket = data.aws_s3_bucket.source.id

  queue {
    id            = "${var.name}-dumps"
    queue_arn     = aws_sqs_queue.events.arn
    events        = ["s3:ObjectCreated:*"]
    filter_prefix = var.dump_prefix == "" ? null : var.dump_prefix
  }

  # S3 sends an s3:TestEvent to check it may publish: the policy must exist first.
  # The bucket's other settings (bucket.tf) first too: S3 refuses concurrent
  # configuration changes of one bucket.
  depends_on = [aws_sqs_queue_policy.events, aws_s3_bucket_lifecycle_configuration.source]
}

# ---------------------------------------------------------------------------
# Alarms: anything in the DLQ needs a human; an old message means no relay is working.
# ---------------------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "dlq_not_empty" {
  alarm_name          = "${var.name}-events-dlq-not-empty"
  alarm_description   = "crossdock: S3 events reached the dead-letter queue. See docs/operations.md, 'DLQ replay'."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.events_dlq.name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "oldest_message" {
  alarm_name          = "${var.name}-events-oldest-message"
  alarm_description   = "crossdock: the oldest S3 event on the queue is older than ${var.oldest_message_alarm_seconds} s; the relay fleet is down or too small."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = aws_sqs_queue.events.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = var.oldest_message_alarm_seconds
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
}
