//! `crossdock plan`: sizes a migration from DescribeTable with the same maths the phases
//! use (`crossdock_core::sizing::plan_table`).

use crate::exit::{fail, Code};
use aws_sdk_dynamodb::types::{ReturnConsumedCapacity, Select};
use crossdock_core::routing::Route;
use crossdock_core::sizing::{self, PlanInputs, TableFacts, TablePlan};
use std::path::PathBuf;

/// Flags of `crossdock plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pipeline file listing the tables to move.
    #[arg(long)]
    pipeline: PathBuf,
    /// Time budget for moving each table, e.g. `6h`, `90m`, `45s`.
    #[arg(long, default_value = "6h", value_parser = parse_duration)]
    deadline: f64,
    /// Scan workers per export.
    #[arg(long, default_value_t = 8)]
    workers: u32,
    /// Cores per relay instance.
    #[arg(long, default_value_t = 2)]
    relay_cores: u32,
    /// RCU budget for on-demand tables (the export's `--max-rcu`).
    #[arg(long, default_value_t = 1000.0)]
    max_rcu: f64,
    /// Do not measure tables whose size DynamoDB reports as 0 (its estimate is refreshed
    /// about every 6 hours; new tables and emulators report 0). Measuring is a COUNT scan
    /// and consumes about half an RCU per 4 KB.
    #[arg(long)]
    no_measure: bool,
    /// Per-process figures measured by `scripts/bench-scale --budget` (its JSON file):
    /// relay MB/s, loader rows/s and how each scales with processes, instead of the
    /// built-in assumptions. Measure on the machines and services you will run on.
    #[arg(long, value_name = "FILE")]
    from_bench: Option<PathBuf>,
    /// Plan a table as if it held SIZE bytes (e.g. 1TB, 250GB) and ITEMS items:
    /// `TABLE=SIZE:ITEMS`, repeatable. Capacity and indexes still come from
    /// DescribeTable; for what-if plans and tables whose size DynamoDB has not yet
    /// reported.
    #[arg(long, value_name = "TABLE=SIZE:ITEMS", value_parser = parse_assumed)]
    assume: Vec<(String, u64, u64)>,
    /// `text` (a table) or `json` (one object, for scripts).
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

/// `TABLE=SIZE:ITEMS`, SIZE in bytes or with a decimal unit (KB, MB, GB, TB).
fn parse_assumed(s: &str) -> Result<(String, u64, u64), String> {
    let bad = || format!("{s:?}: expected TABLE=SIZE:ITEMS, e.g. Orders=1TB:4000000000");
    let (table, rest) = s.split_once('=').ok_or_else(bad)?;
    let (size, items) = rest.split_once(':').ok_or_else(bad)?;
    let split = size.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(size.len());
    let n: f64 = size[..split].parse().map_err(|_| bad())?;
    let unit = match size[split..].to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => return Err(format!("{s:?}: size unit must be B, KB, MB, GB or TB")),
    };
    let items: u64 = items.replace('_', "").parse().map_err(|_| bad())?;
    if table.is_empty() || n <= 0.0 {
        return Err(bad());
    }
    Ok((table.to_string(), (n * unit) as u64, items))
}

fn parse_duration(s: &str) -> Result<f64, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 6h, 90m or 45s"))?;
    let secs = match unit {
        "h" => n * 3600.0,
        "m" => n * 60.0,
        "s" | "" => n,
        _ => return Err(format!("{s:?}: unit must be h, m or s")),
    };
    if secs > 0.0 {
        Ok(secs)
    } else {
        Err(format!("{s:?}: the deadline must be positive"))
    }
}

