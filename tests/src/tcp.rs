//! A TCP proxy the tests put between crossdock and a server that speaks its own wire
//! protocol (PostgreSQL), to cut connections at a point chosen by count rather than by
//! time: every connection is reset once it has carried `cut_after` bytes from the
//! client, so a long load meets the same cuts on a fast machine and a loaded one. Or,
//! [`TcpCutter::stalling`], it goes silent there instead: no byte passes either way
//! until the client gives up and closes, as on a path that drops packets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct TcpCutter {
    /// `127.0.0.1:PORT`
    pub addr: String,
    cuts: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TcpCutter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TcpCutter {
    /// Forwards to `upstream` (`host:port`); each connection is reset after `cut_after`
    /// client bytes, except the first `spared` connections, which are left whole.
    pub async fn start(upstream: &str, cut_after: usize, spared: usize) -> TcpCutter {
        TcpCutter::run(upstream, cut_after, spared, usize::MAX, false).await
    }

    /// Like [`TcpCutter::start`], but a cut connection stalls: from then on nothing
    /// passes, and the server side is closed only once the client has closed its side.
    /// Only the first `times` connections to reach `stall_after` stall.
    pub async fn stalling(upstream: &str, stall_after: usize, times: usize) -> TcpCutter {
        TcpCutter::run(upstream, stall_after, 0, times, true).await
    }

    async fn run(upstream: &str, cut_after: usize, spared: usize, max_cuts: usize, stall: bool) -> TcpCutter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind tcp proxy");
        let addr = listener.local_addr().expect("addr").to_string();
        let cuts = Arc::new(AtomicUsize::new(0));
        let (upstream, counted) = (upstream.to_string(), cuts.clone());
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { continue };
                let cut = accepted.fetch_add(1, Ordering::SeqCst) >= spared;
                if cut && !stall {
                    // Closed abortively: the client sees a reset, not an orderly end. (A
                    // zero linger does not block on drop, which is what the deprecation
                    // warns of.)
                    #[allow(deprecated)]
                    let _ = client.set_linger(Some(std::time::Duration::ZERO));
                }
                let counted = counted.clone();
                tokio::spawn(async move {
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let down = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    });
                    let mut sent = 0usize;
                    let mut buf = vec![0u8; 16 << 10];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if cut && sent + n > cut_after && counted.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| (c < max_cuts).then_some(c + 1)).is_ok()
                        {
                            if stall {
                                // Nothing more reaches the server, so it has nothing more
                                // to say; the client's side stays open until it leaves.
                                while matches!(cr.read(&mut buf).await, Ok(n) if n > 0) {}
                                return;
                            }
                            down.abort();
                            return;
                        }
                        sent += n;
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = sw.shutdown().await;
                    let _ = down.await;
                });
            }
        });
        TcpCutter { addr, cuts, task }
    }

    /// Connections cut (or stalled) so far.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}
