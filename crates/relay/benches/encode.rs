//! The relay's compression path without the network: the same `encode::run_blocking`
//! the relay runs, fed 1 MiB blocks through the same bounded channels, on a local
//! file, beside the codec's CLI on the same file. Isolates what the relay itself costs
//! from what moto and fake-gcs-server cost on a shared machine.
//!
//!   cargo bench -p crossdock-relay --bench encode -- FILE [THREADS]
//!
//! Prints one line per codec: relay encoder MB/s, CLI MB/s, ratio, compression ratio.

use bytes::Bytes;
use crossdock_core::Codec;
use crossdock_relay::encode::{block_size, run_blocking, EncodeParams};
use std::process::{Command, Stdio};
use std::time::Instant;

fn relay_encode(codec: Codec, threads: usize, data: &[u8]) -> (f64, usize) {
    let (raw_tx, raw_rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let params = EncodeParams { codec, level: codec.default_level(), threads };
    let blocks: Vec<Bytes> = data.chunks(block_size(codec)).map(Bytes::copy_from_slice).collect();
    let t0 = Instant::now();
    let encoder = std::thread::spawn(move || run_blocking(params, raw_rx, out_tx));
    let feeder = std::thread::spawn(move || {
        for b in blocks {
            if raw_tx.blocking_send(b).is_err() {
                break;
            }
        }
    });
    let mut out = 0;
    while let Some(b) = out_rx.blocking_recv() {
        out += b.len();
    }
    let _ = feeder.join();
    encoder.join().expect("encoder thread").expect("encodes");
    (t0.elapsed().as_secs_f64(), out)
}

fn cli(codec: Codec, threads: usize, file: &str) -> Option<f64> {
    let t = threads.to_string();
    let zt = format!("-T{threads}");
    let (prog, args): (&str, Vec<&str>) = match codec {
        Codec::Zstd => ("zstd", vec!["-3", "-q", "-c", &zt]),
        Codec::Gzip => ("pigz", vec!["-6", "-c", "-p", &t]),
        Codec::Bzip2 => ("lbzip2", vec!["-9", "-c", "-n", &t]),
        Codec::None => return None,
    };
    let t0 = Instant::now();
    let ok = Command::new(prog).args(&args).arg(file).stdout(Stdio::null()).status().ok()?.success();
    ok.then(|| t0.elapsed().as_secs_f64())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let Some(file) = args.first() else {
        eprintln!("usage: cargo bench -p crossdock-relay --bench encode -- FILE [THREADS]");
        return;
    };
    let threads: usize = args.get(1).and_then(|t| t.parse().ok()).unwrap_or(2);
    let data = std::fs::read(file).expect("read the input file");
    let mb = data.len() as f64 / 1_048_576.0;
    println!("{:<6} {:>16} {:>10} {:>7} {:>11}", "codec", "relay enc. MB/s", "CLI MB/s", "ratio", "comp.ratio");
    for codec in [Codec::Zstd, Codec::Gzip, Codec::Bzip2] {
        // Best of three of each, alternating, so a noisy neighbour hurts neither side.
        let (mut ours, mut theirs, mut stored) = (f64::MAX, f64::MAX, 0);
        for _ in 0..3 {
            let (s, out) = relay_encode(codec, threads, &data);
            ours = ours.min(s);
            stored = out;
            if let Some(c) = cli(codec, threads, file) {
                theirs = theirs.min(c);
            }
        }
        let cli_mbps = if theirs < f64::MAX { format!("{:.1}", mb / theirs) } else { "-".into() };
        let ratio = if theirs < f64::MAX { format!("{:.2}", theirs / ours) } else { "-".into() };
        println!("{:<6} {:>16.1} {:>10} {:>7} {:>11.2}", codec, mb / ours, cli_mbps, ratio, data.len() as f64 / stored as f64);
    }
}
