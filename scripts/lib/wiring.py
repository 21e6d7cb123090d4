"""S3 bucket → SQS queue wiring on the local stack, as infra/terraform/aws sets it up:
a queue with a dead-letter queue after 5 receives, and the bucket's ObjectCreated
notification sent to it. The demo and the benchmarks all wire through here.

    wiring.py BUCKET QUEUE      creates the bucket (if absent) and queues, wires them,
                                prints the queue URL
"""
import json
import os
import sys

import boto3

REGION = os.environ.get("AWS_REGION", "us-east-1")


def clients():
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    return (boto3.client("s3", endpoint_url=endpoint, region_name=REGION),
            boto3.client("sqs", endpoint_url=endpoint, region_name=REGION))


def queue(sqs, name):
    """The queue `name` with its DLQ `name-dlq`; returns (url, arn)."""
    dlq = sqs.create_queue(QueueName=name + "-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}),
    })
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def notify(s3, bucket, queue_arn):
    """Every ObjectCreated event of `bucket` goes to the queue."""
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}],
    })


def create_bucket(s3, bucket):
    try:
        s3.create_bucket(Bucket=bucket)
    except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        pass


def wire(bucket, name):
    """Bucket (if absent), queue + DLQ and the notification; returns the queue URL."""
    s3, sqs = clients()
    create_bucket(s3, bucket)
    url, arn = queue(sqs, name)
    notify(s3, bucket, arn)
    return url


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(wire(sys.argv[1], sys.argv[2]))
