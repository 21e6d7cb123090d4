//! Throughput of the DynamoDB JSON item codec (parse and write), in MB/s per core.
//! Run: `cargo bench -p crossdock-core --bench codec` (or `scripts/bench codec`).

use crossdock_core::item::{parse_line, write_line};
use std::time::Instant;

fn sample_lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"Item":{{"pk":{{"S":"customer#{i:08}"}},"sk":{{"N":"{i}"}},"name":{{"S":"Jane Q. Example {i} — café"}},"total":{{"N":"{}.{:02}"}},"active":{{"BOOL":{}}},"tags":{{"SS":["a","b","c{i}"]}},"blob":{{"B":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}},"address":{{"M":{{"street":{{"S":"1 Main St"}},"zip":{{"S":"0{}"}},"geo":{{"L":[{{"N":"52.52"}},{{"N":"13.405"}}]}}}}}},"nothing":{{"NULL":true}}}}}}"#,
                i * 7 % 10_000,
                i % 100,
                i % 2 == 0,
                i % 99_999
            )
        })
        .collect()
}

fn main() {
    let lines = sample_lines(200_000);
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let mb = bytes as f64 / 1e6;

    let t = Instant::now();
    let items: Vec<_> = lines.iter().enumerate().map(|(i, l)| parse_line(l, i as u64 + 1).expect("benchmark lines are valid")).collect();
    let parse = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut out = String::with_capacity(bytes);
    for item in &items {
        write_line(item, &mut out);
        out.push('\n');
    }
    let write = t.elapsed().as_secs_f64();
    assert_eq!(out.len(), bytes, "write(parse(x)) must reproduce the input");

    println!("codec: {} items, {mb:.1} MB", items.len());
    println!("codec parse: {:.1} MB/s per core ({:.0} items/s)", mb / parse, items.len() as f64 / parse);
    println!("codec write: {:.1} MB/s per core ({:.0} items/s)", mb / write, items.len() as f64 / write);
}
