terraform {
  # 1.5: `check` blocks and stable `optional()` object attributes.
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.x: target-tracking policies with metric math (`metrics` blocks) and
      # `aws_vpc_security_group_egress_rule`. 6.x changes the provider's region
      # handling; move deliberately.
      version = ">= 5.60.0, < 6.0.0"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge({ "app" = "crossdock", "crossdock:stack" = var.name }, var.tags)
  }
}
