//! The one module for sizing maths: export segments and read capacity, target batch
//! sizes under service limits, and the adaptive batch controller. `crossdock plan` and
//! the phases call the same functions.

/// Spanner: mutations per commit, counting every column and index entry.
pub const SPANNER_MAX_MUTATIONS: usize = 80_000;
/// Spanner: bytes per commit.
pub const SPANNER_MAX_COMMIT_BYTES: usize = 100 * 1024 * 1024;
/// Bigtable: mutations (SetCell, DeleteFromColumn, …) per MutateRows request.
pub const BIGTABLE_MAX_MUTATIONS: usize = 100_000;
/// Bigtable: row key size.
pub const BIGTABLE_MAX_ROW_KEY_BYTES: usize = 4 * 1024;
/// DynamoDB: upper bound of Scan TotalSegments.
pub const DYNAMODB_MAX_SEGMENTS: u32 = 1_000_000;
/// DynamoDB: a Scan page is at most 1 MB.
pub const DYNAMODB_MAX_PAGE_BYTES: u64 = 1024 * 1024;
/// Headroom kept below hard limits (estimates of row size are averages).
const SAFETY: f64 = 0.9;

/// Default TotalSegments for a table: about one per GiB, at least one per worker, and a
/// whole number of rounds of the workers: 10 segments on 8 workers would end with 2
/// workers scanning the last fifth of the table while 6 wait.
pub fn default_segments(table_bytes: u64, workers: u32) -> u32 {
    let workers = u64::from(workers.max(1));
    let per_gib = table_bytes.div_ceil(1 << 30).max(workers);
    let rounds = per_gib.div_ceil(workers) * workers;
    rounds.min(u64::from(DYNAMODB_MAX_SEGMENTS)) as u32
}

/// Read capacity units a full scan of `bytes` consumes (4 KB per unit; eventually
/// consistent reads cost half).
pub fn scan_rcu(bytes: u64, consistent: bool) -> f64 {
    let units = bytes as f64 / 4096.0;
    if consistent {
        units
    } else {
        units / 2.0
    }
}

/// Seconds to scan `bytes` at `rcu_per_second`.
pub fn export_seconds(bytes: u64, rcu_per_second: f64, consistent: bool) -> f64 {
    if rcu_per_second <= 0.0 {
        return f64::INFINITY;
    }
    scan_rcu(bytes, consistent) / rcu_per_second
}

/// The read-capacity budget of an export: `ratio` of the provisioned (raised) capacity.
pub fn export_rcu_budget(provisioned_rcu: i64, ratio: f64) -> f64 {
    provisioned_rcu.max(0) as f64 * ratio
}

/// The RCU/s budget of a scan of the live table (an export or an audit): `read_ratio`
/// of its provisioned read capacity, capped by `max_rcu`. An on-demand table has no
/// provisioned capacity, so only `max_rcu` bounds it; `None` when neither is given.
pub fn scan_budget(provisioned_rcu: Option<i64>, read_ratio: f64, max_rcu: Option<f64>) -> Option<f64> {
    match (provisioned_rcu.map(|r| export_rcu_budget(r, read_ratio)), max_rcu) {
        (Some(p), Some(m)) => Some(p.min(m)),
        (Some(b), None) | (None, Some(b)) => Some(b),
        (None, None) => None,
    }
}

/// The segments a sampled scan reads: the table split into about `read ÷ fraction`
/// segments (within DynamoDB's limit), of which `read` spread evenly over the key
/// space. Returns (TotalSegments, the segments to read).
pub fn sample_segments(fraction: f64, read: u32) -> (u32, Vec<u32>) {
    let read = read.clamp(1, DYNAMODB_MAX_SEGMENTS);
    let total = (f64::from(read) / fraction.clamp(f64::MIN_POSITIVE, 1.0)).round().clamp(f64::from(read), f64::from(DYNAMODB_MAX_SEGMENTS)) as u32;
    let segments = (0..read).map(|i| (u64::from(i) * u64::from(total) / u64::from(read)) as u32).collect();
    (total, segments)
}