pub async fn run(args: Args) -> anyhow::Result<Code> {
    let pipeline = crate::pipeline::load(&args.pipeline)?;
    if pipeline.tables.is_empty() {
        return Err(fail(Code::Usage, format!("{}: list the tables to plan under [[tables]]", args.pipeline.display())));
    }
    if let Some((t, ..)) = args.assume.iter().find(|(t, ..)| !pipeline.tables.iter().any(|p| &p.name == t)) {
        return Err(fail(Code::Usage, format!("--assume {t}=…: {t} is not a table of {}; add it under [[tables]]", args.pipeline.display())));
    }
    let measured = match &args.from_bench {
        Some(path) => {
            let text = std::fs::read(path).map_err(|e| fail(Code::Usage, format!("--from-bench {}: {e}", path.display())))?;
            Some(
                serde_json::from_slice::<sizing::MeasuredFigures>(&text)
                    .map_err(|e| fail(Code::Usage, format!("--from-bench {}: not the figures `scripts/bench-scale --budget` writes: {e}", path.display())))?,
            )
        }
        None => None,
    };
    let conf = crate::aws::config(pipeline.source.region.clone()).await;
    let ddb = crate::aws::dynamodb(&conf);
    let inputs = PlanInputs {
        deadline_secs: args.deadline,
        read_ratio: pipeline.source.read_ratio,
        on_demand_rcu: args.max_rcu,
        workers: args.workers,
        relay_cores: args.relay_cores,
        codec: pipeline.codec,
        measured: measured.as_ref(),
    };
    let mut plans = Vec::new();
    for t in &pipeline.tables {
        let assumed = args.assume.iter().find(|(name, ..)| name == &t.name);
        let mut facts = describe(&ddb, &t.name, t.route.unwrap_or(pipeline.route), !args.no_measure && assumed.is_none()).await?;
        if let Some((_, bytes, items)) = assumed {
            (facts.size_bytes, facts.item_count) = (*bytes, *items);
        }
        plans.push(sizing::plan_table(&facts, &inputs));
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string(&serde_json::json!({ "tables": plans, "totals": totals(&plans) }))?),
        Output::Text => print_text(&plans, &inputs),
    }
    Ok(Code::Ok)
}

