//! S3 and DynamoDB in memory, behind the SDK's own seam (its HTTP client), so the
//! exporter's real clients, requests and error handling run in `cargo test` with no
//! server: path-style S3 (objects with ETags, conditional writes, listings, multipart
//! uploads) and DynamoDB's JSON protocol (DescribeTable, UpdateTable, Scan by segment).
//! Every call is logged in order, and a test can arm failures.

use crate::lease::Autoscaler;
use crate::run::Clients;
use aws_sdk_s3::config::http::{HttpRequest, HttpResponse};
use aws_sdk_s3::primitives::SdkBody;
use aws_smithy_runtime_api::client::http::{http_client_fn, HttpConnector, HttpConnectorFuture, SharedHttpConnector};
use aws_smithy_runtime_api::http::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One call, as logged: the operation and the key (S3) or segment (Scan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub op: &'static str,
    pub key: String,
}

/// A failure armed for the next calls of `op` whose key contains `key`.
struct Fault {
    op: &'static str,
    key: String,
    /// Matching calls that still succeed first.
    skip: usize,
    status: u16,
    code: &'static str,
}

/// A table: its items (DynamoDB JSON maps, in insertion order) and capacity.
pub struct Table {
    pub key: String,
    pub items: Vec<Value>,
    /// `None`: on demand.
    pub read: Option<i64>,
    pub write: i64,
    pub decreases_today: i64,
}

type Parts = BTreeMap<i32, Vec<u8>>;

#[derive(Default)]
struct State {
    buckets: Vec<String>,
    objects: BTreeMap<(String, String), (Vec<u8>, String)>,
    versions: u64,
    /// Multipart uploads in progress: their parts by number.
    uploads: BTreeMap<String, Parts>,
    tables: BTreeMap<String, Table>,
    calls: Vec<Call>,
    faults: Vec<Fault>,
}

/// The fake services; clones share them.
#[derive(Clone, Default)]
pub struct FakeAws {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FakeAws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeAws")
    }
}

fn response(status: u16, headers: &[(&str, String)], body: impl Into<SdkBody>) -> HttpResponse {
    let mut r = HttpResponse::new(StatusCode::try_from(status).expect("status"), body.into());
    for (k, v) in headers {
        r.headers_mut().insert(k.to_string(), v.clone());
    }
    r
}

fn s3_error(status: u16, code: &str) -> HttpResponse {
    let xml = format!(r#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{code}</Message><RequestId>fake</RequestId></Error>"#);
    response(status, &[("content-type", "application/xml".into())], xml)
}

fn ddb_error(code: &str) -> HttpResponse {
    let body = json!({"__type": format!("com.amazonaws.dynamodb.v20120810#{code}"), "message": code}).to_string();
    response(400, &[("content-type", "application/x-amz-json-1.0".into())], body)
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The request's body, from an aws-chunked stream when the SDK sent one.
fn body_of(req: &HttpRequest) -> Vec<u8> {
    let raw = req.body().bytes().unwrap_or_default();
    if req.headers().get("content-encoding").is_none_or(|e| !e.contains("aws-chunked")) {
        return raw.to_vec();
    }
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..eol]).ok().and_then(|h| usize::from_str_radix(h.split(';').next().unwrap_or("0"), 16).ok()).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
        rest = &rest[eol + 2 + size + 2..];
    }
    out
}

impl FakeAws {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The export's clients on these services.
    pub fn clients(&self, autoscaler: Arc<dyn Autoscaler>) -> Clients {
        let fake = self.clone();
        let http = http_client_fn(move |_, _| SharedHttpConnector::new(fake.clone()));
        let creds = aws_sdk_s3::config::Credentials::new("fake", "fake", None, None, "fake");
        let s3 = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(creds.clone())
            .endpoint_url("http://s3.fake")
            .force_path_style(true)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .http_client(http.clone())
            .build();
        let ddb = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .endpoint_url("http://dynamodb.fake")
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            .http_client(http)
            .build();
        Clients { ddb: aws_sdk_dynamodb::Client::from_conf(ddb), s3: aws_sdk_s3::Client::from_conf(s3), autoscaler }
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.state().buckets.push(bucket.into());
    }