/// Spanner mutations one row costs: every written column, plus every column of every
/// secondary index entry the row produces.
pub fn spanner_mutations_per_row(columns: usize, index_columns: &[usize]) -> usize {
    columns + index_columns.iter().sum::<usize>()
}

/// Rows per Spanner commit: under 80,000 mutations and 100 MB, with headroom.
pub fn spanner_rows_per_commit(mutations_per_row: usize, max_row_bytes: usize) -> usize {
    let by_mutations = (SPANNER_MAX_MUTATIONS as f64 * SAFETY) as usize / mutations_per_row.max(1);
    let by_bytes = (SPANNER_MAX_COMMIT_BYTES as f64 * SAFETY) as usize / max_row_bytes.max(1);
    by_mutations.min(by_bytes).max(1)
}

/// Where the search for a Spanner batch size starts: the commit Google's own bulk
/// writer (Beam's SpannerIO) makes by default, at most 500 rows, 5,000 mutations and
/// 1 MiB, within [`spanner_rows_per_commit`]. From there the search doubles while
/// larger commits pay; a start at the largest commit leaves a load of a few commits
/// no room to search at all.
pub fn spanner_start_rows(mutations_per_row: usize, max_row_bytes: usize) -> usize {
    const ROWS: usize = 500;
    const MUTATIONS: usize = 5_000;
    const BYTES: usize = 1024 * 1024;
    let start = ROWS.min(MUTATIONS / mutations_per_row.max(1)).min(BYTES / max_row_bytes.max(1));
    start.clamp(1, spanner_rows_per_commit(mutations_per_row, max_row_bytes))
}

/// Rows per Bigtable MutateRows request: under 100,000 mutations (one SetCell per
/// attribute, plus one row-delete so a re-load replaces the row).
pub fn bigtable_rows_per_request(max_cells_per_row: usize) -> usize {
    (BIGTABLE_MAX_MUTATIONS / (max_cells_per_row + 1).max(1)).max(1)
}

/// A batch size found by measuring throughput, one per writer, so that nobody has to
/// learn a target's best batch by hand. From `start` it doubles while each size's
/// throughput (rows per second over [`AdaptiveBatch::SAMPLES`] batches) beats the best
/// so far by more than [`AdaptiveBatch::GAIN`]; when a step stops paying, it tries
/// halving from the best size, and then settles on the best size it measured. An abort,
/// timeout or throttle halves the size and searches again from there, upwards only if
/// that pays. Never below `min` or above `max` (the service limit).
#[derive(Debug, Clone)]
pub struct AdaptiveBatch {
    size: usize,
    min: usize,
    max: usize,
    /// The best size measured and its rows per second.
    best: Option<(usize, f64)>,
    search: Search,
    /// The current size's measurement so far.
    rows: usize,
    secs: f64,
    batches: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Search {
    Up { then_down: bool },
    Down,
    Settled,
}

impl AdaptiveBatch {
    /// Batches measured at each size before it is judged.
    pub const SAMPLES: u32 = 2;
    /// How much faster a size must be than the best so far to count as better.
    pub const GAIN: f64 = 1.05;

