//! Compression of raw dump bytes, run on a blocking thread between the download and
//! the upload, with bounded channels on both sides.
//!
//! - zstd: one frame, libzstd's own worker threads (`nb_workers`).
//! - gzip, bzip2: the input is cut into fixed blocks compressed in parallel as
//!   independent members/streams and written in order (what pigz/lbzip2 do); any
//!   gzip/bzip2 decoder reads the concatenation as one file. Blocks of every file go
//!   to one process-wide pool, one worker per core. bzip2 is our own encoder
//!   (`bzip2_stream`), gzip is flate2 on zlib-rs.
//! - none: bytes pass through.

use bytes::Bytes;
use crossdock_core::Codec;
use std::io::Write;
use tokio::sync::mpsc::{Receiver, Sender};

mod bzip2_stream;

/// Block size for the parallel block codecs and the read size from the source.
pub fn block_size(codec: Codec) -> usize {
    match codec {
        // One bzip2 block per stream at level 9 (900 kB), as lbzip2 does.
        Codec::Bzip2 => 900_000,
        _ => 1 << 20,
    }
}

/// zstd job size per worker (bytes).
const ZSTD_JOB_SIZE: u32 = 1 << 20;

/// How to compress.
#[derive(Debug, Clone, Copy)]
pub struct EncodeParams {
    pub codec: Codec,
    pub level: i32,
    /// Worker threads per file (zstd workers; parallel blocks for gzip/bzip2).
    pub threads: usize,
}

/// Sends output in pieces of at least `min` bytes.
struct ChanWriter {
    tx: Sender<Bytes>,
    buf: Vec<u8>,
    min: usize,
}

impl ChanWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let b = Bytes::from(std::mem::take(&mut self.buf));
        self.tx.blocking_send(b).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload side closed"))
    }
}

impl Write for ChanWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= self.min {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Compresses one block at a time as a complete gzip member or bzip2 stream, keeping
/// its working buffers between blocks.
#[derive(Default)]
struct BlockCompressor {
    bzip2: bzip2_stream::Encoder,
}

impl BlockCompressor {
    fn compress(&mut self, codec: Codec, level: i32, raw: &[u8]) -> std::io::Result<Vec<u8>> {
        let level = level.clamp(1, 9) as u32;
        match codec {
            Codec::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(raw.len() / 3), flate2::Compression::new(level));
                e.write_all(raw)?;
                e.finish()
            }
            Codec::Bzip2 => self.bzip2.compress(raw, level),
            Codec::Zstd => zstd::bulk::compress(raw, level as i32),
            Codec::None => Ok(raw.to_vec()),
        }
    }
}

/// Runs the encoder until `raw` closes; returns when all output was sent. Call on a
/// blocking thread.
pub fn run_blocking(params: EncodeParams, mut raw: Receiver<Bytes>, out: Sender<Bytes>) -> std::io::Result<()> {
    let threads = params.threads.max(1);
    match params.codec {
        Codec::None => {
            while let Some(b) = raw.blocking_recv() {
                out.blocking_send(b).map_err(|_| closed())?;
            }
            Ok(())
        }
        Codec::Zstd => {
            let w = ChanWriter { tx: out, buf: Vec::new(), min: 256 << 10 };
            let mut e = zstd::stream::write::Encoder::new(w, params.level)?;
            if threads > 1 {
                e.multithread(threads as u32)?;
                // Smaller jobs than libzstd's default (4 × window) keep each file's
                // buffers to a few MiB, so many files in flight stay within budget.
                e.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB_SIZE))?;
            }
            while let Some(b) = raw.blocking_recv() {
                e.write_all(&b)?;
            }
            let mut w = e.finish()?;
            w.send()
        }
        Codec::Gzip | Codec::Bzip2 => blocks_in_parallel(params, threads, raw, out),
    }
}

/// The block codecs: up to `threads` of this file's blocks at a time on the shared
/// [`pool`], results taken back in input order.
fn blocks_in_parallel(params: EncodeParams, threads: usize, mut raw: Receiver<Bytes>, out: Sender<Bytes>) -> std::io::Result<()> {
    let EncodeParams { codec, level, .. } = params;
    let mut pending = std::collections::VecDeque::with_capacity(threads);
    let mut input_done = false;
    let mut written = 0usize;
    loop {
        while !input_done && pending.len() < threads {
            match raw.blocking_recv() {
                Some(block) => pending.push_back(pool().submit(codec, level, block)),
                None => input_done = true,
            }
        }
        let Some(next) = pending.pop_front() else { break };
        let block = next.recv().map_err(|_| std::io::Error::other("compression pool stopped"))??;
        out.blocking_send(Bytes::from(block)).map_err(|_| closed())?;
        written += 1;
    }
    if written == 0 {
        // An empty part still becomes a valid (empty) compressed file.
        let empty = BlockCompressor::default().compress(codec, level, &[])?;
        out.blocking_send(Bytes::from(empty)).map_err(|_| closed())?;
    }
    Ok(())
}

