//! `crossdock verify`: read a loaded table back and compare every row and every
//! attribute with the export its marker describes. Exit 0 when equal, 7 when not.

use crate::exit::Code;
use crate::load::{coded, connect, LoadedTable, Output};

/// Flags of `crossdock verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub table: LoadedTable,
    /// `text` or `json`.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

pub async fn run(args: Args) -> anyhow::Result<Code> {
    let (_, p) = args.table.prepare().await?;
    let t = connect(&p).await?;
    let bar = crate::bars::bar(
        crate::bars::enabled(args.no_progress, args.output == Output::Json),
        Some(p.marker.marker.totals.items),
        &crate::bars::counted("items"),
    );
    let report = crossdock_load::run::verify_with(&p.marker, &t, &p.model, &|n| bar.inc(n)).await.map_err(coded);
    crate::bars::finish(&bar);
    let report = report?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string(&report).unwrap_or_default()),
        Output::Text => {
            println!(
                "{}: {} source items ({} rejected), {} target rows: {} equal, {} missing, {} extra, {} different",
                p.marker.marker.export,
                report.source_items,
                report.rejected,
                report.target_rows,
                report.matching,
                report.missing,
                report.extra,
                report.different
            );
            for e in &report.examples {
                println!("  {e}");
            }
        }
    }
    Ok(if report.ok() { Code::Ok } else { Code::Mismatch })
}