    /// Starts at `start` rows, never above `max` (the service limit) or below `min`.
    pub fn new(start: usize, min: usize, max: usize) -> Self {
        let max = max.max(1);
        let min = min.clamp(1, max);
        AdaptiveBatch { size: start.clamp(min, max), min, max, best: None, search: Search::Up { then_down: true }, rows: 0, secs: 0.0, batches: 0 }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Records a successful batch of `rows` that took `secs`.
    pub fn success(&mut self, rows: usize, secs: f64) {
        if self.search == Search::Settled {
            return;
        }
        self.rows += rows;
        self.secs += secs.max(1e-6);
        self.batches += 1;
        if self.batches < Self::SAMPLES {
            return;
        }
        let rate = self.rows as f64 / self.secs;
        (self.rows, self.secs, self.batches) = (0, 0.0, 0);
        let better = self.best.is_none_or(|(_, best)| rate > best * Self::GAIN);
        if better {
            self.best = Some((self.size, rate));
            let next = match self.search {
                Search::Up { .. } => (self.size * 2).min(self.max),
                _ => (self.size / 2).max(self.min),
            };
            if next == self.size {
                self.search = Search::Settled;
            }
            self.size = next;
            return;
        }
        let best = self.best.map_or(self.size, |(size, _)| size);
        match self.search {
            Search::Up { then_down: true } if best / 2 >= self.min && best / 2 < best => {
                self.search = Search::Down;
                self.size = best / 2;
            }
            _ => {
                self.search = Search::Settled;
                self.size = best;
            }
        }
    }

    /// Records an abort, timeout or throttle: halve, and search again from there.
    pub fn backoff(&mut self) {
        self.size = (self.size / 2).max(self.min);
        self.best = None;
        self.search = Search::Up { then_down: false };
        (self.rows, self.secs, self.batches) = (0, 0.0, 0);
    }
}

/// What a codec does to DynamoDB JSON lines on one core: compression speed (MB/s of
/// input) and output/input size ratio. Speeds as measured by the relay's encode bench
/// (`cargo bench -p crossdock-relay --bench encode -- FILE 1`) on generated dump lines;
/// ratios conservative for typical item shapes. `scripts/bench relay` measures both on
/// your data.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CodecProfile {
    pub codec: crate::codec::Codec,
    pub mb_per_sec_per_core: f64,
    pub ratio: f64,
}

pub fn codec_profile(codec: crate::codec::Codec) -> CodecProfile {
    use crate::codec::Codec;
    let (mb_per_sec_per_core, ratio) = match codec {
        Codec::Zstd => (150.0, 0.12),
        Codec::Gzip => (60.0, 0.18),
        Codec::Bzip2 => (20.0, 0.10),
        Codec::None => (2000.0, 1.0),
    };
    CodecProfile { codec, mb_per_sec_per_core, ratio }
}

/// AWS internet egress price used for estimates, USD per GB (first pricing tier).
pub const EGRESS_USD_PER_GB: f64 = 0.09;
/// Writer vCPUs one Spanner node absorbs (the original migration's finding).
pub const WRITER_VCPUS_PER_SPANNER_NODE: u32 = 4;
/// Rows per second one loader writer sustains against a well-sized target.
pub const LOADER_ROWS_PER_SEC_PER_WRITER: f64 = 2_000.0;
/// Writers one loader process is planned with (a 2-vCPU pod: its target client and its
/// download and decode of the data files are the limit, not the writer tasks).
pub const WRITERS_PER_LOADER_PROCESS: u32 = 8;
/// Network throughput one relay instance is planned with, MB/s.
pub const RELAY_INSTANCE_NETWORK_MB_PER_SEC: f64 = 100.0;
/// DynamoDB serves at most this many RCU per partition; scans spread over segments.
pub const DYNAMODB_RCU_PER_PARTITION: f64 = 3_000.0;
/// DynamoDB's export to S3 (full export), USD per GB of table size: the list price in
/// us-east-1. It is billed on the table's size whatever the read capacity.
pub const NATIVE_EXPORT_USD_PER_GB: f64 = 0.10;
/// On-demand read request units, USD per million (us-east-1 list price): a scan of an
/// on-demand table is billed at this rate per RCU it consumes.
pub const ON_DEMAND_USD_PER_MILLION_READS: f64 = 0.125;
/// Provisioned read capacity, USD per RCU-hour (us-east-1 list price): what a raise for
/// the scan costs while it is held.
pub const PROVISIONED_USD_PER_RCU_HOUR: f64 = 0.00013;
/// AWS publishes no duration for exports to S3: the plan assumes this fixed start-up
/// time plus [`NATIVE_EXPORT_ASSUMED_BYTES_PER_SEC`]. An assumption, not a measurement.
pub const NATIVE_EXPORT_ASSUMED_SETUP_SECS: f64 = 600.0;
/// Assumed throughput of an export to S3 past its start-up (see above).
pub const NATIVE_EXPORT_ASSUMED_BYTES_PER_SEC: f64 = 100e6;

/// Per-process figures measured by `scripts/bench-scale --budget` (the JSON file it
/// writes), for `crossdock plan --from-bench`: what one relay and one loader process
/// moved unthrottled, and how throughput grew with processes that each had a budget of
/// their own (the coordination overhead of sharing a queue and a marker).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuredFigures {
    /// Raw DynamoDB JSON MB/s one relay process moved.
    pub relay_mb_per_sec: f64,
    /// Rows/s one loader process wrote.
    pub loader_rows_per_sec: f64,
    pub relay_scaling: Vec<Scaling>,
    pub loader_scaling: Vec<Scaling>,
    /// Where and how the figures were measured.
    pub measured_on: String,
}