type Reply = std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>;

struct Job {
    codec: Codec,
    level: i32,
    raw: Bytes,
    reply: std::sync::mpsc::SyncSender<std::io::Result<Vec<u8>>>,
}

/// One worker per core, each with its own [`BlockCompressor`], serving the blocks of
/// every file in flight in arrival order. Compressor memory is cores × (about 9 MB for
/// bzip2) whatever `--concurrency` is, and block compression never runs more threads
/// than there are cores.
struct Pool {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
}

/// The process-wide pool, started on first use.
fn pool() -> &'static Pool {
    static POOL: std::sync::OnceLock<Pool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let started = (0..cores)
            .filter(|i| {
                let rx = rx.clone();
                std::thread::Builder::new().name(format!("compress-{i}")).spawn(move || serve(&rx)).is_ok()
            })
            .count();
        // No thread could be started: compress on the caller's thread instead.
        Pool { jobs: (started > 0).then_some(tx) }
    })
}

impl Pool {
    /// Queues one block; its result arrives on the returned channel.
    fn submit(&self, codec: Codec, level: i32, raw: Bytes) -> Reply {
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        let job = Job { codec, level, raw, reply };
        if let Some(jobs) = &self.jobs {
            if let Err(std::sync::mpsc::SendError(job)) = jobs.send(job) {
                let _ = job.reply.send(Err(std::io::Error::other("compression pool stopped")));
            }
        } else {
            let _ = job.reply.send(BlockCompressor::default().compress(codec, level, &job.raw));
        }
        rx
    }
}

fn serve(jobs: &std::sync::Mutex<std::sync::mpsc::Receiver<Job>>) {
    let mut c = BlockCompressor::default();
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.compress(job.codec, job.level, &job.raw))).unwrap_or_else(|_| {
            c = BlockCompressor::default();
            Err(std::io::Error::other("compression panicked"))
        });
        // The file may have failed meanwhile and dropped its receiver.
        let _ = job.reply.send(result);
    }
}

fn closed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload side closed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn encode_all(codec: Codec, threads: usize, input: &[u8]) -> Vec<u8> {
        let (raw_tx, raw_rx) = tokio::sync::mpsc::channel(4);
        let (out_tx, mut out_rx) = tokio::sync::mpsc::channel(4);
        let params = EncodeParams { codec, level: codec.default_level(), threads };
        let h = std::thread::spawn(move || run_blocking(params, raw_rx, out_tx));
        let chunks: Vec<Bytes> = input.chunks(block_size(codec)).map(Bytes::copy_from_slice).collect();
        let feeder = std::thread::spawn(move || {
            for c in chunks {
                raw_tx.blocking_send(c).expect("send");
            }
        });
        let mut out = Vec::new();
        while let Some(b) = out_rx.blocking_recv() {
            out.extend_from_slice(&b);
        }
        feeder.join().expect("feeder");
        h.join().expect("thread").expect("encode");
        out
    }

    fn decode(codec: Codec, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match codec {
            Codec::Gzip => flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out).map(|_| ()),
            Codec::Bzip2 => bzip2::read::MultiBzDecoder::new(data).read_to_end(&mut out).map(|_| ()),
            Codec::Zstd => zstd::stream::read::Decoder::new(data).and_then(|mut d| d.read_to_end(&mut out)).map(|_| ()),
            Codec::None => {
                out = data.to_vec();
                Ok(())
            }
        }
        .expect("decodes");
        out
    }

    #[test]
    fn every_codec_round_trips_across_blocks_and_threads() {
        let input: Vec<u8> = (0..2_500_000u32).flat_map(|i| format!("{{\"Item\":{{\"n\":{{\"N\":\"{i}\"}}}}}}\n").into_bytes()).take(3_000_001).collect();
        for codec in Codec::ALL {
            for threads in [1, 3] {
                let enc = encode_all(codec, threads, &input);
                if codec != Codec::None {
                    assert!(enc.len() < input.len() / 3, "{codec} compresses");
                }
                assert_eq!(decode(codec, &enc), input, "{codec} threads={threads}");
            }
        }
        for codec in [Codec::Gzip, Codec::Bzip2, Codec::Zstd] {
            let empty = encode_all(codec, 2, b"");
            assert!(!empty.is_empty() && decode(codec, &empty).is_empty(), "{codec} empty");
        }
    }
}
