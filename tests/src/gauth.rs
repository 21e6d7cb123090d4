//! Google sign-in without Google: a loopback token-exchange endpoint shaped like STS
//! (`POST /v1/token`, RFC 8693 form) with the IAM Credentials impersonation endpoint
//! (`POST /v1/projects/-/serviceAccounts/EMAIL:generateAccessToken`), external_account
//! credential files pointing at it, and a gRPC endpoint that records the
//! `authorization` metadata each call carries.
//!
//! The STS fake checks the subject token as Google's would for the pool provider: a
//! file source must hand over the exact token in the file; an AWS source must hand over
//! a signed `GetCallerIdentity` request naming the provider as target resource, signed
//! with the expected access key. It mints `sts_token`; impersonation turns that (and
//! only that) into `sa_token`, for any service account but `denied@…`.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

type Body = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;
/// `(path, authorization)` of the calls a [`GrpcRecorder`] saw.
type Calls = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// The audience (workload identity pool provider) the credential files name.
pub const AUDIENCE: &str = "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/crossdock/providers/test";

/// What STS accepts as subject token.
#[derive(Debug, Clone)]
pub enum Subject {
    /// This exact token (file or URL source).
    Exact(String),
    /// A signed AWS `GetCallerIdentity` request made with this access key id.
    Aws { access_key_id: String },
}

struct State {
    subject: Subject,
    sts_token: String,
    sa_token: String,
    exchanges: AtomicUsize,
    impersonations: AtomicUsize,
    refused: Mutex<Vec<String>>,
}

/// A running fake STS + impersonation endpoint.
pub struct FakeSts {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// What a successful exchange returns.
    pub sts_token: String,
    /// What impersonation returns.
    pub sa_token: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSts {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(status: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed())
        .expect("response")
}

fn form(body: &[u8]) -> std::collections::HashMap<String, String> {
    let text = String::from_utf8_lossy(body).replace('+', " ");
    text.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned()))
        .collect()
}

