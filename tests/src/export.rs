//! Harness additions for the export tests: provisioned tables on dynalite filled with
//! items of every DynamoDB type, a plain full Scan to compare with, and a reader that
//! checks a dump against its manifests.

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue as Av, KeySchemaElement, KeyType, ProvisionedThroughput, PutRequest, ScalarAttributeType, TableStatus, WriteRequest,
};
use crossdock_core::item::{parse_line, to_line};
use crossdock_core::layout::{DumpFile, DumpKey};
use crossdock_core::manifest::SegmentManifest;
use crossdock_core::Codec;
use std::collections::HashMap;
use std::time::Duration;

/// Creates a provisioned table (`pk` S hash, `sk` N range) and waits for ACTIVE.
pub async fn create_table(ddb: &aws_sdk_dynamodb::Client, name: &str, rcu: i64, wcu: i64) {
    let attr = |n: &str, t| AttributeDefinition::builder().attribute_name(n).attribute_type(t).build().expect("attr");
    let key = |n: &str, t| KeySchemaElement::builder().attribute_name(n).key_type(t).build().expect("key");
    ddb.create_table()
        .table_name(name)
        .attribute_definitions(attr("pk", ScalarAttributeType::S))
        .attribute_definitions(attr("sk", ScalarAttributeType::N))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .provisioned_throughput(ProvisionedThroughput::builder().read_capacity_units(rcu).write_capacity_units(wcu).build().expect("pt"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("create table {name}: {e:?}"));
    wait_active(ddb, name).await;
}

pub async fn wait_active(ddb: &aws_sdk_dynamodb::Client, name: &str) {
    for _ in 0..600 {
        let d = ddb.describe_table().table_name(name).send().await.expect("describe");
        if d.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("table {name} never became ACTIVE");
}

/// The table's provisioned read capacity now.
pub async fn read_capacity(ddb: &aws_sdk_dynamodb::Client, name: &str) -> i64 {
    let d = ddb.describe_table().table_name(name).send().await.expect("describe");
    d.table().and_then(|t| t.provisioned_throughput()).and_then(|p| p.read_capacity_units()).expect("provisioned")
}

/// How many times the table's provisioned capacity was decreased today (dynalite counts them).
pub async fn decreases_today(ddb: &aws_sdk_dynamodb::Client, name: &str) -> i64 {
    let d = ddb.describe_table().table_name(name).send().await.expect("describe");
    d.table().and_then(|t| t.provisioned_throughput()).and_then(|p| p.number_of_decreases_today()).unwrap_or(0)
}

/// The table's capacity lease under prefix `""`, if any.
pub async fn lease(s3: &aws_sdk_s3::Client, bucket: &str, table: &str) -> Option<crossdock_core::manifest::CapacityLease> {
    let key = crossdock_core::layout::capacity_lease_key("", table).expect("lease key");
    get(s3, bucket, &key).await.map(|b| serde_json::from_slice(&b).expect("lease json"))
}

/// Waits until the table's lease is stale by its own clock (`heartbeat_at` +
/// `stale_after_secs` and `held_until` passed): a state read from the lease, not a guessed delay.
pub async fn wait_lease_stale(s3: &aws_sdk_s3::Client, bucket: &str, table: &str, limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let l = lease(s3, bucket, table).await.expect("a lease");
        let standing = crossdock_export::lease::standing_now(&l, "").expect("valid lease");
        if matches!(standing, crossdock_export::lease::Standing::Stale { .. }) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "lease never went stale: {l:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Item `i`: every DynamoDB type (S N B BOOL NULL SS NS BS L M, nested), plus a string
/// `pad` of `pad` bytes to set the item size.
pub fn item(i: u64, pad: usize) -> HashMap<String, Av> {
    let mut m = HashMap::new();
    m.insert("pk".into(), Av::S(format!("pk#{i:06}")));
    m.insert("sk".into(), Av::N(i.to_string()));
    m.insert("name".into(), Av::S(format!("Ünïcødé \"quoted\" \\ name {i} ✓")));
    m.insert("price".into(), Av::N(format!("{}.{:02}", i * 7 % 10_000, i % 100)));
    m.insert("big".into(), Av::N("-1.2345678901234567890123456789012345678E+100".into()));
    m.insert("blob".into(), Av::B(Blob::new(vec![(i % 256) as u8, 0, 255, 10])));
    m.insert("flag".into(), Av::Bool(i.is_multiple_of(2)));
    m.insert("nothing".into(), Av::Null(true));
    m.insert("tags".into(), Av::Ss(vec!["a".into(), format!("t{}", i % 7)]));
    m.insert("nums".into(), Av::Ns(vec!["-1".into(), "2.5".into(), format!("{}", i + 10)]));
    m.insert("blobs".into(), Av::Bs(vec![Blob::new(vec![1, 2]), Blob::new(vec![3, (i % 256) as u8])]));
    m.insert("list".into(), Av::L(vec![Av::S("x".into()), Av::N("0".into()), Av::Bool(false), Av::Null(true), Av::L(vec![Av::N(i.to_string())])]));
    let mut inner = HashMap::new();
    inner.insert("street".into(), Av::S("1 Main St".into()));
    inner.insert("geo".into(), Av::L(vec![Av::N("52.52".into()), Av::N("13.405".into())]));
    inner.insert("deep".into(), Av::M(HashMap::from([("k".to_string(), Av::Ss(vec!["v".into()]))])));
    m.insert("address".into(), Av::M(inner));
    if pad > 0 {
        m.insert("pad".into(), Av::S("p".repeat(pad)));
    }
    m
}

/// Writes items `0..n` with BatchWriteItem, `parallel` requests at a time.
pub async fn fill(ddb: &aws_sdk_dynamodb::Client, table: &str, n: u64, pad: usize, parallel: usize) {
    use futures::StreamExt;
    let batches: Vec<Vec<u64>> = (0..n).collect::<Vec<_>>().chunks(25).map(<[u64]>::to_vec).collect();
    futures::stream::iter(batches)
        .for_each_concurrent(parallel, |ids| async move {
            let mut reqs: Vec<WriteRequest> = ids
                .iter()
                .map(|i| WriteRequest::builder().put_request(PutRequest::builder().set_item(Some(item(*i, pad))).build().expect("put")).build())
                .collect();
            for _ in 0..100 {
                let out = ddb.batch_write_item().request_items(table, reqs.clone()).send().await.unwrap_or_else(|e| panic!("batch write to {table}: {e:?}"));
                reqs = out.unprocessed_items().and_then(|u| u.get(table)).cloned().unwrap_or_default();
                if reqs.is_empty() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("unprocessed items never drained");
        })
        .await;
}

/// Every item of the table by a plain sequential Scan (paged with ExclusiveStartKey).
pub async fn scan_items(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Vec<HashMap<String, Av>> {
    let mut items = Vec::new();
    let mut lek = None;
    loop {
        let out = ddb.scan().table_name(table).set_exclusive_start_key(lek).send().await.expect("scan");
        items.extend(out.items().iter().cloned());
        lek = out.last_evaluated_key;
        if lek.is_none() {
            break;
        }
    }
    items
}

/// Every item of the table by a plain sequential Scan, as canonical DynamoDB JSON lines
/// (attributes sorted), sorted.
pub async fn scan_lines(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Vec<String> {
    let mut lines: Vec<String> =
        scan_items(ddb, table).await.into_iter().map(|it| to_line(&crossdock_export::convert::from_sdk_item(it).expect("known types"))).collect();
    lines.sort();
    lines
}

/// A dump read back through its manifests.
#[derive(Debug)]
pub struct Dump {
    /// Every line of every part named in a manifest, sorted.
    pub lines: Vec<String>,
    pub manifests: Vec<SegmentManifest>,
    /// Keys of every object under the export directory.
    pub keys: Vec<String>,
}

pub async fn get(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<Vec<u8>> {
    match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(o) => Some(o.body.collect().await.expect("body").into_bytes().to_vec()),
        Err(_) => None,
    }
}

pub async fn list(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = s3.list_objects_v2().bucket(bucket).prefix(prefix).set_continuation_token(token).send().await.expect("list");
        keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        token = page.next_continuation_token().map(str::to_string);
        if token.is_none() {
            return keys;
        }
    }
}

/// Reads the dump under `dir` (`{prefix}{batch}/{table}/{ts}/`), checking that each
/// part's items, bytes and SHA-256 match its manifest entry and that every line parses.
pub async fn read_dump(s3: &aws_sdk_s3::Client, bucket: &str, dir: &str) -> Dump {
    let keys = list(s3, bucket, dir).await;
    let mut manifests = Vec::new();
    for k in &keys {
        let parsed = DumpKey::from_s3_key("", k).unwrap_or_else(|e| panic!("{k}: {e}"));
        if let DumpFile::Manifest { .. } = parsed.file {
            let m: SegmentManifest = serde_json::from_slice(&get(s3, bucket, k).await.expect("manifest")).expect("manifest json");
            manifests.push(m);
        }
    }
    manifests.sort_by_key(|m| m.segment);
    let mut lines = Vec::new();
    for m in &manifests {
        assert_eq!(m.items, m.parts.iter().map(|p| p.items).sum::<u64>(), "segment {} item total", m.segment);
        assert_eq!(m.bytes, m.parts.iter().map(|p| p.bytes).sum::<u64>(), "segment {} byte total", m.segment);
        for p in &m.parts {
            let stored = get(s3, bucket, &format!("{dir}{}", p.name)).await.unwrap_or_else(|| panic!("part {} missing", p.name));
            let body = decode(&p.name, stored);
            assert_eq!(body.len() as u64, p.bytes, "bytes of {}", p.name);
            assert_eq!(crossdock_core::stamp::sha256_hex(&body), p.sha256, "sha256 of {}", p.name);
            let text = String::from_utf8(body).expect("utf-8");
            let n = text.lines().count() as u64;
            assert_eq!(n, p.items, "items of {}", p.name);
            for (i, l) in text.lines().enumerate() {
                parse_line(l, i as u64 + 1).unwrap_or_else(|e| panic!("{}: {e}", p.name));
                lines.push(l.to_string());
            }
        }
    }
    lines.sort();
    Dump { lines, manifests, keys }
}

/// A data part's lines, decoded with the codec its name carries.
pub fn decode(name: &str, stored: Vec<u8>) -> Vec<u8> {
    use std::io::Read;
    let Some(DumpFile::Part { codec, .. }) = DumpFile::parse(name) else { panic!("{name} is not a data part") };
    let mut out = Vec::new();
    match codec {
        Codec::None => return stored,
        Codec::Zstd => zstd::stream::read::Decoder::new(&stored[..]).and_then(|mut d| d.read_to_end(&mut out)),
        Codec::Gzip => flate2::read::MultiGzDecoder::new(&stored[..]).read_to_end(&mut out),
        Codec::Bzip2 => panic!("{name}: the exporter does not write bzip2"),
    }
    .unwrap_or_else(|e| panic!("{name} does not decode: {e}"));
    out
}

/// The single export directory of `table` in `batch` (panics unless exactly one).
pub async fn export_dir(s3: &aws_sdk_s3::Client, bucket: &str, batch: &str, table: &str) -> String {
    let keys = list(s3, bucket, &format!("{batch}/{table}/")).await;
    let mut dirs: Vec<String> = keys.iter().filter_map(|k| DumpKey::from_s3_key("", k).ok()).map(|d| d.export.dir()).collect();
    dirs.sort();
    dirs.dedup();
    assert_eq!(dirs.len(), 1, "expected one export directory: {dirs:?}");
    dirs.remove(0)
}

/// Whether two sorted line lists are the same multiset; on a difference, a short report.
pub fn same_items(dump: &[String], scan: &[String]) -> Result<(), String> {
    if dump == scan {
        return Ok(());
    }
    let dup = dump.windows(2).filter(|w| w[0] == w[1]).count();
    Err(format!("dump has {} lines ({} duplicates), scan has {}", dump.len(), dup, scan.len()))
}
