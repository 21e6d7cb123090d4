//! The HTTP client under every GCS client: connect and read timeouts (the GCS client's
//! own default has none, so a hung connection waits forever) and retries of transient
//! failures (429, 5xx, resets, timeouts) under `crossdock_core::retry::Policy::REQUEST`,
//! each counted in `crossdock_retries_total{service="gcs", op, outcome}`.
//!
//! Written here rather than taken from `reqwest-retry`: that crate brings its own
//! backoff rule and reports retries only to its log, where crossdock has one policy and
//! counts every retry by operation and outcome.
//!
//! A request whose body is a stream (a resumable upload's chunk) cannot be sent twice
//! from here; it goes once, and the uploader resumes the session at the offset GCS
//! committed instead (the relay's `gcs::Upload::put`). Conditional writes are retried
//! too (GCS calls them conditionally idempotent): a create-only write whose first try
//! landed answers 412 to its retry, which the callers tell from a lost race by reading
//! the object back.

use crossdock_core::retry::{self, Policy};
use reqwest_middleware::reqwest::{self, Request, Response};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use std::sync::Arc;
use std::time::Duration;

/// Timeouts of every GCS request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To open a connection (TCP + TLS).
    pub connect: Duration,
    /// From sending a request to its response headers, and then between reads of the
    /// response: so it must exceed the time one upload request takes to send.
    pub read: Duration,
}

impl Default for Timeouts {
    /// rclone's GCS defaults (`--contimeout 1m`, `--timeout 5m`) in spirit, with a
    /// shorter connect: a connect that takes more than 30 s is not going to work.
    fn default() -> Self {
        Timeouts { connect: crossdock_core::retry::CONNECT_TIMEOUT, read: Duration::from_secs(300) }
    }
}

/// The client for `gcloud_storage::client::ClientConfig::http`: `timeouts`, the retry
/// middleware, then `inner` middlewares (which see every attempt, e.g. a request
/// counter).
pub fn client(timeouts: Timeouts, policy: Policy, inner: Vec<Arc<dyn Middleware>>) -> Result<ClientWithMiddleware, reqwest::Error> {
    let http = reqwest::Client::builder().connect_timeout(timeouts.connect).read_timeout(timeouts.read).build()?;
    let mut b = ClientBuilder::new(http).with(Retry { policy });
    for m in inner {
        b = b.with_arc(m);
    }
    Ok(b.build())
}

struct Retry {
    policy: Policy,
}

#[async_trait::async_trait]
impl Middleware for Retry {
    async fn handle(&self, req: Request, extensions: &mut http::Extensions, next: Next<'_>) -> reqwest_middleware::Result<Response> {
        let op = operation(req.method().as_str(), req.url());
        // The GCS client sends a multipart upload (a small object with its metadata) as
        // a streamed form: held in memory, it can be sent again. A chunk is not.
        let req = if op == "upload" && req.try_clone().is_none() { buffered(req).await? } else { req };
        let mut failures = 0u32;
        loop {
            let Some(attempt) = req.try_clone() else {
                return next.run(req, extensions).await;
            };
            let result = next.clone().run(attempt, extensions).await;
            let status = result.as_ref().ok().map(|r| r.status().as_u16());
            let failure = match &result {
                Ok(r) if transient_status(r.status().as_u16()) => format!("HTTP {}", r.status()),
                Ok(_) => {
                    if failures > 0 {
                        retry::recovered("gcs", op, failures);
                    }
                    return result;
                }
                Err(e) => e.to_string(),
            };
            let retryable = match &result {
                Ok(_) => true,
                Err(e) => transient_error(e),
            };
            failures += 1;
            if retry::failed("gcs", op, retryable, self.policy.allows(failures), &failure) != retry::Outcome::Retried {
                return result;
            }
            tokio::time::sleep(self.policy.delay_after(failures, status)).await;
        }
    }
}

