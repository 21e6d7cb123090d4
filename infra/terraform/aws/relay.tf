# The relay fleet: a spot auto-scaling group running `crossdock relay` under systemd,
# scaled on the event queue's backlog per instance.
#
# Interruptions never lose work: an SQS message is deleted only after its object is
# durable in GCS. On a spot notice the relay itself drains (it polls IMDS); on
# scale-in or a rebalance replacement the termination lifecycle hook holds the
# instance in Terminating:Wait while a watcher stops the unit (SIGTERM → drain,
# ≤ TimeoutStopSec); whatever is still in flight is released back to the queue.

locals {
  fleet = var.relay_fleet_enabled ? 1 : 0
  # Source bucket → relay bucket, prefix, codec, level and region come from the pipeline
  # file (written to the instance by the user data), as for the Kubernetes relay: the
  # values are typed once, in the pipeline, not again here.
  relay_args = concat(
    ["--queue", aws_sqs_queue.events.url],
    ["--pipeline", "/etc/crossdock/pipeline.toml"],
    ["--concurrency", tostring(var.relay_concurrency)],
    ["--metrics-addr", "0.0.0.0:${var.relay_metrics_port}"],
    var.relay_extra_args,
  )
  # Hook timeout: the unit's TimeoutStopSec (110 s) plus the watcher's poll and slack.
  termination_hook_seconds = 150
}

data "aws_ami" "debian12" {
  count       = var.relay_fleet_enabled && var.relay_ami_id == "" ? 1 : 0
  most_recent = true
  owners      = ["136693071363"] # Debian cloud team

  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }

  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

resource "aws_security_group" "relay" {
  count       = local.fleet
  name        = "${var.name}-relay"
  description = "crossdock relay instances: HTTPS out (S3, SQS, STS, Google APIs); metrics in from the listed scrapers only"
  vpc_id      = var.vpc_id

  lifecycle {
    precondition {
      condition     = var.vpc_id != "" && length(var.subnet_ids) > 0
      error_message = "relay_fleet_enabled needs vpc_id and subnet_ids."
    }
    precondition {
      condition     = var.crossdock_download_url != "" && var.crossdock_sha256 != ""
      error_message = "relay_fleet_enabled needs crossdock_download_url and crossdock_sha256 (the binary the instances install)."
    }
    precondition {
      condition     = trimspace(var.relay_pipeline_toml) != ""
      error_message = "relay_fleet_enabled needs relay_pipeline_toml (the pipeline file's text: the relay's buckets, prefix and codec)."
    }
  }
}

resource "aws_vpc_security_group_egress_rule" "relay_https" {
  count             = local.fleet
  security_group_id = aws_security_group.relay[0].id
  description       = "HTTPS to AWS and Google APIs (S3, SQS, STS, GCS, IAM credentials) and the binary download"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_ingress_rule" "relay_metrics" {
  for_each                     = var.relay_fleet_enabled ? toset(var.metrics_source_security_group_ids) : toset([])
  security_group_id            = aws_security_group.relay[0].id
  description                  = "Prometheus scrape of /metrics and /healthz"
  ip_protocol                  = "tcp"
  from_port                    = var.relay_metrics_port
  to_port                      = var.relay_metrics_port
  referenced_security_group_id = each.value
}

