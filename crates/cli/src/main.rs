//! The `crossdock` binary: one subcommand per phase, plus planning and checks.
//! Libraries do the work and return typed errors; this crate wires clients, flags,
//! signals and exit codes, and reports errors with anyhow.

mod audit;
mod aws;
mod bars;
mod exit;
mod export;
mod load;
mod logging;
mod notify;
mod pipeline;
mod plan;
mod relay;
mod shutdown;
mod status;
mod sync;
mod verify;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// The process's one Google Cloud sign-in, shared by every GCP client it builds.
pub(crate) fn gcp() -> &'static crossdock_gcp::Gcp {
    static GCP: std::sync::OnceLock<crossdock_gcp::Gcp> = std::sync::OnceLock::new();
    GCP.get_or_init(crossdock_gcp::Gcp::from_env)
}

/// Move DynamoDB tables to Google Cloud: export to S3, relay to GCS, load into
/// Spanner, Bigtable or PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "crossdock", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    log: logging::LogArgs,
    /// AWS named profile from ~/.aws/config (SSO, credential_process, role chains work
    /// as in the aws CLI); default: AWS_PROFILE, then the default credential chain.
    #[arg(long, global = true, value_name = "NAME")]
    profile: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dump one DynamoDB table to S3 (raises and restores read capacity).
    Export(export::Args),
    /// Copy dump files from S3 to GCS as their events arrive on SQS; write `_SUCCESS`.
    Relay(relay::Args),
    /// Load a relayed table into its target, from its `_SUCCESS` marker.
    Load(load::Args),
    /// Size a migration: segments, capacity, instances, time and egress per table.
    Plan(plan::Args),
    /// Compare a loaded table with its marker.
    Verify(verify::Args),
    /// Replay the table's change stream onto its loaded destination (catch-up before cutover).
    Sync(sync::Args),
    /// Compare the live source table with its loaded destination (before a cutover).
    Audit(audit::Args),
    /// Where every table stands: export, relay, load, catch-up (read from the buckets).
    Status(status::Args),
    /// Pipeline files: `validate`.
    Pipeline(pipeline::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log);
    aws::use_profile(cli.profile.clone());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::Code::Failure.into();
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Export(a) => export::run(a).await,
            Command::Relay(a) => relay::run(a).await,
            Command::Load(a) => load::run(a).await,
            Command::Plan(a) => plan::run(a).await,
            Command::Verify(a) => verify::run(a).await,
            Command::Sync(a) => sync::run(a).await,
            Command::Audit(a) => audit::run(a).await,
            Command::Status(a) => status::run(a).await,
            Command::Pipeline(a) => pipeline::run(a).await,
        }
    });
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            let code = exit::code_of(&e);
            eprintln!("error: {}", exit::message(&e));
            code.into()
        }
    }
}
