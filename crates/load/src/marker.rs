//! Reading the `_SUCCESS` marker and the data parts it lists.

use crate::error::LoadError;
use crate::gcs::Gcs;
use crossdock_core::layout::{DumpFile, DumpKey, ExportId};
use crossdock_core::marker::{Crc32c, MarkerFile, SuccessMarker};
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
/// The marker URL of the newest export of `table` that has been loaded (`_LOADED`), in
/// `batch` or, without one, in any batch of the bucket; `None` when there is none. Lists
/// batch and timestamp directories only, never the data parts below them.
pub async fn latest_loaded(gcs: &Gcs, table: &str, batch: Option<&str>) -> Result<Option<String>, LoadError> {
    let batches: Vec<String> = match batch {
        Some(b) => vec![b.to_string()],
        None => gcs.list_dirs("").await?.into_iter().map(|d| d.trim_end_matches('/').to_string()).collect(),
    };
    let mut candidates = Vec::new();
    for b in batches {
        let dir = crossdock_core::layout::table_prefix("", &b, table);
        let under = gcs.list_dirs(&dir).await?;
        for ts in crossdock_core::layout::timestamps_under(&dir, &under) {
            if let Ok(export) = ExportId::new(&b, table, ts) {
                candidates.push(export);
            }
        }
    }
    candidates.sort_by(|a, b| b.timestamp.cmp(&a.timestamp));
    for export in candidates {
        match gcs.read(&export.gcs_key(&DumpFile::Loaded, Codec::None)).await {
            Ok(_) => return Ok(Some(format!("gs://{}/{}", gcs.bucket, export.marker_key()))),
            Err(LoadError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

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
    // A file listed twice would be loaded twice and counted twice, and the row count
    // could never match; the name fixes segment and part, so equal names are the test.
    let mut seen = std::collections::HashSet::with_capacity(m.files.len());
    for f in &m.files {
        match DumpFile::parse(&f.name) {
            Some(DumpFile::Part { segment, part, codec }) if segment == f.segment && part == f.part && codec == m.codec => {}
            _ => return Err(format!("file {:?} is not a data part of codec {}", f.name, m.codec)),
        }
        if !seen.insert(f.name.as_str()) {
            return Err(format!("file {:?} is listed more than once", f.name));
        }
        items += f.items;
    }
    if items != m.totals.items || m.files.len() as u64 != m.totals.files {
        return Err(format!("totals say {} files / {} items but the file list has {} / {items}", m.totals.files, m.totals.items, m.files.len()));
    }
    Ok(())
}

/// Downloads one data part, decompresses it and checks size and SHA-256 against the
/// marker before anything from it is used.
pub async fn read_part(m: &Marker, f: &MarkerFile) -> Result<Vec<u8>, LoadError> {
    // `validate` checked the name is exactly this part's.
    let key = m.key(&DumpFile::Part { segment: f.segment, part: f.part, codec: m.marker.codec });
    let stored = m.gcs.read(&key).await.map_err(|e| match e {
        LoadError::NotFound { what } => LoadError::NotFound { what: format!("data file {what} listed in the marker {}", m.url) },
        e => e,
    })?;
    check_part(m.marker.codec, stored, f, &m.gcs.bucket, &key).await
}

/// Decompresses a stored part (`gs://bucket/key`) and checks it against its marker
/// entry: the stored bytes' CRC32C when the marker records one (before decoding, so
/// damaged bytes never reach the decompressor), then exactly `raw_bytes` bytes
/// (decompression stops one byte past that, so a corrupt or hostile part cannot make
/// the loader allocate more) and the SHA-256.
pub async fn check_part(codec: Codec, stored: Vec<u8>, f: &MarkerFile, bucket: &str, key: &str) -> Result<Vec<u8>, LoadError> {
    let corrupt = |reason: String| LoadError::CorruptFile { bucket: bucket.into(), key: key.into(), reason };
    check_stored(&stored, f).map_err(corrupt)?;
    let raw = decompress(codec, stored, f.raw_bytes).await.map_err(|e| corrupt(format!("cannot decompress as {codec}: {e}")))?;
    if raw.len() as u64 > f.raw_bytes {
        return Err(corrupt(format!("decompresses to more than the {} bytes the marker records; stopped there", f.raw_bytes)));
    }
    if (raw.len() as u64) < f.raw_bytes {
        return Err(corrupt(format!("{} bytes after decompression, the marker says {}", raw.len(), f.raw_bytes)));
    }
    let sha = hex::encode(sha2::Sha256::digest(&raw));
    if sha != f.sha256 {
        return Err(corrupt(format!("SHA-256 {sha} differs from the marker's {}", f.sha256)));
    }
    Ok(raw)
}

/// The stored (compressed) bytes against the CRC32C the marker records for them, if any.
fn check_stored(stored: &[u8], f: &MarkerFile) -> Result<(), String> {
    let Some(recorded) = f.stored_crc32c else { return Ok(()) };
    let got = Crc32c::of(stored);
    if got != recorded {
        return Err(format!("CRC32C {got} of the {} stored bytes differs from the marker's {recorded}", stored.len()));
    }
    Ok(())
}

/// Decompresses `stored`, producing at most `raw_bytes + 1` bytes: one byte more than
/// expected is enough to tell the part is wrong, and the output (and the allocation)
/// never grows further whatever the compressed data claims.
async fn decompress(codec: Codec, stored: Vec<u8>, raw_bytes: u64) -> std::io::Result<Vec<u8>> {
    use async_compression::tokio::bufread::{BzDecoder, GzipDecoder, ZstdDecoder};
    let limit = raw_bytes.saturating_add(1);
    // The capacity is only a hint from the marker: bounded so a wrong marker cannot
    // reserve memory on its own.
    let mut out = Vec::with_capacity(limit.min(1 << 30) as usize);
    let input = std::io::Cursor::new(stored);
    match codec {
        Codec::None => {
            let mut raw = input.into_inner();
            raw.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            return Ok(raw);
        }
        Codec::Zstd => {
            let mut d = ZstdDecoder::new(input);
            d.multiple_members(true);
            d.take(limit).read_to_end(&mut out).await?;
        }
        Codec::Gzip => {
            let mut d = GzipDecoder::new(input);
            d.multiple_members(true);
            d.take(limit).read_to_end(&mut out).await?;
        }
        Codec::Bzip2 => {
            let mut d = BzDecoder::new(input);
            d.multiple_members(true);
            d.take(limit).read_to_end(&mut out).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crossdock_core::layout::Timestamp;

    fn part(part: u32, raw: &[u8]) -> MarkerFile {
        MarkerFile {
            name: DumpFile::Part { segment: 0, part, codec: Codec::Zstd }.s3_name(),
            segment: 0,
            part,
            items: 1,
            raw_bytes: raw.len() as u64,
            stored_bytes: 1,
            sha256: crossdock_core::stamp::sha256_hex(raw),
            stored_crc32c: None,
        }
    }

    fn marker(files: Vec<MarkerFile>) -> (SuccessMarker, DumpKey) {
        let export = ExportId::new("b", "Orders", Timestamp::parse("2026-11-23T09-30-00Z").expect("ts")).expect("id");
        let schema = serde_json::from_value(serde_json::json!({
            "format_version": 1, "table": "Orders",
            "key_schema": [{ "name": "pk", "role": "HASH" }],
            "attribute_definitions": [{ "name": "pk", "type": "S" }],
            "global_secondary_indexes": [], "local_secondary_indexes": [],
            "billing_mode": "PAY_PER_REQUEST", "capacity_before": null,
            "item_count_estimate": 0, "size_bytes_estimate": 0, "total_segments": 1, "crossdock_version": "0.1.0"
        }))
        .expect("schema");
        let totals = crossdock_core::marker::Totals {
            files: files.len() as u64,
            items: files.iter().map(|f| f.items).sum(),
            raw_bytes: files.iter().map(|f| f.raw_bytes).sum(),
            stored_bytes: files.iter().map(|f| f.stored_bytes).sum(),
        };
        let key = DumpKey::from_gcs_key(&export.gcs_key(&DumpFile::Success, Codec::Zstd)).expect("key");
        let m = SuccessMarker {
            format_version: crossdock_core::FORMAT_VERSION,
            export,
            codec: Codec::Zstd,
            schema,
            files,
            totals,
            type_stats: Default::default(),
            written_at: "2026-11-23T09:41:00Z".into(),
            written_by: "test".into(),
        };
        (m, key)
    }

    #[test]
    fn a_file_listed_twice_is_refused_naming_it() {
        let (ok, key) = marker(vec![part(0, b"a\n"), part(1, b"b\n")]);
        assert_eq!(validate(&ok, &key), Ok(()));
        // Totals that agree with the doubled list: only the duplicate check catches it.
        let (twice, key) = marker(vec![part(0, b"a\n"), part(1, b"b\n"), part(0, b"a\n")]);
        let reason = validate(&twice, &key).expect_err("a duplicate is refused");
        assert!(reason.contains("data/seg-00000-part-00000.json.zst") && reason.contains("more than once"), "{reason}");
    }

    /// A zstd bomb: 1 MiB of zeros in about a hundred bytes, recorded as 1 KiB.
    #[tokio::test]
    async fn decompression_stops_one_byte_past_the_recorded_size() {
        let bomb_raw = vec![0u8; 1 << 20];
        let recorded = &bomb_raw[..1024];
        for codec in [Codec::Zstd, Codec::Gzip, Codec::Bzip2, Codec::None] {
            let stored = compress(codec, &bomb_raw).await.expect("compress");
            let out = decompress(codec, stored.clone(), recorded.len() as u64).await.expect("decompress");
            assert_eq!(out.len(), 1025, "{codec}: output capped at the recorded size + 1");
            match check_part(codec, stored, &part(0, recorded), "bkt", "b/Orders/ts/data/seg-00000-part-00000.json.zst").await {
                Err(e @ LoadError::CorruptFile { .. }) => {
                    let text = e.to_string();
                    assert!(text.contains("gs://bkt/b/Orders/ts/data/seg-00000-part-00000.json.zst") && text.contains("more than the 1024 bytes"), "{text}");
                }
                r => panic!("{codec}: expected CorruptFile, got {:?}", r.map(|v| v.len())),
            }
        }
    }

    #[tokio::test]
    async fn a_part_of_the_recorded_size_and_checksum_passes_and_a_short_one_does_not() {
        let raw = b"{\"Item\":{\"pk\":{\"S\":\"a\"}}}\n".repeat(10);
        let f = part(0, &raw);
        let stored = compress(Codec::Zstd, &raw).await.expect("compress");
        assert_eq!(check_part(Codec::Zstd, stored, &f, "bkt", "k").await.expect("valid part"), raw);
        let short = compress(Codec::Zstd, &raw[..raw.len() - 1]).await.expect("compress");
        let e = check_part(Codec::Zstd, short, &f, "bkt", "k").await.expect_err("short part");
        assert!(e.to_string().contains("the marker says"), "{e}");
    }

    #[tokio::test]
    async fn stored_bytes_are_checked_against_the_marker_crc32c_before_decoding() {
        let raw = b"{\"Item\":{\"pk\":{\"S\":\"a\"}}}\n".repeat(10);
        let stored = compress(Codec::Zstd, &raw).await.expect("compress");
        let f = MarkerFile { stored_crc32c: Some(Crc32c::of(&stored)), ..part(0, &raw) };
        assert_eq!(check_part(Codec::Zstd, stored.clone(), &f, "bkt", "k").await.expect("intact part"), raw);
        // One flipped bit: whatever it would do to decoding, the CRC32C names it first.
        let mut damaged = stored.clone();
        let at = damaged.len() / 2;
        damaged[at] ^= 0x01;
        let key = "b/Orders/ts/data/seg-00000-part-00000.json.zst";
        let e = check_part(Codec::Zstd, damaged.clone(), &f, "bkt", key).await.expect_err("damaged part");
        let text = e.to_string();
        assert!(matches!(e, LoadError::CorruptFile { .. }), "{e:?}");
        assert!(text.contains(&format!("gs://bkt/{key}")) && text.contains("CRC32C") && text.contains(&Crc32c::of(&stored).to_string()), "{text}");
        // A marker without a CRC32C (an older relay's) still gets the size and SHA-256 checks.
        let old = MarkerFile { stored_crc32c: None, ..f };
        assert!(check_part(Codec::Zstd, stored, &old, "bkt", key).await.is_ok());
    }

    #[tokio::test]
    async fn the_latest_loaded_export_is_found_by_listing_directories() {
        let gcs = Gcs::memory("b");
        let put = |batch: &str, ts: &str, loaded: bool| {
            let gcs = gcs.clone();
            let export = ExportId::new(batch, "Orders", Timestamp::parse(ts).expect("ts")).expect("id");
            async move {
                gcs.write(&export.marker_key(), b"{}".to_vec(), "application/json").await.expect("marker");
                if loaded {
                    gcs.write(&export.gcs_key(&DumpFile::Loaded, Codec::None), b"{}".to_vec(), "application/json").await.expect("loaded");
                }
            }
        };
        assert_eq!(latest_loaded(&gcs, "Orders", None).await.expect("list"), None);
        put("mon", "2026-11-23T09-00-00Z", true).await;
        put("tue", "2026-11-24T09-00-00Z", true).await;
        // Newer, but not loaded yet: not the table the target holds.
        put("tue", "2026-11-25T09-00-00Z", false).await;
        let url = |b: &str, ts: &str| Some(format!("gs://b/{b}/Orders/{ts}/_SUCCESS"));
        assert_eq!(latest_loaded(&gcs, "Orders", None).await.expect("list"), url("tue", "2026-11-24T09-00-00Z"));
        assert_eq!(latest_loaded(&gcs, "Orders", Some("mon")).await.expect("list"), url("mon", "2026-11-23T09-00-00Z"));
        assert_eq!(latest_loaded(&gcs, "Other", None).await.expect("list"), None);
    }
}
