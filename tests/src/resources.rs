//! Per-test resources that clean up after themselves. Each guard deletes its resource
//! on drop (on a helper thread with its own runtime, since drop cannot await), so a
//! failing test leaves nothing behind either.

use crate::unique;

/// Runs an async cleanup to completion from a synchronous `Drop`.
pub(crate) fn cleanup<F>(what: String, f: F)
where
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let joined = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        rt.block_on(f)
    })
    .join();
    match joined {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("cleanup of {what} failed: {e}"),
        Err(_) => eprintln!("cleanup of {what} panicked"),
    }
}

/// An S3 bucket on moto, emptied and deleted on drop.
pub struct TempBucket {
    pub name: String,
    pub client: aws_sdk_s3::Client,
}

impl TempBucket {
    pub async fn new(prefix: &str) -> TempBucket {
        let client = crate::s3().await;
        let name = unique(prefix);
        client.create_bucket().bucket(&name).send().await.unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
        TempBucket { name, client }
    }
}

impl Drop for TempBucket {
    fn drop(&mut self) {
        let name = self.name.clone();
        cleanup(format!("bucket {name}"), async move {
            let client = crate::s3().await;
            let mut token = None;
            loop {
                let page = client.list_objects_v2().bucket(&name).set_continuation_token(token).send().await.map_err(|e| format!("{e:?}"))?;
                for o in page.contents() {
                    if let Some(k) = o.key() {
                        client.delete_object().bucket(&name).key(k).send().await.map_err(|e| format!("{e:?}"))?;
                    }
                }
                token = page.next_continuation_token().map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
            client.delete_bucket().bucket(&name).send().await.map_err(|e| format!("{e:?}"))?;
            Ok(())
        });
    }
}

/// An SQS queue on moto, deleted on drop.
pub struct TempQueue {
    pub name: String,
    pub url: String,
    pub arn: String,
    pub client: aws_sdk_sqs::Client,
}

impl TempQueue {
    /// A queue with the given visibility timeout (seconds).
    pub async fn new(prefix: &str, visibility_secs: u32) -> TempQueue {
        let client = crate::sqs().await;
        let name = unique(prefix);
        let out = client
            .create_queue()
            .queue_name(&name)
            .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, visibility_secs.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("create queue {name}: {e:?}"));
        let url = out.queue_url().expect("queue url").to_string();
        let attrs = client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes");
        let arn = attrs.attributes().and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)).expect("arn").clone();
        TempQueue { name, url, arn, client }
    }
}

impl Drop for TempQueue {
    fn drop(&mut self) {
        let url = self.url.clone();
        cleanup(format!("queue {url}"), async move {
            crate::sqs().await.delete_queue().queue_url(&url).send().await.map_err(|e| format!("{e:?}"))?;
            Ok(())
        });
    }
}

/// A DynamoDB table name on dynalite; the table (if created) is deleted on drop.
pub struct TempTable {
    pub name: String,
}

impl TempTable {
    /// Reserves a unique table name; create the table with the SDK as the test needs.
    pub fn name(prefix: &str) -> TempTable {
        TempTable { name: unique(prefix) }
    }
}

impl Drop for TempTable {
    fn drop(&mut self) {
        let name = self.name.clone();
        cleanup(format!("table {name}"), async move {
            match crate::dynamodb().await.delete_table().table_name(&name).send().await {
                Ok(_) => Ok(()),
                Err(e) if format!("{e:?}").contains("ResourceNotFound") => Ok(()),
                Err(e) => Err(format!("{e:?}")),
            }
        });
    }
}

/// A GCS bucket on fake-gcs-server, emptied and deleted on drop.
pub struct TempGcsBucket {
    pub name: String,
    pub client: gcloud_storage::client::Client,
}

impl TempGcsBucket {
    pub async fn new(prefix: &str) -> TempGcsBucket {
        use gcloud_storage::http::buckets::insert::{BucketCreationConfig, InsertBucketRequest};
        let client = crate::gcs().await;
        let name = unique(prefix);
        client
            .insert_bucket(&InsertBucketRequest {
                name: name.clone(),
                param: gcloud_storage::http::buckets::insert::InsertBucketParam { project: crate::gcp_project(), ..Default::default() },
                bucket: BucketCreationConfig::default(),
            })
            .await
            .unwrap_or_else(|e| panic!("create GCS bucket {name}: {e:?}"));
        TempGcsBucket { name, client }
    }
}

