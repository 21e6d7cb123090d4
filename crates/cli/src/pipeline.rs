//! `crossdock pipeline validate FILE`: parse and validate a pipeline file.

use crate::exit::{fail, Code};
use anyhow::Context as _;
use crossdock_core::pipeline::PipelineFile;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Check a pipeline file: syntax, unknown keys, values, `${VAR}` references.
    Validate {
        /// The pipeline file (TOML).
        file: PathBuf,
        /// Also connect to the source bucket, the destination bucket and each target.
        #[arg(long)]
        online: bool,
    },
}

/// Reads, parses and builds a pipeline file (used by every subcommand taking `--pipeline`).
pub fn load(file: &std::path::Path) -> anyhow::Result<crossdock_core::pipeline::Pipeline> {
    let path = file.display().to_string();
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read pipeline file {path}"))?;
    PipelineFile::parse(&path, &text).and_then(|p| p.build(&path, |v| std::env::var(v).ok())).map_err(|e| fail(Code::Usage, e.to_string()))
}

/// The `[source]` and `[relay]` sections of a pipeline file (for `export` and `relay`:
/// the targets, and the variables their values name, need not be there).
pub fn load_source(file: &std::path::Path) -> anyhow::Result<crossdock_core::pipeline::SourceSide> {
    let path = file.display().to_string();
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read pipeline file {path}"))?;
    PipelineFile::parse(&path, &text).and_then(|p| p.build_source(&path)).map_err(|e| fail(Code::Usage, e.to_string()))
}

pub async fn run(args: Args) -> anyhow::Result<Code> {
    match args.command {
        Sub::Validate { file, online } => {
            let p = load(&file)?;
            if online {
                check_online(&p).await.map_err(|e| fail(Code::NotFound, format!("{}: {e:#}", file.display())))?;
                match crate::gcp().signed_in() {
                    Some(id) => println!("Google Cloud: signed in as {id}"),
                    None => println!("Google Cloud: emulator endpoints only (anonymous)"),
                }
            }
            let targets: Vec<&str> = [p.relational.as_ref(), p.wide_column.as_ref()].into_iter().flatten().map(|t| t.kind()).collect();
            println!(
                "{}: ok — pipeline {:?}, {} table(s), s3://{}/{} → gs://{}, codec {} level {}, targets: {}",
                file.display(),
                p.name,
                p.tables.len(),
                p.source.bucket,
                p.source.prefix,
                p.dst_bucket,
                p.codec,
                p.level,
                if targets.is_empty() { "none".to_string() } else { targets.join(", ") }
            );
            Ok(Code::Ok)
        }
    }
}

/// `--online`: every endpoint the pipeline names answers (15 s each).
async fn check_online(p: &crossdock_core::pipeline::Pipeline) -> anyhow::Result<()> {
    use std::time::Duration;
    async fn within(what: String, f: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
        match tokio::time::timeout(Duration::from_secs(15), f).await {
            Ok(r) => r.with_context(|| format!("{what} is not reachable")),
            Err(_) => Err(anyhow::anyhow!("{what} did not answer within 15 s")),
        }
    }
    let conf = crate::aws::config(p.source.region.clone()).await;
    let s3 = crate::aws::s3(&conf);
    within(format!("source bucket s3://{}", p.source.bucket), async {
        s3.head_bucket().bucket(&p.source.bucket).send().await.map(drop).map_err(|e| anyhow::anyhow!(aws_sdk_s3::error::DisplayErrorContext(e).to_string()))
    })
    .await?;
    // Sign in first, on its own: a credential problem is then reported as one, naming
    // the step, rather than as an unreachable bucket.
    let gcs = crossdock_load::gcs::client(crate::gcp()).await?;
    within(format!("destination bucket gs://{}", p.dst_bucket), async {
        let req = gcloud_storage::http::buckets::get::GetBucketRequest { bucket: p.dst_bucket.clone(), ..Default::default() };
        gcs.get_bucket(&req).await.map(drop).map_err(anyhow::Error::from)
    })
    .await?;
    for t in [p.relational.as_ref(), p.wide_column.as_ref()].into_iter().flatten() {
        let what = format!("{} target", t.kind());
        within(what, async move { crossdock_load::sink::connect(crate::gcp(), t, 0).await.map(drop).map_err(anyhow::Error::from) }).await?;
    }
    Ok(())
}
