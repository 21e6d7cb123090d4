//! The table's change streams as the export records them in `_schema.json`, so
//! `crossdock sync` can replay what changed while the export, relay and load ran.
//! Pure functions of DescribeTable (and DescribeKinesisStreamingDestination) answers.

use aws_sdk_dynamodb::types::{DestinationStatus, KinesisDataStreamDestination, TableDescription};
use crossdock_core::schema::{DynamoDbStream, KinesisStream, StreamInfo};

/// The streams of `desc` plus its `kinesis` destinations (only those `ACTIVE` carry
/// changes); `None` when there is neither an enabled DynamoDB stream nor an active
/// Kinesis destination.
pub fn stream_of(desc: &TableDescription, kinesis: &[KinesisDataStreamDestination]) -> Option<StreamInfo> {
    let enabled = desc.stream_specification().is_some_and(|s| s.stream_enabled());
    let dynamodb = match (enabled, desc.latest_stream_arn()) {
        (true, Some(arn)) => Some(DynamoDbStream {
            arn: arn.to_string(),
            label: desc.latest_stream_label().unwrap_or_default().to_string(),
            view_type: desc.stream_specification().and_then(|s| s.stream_view_type()).map(|v| v.as_str().to_string()).unwrap_or_default(),
        }),
        _ => None,
    };
    let kinesis: Vec<KinesisStream> = kinesis
        .iter()
        .filter(|d| d.destination_status() == Some(&DestinationStatus::Active))
        .filter_map(|d| {
            Some(KinesisStream { arn: d.stream_arn()?.to_string(), precision: d.approximate_creation_date_time_precision().map(|p| p.as_str().to_string()) })
        })
        .collect();
    (dynamodb.is_some() || !kinesis.is_empty()).then_some(StreamInfo { dynamodb, kinesis })
}

/// The warning for an export of a table without a stream: the catch-up leg cannot run,
/// and how to enable one before exporting again.
pub fn no_stream_warning(table: &str) -> String {
    format!(
        "table {table} has no DynamoDB stream and no active Kinesis destination: changes made while this export, relay and load run \
         cannot be caught up with `crossdock sync`. To migrate without losing writes, enable one before exporting, e.g. \
         `aws dynamodb update-table --table-name {table} --stream-specification StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES` \
         (or `aws dynamodb enable-kinesis-streaming-destination --table-name {table} --stream-arn ARN`), then export again"
    )
}

/// A warning for a stream `crossdock sync` cannot use (its view type has no new
/// image), `None` when it is usable.
pub fn view_type_warning(table: &str, info: &StreamInfo) -> Option<String> {
    let s = info.dynamodb.as_ref()?;
    if !info.kinesis.is_empty() || matches!(s.view_type.as_str(), "NEW_IMAGE" | "NEW_AND_OLD_IMAGES") {
        return None;
    }
    Some(format!(
        "the DynamoDB stream of table {table} has view type {}: `crossdock sync` needs the new image of every change; \
         switch the stream to NEW_AND_OLD_IMAGES (or NEW_IMAGE) before exporting",
        s.view_type
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::{StreamSpecification, StreamViewType};

    fn desc(stream: Option<StreamViewType>) -> TableDescription {
        let mut d = TableDescription::builder().table_name("Orders");
        if let Some(v) = stream {
            d = d
                .stream_specification(StreamSpecification::builder().stream_enabled(true).stream_view_type(v).build().expect("spec"))
                .latest_stream_arn("arn:aws:dynamodb:us-east-1:1:table/Orders/stream/2026-11-30T00:00:00.000")
                .latest_stream_label("2026-11-30T00:00:00.000");
        }
        d.build()
    }

    #[test]
    fn records_the_dynamodb_stream() {
        let info = stream_of(&desc(Some(StreamViewType::NewAndOldImages)), &[]).expect("stream");
        let s = info.dynamodb.as_ref().expect("dynamodb");
        assert_eq!(s.view_type, "NEW_AND_OLD_IMAGES");
        assert_eq!(s.label, "2026-11-30T00:00:00.000");
        assert!(s.arn.ends_with("/stream/2026-11-30T00:00:00.000"));
        assert!(info.kinesis.is_empty());
        assert_eq!(view_type_warning("Orders", &info), None);
    }

    #[test]
    fn no_stream_is_none_and_the_warning_says_how_to_enable_one() {
        assert_eq!(stream_of(&desc(None), &[]), None);
        let w = no_stream_warning("Orders");
        assert!(w.contains("StreamViewType=NEW_AND_OLD_IMAGES") && w.contains("Orders"), "{w}");
    }

    #[test]
    fn keys_only_is_recorded_with_a_warning() {
        let info = stream_of(&desc(Some(StreamViewType::KeysOnly)), &[]).expect("stream");
        assert!(view_type_warning("Orders", &info).expect("warning").contains("NEW_AND_OLD_IMAGES"));
    }

    #[test]
    fn only_active_kinesis_destinations_count() {
        let dest = |status| KinesisDataStreamDestination::builder().stream_arn("arn:aws:kinesis:us-east-1:1:stream/s").destination_status(status).build();
        let info = stream_of(&desc(None), &[dest(DestinationStatus::Disabled), dest(DestinationStatus::Active)]).expect("stream");
        assert_eq!(info.kinesis.len(), 1);
        assert_eq!(stream_of(&desc(None), &[dest(DestinationStatus::Disabled)]), None);
    }
}