resource "aws_launch_template" "relay" {
  count                  = local.fleet
  name                   = "${var.name}-relay"
  description            = "crossdock relay (systemd unit crossdock-relay.service)"
  image_id               = var.relay_ami_id != "" ? var.relay_ami_id : data.aws_ami.debian12[0].id
  update_default_version = true
  ebs_optimized          = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.relay.arn
  }

  network_interfaces {
    associate_public_ip_address = false
    security_groups             = [aws_security_group.relay[0].id]
    delete_on_termination       = true
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required" # IMDSv2 only; the relay's spot poll uses tokens
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  monitoring {
    enabled = true
  }

  block_device_mappings {
    device_name = "/dev/xvda" # root device of the Debian AMIs
    ebs {
      volume_size           = var.relay_root_volume_gb
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  user_data = base64encode(templatefile("${path.module}/user-data.sh.tftpl", {
    download_url = var.crossdock_download_url
    sha256       = var.crossdock_sha256
    region       = var.region
    relay_args   = join(" ", [for a in local.relay_args : format("'%s'", replace(a, "'", "'\\''"))])
    # Compressed: EC2 user data is limited to 16 KB, and a pipeline lists every table.
    pipeline_b64        = base64gzip(var.relay_pipeline_toml)
    gcp_credentials_b64 = var.gcp_credential_config_json == "" ? "" : base64encode(var.gcp_credential_config_json)
    termination_wait_s  = local.termination_hook_seconds
  }))

  tag_specifications {
    resource_type = "instance"
    tags          = { Name = "${var.name}-relay" }
  }

  tag_specifications {
    resource_type = "volume"
    tags          = { Name = "${var.name}-relay" }
  }
}

resource "aws_autoscaling_group" "relay" {
  count               = local.fleet
  name                = "${var.name}-relay"
  min_size            = var.relay_min_size
  max_size            = var.relay_max_size
  vpc_zone_identifier = var.subnet_ids
  # Replace a spot instance at risk (rebalance recommendation) before it is reclaimed;
  # the old one then goes through the termination hook and drains.
  capacity_rebalance        = true
  health_check_type         = "EC2"
  health_check_grace_period = 120
  default_instance_warmup   = 120
  # GroupInServiceInstances feeds the backlog-per-instance metric below.
  metrics_granularity = "1Minute"
  enabled_metrics     = ["GroupInServiceInstances", "GroupDesiredCapacity", "GroupTerminatingInstances"]

  mixed_instances_policy {
    instances_distribution {
      on_demand_base_capacity                  = var.relay_on_demand_base_capacity
      on_demand_percentage_above_base_capacity = 0
      spot_allocation_strategy                 = "price-capacity-optimized"
    }

    launch_template {
      launch_template_specification {
        launch_template_id = aws_launch_template.relay[0].id
        version            = aws_launch_template.relay[0].latest_version
      }

      dynamic "override" {
        for_each = var.relay_instance_types
        content {
          instance_type = override.value
        }
      }
    }
  }

  initial_lifecycle_hook {
    name                 = "drain"
    lifecycle_transition = "autoscaling:EC2_INSTANCE_TERMINATING"
    heartbeat_timeout    = local.termination_hook_seconds
    default_result       = "CONTINUE"
  }

  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 50
    }
  }

  tag {
    key                 = "Name"
    value               = "${var.name}-relay"
    propagate_at_launch = true
  }

  dynamic "tag" {
    for_each = merge({ "app" = "crossdock", "crossdock:stack" = var.name }, var.tags)
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  lifecycle {
    ignore_changes = [desired_capacity] # owned by the scaling policy
  }
}

# Target tracking on the backlog per instance (AWS's recommended SQS pattern):
# ApproximateNumberOfMessagesVisible / GroupInServiceInstances held at the target.
resource "aws_autoscaling_policy" "relay_backlog" {
  count                     = local.fleet
  name                      = "${var.name}-relay-backlog-per-instance"
  autoscaling_group_name    = aws_autoscaling_group.relay[0].name
  policy_type               = "TargetTrackingScaling"
  estimated_instance_warmup = 120

  target_tracking_configuration {
    target_value = var.relay_target_backlog_per_instance

    customized_metric_specification {
      metrics {
        id          = "visible"
        label       = "messages visible on ${aws_sqs_queue.events.name}"
        return_data = false
        metric_stat {
          metric {
            namespace   = "AWS/SQS"
            metric_name = "ApproximateNumberOfMessagesVisible"
            dimensions {
              name  = "QueueName"
              value = aws_sqs_queue.events.name
            }
          }
          stat = "Sum"
        }
      }

      metrics {
        id          = "in_service"
        label       = "relay instances in service"
        return_data = false
        metric_stat {
          metric {
            namespace   = "AWS/AutoScaling"
            metric_name = "GroupInServiceInstances"
            dimensions {
              name  = "AutoScalingGroupName"
              value = aws_autoscaling_group.relay[0].name
            }
          }
          stat = "Average"
        }
      }

      metrics {
        id          = "backlog_per_instance"
        label       = "visible messages per relay instance"
        expression  = "visible / in_service"
        return_data = true
      }
    }
  }
}
