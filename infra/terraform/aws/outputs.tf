output "queue_url" {
  description = "Event queue URL: `crossdock relay --queue` (and the KEDA trigger's queueURL in infra/k8s)."
  value       = aws_sqs_queue.events.url
}

output "queue_arn" {
  description = "Event queue ARN."
  value       = aws_sqs_queue.events.arn
}

output "dlq_url" {
  description = "Dead-letter queue URL (docs/operations.md, DLQ replay)."
  value       = aws_sqs_queue.events_dlq.url
}

output "dlq_arn" {
  description = "Dead-letter queue ARN (the source of a DLQ redrive back to the event queue)."
  value       = aws_sqs_queue.events_dlq.arn
}

output "exporter_role_arn" {
  description = "Role CI assumes to run `crossdock export` (or the IRSA annotation of the export Job's service account)."
  value       = aws_iam_role.exporter.arn
}

output "relay_role_arn" {
  description = "Role of the relay instances (or the IRSA annotation of the relay Deployment's service account)."
  value       = aws_iam_role.relay.arn
}

output "relay_role_name" {
  description = "Relay role name: the gcp stack's aws_relay_role_name (workload identity federation)."
  value       = aws_iam_role.relay.name
}

output "relay_asg_name" {
  description = "Auto-scaling group of the relay fleet (null when relay_fleet_enabled is false)."
  value       = var.relay_fleet_enabled ? aws_autoscaling_group.relay[0].name : null
}

output "relay_command" {
  description = "The command line the relay instances run."
  value       = join(" ", concat(["crossdock", "relay"], local.relay_args))
}