    /// A provisioned table (`read: None`: on demand) keyed by the string attribute `key`.
    pub fn create_table(&self, name: &str, key: &str, read: Option<i64>, items: Vec<Value>) {
        self.state().tables.insert(name.into(), Table { key: key.into(), items, read, write: 5, decreases_today: 0 });
    }

    /// Reads and changes a table.
    pub fn table<T>(&self, name: &str, f: impl FnOnce(&mut Table) -> T) -> T {
        f(self.state().tables.get_mut(name).expect("table"))
    }

    /// The next calls of `op` (`PutObject`, `Scan`, …) on keys containing `key` (for
    /// Scan: `T/seg-N from K`) fail with `status`/`code`, after `skip` of them succeed.
    pub fn fail(&self, op: &'static str, key: &str, skip: usize, status: u16, code: &'static str) {
        self.state().faults.push(Fault { op, key: key.into(), skip, status, code });
    }

    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    pub fn object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        self.state().objects.get(&(bucket.to_string(), key.to_string())).map(|(b, _)| b.clone())
    }

    pub fn put_object(&self, bucket: &str, key: &str, body: Vec<u8>) {
        let mut st = self.state();
        st.versions += 1;
        let etag = format!("\"v{}\"", st.versions);
        st.objects.insert((bucket.into(), key.into()), (body, etag));
    }

    /// Keys in `bucket` under `prefix`.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        self.state().objects.keys().filter(|(b, k)| b == bucket && k.starts_with(prefix)).map(|(_, k)| k.clone()).collect()
    }

    /// Logs the call; the armed failure's response if one applies.
    fn call(&self, op: &'static str, key: &str) -> Option<(u16, &'static str)> {
        let mut st = self.state();
        st.calls.push(Call { op, key: key.into() });
        let f = st.faults.iter_mut().find(|f| f.op == op && key.contains(&f.key))?;
        if f.skip > 0 {
            f.skip -= 1;
            return None;
        }
        Some((f.status, f.code))
    }

    fn s3(&self, req: &HttpRequest) -> HttpResponse {
        let uri = req.uri().to_string();
        let after_host = uri.split_once("://").map_or(uri.as_str(), |(_, r)| r);
        let path_query = after_host.find('/').map_or("/", |i| &after_host[i..]);
        let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
        let query: BTreeMap<String, String> =
            query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').map_or((decode(p), String::new()), |(k, v)| (decode(k), decode(v)))).collect();
        let path = path.trim_start_matches('/');
        let (bucket, key) = path.split_once('/').map_or((decode(path), String::new()), |(b, k)| (decode(b), decode(k)));
        let method = req.method().to_string();
        let op = match (method.as_str(), key.is_empty()) {
            ("HEAD", true) => "HeadBucket",
            ("GET", true) => "ListObjectsV2",
            ("PUT", false) if query.contains_key("uploadId") => "UploadPart",
            ("PUT", false) => "PutObject",
            ("GET", false) => "GetObject",
            ("DELETE", false) if query.contains_key("uploadId") => "AbortMultipartUpload",
            ("DELETE", false) => "DeleteObject",
            ("POST", false) if query.contains_key("uploads") => "CreateMultipartUpload",
            ("POST", false) => "CompleteMultipartUpload",
            _ => return s3_error(400, "NotImplemented"),
        };
        if let Some((status, code)) = self.call(op, &key) {
            return s3_error(status, code);
        }
        let mut st = self.state();
        if !st.buckets.contains(&bucket) {
            return s3_error(404, "NoSuchBucket");
        }
        let id = (bucket.clone(), key.clone());
        match op {
            "HeadBucket" => response(200, &[], SdkBody::empty()),
            "ListObjectsV2" => {
                let prefix = query.get("prefix").cloned().unwrap_or_default();
                let delimiter = query.get("delimiter").filter(|d| !d.is_empty());
                let mut contents = String::new();
                let mut prefixes = std::collections::BTreeSet::new();
                for ((b, k), (body, etag)) in &st.objects {
                    let Some(rest) = k.strip_prefix(&prefix).filter(|_| *b == bucket) else { continue };
                    match delimiter.and_then(|d| rest.find(d.as_str()).map(|i| (i, d.len()))) {
                        Some((i, n)) => {
                            prefixes.insert(format!("{prefix}{}", &rest[..i + n]));
                        }
                        None => contents.push_str(&format!(
                            "<Contents><Key>{}</Key><Size>{}</Size><ETag>{}</ETag></Contents>",
                            xml_escape(k),
                            body.len(),
                            xml_escape(etag)
                        )),
                    }
                }
                let common: String = prefixes.iter().map(|p| format!("<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>", xml_escape(p))).collect();
                let xml = format!(
                    r#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>{}</Name><Prefix>{}</Prefix><IsTruncated>false</IsTruncated>{contents}{common}</ListBucketResult>"#,
                    xml_escape(&bucket),
                    xml_escape(&prefix)
                );
                response(200, &[("content-type", "application/xml".into())], xml)
            }
            "PutObject" => {
                let current = st.objects.get(&id).map(|(_, e)| e.clone());
                let if_none = req.headers().get("if-none-match").is_some_and(|v| v == "*") && current.is_some();
                let if_match = req.headers().get("if-match").is_some_and(|want| current.as_deref() != Some(want));
                if if_none || if_match {
                    return s3_error(412, "PreconditionFailed");
                }
                st.versions += 1;
                let etag = format!("\"v{}\"", st.versions);
                st.objects.insert(id, (body_of(req), etag.clone()));
                response(200, &[("etag", etag)], SdkBody::empty())
            }
            "GetObject" => match st.objects.get(&id) {
                Some((body, etag)) => response(200, &[("etag", etag.clone()), ("content-length", body.len().to_string())], body.clone()),
                None => s3_error(404, "NoSuchKey"),
            },
            "DeleteObject" => {
                st.objects.remove(&id);
                response(204, &[], SdkBody::empty())
            }
            "CreateMultipartUpload" => {
                st.versions += 1;
                let upload = format!("u{}", st.versions);
                st.uploads.insert(upload.clone(), Parts::new());
                let xml = format!(
                    "<InitiateMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{}</Key><UploadId>{upload}</UploadId></InitiateMultipartUploadResult>",
                    xml_escape(&key)
                );
                response(200, &[("content-type", "application/xml".into())], xml)
            }
            "UploadPart" => {
                let number: i32 = query.get("partNumber").and_then(|n| n.parse().ok()).unwrap_or(0);
                let body = body_of(req);
                match st.uploads.get_mut(&query["uploadId"]) {
                    Some(parts) => {
                        parts.insert(number, body);
                        response(200, &[("etag", format!("\"p{number}\""))], SdkBody::empty())
                    }
                    None => s3_error(404, "NoSuchUpload"),
                }
            }
            "AbortMultipartUpload" => {
                st.uploads.remove(&query["uploadId"]);
                response(204, &[], SdkBody::empty())
            }
            _ => match st.uploads.remove(&query["uploadId"]) {
                Some(parts) => {
                    st.versions += 1;
                    let etag = format!("\"v{}-{}\"", st.versions, parts.len());
                    st.objects.insert(id, (parts.into_values().flatten().collect(), etag.clone()));
                    let xml = format!("<CompleteMultipartUploadResult><ETag>{}</ETag></CompleteMultipartUploadResult>", xml_escape(&etag));
                    response(200, &[("content-type", "application/xml".into())], xml)
                }
                None => s3_error(404, "NoSuchUpload"),
            },
        }
    }

    fn dynamodb(&self, req: &HttpRequest) -> HttpResponse {
        let target = req.headers().get("x-amz-target").unwrap_or_default();
        let op: &'static str = match target.rsplit('.').next().unwrap_or_default() {
            "DescribeTable" => "DescribeTable",
            "UpdateTable" => "UpdateTable",
            "Scan" => "Scan",
            _ => return ddb_error("UnknownOperationException"),
        };
        let input: Value = serde_json::from_slice(&body_of(req)).unwrap_or(Value::Null);
        let name = input["TableName"].as_str().unwrap_or_default().to_string();
        // A scan is logged with its segment and where it starts: `T/seg-N from K`.
        let key = match op {
            "Scan" => {
                let from = input["ExclusiveStartKey"].as_object().and_then(|k| k.values().next()).and_then(|v| v["S"].as_str()).unwrap_or("the start");
                format!("{name}/seg-{} from {from}", input["Segment"])
            }
            _ => name.clone(),
        };
        if let Some((_, code)) = self.call(op, &key) {
            return ddb_error(code);
        }
        let mut st = self.state();
        let Some(t) = st.tables.get_mut(&name) else { return ddb_error("ResourceNotFoundException") };
        let out = match op {
            "DescribeTable" => json!({"Table": describe(&name, t)}),
            "UpdateTable" => {
                let read = input["ProvisionedThroughput"]["ReadCapacityUnits"].as_i64();
                if let (Some(new), Some(old)) = (read, t.read) {
                    if new < old {
                        t.decreases_today += 1;
                    }
                    t.read = Some(new);
                }
                json!({"TableDescription": describe(&name, t)})
            }
            _ => {
                let (segment, total) = (input["Segment"].as_u64().unwrap_or(0) as usize, input["TotalSegments"].as_u64().unwrap_or(1) as usize);
                let limit = input["Limit"].as_u64().map_or(usize::MAX, |l| l as usize);
                let mine: Vec<&Value> = t.items.iter().enumerate().filter(|(i, _)| i % total == segment).map(|(_, v)| v).collect();
                let start = match input.get("ExclusiveStartKey") {
                    Some(k) => mine.iter().position(|v| v[&t.key] == k[&t.key]).map_or(mine.len(), |p| p + 1),
                    None => 0,
                };
                let page: Vec<Value> = mine.iter().skip(start).take(limit).map(|v| (*v).clone()).collect();
                let mut out = json!({"Items": page, "Count": page.len(), "ScannedCount": page.len(),
                    "ConsumedCapacity": {"TableName": name, "CapacityUnits": 0.5 * page.len().max(1) as f64}});
                if start + page.len() < mine.len() {
                    if let Some(last) = page.last() {
                        let mut key = serde_json::Map::new();
                        key.insert(t.key.clone(), last[&t.key].clone());
                        out["LastEvaluatedKey"] = Value::Object(key);
                    }
                }
                out
            }
        };
        response(200, &[("content-type", "application/x-amz-json-1.0".into())], out.to_string())
    }
}

fn describe(name: &str, t: &Table) -> Value {
    let mut d = json!({
        "TableName": name,
        "TableStatus": "ACTIVE",
        "KeySchema": [{"AttributeName": t.key, "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": t.key, "AttributeType": "S"}],
        "ItemCount": t.items.len(),
        "TableSizeBytes": t.items.iter().map(|i| i.to_string().len()).sum::<usize>(),
    });
    match t.read {
        Some(read) => {
            d["ProvisionedThroughput"] = json!({"ReadCapacityUnits": read, "WriteCapacityUnits": t.write, "NumberOfDecreasesToday": t.decreases_today});
            d["BillingModeSummary"] = json!({"BillingMode": "PROVISIONED"});
        }
        None => {
            d["ProvisionedThroughput"] = json!({"ReadCapacityUnits": 0, "WriteCapacityUnits": 0, "NumberOfDecreasesToday": 0});
            d["BillingModeSummary"] = json!({"BillingMode": "PAY_PER_REQUEST"});
        }
    }
    d
}

impl HttpConnector for FakeAws {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let dynamodb = request.uri().contains("dynamodb.fake");
        HttpConnectorFuture::ready(Ok(if dynamodb { self.dynamodb(&request) } else { self.s3(&request) }))
    }
}
