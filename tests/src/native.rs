//! Fixtures in the layout of DynamoDB's native export to S3, as AWS documents it
//! (moto's ExportTableToPointInTime writes one data file and no manifests):
//! `{prefix}/AWSDynamoDB/{export-id}/` with `_started`, `data/{name}.json.gz`,
//! `manifest-files.json` (one JSON line per data file: `itemCount`, `md5Checksum` —
//! base64 of the file's MD5 —, `etag`, `dataFileS3Key`), `manifest-summary.json` and the
//! `.md5` of both manifests.

use base64::Engine as _;
use md5::Digest as _;
use std::io::Write as _;

/// One data file of a fixture.
#[derive(Debug, Clone)]
pub struct NativeDataFile {
    pub key: String,
    /// The gzip bytes stored.
    pub gz: Vec<u8>,
    pub items: u64,
}

/// A native export: its directory and data files.
#[derive(Debug, Clone)]
pub struct NativeFixture {
    /// The export's `S3Prefix` (no trailing `/`).
    pub prefix: String,
    pub id: String,
    pub files: Vec<NativeDataFile>,
}

pub fn gzip(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text.as_bytes()).expect("in memory");
    e.finish().expect("in memory")
}

pub fn md5_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(bytes))
}

pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(md5::Md5::digest(bytes))
}

impl NativeFixture {
    /// `lines` (DynamoDB JSON lines, `{"Item":…}`) dealt over `files` data files in turn;
    /// with more files than lines some are empty, as in real exports of small tables.
    pub fn new(prefix: &str, lines: &[String], files: usize) -> NativeFixture {
        // AWS's ids are a millisecond time and a hex suffix; unique per fixture here.
        let id = format!("0{}-{}", 1_700_000_000_000u64 + u64::from(rand::random::<u32>() % 1_000_000), crate::unique("x").replace('-', ""));
        let dir = format!("{prefix}/AWSDynamoDB/{id}/");
        let mut texts = vec![String::new(); files];
        let mut counts = vec![0u64; files];
        for (i, l) in lines.iter().enumerate() {
            texts[i % files].push_str(l);
            texts[i % files].push('\n');
            counts[i % files] += 1;
        }
        let files = texts
            .iter()
            .zip(counts)
            .enumerate()
            .map(|(i, (t, items))| NativeDataFile { key: format!("{dir}data/{}{i:02}.json.gz", crate::unique("f").replace('-', "")), gz: gzip(t), items })
            .collect();
        NativeFixture { prefix: prefix.into(), id, files }
    }

    pub fn dir(&self) -> String {
        format!("{}/AWSDynamoDB/{}/", self.prefix, self.id)
    }

    pub fn url(&self, bucket: &str) -> String {
        format!("s3://{bucket}/{}", self.dir())
    }

    pub fn items(&self) -> u64 {
        self.files.iter().map(|f| f.items).sum()
    }

    /// Every key the fixture writes.
    pub fn keys(&self) -> Vec<String> {
        let d = self.dir();
        let mut keys: Vec<String> = ["_started", "manifest-files.json", "manifest-files.md5", "manifest-summary.json", "manifest-summary.md5"]
            .iter()
            .map(|f| format!("{d}{f}"))
            .collect();
        keys.extend(self.files.iter().map(|f| f.key.clone()));
        keys
    }

    /// Writes the export as DynamoDB does: `_started` first, data files, then the
    /// manifests. With `corrupt: Some(i)`, data file `i` is stored with other bytes than
    /// the ones its manifest line describes (same item count).
    pub async fn put(&self, s3: &aws_sdk_s3::Client, bucket: &str, corrupt: Option<usize>) {
        let d = self.dir();
        let put = |key: String, body: Vec<u8>| async move {
            s3.put_object().bucket(bucket).key(&key).body(body.into()).send().await.unwrap_or_else(|e| panic!("put {key}: {e:?}"));
        };
        put(format!("{d}_started"), Vec::new()).await;
        let mut manifest = String::new();
        for (i, f) in self.files.iter().enumerate() {
            let stored = if corrupt == Some(i) {
                let mut other = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                let mut text = String::new();
                flate2::read::GzDecoder::new(&f.gz[..]).read_to_string_lossy(&mut text);
                other.write_all(text.replacen("pk#", "pK#", 1).as_bytes()).expect("in memory");
                other.finish().expect("in memory")
            } else {
                f.gz.clone()
            };
            put(f.key.clone(), stored).await;
            let line = serde_json::json!({
                "itemCount": f.items,
                "md5Checksum": md5_base64(&f.gz),
                "etag": md5_hex(&f.gz),
                "dataFileS3Key": f.key,
            });
            manifest.push_str(&line.to_string());
            manifest.push('\n');
        }
        let files_key = format!("{d}manifest-files.json");
        put(files_key.clone(), manifest.clone().into_bytes()).await;
        put(format!("{d}manifest-files.md5"), md5_hex(manifest.as_bytes()).into_bytes()).await;
        let summary = serde_json::json!({
            "version": "2020-06-30",
            "exportArn": format!("arn:aws:dynamodb:us-east-1:123456789012:table/T/export/{}", self.id),
            "startTime": "2026-11-23T09:30:00.000Z",
            "endTime": "2026-11-23T09:41:00.000Z",
            "tableArn": "arn:aws:dynamodb:us-east-1:123456789012:table/T",
            "tableId": "00000000-0000-0000-0000-000000000000",
            "exportTime": "2026-11-23T09:30:00.000Z",
            "s3Bucket": bucket,
            "s3Prefix": self.prefix,
            "s3SseAlgorithm": "AES256",
            "s3SseKmsKeyId": null,
            "manifestFilesS3Key": files_key,
            "billedSizeBytes": self.files.iter().map(|f| f.gz.len()).sum::<usize>(),
            "itemCount": self.items(),
            "outputFormat": "DYNAMODB_JSON",
            "exportType": "FULL_EXPORT",
        })
        .to_string();
        put(format!("{d}manifest-summary.json"), summary.clone().into_bytes()).await;
        put(format!("{d}manifest-summary.md5"), md5_hex(summary.as_bytes()).into_bytes()).await;
    }
}

trait ReadLossy {
    fn read_to_string_lossy(&mut self, out: &mut String);
}

impl<R: std::io::Read> ReadLossy for R {
    fn read_to_string_lossy(&mut self, out: &mut String) {
        let mut bytes = Vec::new();
        self.read_to_end(&mut bytes).expect("in memory");
        out.push_str(&String::from_utf8_lossy(&bytes));
    }
}

/// Decodes a gzip object (one or more members) into its text.
pub fn gunzip(bytes: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(bytes).read_to_string_lossy(&mut text);
    text
}
