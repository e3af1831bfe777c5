//! `phiwatch bench`: throughput and latency figures, each beside a baseline of the same run.

use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Events in the generated day.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Keep the generated data here (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Benchmark the running daemon instead: detection latency at a steady rate, tail
    /// throughput beside scan, and peak memory with the generated context.
    #[arg(long, conflicts_with_all = ["plugins", "console"])]
    live: bool,
    /// Benchmark the console instead: server and client time of the alert queue and other
    /// pages with --alerts open alerts, beside a trivial signed-in request.
    #[arg(long, conflicts_with = "plugins")]
    console: bool,
    /// --console: open alerts in the store.
    #[arg(long, default_value_t = 10_000)]
    alerts: usize,
    /// --console: requests per page.
    #[arg(long, default_value_t = 50)]
    rounds: usize,
    /// Benchmark plugin calls instead: ns per access of a trivial plugin at batches of 1, 64
    /// and 1024, beside the same rule in native Rust (--events sets the day, default 1,000,000;
    /// 100,000 is plenty).
    #[arg(long)]
    plugins: bool,
    /// --plugins: also measure these plugin components (for example the Python and
    /// JavaScript ones `plugins/build-guests` builds), in batches of 1024.
    #[arg(long = "guest", requires = "plugins")]
    guests: Vec<PathBuf>,
    /// --live: patients in the generated context (staff: one per ten, at least 3,000);
    /// --context: patients to load.
    #[arg(long, default_value_t = 100_000)]
    patients: usize,
    /// Benchmark loading the context instead: --staff practitioners, --patients patients
    /// and --encounters encounters as FHIR NDJSON (files in --dir, else a temporary
    /// directory); reports load time, peak memory and lookup cost. The round-two target:
    /// 30,000 staff, 1,000,000 patients, 5,000,000 encounters under 60 s and 4 GiB.
    #[arg(long, conflicts_with_all = ["live", "console", "plugins"])]
    context: bool,
    /// Benchmark EHR extracts instead: a --events-row `purview-epic` file made from a
    /// generated day, read by the raw CSV parse, the CSV decode stage alone, and the whole scan
    /// with the shipped plugins (rows/s and ratios to the raw parse). The round-two targets:
    /// decode >= 300,000 rows/s; `--events 5000000` scanned in under 2 minutes.
    #[arg(long, conflicts_with_all = ["live", "console", "plugins", "context"])]
    csv: bool,
    /// Benchmark `policy backtest` instead: --events accesses scanned into a store (with the
    /// access log on), then replayed through two packs, Cedar alone and with the shipped
    /// plugins (accesses/s, and ratios to the scan that stored them).
    #[arg(long, conflicts_with_all = ["live", "console", "plugins", "context", "csv"])]
    backtest: bool,
    /// Benchmark syslog over UDP instead: ~1 KB ATNA datagrams into the daemon at rising
    /// rates (5,000 to 320,000 a second, 2 s each) until some are lost, beside a bare socket
    /// that only counts them; losses are the kernel's drops for the socket.
    #[arg(long, conflicts_with_all = ["live", "console", "plugins", "context", "csv", "backtest"])]
    udp: bool,
    /// --udp: the receive buffer asked for (`recv_buffer_bytes`; the kernel caps it at
    /// net.core.rmem_max); default: the kernel's.
    #[arg(long, requires = "udp")]
    recv_buffer: Option<usize>,
    /// Benchmark fleet mode's store instead: --events accesses into the SQLite store (the
    /// baseline), then appended to PostgreSQL's ingest queue by 3 collectors and drained by a
    /// fenced detector (a 1,000,000-access backlog by default), and the lease takeover time
    /// after the detector dies. Starts a throwaway PostgreSQL on loopback unless --database
    /// names an empty one
    #[arg(long)]
    fleet: bool,
    /// Benchmark fleet mode's roles as processes instead: `phiwatch scan` of a generated
    /// day of --events (the baseline), 3 collect processes queueing it, one detect process
    /// catching up on the backlog (the pack and the shipped plugins), and the takeover time
    /// after kill -9 of the active detector. Data in --dir if given
    #[arg(long, conflicts_with = "fleet")]
    fleet_nodes: bool,
    /// --fleet, --fleet-nodes: an empty PostgreSQL database to fill (URL; default: a
    /// throwaway cluster)
    #[arg(long)]
    database: Option<String>,
    /// --fleet: the PEM CA of --database's server certificate
    #[arg(long, requires = "database")]
    ca_file: Option<PathBuf>,
    /// --fleet, --fleet-nodes: the detector lease's time to live, in seconds
    #[arg(long, default_value_t = 10)]
    lease_seconds: u64,
    /// --context: practitioners.
    #[arg(long, default_value_t = 30_000)]
    staff: usize,
    /// --context: encounters.
    #[arg(long, default_value_t = 5_000_000)]
    encounters: usize,
    /// --live: events per second in the latency phase.
    #[arg(long, default_value_t = 2_000)]
    rate: u32,
    /// --live: length of the latency phase in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// --live: events appended at once in the throughput phase.
    #[arg(long, default_value_t = 200_000)]
    block: usize,
    /// --live: the daemon's poll interval (the product default is 250).
    #[arg(long, default_value_t = 250)]
    poll_ms: u64,
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.live {
        return phiwatch::bench::live::run(&phiwatch::bench::live::LiveOptions {
            patients: a.patients,
            rate: a.rate,
            seconds: a.seconds,
            block: a.block,
            poll_ms: a.poll_ms,
            dir: a.dir,
        });
    }
    // Both fleet benches: the database given, and the detector lease.
    let database = a
        .database
        .clone()
        .map(|url| phiwatch::fleet::pg::DatabaseConfig::at(url, a.ca_file.clone()));
    let lease = std::time::Duration::from_secs(a.lease_seconds.max(1));
    if a.fleet {
        return phiwatch::bench::fleet::run(phiwatch::bench::fleet::FleetArgs {
            database,
            events: a.events,
            lease,
        })
        .map(|r| print!("{r}"));
    }
    if a.fleet_nodes {
        return phiwatch::bench::fleet_nodes::run(phiwatch::bench::fleet_nodes::FleetNodesArgs {
            database,
            events: a.events,
            lease,
            dir: a.dir,
        })
        .map(|r| print!("{r}"));
    }
    if a.udp {
        return phiwatch::bench::udp::run(a.recv_buffer).map(|r| print!("{r}"));
    }
    if a.console {
        return phiwatch::bench::console::run(a.alerts, a.rounds.max(1)).map(|r| print!("{r}"));
    }
    if a.backtest {
        return phiwatch::bench::backtest::run(a.events, a.dir.as_deref()).map(|r| print!("{r}"));
    }
    if a.csv {
        return phiwatch::bench::csv::run(a.events, a.dir.as_deref());
    }
    if a.context {
        let sizes = phiwatch::bench::context::Sizes {
            staff: a.staff,
            patients: a.patients,
            encounters: a.encounters,
        };
        return phiwatch::bench::context::run(&sizes, a.dir.as_deref()).map(|r| print!("{r}"));
    }
    if a.plugins {
        return phiwatch::bench::plugins::run(a.events, &a.guests).map(|report| print!("{report}"));
    }
    phiwatch::bench::run(a.events, a.dir.as_deref())
}
