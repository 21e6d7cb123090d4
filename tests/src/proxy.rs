//! An HTTP proxy the tests put between a `crossdock` process and one local server
//! (moto, fake-gcs-server), so a fault lands at a point the test chooses instead of at
//! a moment it guesses.
//!
//! Requests are forwarded unchanged (the `Host` header too, so signed S3 requests and
//! the upload URLs fake-gcs-server hands out keep pointing at the proxy). A rule
//! matches requests by method and decoded path + query and acts on the matches after
//! the first `after`: [`Action::Hold`] keeps the request open, unanswered and not
//! forwarded, until [`FaultProxy::release`]; [`Action::Status`] answers with an error
//! status without forwarding; [`Action::Reset`] and [`Action::Lose`] close the
//! connection unanswered, before or after the server acted on the request.
//! [`FaultProxy::every`] gives a share of the requests a fault (every n-th match).
//!
//! In front of fake-gcs-server the proxy also answers GCS's resumable-upload status
//! check itself, from the ranges the server acknowledged, because fake-gcs-server
//! finalises the object on that request instead of reporting the committed offset. Tests wait on [`FaultProxy::wait_held`], a state they can
//! observe, before they signal or kill the process: the process is then known to be
//! blocked inside that request.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Body = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

/// What a rule does to a matching request past its first `after` matches.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    /// Keep the request open, not forwarded, until [`FaultProxy::release`].
    Hold,
    /// Answer with this status (e.g. 503) without forwarding.
    Status(u16),
    /// A connection that stopped moving bytes: keep the request open and unanswered
    /// like [`Action::Hold`], but never forward it; at [`FaultProxy::release`] it is
    /// answered 504. The client is expected to give up on it first (a stall or read
    /// timeout), so nothing it sent ever reaches the server.
    Stall,
    /// A connection reset before the request reaches the server: the connection is
    /// closed without an answer, nothing is forwarded.
    Reset,
    /// A reply lost on the way back: the request is forwarded (the server acts on it),
    /// then the connection is closed without an answer.
    Lose,
}

/// Matches a request by method and its percent-decoded path and query.
pub type Matcher = Box<dyn Fn(&str, &str) -> bool + Send + Sync>;

struct Rule {
    matches: Matcher,
    after: usize,
    times: usize,
    /// Acts on every `every`-th match past `after` (1: each one).
    every: usize,
    seen: usize,
    action: Action,
}

/// GCS resumable upload sessions as the proxy saw them, so it can answer the status
/// check (`PUT` with `Content-Range: bytes */…` and no body) as GCS does:
/// fake-gcs-server finalises the object on that request instead.
#[derive(Default)]
struct Sessions {
    /// Bytes the server acknowledged per upload id.
    committed: std::collections::HashMap<String, u64>,
    /// The final answer (status, body) of finished uploads.
    finished: std::collections::HashMap<String, (u16, Bytes)>,
}

struct State {
    upstream: hyper::Uri,
    rules: Mutex<Vec<Rule>>,
    released: AtomicBool,
    closed: AtomicBool,
    release: tokio::sync::Notify,
    held: AtomicUsize,
    faulted: AtomicUsize,
    client: Client<HttpConnector, Incoming>,
    /// `Authorization` value every request must carry ([`FaultProxy::requiring`]).
    require: Option<String>,
    rejected: AtomicUsize,
    authorized: AtomicUsize,
    sessions: Mutex<Sessions>,
    /// Request body bytes forwarded to the server under `/upload/` (GCS uploads).
    uploaded: std::sync::atomic::AtomicU64,
    /// Requests received, and those of them under `/upload/`.
    requests: AtomicUsize,
    upload_requests: AtomicUsize,
}