/// Why `token` is not an acceptable AWS subject token, if it is not.
fn check_aws(token: &str, access_key_id: &str) -> Result<(), String> {
    let json = percent_encoding::percent_decode_str(token).decode_utf8_lossy().into_owned();
    let req: serde_json::Value = serde_json::from_str(&json).map_err(|e| format!("subject token is not a serialized AWS request: {e}"))?;
    let url = req["url"].as_str().unwrap_or_default();
    if !url.contains("sts.") || !url.contains("Action=GetCallerIdentity") {
        return Err(format!("subject token is not a GetCallerIdentity request: {url}"));
    }
    let header = |name: &str| {
        req["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|h| h["key"].as_str().is_some_and(|k| k.eq_ignore_ascii_case(name)))
            .and_then(|h| h["value"].as_str())
            .map(str::to_string)
    };
    let auth = header("Authorization").unwrap_or_default();
    if !auth.starts_with("AWS4-HMAC-SHA256 Credential=") || !auth.contains(&format!("Credential={access_key_id}/")) {
        return Err(format!("GetCallerIdentity request is not signed by {access_key_id}: {auth}"));
    }
    if header("x-goog-cloud-target-resource").as_deref() != Some(AUDIENCE) {
        return Err("GetCallerIdentity request does not name the pool provider".into());
    }
    Ok(())
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, hyper::Error> {
    let path = req.uri().path().to_string();
    let auth = req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let body = req.into_body().collect().await?.to_bytes();
    let refuse = |status: StatusCode, why: String| {
        state.refused.lock().expect("refused").push(why.clone());
        Ok(full(status, serde_json::json!({ "error": "invalid_grant", "error_description": why }).to_string()))
    };
    if path == "/v1/token" {
        let f = form(&body);
        let get = |k: &str| f.get(k).map(String::as_str).unwrap_or_default();
        if get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange" {
            return refuse(StatusCode::BAD_REQUEST, format!("grant_type {:?}", get("grant_type")));
        }
        if get("audience") != AUDIENCE {
            return refuse(StatusCode::BAD_REQUEST, format!("audience {:?} is not the pool provider", get("audience")));
        }
        let subject = get("subject_token");
        let verdict = match &state.subject {
            Subject::Exact(want) if subject == want => Ok(()),
            Subject::Exact(_) => Err("the subject token was not issued by the pool's identity provider".to_string()),
            Subject::Aws { access_key_id } => check_aws(subject, access_key_id),
        };
        if let Err(why) = verdict {
            return refuse(StatusCode::BAD_REQUEST, why);
        }
        state.exchanges.fetch_add(1, Ordering::SeqCst);
        let body = serde_json::json!({
            "access_token": state.sts_token,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer",
            "expires_in": 3600
        });
        return Ok(full(StatusCode::OK, body.to_string()));
    }
    if path.contains("/serviceAccounts/") && path.ends_with(":generateAccessToken") {
        if path.contains("/serviceAccounts/denied@") {
            let why = "the federated principal may not impersonate this service account (roles/iam.workloadIdentityUser missing)";
            state.refused.lock().expect("refused").push(why.into());
            let body = serde_json::json!({ "error": { "code": 403, "message": why, "status": "PERMISSION_DENIED" } });
            return Ok(full(StatusCode::FORBIDDEN, body.to_string()));
        }
        if auth != format!("Bearer {}", state.sts_token) {
            return refuse(StatusCode::UNAUTHORIZED, "impersonation without the STS token".into());
        }
        state.impersonations.fetch_add(1, Ordering::SeqCst);
        let body = serde_json::json!({ "accessToken": state.sa_token, "expireTime": "2099-01-01T00:00:00Z" });
        return Ok(full(StatusCode::OK, body.to_string()));
    }
    Ok(full(StatusCode::NOT_FOUND, "{}".into()))
}

impl FakeSts {
    /// Starts on a free loopback port, accepting `subject`.
    pub async fn start(subject: Subject) -> FakeSts {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind sts");
        let addr = listener.local_addr().expect("addr");
        let tag = crate::unique("t");
        let state = Arc::new(State {
            subject,
            sts_token: format!("sts-{tag}"),
            sa_token: format!("sa-{tag}"),
            exchanges: AtomicUsize::new(0),
            impersonations: AtomicUsize::new(0),
            refused: Mutex::new(Vec::new()),
        });
        let serving = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let state = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(conn), service).await;
                });
            }
        });
        FakeSts { url: format!("http://{addr}"), sts_token: state.sts_token.clone(), sa_token: state.sa_token.clone(), state, task }
    }

    /// Successful token exchanges so far.
    pub fn exchanges(&self) -> usize {
        self.state.exchanges.load(Ordering::SeqCst)
    }

    /// Successful impersonations so far.
    pub fn impersonations(&self) -> usize {
        self.state.impersonations.load(Ordering::SeqCst)
    }

    /// Why requests were refused so far.
    pub fn refused(&self) -> Vec<String> {
        self.state.refused.lock().expect("refused").clone()
    }

    /// Writes an external_account credential file into `dir` with `credential_source`,
    /// impersonating `impersonate` (a service-account email) if given.
    pub fn credential_file(&self, dir: &std::path::Path, name: &str, credential_source: serde_json::Value, impersonate: Option<&str>) -> std::path::PathBuf {
        let mut cred = serde_json::json!({
            "type": "external_account",
            "audience": AUDIENCE,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": format!("{}/v1/token", self.url),
            "credential_source": credential_source,
        });
        if let Some(email) = impersonate {
            cred["service_account_impersonation_url"] = format!("{}/v1/projects/-/serviceAccounts/{email}:generateAccessToken", self.url).into();
        }
        if matches!(self.state.subject, Subject::Aws { .. }) {
            cred["subject_token_type"] = "urn:ietf:params:aws:token-type:aws4_request".into();
        }
        let path = dir.join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(&cred).expect("json")).expect("write credential file");
        path
    }
}

/// The `credential_source` of an AWS (EC2) workload: gcloud's own configuration
/// (`gcloud iam workload-identity-pools create-cred-config --aws`), metadata URLs
/// included; the client reads credentials and region from the environment when
/// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and AWS_REGION are set, as on EKS/ECS and
/// in these tests, else from those IMDSv2 URLs.
pub fn aws_credential_source() -> serde_json::Value {
    serde_json::json!({
        "environment_id": "aws1",
        "region_url": "http://169.254.169.254/latest/meta-data/placement/availability-zone",
        "url": "http://169.254.169.254/latest/meta-data/iam/security-credentials",
        "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
        "imdsv2_session_token_url": "http://169.254.169.254/latest/api/token"
    })
}

