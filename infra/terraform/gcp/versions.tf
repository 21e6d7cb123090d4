terraform {
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source = "hashicorp/google"
      # Everything used here is stable across 5.x-7.x (storage, Pub/Sub, IAM,
      # workload identity pools).
      version = ">= 5.40.0, < 8.0.0"
    }
  }
}

provider "google" {
  project = var.project
  region  = var.region

  default_labels = merge({ "app" = "crossdock", "crossdock-stack" = var.name }, var.labels)
}