/// A running proxy. Dropped, it stops: held requests are answered 503 and never
/// forwarded (their client is usually a killed process).
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.state.closed.store(true, Ordering::SeqCst);
        self.state.release.notify_waiters();
    }
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream`
    /// (`http://host:port` or `host:port`).
    pub async fn start(upstream: &str) -> FaultProxy {
        FaultProxy::start_with(upstream, None).await
    }

    /// A proxy that answers 401, without forwarding, every request whose
    /// `Authorization` is not `Bearer {token}`: in front of fake-gcs-server (which
    /// accepts anything) it stands for Google's front end checking the signed-in token.
    pub async fn requiring(upstream: &str, token: &str) -> FaultProxy {
        FaultProxy::start_with(upstream, Some(format!("Bearer {token}"))).await
    }

    /// Requests refused for a missing or wrong token so far.
    pub fn rejected(&self) -> usize {
        self.state.rejected.load(Ordering::SeqCst)
    }

    /// Requests that carried the required token so far.
    pub fn authorized(&self) -> usize {
        self.state.authorized.load(Ordering::SeqCst)
    }

    async fn start_with(upstream: &str, require: Option<String>) -> FaultProxy {
        let upstream = if upstream.contains("://") { upstream.to_string() } else { format!("http://{upstream}") };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(State {
            upstream: upstream.parse().unwrap_or_else(|e| panic!("upstream {upstream}: {e}")),
            rules: Mutex::new(Vec::new()),
            released: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            release: tokio::sync::Notify::new(),
            held: AtomicUsize::new(0),
            faulted: AtomicUsize::new(0),
            client: Client::builder(TokioExecutor::new()).build_http(),
            require,
            rejected: AtomicUsize::new(0),
            authorized: AtomicUsize::new(0),
            sessions: Mutex::default(),
            uploaded: std::sync::atomic::AtomicU64::new(0),
            requests: AtomicUsize::new(0),
            upload_requests: AtomicUsize::new(0),
        });
        let serving = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let state = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    // A service error closes the connection unanswered: that is how
                    // `Reset` and `Lose` cut it.
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(conn), service).await;
                });
            }
        });
        FaultProxy { url: format!("http://{addr}"), state, task }
    }

    /// Adds a rule: requests for which `matches(method, decoded_path_and_query)` holds
    /// get `action`, except the first `after` of them, which are forwarded.
    pub fn rule(&self, after: usize, action: Action, matches: impl Fn(&str, &str) -> bool + Send + Sync + 'static) {
        self.rule_n(after, usize::MAX, action, matches);
    }

    /// [`FaultProxy::rule`] for `times` matches only (after the first `after`); later
    /// matches are forwarded again.
    pub fn rule_n(&self, after: usize, times: usize, action: Action, matches: impl Fn(&str, &str) -> bool + Send + Sync + 'static) {
        self.state.rules.lock().expect("rules").push(Rule { matches: Box::new(matches), after, times, every: 1, seen: 0, action });
    }

    /// A share of the matching requests gets `action`: the `every`-th, `2·every`-th, …
    /// match (counted, so a run meets the same share of faults on a fast machine and a
    /// loaded one). Every rule counts the requests it matches; when several rules' turns
    /// fall on one request, the one added first acts.
    pub fn every(&self, every: usize, action: Action, matches: impl Fn(&str, &str) -> bool + Send + Sync + 'static) {
        self.state.rules.lock().expect("rules").push(Rule { matches: Box::new(matches), after: 0, times: usize::MAX, every: every.max(1), seen: 0, action });
    }

    /// Request body bytes forwarded to the server under `/upload/` so far (GCS uploads,
    /// by their `Content-Length`): what reached GCS, resent bytes included.
    pub fn uploaded_bytes(&self) -> u64 {
        self.state.uploaded.load(Ordering::SeqCst)
    }

    /// Requests received so far, and how many of them were uploads (`/upload/`): the
    /// rest are a process's coordination calls (listings, records, queue calls).
    pub fn requests(&self) -> (usize, usize) {
        (self.state.requests.load(Ordering::SeqCst), self.state.upload_requests.load(Ordering::SeqCst))
    }

    /// Requests being held right now.
    pub fn held(&self) -> usize {
        self.state.held.load(Ordering::SeqCst)
    }

    /// Requests answered with an injected status so far.
    pub fn faulted(&self) -> usize {
        self.state.faulted.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests are held (true), or `limit` passes (false).
    pub async fn wait_held(&self, n: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.held() < n {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Lets every held request through and turns every rule off.
    pub fn release(&self) {
        self.state.rules.lock().expect("rules").clear();
        self.state.released.store(true, Ordering::SeqCst);
        self.state.release.notify_waiters();
    }
}

type Cut = Box<dyn std::error::Error + Send + Sync>;

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Cut> {
    let target = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    let decoded = percent_encoding::percent_decode_str(&target).decode_utf8_lossy().into_owned();
    state.requests.fetch_add(1, Ordering::SeqCst);
    if decoded.starts_with("/upload/") {
        state.upload_requests.fetch_add(1, Ordering::SeqCst);
    }
    if let Some(want) = &state.require {
        let got = req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if got != Some(want.as_str()) {
            state.rejected.fetch_add(1, Ordering::SeqCst);
            let body = r#"{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}"#;
            return Ok(Response::builder().status(StatusCode::UNAUTHORIZED).header("content-type", "application/json").body(full(body)).expect("response"));
        }
        state.authorized.fetch_add(1, Ordering::SeqCst);
    }
    let action = {
        let mut rules = state.rules.lock().expect("rules");
        // Every matching rule counts the request; the first whose turn it is acts.
        let mut act = None;
        for r in rules.iter_mut().filter(|r| (r.matches)(req.method().as_str(), &decoded)) {
            r.seen += 1;
            let past = r.seen.saturating_sub(r.after);
            if act.is_none() && r.seen > r.after && past <= r.times.saturating_mul(r.every) && past % r.every == 0 {
                act = Some(r.action);
            }
        }
        act
    };
    match action {
        Some(Action::Status(code)) => {
            state.faulted.fetch_add(1, Ordering::SeqCst);
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return Ok(Response::builder().status(status).body(full("injected fault")).expect("response"));
        }
        Some(Action::Reset) => {
            state.faulted.fetch_add(1, Ordering::SeqCst);
            return Err("injected reset".into());
        }
        Some(action @ (Action::Hold | Action::Stall)) => {
            state.held.fetch_add(1, Ordering::SeqCst);
            loop {
                let notified = state.release.notified();
                if state.released.load(Ordering::SeqCst) || state.closed.load(Ordering::SeqCst) {
                    break;
                }
                notified.await;
            }
            state.held.fetch_sub(1, Ordering::SeqCst);
            if state.closed.load(Ordering::SeqCst) {
                return Ok(Response::builder().status(StatusCode::SERVICE_UNAVAILABLE).body(full("proxy stopped")).expect("response"));
            }
            if matches!(action, Action::Stall) {
                return Ok(Response::builder().status(StatusCode::GATEWAY_TIMEOUT).body(full("stalled request, never forwarded")).expect("response"));
            }
        }
        Some(Action::Lose) | None => {}
    }
    let upload_id = decoded.contains("/upload/").then(|| query_value(&decoded, "upload_id")).flatten();
    if let (Some(id), true) = (&upload_id, req.method() == hyper::Method::PUT && is_status_check(&req)) {
        return Ok(session_status(&state, id));
    }
    if decoded.starts_with("/upload/") {
        let len = req.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).unwrap_or(0);
        state.uploaded.fetch_add(len, Ordering::SeqCst);
    }
    let (mut parts, body) = req.into_parts();
    let mut uri = state.upstream.clone().into_parts();
    uri.path_and_query = Some(target.parse().expect("path"));
    parts.uri = hyper::Uri::from_parts(uri).expect("upstream uri");
    let resp = match state.client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => resp,
        Err(e) => return Ok(Response::builder().status(StatusCode::BAD_GATEWAY).body(full(&format!("proxy: {e}"))).expect("response")),
    };
    let resp = match upload_id {
        Some(id) => record_session(&state, &id, resp).await?,
        None => resp.map(|b| b.boxed()),
    };
    if matches!(action, Some(Action::Lose)) {
        state.faulted.fetch_add(1, Ordering::SeqCst);
        return Err("injected reset after the server answered".into());
    }
    Ok(resp)
}