/// A plaintext HTTP/2 endpoint answering every gRPC call UNIMPLEMENTED and recording
/// the call's path and `authorization` metadata.
pub struct GrpcRecorder {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    calls: Calls,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GrpcRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GrpcRecorder {
    pub async fn start() -> GrpcRecorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let addr = listener.local_addr().expect("addr");
        let calls: Calls = Arc::default();
        let seen = calls.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
                            seen.lock().expect("calls").push((req.uri().path().to_string(), auth));
                            let _ = req.into_body().collect().await;
                            // Trailers-only response: the status travels in the headers.
                            Ok::<Response<Body>, hyper::Error>(
                                Response::builder()
                                    .header("content-type", "application/grpc")
                                    .header("grpc-status", "12")
                                    .header("grpc-message", "recorded")
                                    .body(Full::new(Bytes::new()).map_err(|n| match n {}).boxed())
                                    .expect("response"),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(conn), service).await;
                });
            }
        });
        GrpcRecorder { url: format!("http://{addr}"), calls, task }
    }

    /// `(path, authorization)` of every call so far.
    pub fn calls(&self) -> Vec<(String, Option<String>)> {
        self.calls.lock().expect("calls").clone()
    }
}

/// The address EC2's instance metadata service answers on; gcloud-auth's AWS source
/// refuses any other host in the credential file's URLs.
pub const IMDS_ADDR: &str = "169.254.169.254";

/// A fake EC2 instance metadata service speaking IMDSv2 on `169.254.169.254:80`: a
/// session token from `PUT /latest/api/token`, then the region and the role's temporary
/// credentials, each GET refused (401, as EC2 does) without that token.
pub struct FakeImdsV2 {
    served: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeImdsV2 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeImdsV2 {
    /// Serves `access_key_id` as the credentials of role `role`, in `region`. `None` when
    /// the address cannot be bound: it must be on an interface (`scripts/local-stack up`
    /// adds it to `lo` when run as root) and port 80 free.
    pub async fn start(role: &str, region: &str, access_key_id: &str) -> Option<FakeImdsV2> {
        let listener = tokio::net::TcpListener::bind((IMDS_ADDR, 80)).await.ok()?;
        let token = format!("imds-{}", crate::unique("t"));
        let served: Arc<Mutex<Vec<String>>> = Arc::default();
        let creds = serde_json::json!({
            "Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": access_key_id, "SecretAccessKey": "imds-secret",
            "Token": "imds-session", "Expiration": "2099-01-01T00:00:00Z",
        })
        .to_string();
        let routes: Arc<Vec<(String, String)>> = Arc::new(vec![
            ("/latest/meta-data/placement/availability-zone".into(), format!("{region}a")),
            ("/latest/meta-data/iam/security-credentials".into(), role.to_string()),
            (format!("/latest/meta-data/iam/security-credentials/{role}"), creds),
        ]);
        let (want, seen) = (token, served.clone());
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (want, seen, routes) = (want.clone(), seen.clone(), routes.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (want, seen, routes) = (want.clone(), seen.clone(), routes.clone());
                        async move {
                            let path = req.uri().path().to_string();
                            let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
                            let (status, body) = if req.method() == hyper::Method::PUT && path == "/latest/api/token" {
                                match header("x-aws-ec2-metadata-token-ttl-seconds") {
                                    Some(_) => (StatusCode::OK, want.clone()),
                                    None => (StatusCode::BAD_REQUEST, String::new()),
                                }
                            } else if header("x-aws-ec2-metadata-token").as_deref() != Some(want.as_str()) {
                                (StatusCode::UNAUTHORIZED, String::new())
                            } else {
                                match routes.iter().find(|(p, _)| *p == path) {
                                    Some((_, body)) => (StatusCode::OK, body.clone()),
                                    None => (StatusCode::NOT_FOUND, String::new()),
                                }
                            };
                            seen.lock().expect("served").push(format!("{} {path} {}", req.method(), status.as_u16()));
                            Ok::<Response<Body>, hyper::Error>(
                                Response::builder().status(status).body(Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed()).expect("response"),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(conn), service).await;
                });
            }
        });
        Some(FakeImdsV2 { served, task })
    }

    /// `METHOD PATH STATUS` of every request, in order.
    pub fn served(&self) -> Vec<String> {
        self.served.lock().expect("served").clone()
    }
}
