//! Encoder throughput of the dump writer's CPU path, in MB/s on one core: SDK item →
//! DynamoDB JSON line (sorted attributes, written in place) → SHA-256 + type
//! statistics, and the item dropped.
//! Run: `cargo bench -p crossdock-export --bench encode` (or `scripts/bench-export`).

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue as Av;
use crossdock_core::item::{write_item, Entries};
use crossdock_core::manifest::TypeStats;
use crossdock_export::convert::Scanned;
use crossdock_export::writer::json_len;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::Instant;

fn item(i: u64) -> HashMap<String, Av> {
    let mut m = HashMap::new();
    m.insert("pk".into(), Av::S(format!("customer#{i:08}")));
    m.insert("sk".into(), Av::N(i.to_string()));
    m.insert("name".into(), Av::S(format!("Jane Q. Example {i} — café")));
    m.insert("total".into(), Av::N(format!("{}.{:02}", i * 7 % 10_000, i % 100)));
    m.insert("active".into(), Av::Bool(i.is_multiple_of(2)));
    m.insert("tags".into(), Av::Ss(vec!["a".into(), "b".into(), format!("c{i}")]));
    m.insert("blob".into(), Av::B(Blob::new((0u8..32).collect::<Vec<_>>())));
    let addr =
        HashMap::from([("street".to_string(), Av::S("1 Main St".into())), ("geo".to_string(), Av::L(vec![Av::N("52.52".into()), Av::N("13.405".into())]))]);
    m.insert("address".into(), Av::M(addr));
    m.insert("nothing".into(), Av::Null(true));
    m.insert("notes".into(), Av::S("lorem ipsum dolor sit amet ".repeat(8)));
    m
}

fn main() {
    let items: Vec<_> = (0..200_000).map(item).collect();
    let mut best = 0.0f64;
    for _ in 0..3 {
        // Each item is dropped once written, as the exporter drops each page.
        let page = items.clone();
        let t = Instant::now();
        let mut line = String::with_capacity(4096);
        let mut hasher = Sha256::new();
        let mut stats = TypeStats::default();
        let mut bytes = 0usize;
        for it in page {
            let it = Entries::Unordered(&it);
            line.clear();
            write_item::<Scanned>(&it, &mut line).expect("known types");
            line.push('\n');
            hasher.update(line.as_bytes());
            stats.observe_view::<Scanned>(&it, json_len::<Scanned>);
            bytes += line.len();
        }
        let _ = hasher.finalize();
        let secs = t.elapsed().as_secs_f64();
        best = best.max(bytes as f64 / 1e6 / secs);
        eprintln!("encoded {} items, {:.1} MB in {:.2} s", items.len(), bytes as f64 / 1e6, secs);
    }
    println!("encoder_mb_per_s_per_core {best:.1}");
}