fn query_value(path_and_query: &str, key: &str) -> Option<String> {
    let query = path_and_query.split_once('?')?.1;
    query.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
}

/// A resumable upload's status check: `Content-Range: bytes */…` and no body.
fn is_status_check(req: &Request<Incoming>) -> bool {
    let range = req.headers().get(hyper::header::CONTENT_RANGE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let empty = req.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()) == Some("0");
    range.starts_with("bytes */") && empty
}

/// GCS's answer to a status check: the finished object, or 308 with the committed range.
fn session_status(state: &State, id: &str) -> Response<Body> {
    let sessions = state.sessions.lock().expect("sessions");
    if let Some((status, body)) = sessions.finished.get(id) {
        let body = Full::new(body.clone()).map_err(|never| match never {}).boxed();
        return Response::builder().status(*status).header("content-type", "application/json").body(body).expect("response");
    }
    let mut r = Response::builder().status(308);
    if let Some(n) = sessions.committed.get(id).filter(|n| **n > 0) {
        r = r.header("range", format!("bytes=0-{}", n - 1));
    }
    r.body(full("")).expect("response")
}

/// Notes what the server acknowledged of an upload session (a 308's `Range`, or the
/// final answer), passing the response on.
async fn record_session(state: &State, id: &str, resp: Response<Incoming>) -> Result<Response<Body>, Cut> {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    {
        let mut sessions = state.sessions.lock().expect("sessions");
        if parts.status.as_u16() == 308 {
            let last = parts.headers.get("range").and_then(|v| v.to_str().ok()?.rsplit('-').next()?.parse::<u64>().ok());
            sessions.committed.insert(id.to_string(), last.map_or(0, |l| l + 1));
        } else if parts.status.is_success() {
            sessions.finished.insert(id.to_string(), (parts.status.as_u16(), body.clone()));
        }
    }
    Ok(Response::from_parts(parts, Full::new(body).map_err(|never| match never {}).boxed()))
}

