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
    },
}

/// Reads, parses and builds a pipeline file (used by every subcommand taking `--pipeline`).
pub fn load(file: &std::path::Path) -> anyhow::Result<crossdock_core::pipeline::Pipeline> {
    let path = file.display().to_string();
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read pipeline file {path}"))?;
    PipelineFile::parse(&path, &text)
        .and_then(|p| p.build(&path, |v| std::env::var(v).ok()))
        .map_err(|e| fail(Code::Usage, e.to_string()))
}

pub async fn run(args: Args) -> anyhow::Result<Code> {
    match args.command {
        Sub::Validate { file } => {
            let p = load(&file)?;
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