/// Throughput of `processes` processes over that of one.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scaling {
    pub processes: u32,
    pub speedup: f64,
}

/// Share of each added process's throughput that a fleet keeps: the speedup per
/// process at the largest fleet measured (1.0 with nothing measured), at most 1.
pub fn scaling_efficiency(scaling: &[Scaling]) -> f64 {
    scaling.iter().filter(|s| s.processes > 0 && s.speedup > 0.0).max_by_key(|s| s.processes).map_or(1.0, |s| (s.speedup / f64::from(s.processes)).min(1.0))
}

/// Inputs of [`plan_table`]: what DescribeTable (or a sample scan) says about a table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableFacts {
    pub table: String,
    pub size_bytes: u64,
    pub item_count: u64,
    /// Provisioned read capacity now (`None` for on-demand).
    pub provisioned_rcu: Option<i64>,
    pub relational: bool,
}

/// Knobs of a plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanInputs<'a> {
    /// Seconds for the whole table move; the export gets half, the load the other half
    /// (the relay runs alongside the export).
    pub deadline_secs: f64,
    pub read_ratio: f64,
    /// RCU budget for on-demand tables (`--max-rcu`).
    pub on_demand_rcu: f64,
    pub workers: u32,
    pub relay_cores: u32,
    pub codec: crate::codec::Codec,
    /// Measured per-process figures, instead of the built-in assumptions.
    pub measured: Option<&'a MeasuredFigures>,
}

/// The plan for one table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TablePlan {
    pub table: String,
    pub size_bytes: u64,
    pub items: u64,
    pub segments: u32,
    /// Read capacity to raise to (provisioned) or the RCU budget (on-demand).
    pub raise_to_rcu: i64,
    /// RCU/s the export consumes.
    pub export_rcu_per_sec: f64,
    pub export_secs: f64,
    pub relay_instances: u32,
    /// Compression throughput needed, MB/s of raw dump.
    pub relay_mb_per_sec: f64,
    pub loader_writers: u32,
    /// Loader processes sharing the table's load (`crossdock load --shard i/N`).
    pub loader_processes: u32,
    /// Spanner nodes for the loader's writers (relational tables only).
    pub spanner_nodes: u32,
    pub load_secs: f64,
    /// Egress bytes and cost per codec.
    pub egress: Vec<EgressEstimate>,
    /// The export step by scan and by DynamoDB's native export.
    pub methods: ExportMethods,
}

/// The two ways to export a table, side by side.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExportMethods {
    pub scan: MethodEstimate,
    pub native: MethodEstimate,
}

/// Time, read capacity and price of one export method.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MethodEstimate {
    pub secs: f64,
    /// Read capacity units taken from the table (0 for a native export).
    pub rcu: f64,
    pub usd: f64,
}