fn full(text: &str) -> Body {
    Full::new(Bytes::from(text.to_string())).map_err(|never| match never {}).boxed()
}

impl FaultProxy {
    /// A proxy in front of the stack's S3 (moto, `AWS_ENDPOINT_URL`); give it to a child
    /// process as `AWS_ENDPOINT_URL_S3`.
    pub async fn s3() -> FaultProxy {
        FaultProxy::start(&crate::stack_var("AWS_ENDPOINT_URL")).await
    }

    /// A proxy in front of the stack's GCS (fake-gcs-server, `STORAGE_EMULATOR_HOST`);
    /// give it to a child process as `STORAGE_EMULATOR_HOST`.
    pub async fn gcs() -> FaultProxy {
        FaultProxy::start(&crate::stack_var("STORAGE_EMULATOR_HOST")).await
    }
}

/// An exporter's checkpoint write (S3 PUT of `…/_checkpoint/seg-….json`).
pub fn checkpoint_put(method: &str, path: &str) -> bool {
    method == "PUT" && path.contains("/_checkpoint/")
}

/// Any GCS upload request (simple, multipart or a resumable upload's chunk).
pub fn gcs_upload(_method: &str, path: &str) -> bool {
    path.starts_with("/upload/")
}

/// An exporter's data part write (PutObject or UploadPart of `…/data/…`).
pub fn part_put(method: &str, path: &str) -> bool {
    method == "PUT" && path.contains("/data/")
}

/// A GCS media download of a dump part (`…/data/…?alt=media`).
pub fn data_download(method: &str, path: &str) -> bool {
    method == "GET" && path.contains("/data/") && path.contains("alt=media")
}

/// A resumable upload's chunk (`PUT` to a session URL).
pub fn upload_chunk(method: &str, path: &str) -> bool {
    method == "PUT" && path.starts_with("/upload/") && path.contains("upload_id=")
}

/// Any request.
pub fn any(_method: &str, _path: &str) -> bool {
    true
}