async fn describe(ddb: &aws_sdk_dynamodb::Client, table: &str, rule: crossdock_core::routing::RouteRule, measure: bool) -> anyhow::Result<TableFacts> {
    // The exporter's own reading of DescribeTable: the plan and the export see the same table.
    let info = crossdock_export::lease::describe(ddb, table).await.map_err(|e| fail(crate::export::code_for(&e), e.to_string()))?;
    let d = &info.description;
    let has_indexes = !d.global_secondary_indexes().is_empty() || !d.local_secondary_indexes().is_empty();
    let mut facts = TableFacts {
        table: table.into(),
        size_bytes: info.size_bytes,
        item_count: info.item_count,
        provisioned_rcu: info.throughput.map(|t| t.read),
        relational: rule.route_by_indexes(has_indexes) == Route::Relational,
    };
    if facts.size_bytes == 0 && measure {
        // An eventually consistent scan costs 0.5 RCU per 4 KB, so the consumed capacity
        // measures the table's size.
        let (mut items, mut rcu, mut start) = (0u64, 0f64, None);
        loop {
            let page = ddb
                .scan()
                .table_name(table)
                .select(Select::Count)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("measuring {table} (COUNT scan): {}", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
            items += page.count().max(0) as u64;
            rcu += page.consumed_capacity().and_then(|c| c.capacity_units()).unwrap_or(0.0);
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        facts.item_count = items;
        facts.size_bytes = (rcu * 2.0 * 4096.0) as u64;
        tracing::info!(table, items, bytes = facts.size_bytes, "measured the table with a COUNT scan");
    }
    Ok(facts)
}

#[derive(Debug, serde::Serialize)]
struct Totals {
    size_bytes: u64,
    items: u64,
    /// Tables export in parallel: the longest export.
    export_secs: f64,
    relay_instances: u32,
    loader_writers: u32,
    loader_processes: u32,
    spanner_nodes: u32,
    egress_bytes_by_codec: Vec<(String, u64, f64)>,
}

fn totals(plans: &[TablePlan]) -> Totals {
    let mut egress: Vec<(String, u64, f64)> = Vec::new();
    for p in plans {
        for e in &p.egress {
            match egress.iter_mut().find(|(c, ..)| *c == e.codec.name()) {
                Some(t) => {
                    t.1 += e.bytes;
                    t.2 += e.usd;
                }
                None => egress.push((e.codec.name().into(), e.bytes, e.usd)),
            }
        }
    }
    Totals {
        size_bytes: plans.iter().map(|p| p.size_bytes).sum(),
        items: plans.iter().map(|p| p.items).sum(),
        export_secs: plans.iter().map(|p| p.export_secs).fold(0.0, f64::max),
        relay_instances: plans.iter().map(|p| p.relay_instances).sum(),
        loader_writers: plans.iter().map(|p| p.loader_writers).sum(),
        loader_processes: plans.iter().map(|p| p.loader_processes).sum(),
        spanner_nodes: plans.iter().map(|p| p.spanner_nodes).sum(),
        egress_bytes_by_codec: egress,
    }
}

fn human_secs(s: f64) -> String {
    if !s.is_finite() {
        "∞".into()
    } else if s >= 3600.0 {
        format!("{:.1}h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.1}m", s / 60.0)
    } else {
        format!("{s:.1}s")
    }
}

fn print_text(plans: &[TablePlan], inputs: &PlanInputs) {
    println!(
        "{:<24} {:>10} {:>10} {:>5} {:>8} {:>8} {:>8} {:>6} {:>7} {:>7} {:>7} {:>8}",
        "table", "MB", "items", "segs", "RCU→", "RCU/s", "export", "relays", "writers", "loaders", "spanner", "load"
    );
    for p in plans {
        println!(
            "{:<24} {:>10.1} {:>10} {:>5} {:>8} {:>8.0} {:>8} {:>6} {:>7} {:>7} {:>7} {:>8}",
            p.table,
            p.size_bytes as f64 / 1e6,
            p.items,
            p.segments,
            p.raise_to_rcu,
            p.export_rcu_per_sec,
            human_secs(p.export_secs),
            p.relay_instances,
            p.loader_writers,
            p.loader_processes,
            p.spanner_nodes,
            human_secs(p.load_secs)
        );
    }
    println!();
    println!("{:<24} {:>9} {:>12} {:>9}   {:>9} {:>5} {:>9}", "export method", "scan", "scan RCU", "scan $", "native", "RCU", "native $");
    for p in plans {
        let (sc, na) = (&p.methods.scan, &p.methods.native);
        println!("{:<24} {:>9} {:>12.0} {:>9.2}   {:>9} {:>5.0} {:>9.2}", p.table, human_secs(sc.secs), sc.rcu, sc.usd, human_secs(na.secs), na.rcu, na.usd);
    }
    println!(
        "native export (`export --method native`, needs point-in-time recovery): ${}/GB of table size, no read capacity; its duration is assumed, AWS publishes none",
        sizing::NATIVE_EXPORT_USD_PER_GB
    );
    let t = totals(plans);
    println!(
        "total: {:.1} MB, {} items; longest export {} (deadline {}, read ratio {}); {} relay instance(s) with {} core(s) at {}; {} loader writer(s) in {} loader process(es) (`load --shard i/N` per table); {} Spanner node(s)",
        t.size_bytes as f64 / 1e6,
        t.items,
        human_secs(t.export_secs),
        human_secs(inputs.deadline_secs),
        inputs.read_ratio,
        t.relay_instances,
        inputs.relay_cores,
        inputs.codec,
        t.loader_writers,
        t.loader_processes,
        t.spanner_nodes
    );
    for (codec, bytes, usd) in &t.egress_bytes_by_codec {
        println!("egress with {codec:<5}: {:>10.1} MB ≈ ${usd:.2}", *bytes as f64 / 1e6);
    }
    let half = inputs.deadline_secs / 2.0;
    for p in plans {
        let fits = |secs: f64| if secs <= half + 1.0 { "fits" } else { "does NOT fit" };
        println!(
            "{}: export {} {} its half of the deadline ({}), and {} relay(s) copy it within that half; load {} with {} process(es) {} the other half",
            p.table,
            human_secs(p.export_secs),
            fits(p.export_secs),
            human_secs(half),
            p.relay_instances,
            human_secs(p.load_secs),
            p.loader_processes,
            fits(p.load_secs)
        );
    }
    match inputs.measured {
        Some(m) => println!(
            "figures measured ({}): relay {:.1} MB/s and loader {:.0} rows/s per process, kept {:.0}% and {:.0}% per process in a fleet",
            m.measured_on,
            m.relay_mb_per_sec,
            m.loader_rows_per_sec,
            100.0 * sizing::scaling_efficiency(&m.relay_scaling),
            100.0 * sizing::scaling_efficiency(&m.loader_scaling)
        ),
        None => println!("figures assumed (built in); measure yours with `scripts/bench-scale --budget` and pass --from-bench"),
    }
}
