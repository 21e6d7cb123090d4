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
mod serve;
mod shutdown;
mod status;
mod sync;
mod variables;
mod verify;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
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
    #[command(
        after_long_help = "Examples:\n  crossdock export --table Orders --bucket dumps --batch 2026-11-30 --raise-to 4000\n  crossdock export --table Orders --bucket dumps --batch 2026-11-30 --resume --timestamp 2026-11-30T09-00-00Z\n  crossdock export restore --table Orders --bucket dumps"
    )]
    Export(Box<export::Args>),
    /// Copy dump files from S3 to GCS as their events arrive on SQS; write `_SUCCESS`.
    #[command(
        after_long_help = "Examples:\n  crossdock relay --queue https://sqs.eu-west-1.amazonaws.com/123/dumps --dst-bucket-map dumps=landing --codec zstd\n  crossdock relay --queue URL --dst-bucket-map dumps=landing --until-idle 60"
    )]
    Relay(relay::Args),
    /// Load a relayed table into its target, from its `_SUCCESS` marker.
    #[command(
        after_long_help = "Examples:\n  crossdock load --marker gs://landing/2026-11-30/Orders/2026-11-30T09-00-00Z/_SUCCESS --pipeline orders.toml\n  crossdock load --marker gs://… --pipeline orders.toml --dry-run\n  crossdock load --watch --pipeline orders.toml --subscription crossdock-load"
    )]
    Load(load::Args),
    /// Size a migration: segments, capacity, instances, time and egress per table.
    #[command(after_long_help = "Examples:\n  crossdock plan --pipeline orders.toml --deadline 6h")]
    Plan(plan::Args),
    /// Compare a loaded table with its marker.
    #[command(
        after_long_help = "Examples:\n  crossdock verify --marker gs://landing/2026-11-30/Orders/2026-11-30T09-00-00Z/_SUCCESS --pipeline orders.toml\n  crossdock verify --table Orders --pipeline orders.toml --output json"
    )]
    Verify(verify::Args),
    /// Replay the table's change stream onto its loaded destination (catch-up before cutover).
    #[command(
        after_long_help = "Examples:\n  crossdock sync --table Orders --pipeline orders.toml --metrics-addr 0.0.0.0:9465\n  crossdock sync --table Orders --pipeline orders.toml --until-lag 5s"
    )]
    Sync(sync::Args),
    /// Compare the live source table with its loaded destination (before a cutover).
    #[command(
        after_long_help = "Examples:\n  crossdock audit --table Orders --pipeline orders.toml --max-rcu 500\n  crossdock audit --table Orders --pipeline orders.toml --sample 0.01 --output json"
    )]
    Audit(audit::Args),
    /// Where every table stands: export, relay, load, catch-up (read from the buckets).
    #[command(
        after_long_help = "Examples:\n  crossdock status --pipeline orders.toml\n  crossdock status --pipeline orders.toml --batch 2026-11-30 --watch\n  crossdock status --pipeline orders.toml --output json -v"
    )]
    Status(status::Args),
    /// Pipeline files: `validate`.
    Pipeline(pipeline::Args),
    /// Shell completions on stdout: `source <(crossdock completions bash)`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The man page (roff) on stdout: `crossdock man > crossdock.1`.
    Man,
}

/// The command line as it is parsed: the derived flags, each with its environment
/// variable (`variables`).
pub(crate) fn command() -> clap::Command {
    exit::with_codes(variables::with_variables(Cli::command()))
}

fn main() -> ExitCode {
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit());
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
            Command::Export(a) => export::run(*a).await,
            Command::Relay(a) => relay::run(a).await,
            Command::Load(a) => load::run(a).await,
            Command::Plan(a) => plan::run(a).await,
            Command::Verify(a) => verify::run(a).await,
            Command::Sync(a) => sync::run(a).await,
            Command::Audit(a) => audit::run(a).await,
            Command::Status(a) => status::run(a).await,
            Command::Completions { shell } => {
                clap_complete::generate(shell, &mut command(), "crossdock", &mut std::io::stdout());
                Ok(exit::Code::Ok)
            }
            Command::Man => clap_mangen::Man::new(command()).render(&mut std::io::stdout()).map(|()| exit::Code::Ok).map_err(anyhow::Error::from),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command's `--help`, as a snapshot: a flag that changes name, loses its help
    /// or its "required" shows up in review.
    #[test]
    fn help_of_every_command() {
        // Environment values differ between machines: the names are shown, not the values.
        let mut cli = command().term_width(100).mut_args(|a| a.hide_env_values(true));
        cli.build();
        insta::assert_snapshot!("crossdock", cli.render_long_help().to_string());
        for sub in cli.get_subcommands() {
            let mut sub = sub.clone().term_width(100).mut_args(|a| a.hide_env_values(true));
            insta::assert_snapshot!(sub.get_name().to_string(), sub.render_long_help().to_string());
        }
    }

    /// Every metric a phase describes is in docs/operations.md, so the documented lists
    /// cannot drift from the code (the end-to-end tests check the other way: a scrape
    /// holds nothing undescribed).
    #[test]
    fn every_metric_is_documented() {
        let docs = include_str!("../../../docs/operations.md");
        let phases = [
            crossdock_relay::events::METRICS,
            crossdock_sync::events::METRICS,
            crossdock_load::events::METRICS,
            crossdock_export::observe::METRICS,
            crossdock_core::retry::METRICS,
        ];
        let missing: Vec<&str> = phases.iter().flat_map(|m| m.iter()).map(|(name, _)| *name).filter(|n| !docs.contains(&format!("`{n}"))).collect();
        assert!(missing.is_empty(), "metrics missing from docs/operations.md: {missing:?}");
    }

    #[test]
    fn the_command_line_is_consistent() {
        command().debug_assert();
    }
}