/// Scan: the RCU of a full scan, priced as on-demand reads, or as the raise above the
/// current provisioned capacity for as long as the scan runs. Native: no RCU, billed per
/// GB of table size, duration assumed ([`NATIVE_EXPORT_ASSUMED_BYTES_PER_SEC`]).
pub fn export_methods(size_bytes: u64, provisioned_rcu: Option<i64>, raise_to_rcu: i64, scan_secs: f64) -> ExportMethods {
    let rcu = scan_rcu(size_bytes, false);
    let scan_usd = match provisioned_rcu {
        None => rcu / 1e6 * ON_DEMAND_USD_PER_MILLION_READS,
        Some(current) if scan_secs.is_finite() => (raise_to_rcu - current).max(0) as f64 * scan_secs / 3600.0 * PROVISIONED_USD_PER_RCU_HOUR,
        Some(_) => f64::INFINITY,
    };
    ExportMethods {
        scan: MethodEstimate { secs: scan_secs, rcu, usd: scan_usd },
        native: MethodEstimate {
            secs: NATIVE_EXPORT_ASSUMED_SETUP_SECS + size_bytes as f64 / NATIVE_EXPORT_ASSUMED_BYTES_PER_SEC,
            rcu: 0.0,
            usd: size_bytes as f64 / 1e9 * NATIVE_EXPORT_USD_PER_GB,
        },
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EgressEstimate {
    pub codec: crate::codec::Codec,
    pub bytes: u64,
    pub usd: f64,
}

/// Plans one table: the same maths the exporter (segments, RCU budget), relay (codec
/// throughput) and loader (writers) use.
pub fn plan_table(facts: &TableFacts, inputs: &PlanInputs) -> TablePlan {
    let export_window = (inputs.deadline_secs / 2.0).max(1.0);
    let needed_rcu = scan_rcu(facts.size_bytes, false) / export_window;
    let segments = default_segments(facts.size_bytes, inputs.workers);
    let (raise_to_rcu, export_rcu_per_sec) = match facts.provisioned_rcu {
        Some(current) => {
            // The app keeps (1 - ratio) of the table; the export gets `ratio` of the raised total.
            let wanted = (needed_rcu / inputs.read_ratio).ceil() as i64;
            let raise = wanted.max(current);
            (raise, export_rcu_budget(raise, inputs.read_ratio))
        }
        None => (inputs.on_demand_rcu as i64, inputs.on_demand_rcu),
    };
    let export_rcu_per_sec = export_rcu_per_sec.min(DYNAMODB_RCU_PER_PARTITION * f64::from(segments));
    let export_secs = export_seconds(facts.size_bytes, export_rcu_per_sec, false);
    let relay_mb_per_sec = facts.size_bytes as f64 / 1e6 / export_secs.max(export_window).max(1.0);
    let profile = codec_profile(inputs.codec);
    let per_instance = match inputs.measured {
        Some(m) => m.relay_mb_per_sec * scaling_efficiency(&m.relay_scaling),
        None => (profile.mb_per_sec_per_core * f64::from(inputs.relay_cores.max(1))).min(RELAY_INSTANCE_NETWORK_MB_PER_SEC / profile.ratio.max(0.01)),
    };
    let relay_instances = (relay_mb_per_sec / per_instance.max(1e-9)).ceil().max(1.0) as u32;
    let load_window = (inputs.deadline_secs / 2.0).max(1.0);
    // Rows/s of one loader process, as a member of a fleet.
    let per_process = match inputs.measured {
        Some(m) => m.loader_rows_per_sec * scaling_efficiency(&m.loader_scaling),
        None => LOADER_ROWS_PER_SEC_PER_WRITER * f64::from(WRITERS_PER_LOADER_PROCESS),
    }
    .max(1e-9);
    let per_writer = per_process / f64::from(WRITERS_PER_LOADER_PROCESS);
    let loader_writers = (facts.item_count as f64 / load_window / per_writer).ceil().max(1.0) as u32;
    let spanner_nodes = if facts.relational { loader_writers.div_ceil(WRITER_VCPUS_PER_SPANNER_NODE).max(1) } else { 0 };
    let load_secs = facts.item_count as f64 / (f64::from(loader_writers) * per_writer);
    let egress = crate::codec::Codec::ALL
        .into_iter()
        .map(|codec| {
            let bytes = (facts.size_bytes as f64 * codec_profile(codec).ratio) as u64;
            EgressEstimate { codec, bytes, usd: bytes as f64 / 1e9 * EGRESS_USD_PER_GB }
        })
        .collect();
    TablePlan {
        table: facts.table.clone(),
        size_bytes: facts.size_bytes,
        items: facts.item_count,
        segments,
        raise_to_rcu,
        export_rcu_per_sec,
        export_secs,
        relay_instances,
        relay_mb_per_sec,
        loader_writers,
        loader_processes: loader_writers.div_ceil(WRITERS_PER_LOADER_PROCESS).max(1),
        spanner_nodes,
        load_secs,
        egress,
        methods: export_methods(facts.size_bytes, facts.provisioned_rcu, raise_to_rcu, export_secs),
    }
}

#[cfg(test)]
mod scan_tests {
    use super::*;

    #[test]
    fn native_export_costs_per_gb_and_no_read_capacity_where_a_scan_costs_its_reads() {
        let gb = 1_000_000_000u64;
        // On demand: 100 GB scanned eventually consistent = 100e9/4096/2 RCU at on-demand prices.
        let m = export_methods(100 * gb, None, 1000, 3600.0);
        assert!((m.scan.rcu - 100e9 / 8192.0).abs() < 1e-6);
        assert!((m.scan.usd - m.scan.rcu / 1e6 * ON_DEMAND_USD_PER_MILLION_READS).abs() < 1e-9);
        assert_eq!((m.native.rcu, m.native.usd), (0.0, 10.0));
        assert!((m.native.secs - (NATIVE_EXPORT_ASSUMED_SETUP_SECS + 1000.0)).abs() < 1e-9);
        // Provisioned: the raise above today's capacity, for the scan's hours.
        let p = export_methods(100 * gb, Some(1000), 5000, 7200.0);
        assert!((p.scan.usd - 4000.0 * 2.0 * PROVISIONED_USD_PER_RCU_HOUR).abs() < 1e-9);
        assert_eq!(export_methods(gb, Some(1000), 1000, 60.0).scan.usd, 0.0, "no raise, nothing extra billed");
    }

    #[test]
    fn scan_budget_is_a_share_of_provisioned_capacity_capped_and_needs_a_cap_on_demand() {
        assert_eq!(scan_budget(Some(1000), 0.5, None), Some(500.0));
        assert_eq!(scan_budget(Some(1000), 0.5, Some(200.0)), Some(200.0));
        assert_eq!(scan_budget(None, 0.5, Some(300.0)), Some(300.0));
        assert_eq!(scan_budget(None, 0.5, None), None);
    }

    #[test]
    fn a_sample_reads_its_share_of_segments_spread_over_the_key_space() {
        assert_eq!(sample_segments(0.1, 4), (40, vec![0, 10, 20, 30]));
        assert_eq!(sample_segments(1.0, 3), (3, vec![0, 1, 2]));
        let (total, segs) = sample_segments(0.01, 8);
        assert_eq!((total, segs.len(), segs[7]), (800, 8, 700));
        // Never beyond DynamoDB's 1,000,000 segments, never fewer than are read.
        assert_eq!(sample_segments(1e-9, 2).0, DYNAMODB_MAX_SEGMENTS);
        assert_eq!(sample_segments(0.0, 2).0, DYNAMODB_MAX_SEGMENTS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_track_size_and_workers() {
        assert_eq!(default_segments(0, 4), 4);
        assert_eq!(default_segments(0, 0), 1);
        assert_eq!(default_segments(12 << 30, 4), 12);
        // 10 GiB on 4 workers: 3 whole rounds, not 2 and a half.
        assert_eq!(default_segments(10 << 30, 4), 12);
        assert_eq!(default_segments((12 << 30) + 1, 4), 16);
        assert_eq!(default_segments(u64::MAX, 1), DYNAMODB_MAX_SEGMENTS);
        assert_eq!(default_segments(u64::MAX, 7), DYNAMODB_MAX_SEGMENTS);
    }

    #[test]
    fn scan_costs_half_a_unit_per_4k_eventually_consistent() {
        assert_eq!(scan_rcu(4096 * 100, false), 50.0);
        assert_eq!(scan_rcu(4096 * 100, true), 100.0);
        assert_eq!(export_seconds(4096 * 1000, 100.0, false), 5.0);
        assert_eq!(export_rcu_budget(1000, 0.5), 500.0);
    }

    #[test]
    fn spanner_batches_stay_under_limits() {
        let per_row = spanner_mutations_per_row(40, &[3, 5]);
        assert_eq!(per_row, 48);
        let rows = spanner_rows_per_commit(per_row, 2_000);
        assert!(rows * per_row < SPANNER_MAX_MUTATIONS, "{rows}");
        assert!(rows * per_row >= SPANNER_MAX_MUTATIONS * 8 / 10, "too small: {rows}");
        let fat = spanner_rows_per_commit(2, 1024 * 1024);
        assert!(fat * 1024 * 1024 < SPANNER_MAX_COMMIT_BYTES, "{fat}");
        assert_eq!(spanner_rows_per_commit(200_000, 10), 1);
    }

    #[test]
    fn spanner_batches_start_at_the_bulk_writer_default() {
        assert_eq!(spanner_start_rows(5, 100), 500, "rows");
        assert_eq!(spanner_start_rows(48, 100), 104, "mutations");
        assert_eq!(spanner_start_rows(5, 100_000), 10, "bytes");
        assert_eq!(spanner_start_rows(200_000, 10), 1, "never below one row");
        assert!(spanner_start_rows(2, 1) <= spanner_rows_per_commit(2, 1));
    }

    #[test]
    fn bigtable_requests_stay_under_limits() {
        let rows = bigtable_rows_per_request(99);
        assert_eq!(rows, 1000);
        assert!(rows * 100 <= BIGTABLE_MAX_MUTATIONS);
    }

    /// Feeds `b` batches whose throughput is `rate(size)` until it settles; returns the
    /// sizes it tried, in order.
    fn search(b: &mut AdaptiveBatch, rate: impl Fn(usize) -> f64) -> Vec<usize> {
        let mut tried = vec![b.size()];
        for _ in 0..100 {
            let n = b.size();
            b.success(n, n as f64 / rate(n));
            if b.size() != *tried.last().expect("one") {
                tried.push(b.size());
            }
        }
        tried
    }

    #[test]
    fn adaptive_batch_finds_the_fastest_size_above_or_below_its_start() {
        // Fastest at 400 rows (as Spanner's emulator is at a few hundred).
        let peak = |n: usize| 10_000.0 - (n as f64 - 400.0).abs() * 2.0;
        let mut b = AdaptiveBatch::new(2_500, 1, 10_000);
        let tried = search(&mut b, peak);
        assert_eq!(tried, vec![2_500, 5_000, 1_250, 625, 312, 625], "up, back down from the best, settle on it");
        assert_eq!(b.size(), 625, "within a factor of two of the peak");
        // Rising all the way: it stops at the service limit.
        let mut b = AdaptiveBatch::new(100, 1, 1_000);
        search(&mut b, |n| n as f64 * 10.0);
        assert_eq!(b.size(), 1_000, "never above the service limit");
        // Flat: no size is worth changing for.
        let mut b = AdaptiveBatch::new(100, 1, 1_000);
        assert_eq!(search(&mut b, |_| 5_000.0), vec![100, 200, 50, 100]);
    }

    #[test]
    fn adaptive_batch_halves_on_throttle_and_searches_only_upwards_again() {
        let mut b = AdaptiveBatch::new(100, 10, 1000);
        b.backoff();
        assert_eq!(b.size(), 50);
        for _ in 0..10 {
            b.backoff();
        }
        assert_eq!(b.size(), 10, "never below the minimum");
        // After a throttle, a size that does not pay is left at once.
        let tried = search(&mut b, |_| 1_000.0);
        assert_eq!(tried, vec![10, 20, 10]);
    }

    #[test]
    fn plan_raises_capacity_to_meet_the_deadline() {
        let facts = TableFacts { table: "Orders".into(), size_bytes: 100 << 30, item_count: 30_000_000, provisioned_rcu: Some(500), relational: true };
        let inputs = PlanInputs {
            deadline_secs: 6.0 * 3600.0,
            read_ratio: 0.5,
            on_demand_rcu: 1000.0,
            workers: 8,
            relay_cores: 2,
            codec: crate::codec::Codec::Zstd,
            measured: None,
        };
        let p = plan_table(&facts, &inputs);
        assert_eq!(p.segments, 104, "100 GiB in whole rounds of 8 workers");
        assert!(p.export_secs <= 3.0 * 3600.0 + 1.0, "export within its half of the deadline: {}", p.export_secs);
        assert!(p.raise_to_rcu > 500);
        assert_eq!(p.export_rcu_per_sec, p.raise_to_rcu as f64 * 0.5);
        assert!(p.spanner_nodes >= 1 && p.spanner_nodes == p.loader_writers.div_ceil(4));
        assert_eq!(p.loader_processes, p.loader_writers.div_ceil(WRITERS_PER_LOADER_PROCESS).max(1));
        let zstd = p.egress.iter().find(|e| e.codec == crate::codec::Codec::Zstd).map(|e| e.bytes);
        let none = p.egress.iter().find(|e| e.codec == crate::codec::Codec::None).map(|e| e.bytes);
        assert!(zstd < none);

        // A table already fast enough keeps its capacity.
        let small = TableFacts { size_bytes: 1 << 20, item_count: 1000, ..facts };
        assert_eq!(plan_table(&small, &inputs).raise_to_rcu, 500);
    }

    #[test]
    fn measured_figures_size_the_fleets_with_their_scaling_losses() {
        let tb = 1_000_000_000_000u64;
        let facts = TableFacts { table: "Big".into(), size_bytes: tb, item_count: 4_000_000_000, provisioned_rcu: None, relational: true };
        let m = MeasuredFigures {
            relay_mb_per_sec: 50.0,
            loader_rows_per_sec: 20_000.0,
            relay_scaling: vec![Scaling { processes: 1, speedup: 1.0 }, Scaling { processes: 4, speedup: 3.6 }],
            loader_scaling: vec![Scaling { processes: 1, speedup: 1.0 }, Scaling { processes: 4, speedup: 3.2 }],
            measured_on: "test".into(),
        };
        let inputs = PlanInputs {
            deadline_secs: 6.0 * 3600.0,
            read_ratio: 0.5,
            on_demand_rcu: 1e6,
            workers: 8,
            relay_cores: 2,
            codec: crate::codec::Codec::Zstd,
            measured: Some(&m),
        };
        let p = plan_table(&facts, &inputs);
        // 1 TB in the 3 h export window is 92.6 MB/s: two relays at 50 × 0.9 = 45 MB/s are
        // not enough, three are.
        assert_eq!(p.relay_instances, 3);
        // 4e9 rows in 3 h is 370,370 rows/s; a loader process in a fleet does
        // 20,000 × 0.8 = 16,000: 24 processes.
        assert_eq!(p.loader_processes, 24);
        assert!(p.load_secs <= 3.0 * 3600.0, "the load fits its half: {}", p.load_secs);
        assert_eq!(scaling_efficiency(&[]), 1.0);
        assert_eq!(scaling_efficiency(&[Scaling { processes: 2, speedup: 2.4 }]), 1.0, "never above linear");
    }
}