impl Drop for TempGcsBucket {
    fn drop(&mut self) {
        let name = self.name.clone();
        cleanup(format!("GCS bucket {name}"), async move {
            use gcloud_storage::http::{buckets::delete::DeleteBucketRequest, objects::delete::DeleteObjectRequest, objects::list::ListObjectsRequest};
            let client = crate::gcs().await;
            let mut token = None;
            loop {
                let page = client
                    .list_objects(&ListObjectsRequest { bucket: name.clone(), page_token: token, ..Default::default() })
                    .await
                    .map_err(|e| format!("{e:?}"))?;
                for o in page.items.unwrap_or_default() {
                    client
                        .delete_object(&DeleteObjectRequest { bucket: name.clone(), object: o.name, ..Default::default() })
                        .await
                        .map_err(|e| format!("{e:?}"))?;
                }
                token = page.next_page_token;
                if token.is_none() {
                    break;
                }
            }
            client.delete_bucket(&DeleteBucketRequest { bucket: name.clone(), ..Default::default() }).await.map_err(|e| format!("{e:?}"))?;
            Ok(())
        });
    }
}

/// A PostgreSQL schema, dropped (cascade) on drop.
pub struct TempPgSchema {
    pub name: String,
}

impl TempPgSchema {
    pub async fn new(prefix: &str) -> TempPgSchema {
        let name = crate::unique_ident(prefix);
        crate::postgres().await.batch_execute(&format!("CREATE SCHEMA \"{name}\"")).await.expect("create schema");
        TempPgSchema { name }
    }
}

impl Drop for TempPgSchema {
    fn drop(&mut self) {
        let name = self.name.clone();
        cleanup(format!("PG schema {name}"), async move {
            crate::postgres().await.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE")).await.map_err(|e| e.to_string())
        });
    }
}

/// A Spanner database on the emulator (created over its REST gateway), dropped on drop.
pub struct TempSpannerDb {
    /// `projects/P/instances/I/databases/D`
    pub path: String,
}

fn spanner_http() -> String {
    crate::stack_var("CROSSDOCK_SPANNER_HTTP")
}

impl TempSpannerDb {
    pub async fn new(prefix: &str) -> TempSpannerDb {
        // Spanner database ids: [a-z][a-z0-9_-]*, 2–30 chars.
        let id: String = crate::unique_ident(prefix).chars().take(30).collect();
        let instance = crate::spanner_instance();
        let resp = reqwest::Client::new()
            .post(format!("{}/v1/{instance}/databases", spanner_http()))
            .json(&serde_json::json!({ "createStatement": format!("CREATE DATABASE `{id}`") }))
            .send()
            .await
            .expect("spanner REST gateway reachable");
        assert!(resp.status().is_success(), "create Spanner database {id}: {}", resp.text().await.unwrap_or_default());
        TempSpannerDb { path: format!("{instance}/databases/{id}") }
    }
}

impl Drop for TempSpannerDb {
    fn drop(&mut self) {
        let path = self.path.clone();
        cleanup(format!("Spanner database {path}"), async move {
            reqwest::Client::new().delete(format!("{}/v1/{path}", spanner_http())).send().await.map_err(|e| e.to_string())?;
            Ok(())
        });
    }
}

/// A Bigtable table on the emulator (created with `cbt`), deleted on drop.
pub struct TempBigtable {
    pub name: String,
}

fn cbt(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("cbt")
        .args(["-project", &crate::gcp_project(), "-instance", &crate::bigtable_instance()])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run cbt: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl TempBigtable {
    /// Creates a table with the given column families.
    pub fn new(prefix: &str, families: &[&str]) -> TempBigtable {
        crate::stack_var("BIGTABLE_EMULATOR_HOST");
        let name = unique(prefix);
        let fams = format!("families={}", families.join(","));
        cbt(&["createtable", &name, &fams]).unwrap_or_else(|e| panic!("create Bigtable table {name}: {e}"));
        TempBigtable { name }
    }

    /// Reserves a name without creating the table (for code that creates it).
    pub fn name(prefix: &str) -> TempBigtable {
        TempBigtable { name: unique(prefix) }
    }
}

impl Drop for TempBigtable {
    fn drop(&mut self) {
        if let Err(e) = cbt(&["deletetable", &self.name]) {
            if !e.contains("NotFound") && !e.contains("not found") {
                eprintln!("cleanup of Bigtable table {} failed: {e}", self.name);
            }
        }
    }
}
