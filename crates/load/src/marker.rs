//! Reading the `_SUCCESS` marker and the data parts it lists.

use crate::error::LoadError;
use crate::gcs::Gcs;
use crossdock_core::layout::{DumpFile, DumpKey};
use crossdock_core::marker::{MarkerFile, SuccessMarker};
use crossdock_core::Codec;
use sha2::Digest as _;
use tokio::io::AsyncReadExt as _;

/// A marker read from GCS, with where it was found.
#[derive(Debug, Clone)]
pub struct Marker {
    pub url: String,
    pub gcs: Gcs,
    pub marker: SuccessMarker,
}

impl Marker {
    /// GCS object name of a file of this export.
    pub fn key(&self, file: &DumpFile) -> String {
        self.marker.export.gcs_key(file, self.marker.codec)
    }
}

/// Reads and validates `gs://bucket/batch/table/ts/_SUCCESS`.
pub async fn read(client: gcloud_storage::client::Client, url: &str) -> Result<Marker, LoadError> {
    let bad = |reason: String| LoadError::InvalidMarker { url: url.into(), reason };
    let (bucket, key) = crate::gcs::parse_url(url).ok_or_else(|| bad("expected gs://BUCKET/BATCH/TABLE/TIMESTAMP/_SUCCESS".into()))?;
    let parsed = DumpKey::from_gcs_key(&key).map_err(|e| bad(e.to_string()))?;
    if parsed.file != DumpFile::Success {
        return Err(bad(format!("{key} is not a _SUCCESS marker")));
    }
    let gcs = Gcs::new(client, bucket);
    let body = gcs.read(&key).await?;
    let marker: SuccessMarker = serde_json::from_slice(&body).map_err(|e| bad(format!("not a crossdock marker: {e}")))?;
    validate(&marker, &parsed).map_err(bad)?;
    Ok(Marker { url: url.into(), gcs, marker })
}

fn validate(m: &SuccessMarker, key: &DumpKey) -> Result<(), String> {
    if m.format_version != crossdock_core::FORMAT_VERSION {
        return Err(format!("format_version {} is not supported (this build reads {})", m.format_version, crossdock_core::FORMAT_VERSION));
    }
    if m.export != key.export {
        return Err(format!("marker describes export {} but is stored under {}", m.export, key.export));
    }
    if m.schema.hash_key().is_none() {
        return Err("schema has no HASH key".into());
    }
    let mut items = 0;
    for f in &m.files {
        match DumpFile::parse(&f.name) {
            Some(DumpFile::Part { segment, part, codec }) if segment == f.segment && part == f.part && codec == m.codec => {}
            _ => return Err(format!("file {:?} is not a data part of codec {}", f.name, m.codec)),
        }
        items += f.items;
    }
    if items != m.totals.items || m.files.len() as u64 != m.totals.files {
        return Err(format!(
            "totals say {} files / {} items but the file list has {} / {items}",
            m.totals.files,
            m.totals.items,
            m.files.len()
        ));
    }
    Ok(())
}

/// Downloads one data part, decompresses it and checks size and SHA-256 against the
/// marker before anything from it is used.
pub async fn read_part(m: &Marker, f: &MarkerFile) -> Result<Vec<u8>, LoadError> {
    let key = format!("{}{}", m.marker.export.dir(), f.name);
    let stored = m.gcs.read(&key).await.map_err(|e| match e {
        LoadError::NotFound { what } => LoadError::NotFound { what: format!("data file {what} listed in the marker {}", m.url) },
        e => e,
    })?;
    let corrupt = |reason: String| LoadError::CorruptFile { bucket: m.gcs.bucket.clone(), key: key.clone(), reason };
    let raw = decompress(m.marker.codec, stored, f.raw_bytes).await.map_err(|e| corrupt(format!("cannot decompress as {}: {e}", m.marker.codec)))?;
    if raw.len() as u64 != f.raw_bytes {
        return Err(corrupt(format!("{} bytes after decompression, the marker says {}", raw.len(), f.raw_bytes)));
    }
    let sha = hex::encode(sha2::Sha256::digest(&raw));
    if sha != f.sha256 {
        return Err(corrupt(format!("SHA-256 {sha} differs from the marker's {}", f.sha256)));
    }
    Ok(raw)
}

async fn decompress(codec: Codec, stored: Vec<u8>, size_hint: u64) -> std::io::Result<Vec<u8>> {
    use async_compression::tokio::bufread::{BzDecoder, GzipDecoder, ZstdDecoder};
    let mut out = Vec::with_capacity(size_hint.min(1 << 30) as usize);
    let input = std::io::Cursor::new(stored);
    match codec {
        Codec::None => return Ok(input.into_inner()),
        Codec::Zstd => {
            let mut d = ZstdDecoder::new(input);
            d.multiple_members(true);
            d.read_to_end(&mut out).await?;
        }
        Codec::Gzip => {
            let mut d = GzipDecoder::new(input);
            d.multiple_members(true);
            d.read_to_end(&mut out).await?;
        }
        Codec::Bzip2 => {
            let mut d = BzDecoder::new(input);
            d.multiple_members(true);
            d.read_to_end(&mut out).await?;
        }
    }
    Ok(out)
}

/// Compresses raw DynamoDB JSON lines with `codec`, as the relay stores them (used by
/// test harnesses and benchmarks that write exports directly).
pub async fn compress(codec: Codec, raw: &[u8]) -> std::io::Result<Vec<u8>> {
    use async_compression::tokio::bufread::{BzEncoder, GzipEncoder, ZstdEncoder};
    let mut out = Vec::new();
    let input = std::io::Cursor::new(raw);
    match codec {
        Codec::None => return Ok(raw.to_vec()),
        Codec::Zstd => ZstdEncoder::new(input).read_to_end(&mut out).await?,
        Codec::Gzip => GzipEncoder::new(input).read_to_end(&mut out).await?,
        Codec::Bzip2 => BzEncoder::new(input).read_to_end(&mut out).await?,
    };
    Ok(out)
}

/// Lowercase hex SHA-256 of raw bytes (as recorded in manifests and markers).
pub fn sha256_hex(raw: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(raw))
}
