//! S3 event notifications as delivered on SQS: direct S3 → SQS bodies, SNS-wrapped
//! bodies (`{"Type":"Notification","Message":"…"}`), and `s3:TestEvent`.
//!
//! Keys arrive form-URL-encoded: `+` means space and must be replaced *before*
//! percent-decoding (`a+b%2Bc` → `a b+c`).

use serde_json::Value;

/// One `Records[]` entry of an S3 event, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Record {
    /// `ObjectCreated:Put`, `ObjectCreated:CompleteMultipartUpload`, `ObjectRemoved:Delete`, …
    pub event_name: String,
    /// RFC 3339 time of the event, as sent.
    pub event_time: Option<String>,
    pub bucket: String,
    /// The decoded object key.
    pub key: String,
    /// ETag without quotes.
    pub etag: Option<String>,
    pub size: Option<u64>,
}

impl S3Record {
    pub fn is_object_created(&self) -> bool {
        self.event_name.starts_with("ObjectCreated:")
    }
}

/// What a message body holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// `s3:TestEvent`, sent when a notification configuration is set.
    Test,
    /// One or more records.
    Records(Vec<S3Record>),
}

/// Why a body is not an S3 notification this relay understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("message body is not JSON: {0}")]
    NotJson(String),
    #[error("message body is JSON but not an S3 event notification (no Records, no s3:TestEvent)")]
    NotS3Event,
    #[error("record {index}: {why}")]
    BadRecord { index: usize, why: String },
}

/// Normalises an ETag: without surrounding quotes.
pub fn normalize_etag(e: &str) -> String {
    e.trim().trim_matches('"').to_string()
}

/// Form-URL-decodes an S3 event key: `+` → space first, then percent-decoding.
pub fn decode_key(raw: &str) -> Result<String, String> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8().map(|c| c.into_owned()).map_err(|e| format!("key {raw:?} is not UTF-8 once decoded: {e}"))
}

/// Parses an SQS message body.
pub fn parse_body(body: &str) -> Result<Notification, EventError> {
    let v: Value = serde_json::from_str(body).map_err(|e| EventError::NotJson(e.to_string()))?;
    parse_value(&v, 0)
}

fn parse_value(v: &Value, depth: u8) -> Result<Notification, EventError> {
    // SNS envelope: the S3 event is a JSON string in `Message`.
    if v.get("Type").and_then(Value::as_str) == Some("Notification") && depth == 0 {
        let msg = v.get("Message").and_then(Value::as_str).ok_or(EventError::NotS3Event)?;
        let inner: Value = serde_json::from_str(msg).map_err(|e| EventError::NotJson(format!("SNS Message: {e}")))?;
        return parse_value(&inner, depth + 1);
    }
    if v.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Notification::Test);
    }
    let records = v.get("Records").and_then(Value::as_array).ok_or(EventError::NotS3Event)?;
    if records.is_empty() {
        return Err(EventError::NotS3Event);
    }
    records.iter().enumerate().map(|(i, r)| parse_record(i, r)).collect::<Result<Vec<_>, _>>().map(Notification::Records)
}

fn parse_record(index: usize, r: &Value) -> Result<S3Record, EventError> {
    let bad = |why: &str| EventError::BadRecord { index, why: why.to_string() };
    let version = r.get("eventVersion").and_then(Value::as_str).ok_or_else(|| bad("no eventVersion"))?;
    if !version.starts_with("2.") {
        return Err(bad(&format!("eventVersion {version} is not 2.x")));
    }
    if let Some(src) = r.get("eventSource").and_then(Value::as_str) {
        if src != "aws:s3" {
            return Err(bad(&format!("eventSource {src} is not aws:s3")));
        }
    }
    let event_name = r.get("eventName").and_then(Value::as_str).ok_or_else(|| bad("no eventName"))?;
    let s3 = r.get("s3").ok_or_else(|| bad("no s3 section"))?;
    let bucket = s3.pointer("/bucket/name").and_then(Value::as_str).ok_or_else(|| bad("no s3.bucket.name"))?;
    let raw_key = s3.pointer("/object/key").and_then(Value::as_str).ok_or_else(|| bad("no s3.object.key"))?;
    let key = decode_key(raw_key).map_err(|e| bad(&e))?;
    let etag = s3.pointer("/object/eTag").and_then(Value::as_str).map(normalize_etag).filter(|e| !e.is_empty());
    let size = s3.pointer("/object/size").and_then(Value::as_u64);
    Ok(S3Record {
        event_name: event_name.to_string(),
        event_time: r.get("eventTime").and_then(Value::as_str).map(str::to_string),
        bucket: bucket.to_string(),
        key,
        etag,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, key: &str) -> String {
        format!(
            r#"{{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"{name}","eventTime":"2026-01-01T00:00:00.000Z","s3":{{"bucket":{{"name":"src"}},"object":{{"key":"{key}","size":5,"eTag":"\"abc\""}}}}}}"#
        )
    }

    #[test]
    fn direct_multi_record_and_form_decoding() {
        let body = format!(r#"{{"Records":[{},{}]}}"#, record("ObjectCreated:Put", "a+b%2Fc%2Bd.bin"), record("ObjectRemoved:Delete", "x"));
        let Notification::Records(rs) = parse_body(&body).expect("parses") else { panic!("records") };
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].key, "a b/c+d.bin");
        assert_eq!(rs[0].etag.as_deref(), Some("abc"));
        assert_eq!(rs[0].size, Some(5));
        assert!(rs[0].is_object_created() && !rs[1].is_object_created());
        // AWS style (slashes not encoded) decodes the same.
        assert_eq!(decode_key("a+b/c%2Bd.bin").as_deref(), Ok("a b/c+d.bin"));
    }

    #[test]
    fn sns_wrapped_and_test_events() {
        let inner = format!(r#"{{"Records":[{}]}}"#, record("ObjectCreated:CompleteMultipartUpload", "k"));
        let sns = serde_json::json!({"Type":"Notification","MessageId":"1","Message": inner}).to_string();
        let Notification::Records(rs) = parse_body(&sns).expect("sns") else { panic!("records") };
        assert_eq!(rs[0].event_name, "ObjectCreated:CompleteMultipartUpload");
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-01-01T00:00:00Z","Bucket":"src"}"#;
        assert_eq!(parse_body(test), Ok(Notification::Test));
        let sns_test = serde_json::json!({"Type":"Notification","Message": test}).to_string();
        assert_eq!(parse_body(&sns_test), Ok(Notification::Test));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        assert!(matches!(parse_body("not json"), Err(EventError::NotJson(_))));
        assert_eq!(parse_body("{}"), Err(EventError::NotS3Event));
        assert_eq!(parse_body(r#"{"Records":[]}"#), Err(EventError::NotS3Event));
        let v1 = record("ObjectCreated:Put", "k").replace("2.1", "1.0");
        assert!(matches!(parse_body(&format!(r#"{{"Records":[{v1}]}}"#)), Err(EventError::BadRecord { index: 0, .. })));
        assert!(matches!(parse_body(r#"{"Records":[{"eventVersion":"2.2"}]}"#), Err(EventError::BadRecord { .. })));
        assert!(decode_key("%FF").is_err());
    }
}
