//! The small S3 calls the exporter's records need (JSON documents, deletes, listings),
//! with errors that name bucket and key. Data parts go through [`crate::writer`].

use crate::error::{s3_error, ExportError};
use aws_sdk_s3::primitives::ByteStream;

/// Writes a small JSON document (schema, manifest, checkpoint, lease) with PutObject.
pub async fn put_json<T: serde::Serialize>(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, value: &T) -> Result<(), ExportError> {
    let body = serde_json::to_vec_pretty(value).map_err(|e| ExportError::Corrupt {
        bucket: bucket.into(),
        key: key.into(),
        what: "JSON document",
        why: e.to_string(),
    })?;
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/json")
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| s3_error(bucket, key, "PutObject", &e))?;
    Ok(())
}

/// Reads a JSON document; `Ok(None)` when the key does not exist.
pub async fn get_json<T: serde::de::DeserializeOwned>(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, what: &'static str) -> Result<Option<T>, ExportError> {
    Ok(get_json_tagged(s3, bucket, key, what).await?.map(|(doc, _)| doc))
}

/// [`get_json`] with the object's ETag, for a conditional write over it.
pub async fn get_json_tagged<T: serde::de::DeserializeOwned>(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    what: &'static str,
) -> Result<Option<(T, String)>, ExportError> {
    let out = match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(o) => o,
        Err(e) => {
            if let aws_sdk_s3::error::SdkError::ServiceError(s) = &e {
                if s.err().is_no_such_key() {
                    return Ok(None);
                }
            }
            return Err(s3_error(bucket, key, "GetObject", &e));
        }
    };
    let etag = out.e_tag().unwrap_or_default().to_string();
    let bytes =
        out.body.collect().await.map_err(|e| ExportError::S3 { bucket: bucket.into(), key: key.into(), op: "GetObject", message: e.to_string() })?.into_bytes();
    serde_json::from_slice(&bytes).map(|doc| Some((doc, etag))).map_err(|e| ExportError::Corrupt {
        bucket: bucket.into(),
        key: key.into(),
        what,
        why: e.to_string(),
    })
}

/// Deletes an object if it exists (idempotent).
pub async fn delete(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<(), ExportError> {
    s3.delete_object().bucket(bucket).key(key).send().await.map_err(|e| s3_error(bucket, key, "DeleteObject", &e))?;
    Ok(())
}

/// Lists keys (and common prefixes with a delimiter) under a prefix.
pub async fn list(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str, delimiter: Option<&str>) -> Result<(Vec<String>, Vec<String>), ExportError> {
    let mut keys = Vec::new();
    let mut prefixes = Vec::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_delimiter(delimiter.map(str::to_string))
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| s3_error(bucket, prefix, "ListObjectsV2", &e))?;
        keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        prefixes.extend(page.common_prefixes().iter().filter_map(|p| p.prefix().map(str::to_string)));
        token = page.next_continuation_token().map(str::to_string);
        if token.is_none() {
            return Ok((keys, prefixes));
        }
    }
}