/// `req` with its streamed body read into memory.
async fn buffered(mut req: Request) -> reqwest_middleware::Result<Request> {
    use http_body_util::BodyExt;
    if let Some(body) = req.body_mut().take() {
        let bytes = body.collect().await.map_err(reqwest_middleware::Error::middleware)?.to_bytes();
        *req.body_mut() = Some(reqwest::Body::from(bytes));
    }
    Ok(req)
}

/// Statuses Google documents as worth retrying: 408, 429 and 5xx.
pub fn transient_status(s: u16) -> bool {
    s == 408 || s == 429 || s >= 500
}

/// Transport failures worth retrying: timeouts, refused or reset connections, a body
/// cut short. Not builder or redirect errors.
fn transient_error(e: &reqwest_middleware::Error) -> bool {
    match e {
        reqwest_middleware::Error::Reqwest(e) => e.is_timeout() || e.is_connect() || e.is_request() || e.is_body(),
        reqwest_middleware::Error::Middleware(_) => false,
    }
}

/// The JSON API operation a request is, from its method and URL (low cardinality).
pub fn operation(method: &str, url: &reqwest::Url) -> &'static str {
    let has = |key: &str, value: &str| url.query_pairs().any(|(k, v)| k == key && v == value);
    let path = url.path();
    if path.contains("/upload/storage/v1/") {
        return match method {
            "POST" if has("uploadType", "resumable") => "upload_start",
            "POST" => "upload",
            "PUT" => "upload_chunk",
            "DELETE" => "upload_cancel",
            _ => "other",
        };
    }
    // …/b/{bucket}/o is the listing, …/b/{bucket}/o/{object} one object (its name
    // percent-encoded into one segment).
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let listing = segments.len() >= 3 && segments[segments.len() - 3] == "b" && segments[segments.len() - 1] == "o";
    match method {
        "GET" if listing => "list",
        "GET" if has("alt", "media") => "download",
        "GET" => "get",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn requests_are_named_by_operation() {
        let op = |m: &str, u: &str| operation(m, &u.parse().expect("url"));
        let base = "http://127.0.0.1:4443";
        assert_eq!(op("GET", &format!("{base}/storage/v1/b/dst/o/b1%2FOrders%2F_schema.json")), "get");
        assert_eq!(op("GET", &format!("{base}/storage/v1/b/dst/o/b1%2FOrders%2F_schema.json?alt=media")), "download");
        assert_eq!(op("GET", &format!("{base}/storage/v1/b/dst/o?prefix=b1%2FOrders%2Fdata%2F")), "list");
        assert_eq!(op("POST", &format!("{base}/upload/storage/v1/b/dst/o?uploadType=multipart")), "upload");
        assert_eq!(op("POST", &format!("{base}/upload/storage/v1/b/dst/o?uploadType=resumable")), "upload_start");
        assert_eq!(op("PUT", &format!("{base}/upload/storage/v1/b/dst/o?uploadType=resumable&upload_id=x")), "upload_chunk");
        assert_eq!(op("DELETE", &format!("{base}/upload/storage/v1/b/dst/o?uploadType=resumable&upload_id=x")), "upload_cancel");
        assert_eq!(op("PATCH", &format!("{base}/storage/v1/b/dst/o/a%2Fo")), "patch");
        assert_eq!(op("DELETE", &format!("{base}/storage/v1/b/dst/o/a%2Fo?ifGenerationMatch=3")), "delete");
        // Objects named like the listing's path are still objects.
        assert_eq!(op("GET", &format!("{base}/storage/v1/b/dst/o/a%2Fo")), "get");
        assert_eq!(op("GET", &format!("{base}/storage/v1/b/dst/o/o")), "get");
        assert_eq!(op("GET", &format!("{base}/storage/v1/b/o/o")), "list");
    }

    /// A loopback server answering each connection's request with the next status of
    /// `script` (then 200), counting requests. Status 0: a 200 whose body is cut off.
    async fn scripted(script: Vec<u16>) -> (String, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let status = script.get(n).copied().unwrap_or(200);
                let mut buf = vec![0u8; 64 << 10];
                let _ = conn.read(&mut buf).await;
                let reply = match status {
                    0 => "HTTP/1.1 200 OK\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{}".to_string(),
                    _ => format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"),
                };
                let _ = conn.write_all(reply.as_bytes()).await;
            }
        });
        (url, seen)
    }

    const FAST: Policy = Policy { attempts: 4, base: Duration::from_millis(1), max: Duration::from_millis(2) };

    #[tokio::test]
    async fn transient_statuses_are_retried_and_permanent_ones_answered_at_once() {
        let (url, seen) = scripted(vec![503, 429, 500]).await;
        let c = client(Timeouts::default(), FAST, vec![]).expect("client");
        let r = c.get(format!("{url}/storage/v1/b/x/o/y")).send().await.expect("answered");
        assert_eq!((r.status().as_u16(), seen.load(Ordering::SeqCst)), (200, 4), "three transient failures, then success");

        let (url, seen) = scripted(vec![404]).await;
        let r = c.get(format!("{url}/storage/v1/b/x/o/y")).send().await.expect("answered");
        assert_eq!((r.status().as_u16(), seen.load(Ordering::SeqCst)), (404, 1), "a 404 is an answer, not a failure");

        let (url, seen) = scripted(vec![503; 10]).await;
        let r = c.post(format!("{url}/upload/storage/v1/b/x/o?uploadType=multipart")).body("{}").send().await.expect("answered");
        assert_eq!((r.status().as_u16(), seen.load(Ordering::SeqCst)), (503, 4), "the last failure is returned once the attempts are spent");
    }

    #[tokio::test]
    async fn a_streamed_body_is_sent_once() {
        let (url, seen) = scripted(vec![503]).await;
        let c = client(Timeouts::default(), FAST, vec![]).expect("client");
        let body = reqwest::Body::wrap_stream(futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"chunk"))]));
        let r = c.put(format!("{url}/upload/storage/v1/b/x/o?upload_id=u")).body(body).send().await.expect("answered");
        assert_eq!((r.status().as_u16(), seen.load(Ordering::SeqCst)), (503, 1), "the uploader resumes a chunk, not the middleware");
    }

    #[tokio::test]
    async fn a_streamed_multipart_upload_is_held_and_sent_again() {
        let (url, seen) = scripted(vec![503, 503]).await;
        let c = client(Timeouts::default(), FAST, vec![]).expect("client");
        let body = reqwest::Body::wrap_stream(futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{}"))]));
        let r = c.post(format!("{url}/upload/storage/v1/b/x/o?uploadType=multipart")).body(body).send().await.expect("answered");
        assert_eq!((r.status().as_u16(), seen.load(Ordering::SeqCst)), (200, 3));
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried_then_surfaced() {
        // A port nothing listens on: every try is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let c = client(Timeouts::default(), FAST, vec![]).expect("client");
        let e = c.get(format!("http://127.0.0.1:{port}/storage/v1/b/x/o/y")).send().await.expect_err("refused");
        assert!(e.is_connect(), "{e}");
    }

    #[tokio::test]
    async fn a_body_cut_off_is_told_apart_from_a_failed_request() {
        let download = |url: String| async move {
            let config = gcloud_storage::client::ClientConfig {
                http: Some(client(Timeouts::default(), FAST, vec![]).expect("client")),
                storage_endpoint: url,
                ..Default::default()
            };
            let req = gcloud_storage::http::objects::get::GetObjectRequest { bucket: "b".into(), object: "o".into(), ..Default::default() };
            gcloud_storage::client::Client::new(config.anonymous()).download_object(&req, &Default::default()).await.expect_err("fails")
        };
        let (url, seen) = scripted(vec![0]).await;
        let e = download(url).await;
        assert!(crate::body_cut_off(&e), "{e:?}");
        assert_eq!(seen.load(Ordering::SeqCst), 1, "the headers were fine: the middleware did not retry");

        let (url, seen) = scripted(vec![503; 10]).await;
        let e = download(url).await;
        assert!(!crate::body_cut_off(&e), "{e:?}");
        assert_eq!(seen.load(Ordering::SeqCst), 4, "the middleware spent its attempts");
    }
}
