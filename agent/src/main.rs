use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};
use phiwatch::pipeline::Pipeline;
use phiwatch::plugin::{PluginInputs, PluginSet};
use phiwatch::reload::{Inputs, Loaded};
use phiwatch::scan::{expand_event_paths, scan_files, Sinks};
use phiwatch::store::{default_data_dir, Store};
use std::io::Write;
use std::path::{Path, PathBuf};

mod cmd;

/// phiwatch: privacy monitoring for healthcare. Detects improper access to patient records
/// (snooping on family, coworkers, neighbours, VIPs, one's own chart) in EHR audit logs.
#[derive(Parser)]
#[command(name = "phiwatch", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay FHIR AuditEvent NDJSON files through detection and write findings as NDJSON.
    ///
    /// Each line of the event files is one FHIR R4 AuditEvent (IHE BALP). Bad lines are
    /// counted and reported with file and line; they never stop the scan. Findings go to
    /// stdout (or --out) and into the SQLite store, idempotent by event id and detector, so
    /// scanning the same file twice stores nothing new.
    Scan(ScanArgs),
    /// Run the agent: tail the configured logs continuously, store accesses and findings.
    ///
    /// Reads a TOML config (see install/phiwatch.example.toml). Checkpoints advance only after a
    /// batch's results are stored, so a crash or kill replays at most the batches in flight and
    /// stores nothing twice. SIGTERM or Ctrl-C stops reading, finishes in-flight batches and
    /// saves checkpoints. /healthz and /metrics (Prometheus) are served on [http] listen.
    Run {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Generate a synthetic hospital with injected violations, scan it, and score detection.
    Demo(DemoArgs),
    /// Measure events/s for parse, decode, enrich, Cedar and the whole pipeline.
    Bench(BenchArgs),
    /// Validate a policy directory (schema.cedarschema + *.cedar) and list its rules.
    Policies {
        /// Directory holding schema.cedarschema and *.cedar files (default: the built-in pack).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// List and acknowledge alerts in the agent's store.
    #[command(subcommand)]
    Alerts(AlertsCmd),
    /// Silence alerts matching labels for a while (who and why are recorded).
    #[command(subcommand)]
    Silence(SilenceCmd),
    /// Inspect and retry notifications that could not be delivered.
    #[command(subcommand)]
    Notify(NotifyCmd),
    /// Check routing rules.
    #[command(subcommand)]
    Rules(RulesCmd),
    /// Check a configuration without running it: config, sources (TLS material, folders),
    /// policies against the schema, context, routing rules and receivers. Prints every problem
    /// with its file and line; exits 1 when there is any.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Breach-response cases: open from alerts, assign, assess, determine, close, verify the log.
    #[command(subcommand)]
    Case(CaseCmd),
    /// Test policies against cases, or explain the decision on one event.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Explanation mining: propose permits for routine access patterns no policy explains.
    #[command(subcommand)]
    Explain(cmd::explain::ExplainCmd),
    /// Reports on the detection itself: `report noise` shows which detectors make the work.
    #[command(subcommand)]
    Report(cmd::report::ReportCmd),
    /// WASM detection plugins: list the shipped ones, export them, or test one over events.
    #[command(subcommand)]
    Plugin(PluginCmd),
    /// Console accounts: add, list, remove, change a password.
    ///
    /// Roles: privacy-officer (everything), investigator (triage alerts, open and work cases;
    /// not the breach decision, silences or assignment), auditor (read everything, change
    /// nothing), admin (agent status only; no PHI). Passwords are stored as Argon2id hashes.
    #[command(subcommand)]
    User(UserCmd),
}

#[derive(Subcommand)]
enum PluginCmd {
    /// The plugins shipped in this binary, with version, categories and SHA-256.
    List,
    /// Write the shipped plugin components to DIR (NAME.wasm), to inspect or pin them.
    Export { dir: PathBuf },
    /// Run one plugin over AuditEvent NDJSON and print its findings (NDJSON on stdout, a
    /// summary with failures and cost per access on stderr). For plugin authors: no sha256
    /// pin is needed here. Exits 1 when a call failed.
    Test {
        /// The component (.wasm), or builtin:NAME for a shipped plugin.
        plugin: String,
        /// AuditEvent NDJSON files.
        #[arg(long, num_args = 1.., required = true)]
        events: Vec<PathBuf>,
        #[command(flatten)]
        detection: DetectionArgs,
        /// TOML file holding the plugin's settings (the keys of [plugin.settings]).
        #[arg(long)]
        settings: Option<PathBuf>,
        /// Facts to expose: names, addresses (comma-separated). Default: none for a file,
        /// what a shipped plugin declares it needs.
        #[arg(long, value_delimiter = ',')]
        expose: Option<Vec<String>>,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        #[arg(long, default_value_t = 64)]
        memory_mb: u64,
        /// Accesses per call.
        #[arg(long, default_value_t = 512)]
        batch: usize,
    },
}

#[derive(Subcommand)]
enum CaseCmd {
    /// All cases.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// One case: facts, evidence timeline, deadlines (once a breach is determined), log.
    Show {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
        /// State rules (default: the shipped rules/jurisdictions.toml).
        #[arg(long)]
        jurisdictions: Option<PathBuf>,
    },
    /// Open a case on alerts (or by hand, without --alert).
    Open {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long = "alert")]
        alerts: Vec<i64>,
        #[arg(long, default_value = "")]
        title: String,
        /// When the breach was known, or would have been with reasonable diligence
        /// (YYYY-MM-DD; default today).
        #[arg(long)]
        discovered: Option<String>,
        #[arg(long)]
        by: String,
    },
    Assign {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
        #[arg(long)]
        to: String,
        #[arg(long)]
        by: String,
    },
    /// Facts for the deadline clocks.
    Facts {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
        #[arg(long)]
        discovered: Option<String>,
        /// Affected individuals per state: --residents CA=12 --residents TX=300.
        #[arg(long = "residents")]
        residents: Vec<String>,
        /// Law-enforcement delay: written:FROM:UNTIL or oral:FROM:DAYS (dates YYYY-MM-DD).
        #[arg(long = "delay")]
        delays: Vec<String>,
        /// States whose facility licence the organization holds (for California's rule).
        #[arg(long = "licensed-in")]
        licensed_in: Vec<String>,
        #[arg(long)]
        by: String,
    },
    /// The four-factor risk assessment (45 CFR 164.402(2)).
    Assess {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
        /// (i) nature and extent of the PHI and likelihood of re-identification.
        #[arg(long)]
        nature: String,
        /// (ii) the unauthorized person.
        #[arg(long)]
        person: String,
        /// (iii) whether the PHI was actually acquired or viewed.
        #[arg(long)]
        viewed: String,
        /// (iv) extent of mitigation.
        #[arg(long)]
        mitigation: String,
        /// good_faith_workforce, inadvertent_authorized or unable_to_retain.
        #[arg(long)]
        exclusion: Option<String>,
        /// The assessment demonstrates a low probability of compromise.
        #[arg(long)]
        low_probability: bool,
        #[arg(long)]
        conclusion: String,
        #[arg(long)]
        by: String,
    },
    /// breach, not_breach or excluded (a breach is presumed without a documented low
    /// probability of compromise or an exclusion).
    Determine {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
        #[arg(long)]
        outcome: String,
        /// Date of the determination (default today).
        #[arg(long)]
        on: Option<String>,
        #[arg(long)]
        by: String,
    },
    Note {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
        #[arg(long)]
        text: String,
        #[arg(long)]
        by: String,
    },
    /// Add a task (--add TEXT) or mark one done (--done N).
    Task {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
        #[arg(long, conflicts_with = "done")]
        add: Option<String>,
        #[arg(long)]
        done: Option<i64>,
        #[arg(long)]
        by: String,
    },
    /// Notices are going out: the case moves to notifying.
    Notify {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
        #[arg(long)]
        by: String,
    },
    /// Store a file as evidence (by SHA-256, under data_dir/attachments) and log it.
    Attach {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        by: String,
    },
    /// Outputs: --letters DIR (one per affected patient), --hhs FILE (breach report JSON),
    /// --annual-log YEAR (CSV of breaches under 500, to stdout), --accounting PATIENT.
    Export {
        #[command(flatten)]
        store: StoreArgs,
        /// The case (for --letters and --hhs).
        id: Option<i64>,
        #[arg(long)]
        letters: Option<PathBuf>,
        #[arg(long)]
        hhs: Option<PathBuf>,
        #[arg(long)]
        annual_log: Option<i32>,
        #[arg(long)]
        accounting: Option<String>,
    },
    /// true_positive, false_positive or duplicate.
    Close {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
        #[arg(long)]
        resolution: String,
        #[arg(long)]
        by: String,
    },
    /// Check the hash chain of the case log; names the first edited, deleted or moved entry.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Run the test cases in DIR (*.toml) against the pack; reports policies without a
    /// positive or negative case. Exits 1 on any failure.
    Test {
        /// Directory of test files (policies/tests/ ships one per policy file).
        dir: PathBuf,
        /// Policy directory (default: the built-in pack).
        #[arg(long)]
        policies: Option<PathBuf>,
        /// Also fail when a policy has no positive or no negative case.
        #[arg(long)]
        require_coverage: bool,
    },
    /// Show, for one AuditEvent, the facts detection saw, the decision and every policy that
    /// determined it, with its explanation.
    Explain {
        #[command(flatten)]
        detection: DetectionArgs,
        /// A file holding one FHIR AuditEvent (JSON, pretty or on one line).
        #[arg(long)]
        event: PathBuf,
    },
}

#[derive(clap::Args)]
struct StoreArgs {
    /// The agent's configuration file (its data_dir holds the store).
    #[arg(long)]
    config: PathBuf,
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add an account. The password is asked on the terminal (twice), or read from the first
    /// line of standard input with --password-stdin; at least 12 characters.
    Add {
        #[command(flatten)]
        store: StoreArgs,
        /// User name (letters, digits, - _ . @).
        name: String,
        #[arg(long, value_parser = ["privacy-officer", "investigator", "auditor", "admin"])]
        role: String,
        /// The person's id in the staff directory: what they view in the console is judged as
        /// their access (self, family, coworker...). Without it views are recorded as
        /// console:NAME.
        #[arg(long)]
        staff_id: Option<String>,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts with role and staff id.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove an account; its sessions end at once.
    Remove {
        #[command(flatten)]
        store: StoreArgs,
        name: String,
    },
    /// Set a new password; the account's sessions end at once.
    Passwd {
        #[command(flatten)]
        store: StoreArgs,
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
enum AlertsCmd {
    /// Open alerts (--all: every alert).
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        all: bool,
    },
    /// Acknowledge an alert: its pending notifications are dropped and it is not repeated
    /// (new findings reopen it).
    Ack {
        #[command(flatten)]
        store: StoreArgs,
        /// Alert id.
        id: i64,
        /// Who acknowledges (recorded with the time).
        #[arg(long)]
        by: String,
        #[arg(long, default_value = "")]
        note: String,
        /// What you concluded: false-positive, benign (routine work) or confirmed. The noise
        /// report (`phiwatch report noise`) counts these per detector.
        #[arg(long = "as")]
        disposition: Option<String>,
    },
}

#[derive(Subcommand)]
enum SilenceCmd {
    /// Silence alerts whose labels all match, e.g. --match user=dr-ana --match category=family.
    Add {
        #[command(flatten)]
        store: StoreArgs,
        /// label=value with label one of user, category, severity, department.
        #[arg(long = "match", required = true)]
        matchers: Vec<String>,
        /// How long: 30m, 2h, 1d.
        #[arg(long = "for", default_value = "2h")]
        duration: String,
        #[arg(long)]
        author: String,
        #[arg(long)]
        reason: String,
    },
    /// Active silences.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// End a silence now.
    Expire {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
    },
}

#[derive(Subcommand)]
enum NotifyCmd {
    /// Notifications given up on (permanent failure or retries exhausted), with the reason.
    /// Exits 1 when there are any, for monitoring scripts.
    DeadLetters {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Queue dead letters again, with their original idempotency keys.
    Retry {
        #[command(flatten)]
        store: StoreArgs,
        /// One dead letter's id; without it, all of them.
        id: Option<i64>,
    },
}

#[derive(Subcommand)]
enum RulesCmd {
    /// Which receivers an alert with these labels would reach.
    Test {
        /// Routing rules (default: the shipped rules/routing.toml).
        #[arg(long)]
        routing: Option<PathBuf>,
        #[arg(long)]
        category: String,
        #[arg(long, default_value = "high")]
        severity: String,
        #[arg(long, default_value = "")]
        department: String,
        /// Local hour 0-23 (default: now, UTC).
        #[arg(long)]
        hour: Option<u32>,
    },
}

#[derive(clap::Args)]
struct DetectionArgs {
    /// Context directory (or file) of FHIR R4 NDJSON: Practitioner, PractitionerRole, Patient,
    /// Person, Encounter, CareTeam, Appointment.
    #[arg(long)]
    context: Option<PathBuf>,
    /// Policy directory (schema.cedarschema + *.cedar). Default: the built-in pack.
    #[arg(long)]
    policies: Option<PathBuf>,
    /// Detection settings TOML (time zone, business hours, windows). Default: built-in
    /// rules/detection.toml.
    #[arg(long)]
    rules: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ScanArgs {
    #[command(flatten)]
    detection: DetectionArgs,
    /// AuditEvent NDJSON files, or directories of *.ndjson files.
    #[arg(long, num_args = 1.., required_unless_present = "config")]
    events: Vec<PathBuf>,
    /// Replay with an agent's configuration instead: its context feeds (with the ADT
    /// messages its store journaled), settings, policies and plugins, over the files its
    /// file sources match (every format: FHIR, ATNA XML, CSV). Stores nothing unless
    /// --store is given.
    #[arg(long, conflicts_with_all = ["events", "context", "policies", "rules"])]
    config: Option<PathBuf>,
    /// With --config: only these file sources (by name).
    #[arg(long, requires = "config")]
    source: Vec<String>,
    /// Write findings here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// SQLite store for findings. Default: $PHIWATCH_DATA_DIR/phiwatch.db
    /// (or $XDG_DATA_HOME/phiwatch, ~/.local/share/phiwatch).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Do not write to any store (findings only go to the output).
    #[arg(long, conflicts_with = "store")]
    no_store: bool,
    /// Also store every access (not only findings) in the store's access log.
    #[arg(long, conflicts_with = "no_store")]
    store_accesses: bool,
    /// Write every rejected line as `file:line: reason` here.
    #[arg(long)]
    rejects: Option<PathBuf>,
    /// Judge with the Cedar pack only, without the shipped WASM plugins.
    #[arg(long)]
    no_plugins: bool,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Write the generated data set (context/, events.ndjson, truth.ndjson) and findings here
    /// instead of a temporary directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Number of AuditEvents in all, spread over the days.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Consecutive working days of traffic (from Tuesday 2026-03-10, weekends skipped).
    /// Over several days, baselines warm up and routine patterns repeat, as in a real
    /// hospital's first weeks.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=phiwatch::demo::MAX_DAYS as u64))]
    days: u64,
    /// Random seed; the same seed gives the same hospital.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Only generate the data set; do not scan it.
    #[arg(long)]
    generate_only: bool,
    /// Judge with the hospital's context as a hospital without FHIR hands it over: an HR
    /// roster CSV, an identity crosswalk CSV and HL7 v2 ADT messages (feeds/ in the data set).
    #[arg(long)]
    feeds: bool,
    /// Percent of the day's AuditEvents that name the user by EHR login and the patient by
    /// MRN (identifiers) rather than by FHIR reference.
    #[arg(long, default_value_t = phiwatch::demo::DEFAULT_IDENTIFIER_PERCENT, value_parser = clap::value_parser!(u32).range(0..=100))]
    identifiers: u32,
}

#[derive(clap::Args)]
struct BenchArgs {
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

/// Logs go to stderr (journald, docker logs): rotation is the collector's job. `PHIWATCH_LOG`
/// sets the filter (default warn); `PHIWATCH_LOG_FORMAT=json` writes one JSON object per line.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PHIWATCH_LOG")
        .unwrap_or_else(|_| "warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("PHIWATCH_LOG_FORMAT").as_deref() {
        Ok("json") => builder.json().flatten_event(true).init(),
        Ok("text") | Err(_) => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        Ok(other) => {
            builder.init();
            tracing::warn!("PHIWATCH_LOG_FORMAT={other:?} is not json or text; using text");
        }
    }
}

fn main() {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Scan(a) => scan(a),
        Command::Run { config } => phiwatch::run::run(&config),
        Command::Demo(a) => demo(a),
        Command::Explain(c) => cmd::explain::run(c),
        Command::Report(c) => cmd::report::run(c),
        Command::Bench(a) if a.live => {
            phiwatch::bench_live::run(&phiwatch::bench_live::LiveOptions {
                patients: a.patients,
                rate: a.rate,
                seconds: a.seconds,
                block: a.block,
                poll_ms: a.poll_ms,
                dir: a.dir,
            })
        }
        Command::Bench(a) if a.console => {
            phiwatch::console::bench::run(a.alerts, a.rounds.max(1)).map(|r| print!("{r}"))
        }
        Command::Bench(a) if a.csv => phiwatch::bench_csv::run(a.events, a.dir.as_deref()),
        Command::Bench(a) if a.context => phiwatch::context::bench::run(
            &phiwatch::context::bench::Sizes {
                staff: a.staff,
                patients: a.patients,
                encounters: a.encounters,
            },
            a.dir.as_deref(),
        )
        .map(|r| print!("{r}")),
        Command::Bench(a) if a.plugins => {
            phiwatch::plugin::bench::run(a.events).map(|report| print!("{report}"))
        }
        Command::Bench(a) => phiwatch::bench::run(a.events, a.dir.as_deref()),
        Command::Policies { dir } => policies(dir),
        Command::Alerts(c) => alerts(c),
        Command::Case(c) => case(c),
        Command::Check { config } => {
            let c = phiwatch::check::check(&config);
            for s in &c.summary {
                println!("ok: {s}");
            }
            for w in &c.warnings {
                println!("warning: {w}");
            }
            for p in &c.problems {
                println!("error: {p}");
            }
            if !c.problems.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Policy(PolicyCmd::Test {
            dir,
            policies,
            require_coverage,
        }) => policy_test(&dir, policies, require_coverage),
        Command::Policy(PolicyCmd::Explain { detection, event }) => {
            policy_explain(detection, &event)
        }
        Command::Plugin(c) => plugin(c),
        Command::User(c) => user(c),
        Command::Silence(c) => silence(c),
        Command::Notify(c) => notify(c),
        Command::Rules(RulesCmd::Test {
            routing,
            category,
            severity,
            department,
            hour,
        }) => rules_test(routing, &category, &severity, &department, hour),
    };
    if let Err(e) = result {
        eprintln!("phiwatch: {e:#}");
        std::process::exit(1);
    }
}

fn plugin(c: PluginCmd) -> Result<()> {
    use phiwatch::plugin::{trial, Exposed, PluginSpec};
    match c {
        PluginCmd::List => print!("{}", trial::list()?),
        PluginCmd::Export { dir } => {
            for p in trial::export(&dir)? {
                println!("{}", p.display());
            }
        }
        PluginCmd::Test {
            plugin,
            events,
            detection,
            settings,
            expose,
            timeout_ms,
            memory_mb,
            batch,
        } => {
            let expose = expose
                .map(|v| {
                    v.iter()
                        .map(|e| match e.trim() {
                            "names" => Ok(Exposed::Names),
                            "addresses" => Ok(Exposed::Addresses),
                            other => bail!("--expose {other:?}: use names, addresses"),
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .transpose()?;
            let mut spec = PluginSpec::builtin("");
            spec.builtin = None;
            spec.expose = expose;
            spec.timeout_ms = timeout_ms;
            spec.memory_mb = memory_mb;
            spec.batch = batch;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let summary = trial::run(
                trial::TrialOptions {
                    plugin,
                    events,
                    inputs: Inputs {
                        rules: detection.rules,
                        policies: detection.policies,
                        context: Inputs::fhir_dir(detection.context),
                        journal: None,
                        plugins: PluginInputs::default(),
                    },
                    settings,
                    spec,
                },
                &mut out,
            )?;
            out.flush()?;
            eprint!("{}", summary.text);
            if summary.failed > 0 {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

fn scan(a: ScanArgs) -> Result<()> {
    if let Some(cfg) = &a.config {
        return scan_config(cfg, &a);
    }
    let Loaded {
        settings,
        pack,
        mut context,
        context_stats,
        plugins,
        ..
    } = Inputs {
        rules: a.detection.rules.clone(),
        policies: a.detection.policies.clone(),
        context: Inputs::fhir_dir(a.detection.context.clone()),
        journal: None,
        plugins: if a.no_plugins {
            PluginInputs::default()
        } else {
            PluginInputs::shipped()
        },
    }
    .load()?;
    if a.detection.context.is_some() {
        eprint!("{}", context_stats.render());
    } else {
        eprintln!("no --context given: every access will be judged without directory facts");
    }
    let paths = expand_event_paths(&a.events).context("listing event files")?;
    if paths.is_empty() {
        bail!("no event files found in {:?}", a.events);
    }
    let mut store = if a.no_store {
        None
    } else {
        let path = a
            .store
            .clone()
            .unwrap_or_else(|| default_data_dir().join("phiwatch.db"));
        Some(Store::open(&path)?)
    };
    let (mut out, mut rejects) = scan_outputs(a.out.as_deref(), a.rejects.as_deref())?;
    let plugin_state = store.as_ref().map(|s| s.conn());
    let plugins = PluginSet::new(&plugins, plugin_state, Default::default())?;
    let mut pipeline = Pipeline::new(&settings, &pack).with_plugins(plugins);
    let summary = scan_files(
        &paths,
        &mut context,
        &mut pipeline,
        &mut Sinks {
            findings: &mut out,
            rejects: rejects.as_mut().map(|r| r as &mut dyn Write),
            store: store.as_mut(),
            store_accesses: a.store_accesses,
            only_detector: None,
            grouping: None,
        },
    )?;
    if let Some(mut r) = rejects {
        r.flush()?;
    }
    eprint!("{}", summary.render());
    Ok(())
}

/// `scan --config`: a day of logs judged against an agent's real feeds and rules.
fn scan_config(path: &std::path::Path, a: &ScanArgs) -> Result<()> {
    use phiwatch::config::{Config, Source};
    let cfg = Config::load(path)?;
    let Loaded {
        settings,
        pack,
        mut context,
        context_stats,
        plugins,
        ..
    } = Inputs {
        rules: cfg.rules.clone(),
        policies: cfg.policies.clone(),
        context: cfg.context_feeds(),
        journal: Some(cfg.data_dir.join("phiwatch.db")),
        plugins: if a.no_plugins {
            PluginInputs::default()
        } else {
            cfg.plugin_inputs()
        },
    }
    .load()?;
    eprint!("{}", context_stats.render());
    let mut sources = Vec::new();
    let mut unknown_names = Vec::new();
    for src in &cfg.sources {
        let Source::File(f) = src else { continue };
        if !a.source.is_empty() && !a.source.contains(&f.name) {
            continue;
        }
        let mut paths: Vec<PathBuf> = Vec::new();
        for g in &f.paths {
            paths.extend(
                glob::glob(g)
                    .with_context(|| format!("source {:?}: glob {g:?}", f.name))?
                    .filter_map(Result::ok)
                    .filter(|p| p.is_file()),
            );
        }
        paths.sort();
        paths.dedup();
        let unknown = std::sync::Arc::new(phiwatch::decode::csv::UnknownNames::default());
        let decoder = f.decoder(unknown.clone()).map_err(anyhow::Error::msg)?;
        unknown_names.push((f.name.clone(), unknown));
        eprintln!("source {}: {} file(s)", f.name, paths.len());
        sources.push(phiwatch::scan::ScanSource {
            paths,
            decoder,
            max_line_bytes: f.max_line_bytes,
        });
    }
    if sources.is_empty() {
        bail!(
            "{}: no file source to replay (--source names none, or the config has only listeners)",
            path.display()
        );
    }
    let mut store = match &a.store {
        Some(p) => Some(Store::open(p)?),
        None => None,
    };
    let (mut out, mut rejects) = scan_outputs(a.out.as_deref(), a.rejects.as_deref())?;
    let plugin_state = store.as_ref().map(|s| s.conn());
    let plugins = PluginSet::new(&plugins, plugin_state, Default::default())?;
    let mut pipeline = Pipeline::new(&settings, &pack).with_plugins(plugins);
    // The store's alerts group as the live agent's would; a replay never notifies anyone.
    let routing = match &cfg.routing {
        Some(p) => Some(phiwatch::alert::Routing::load(p)?),
        None => None,
    };
    let summary = phiwatch::scan::scan_sources(
        &mut sources,
        &mut context,
        &mut pipeline,
        &mut Sinks {
            findings: &mut out,
            rejects: rejects.as_mut().map(|r| r as &mut dyn Write),
            store: store.as_mut(),
            store_accesses: a.store_accesses,
            only_detector: None,
            grouping: routing.as_ref(),
        },
    )?;
    if let Some(mut r) = rejects {
        r.flush()?;
    }
    eprint!("{}", summary.render());
    for (source, names) in unknown_names {
        let names = names.snapshot();
        if names.is_empty() {
            continue;
        }
        let total: u64 = names.values().sum();
        let mut top: Vec<(&String, &u64)> = names.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        eprintln!(
            "source {source}: {total} row(s) with {} action word(s) the mapping does not know, read as its default_action (add them to actions or actions_file):",
            names.len()
        );
        for (name, n) in top.iter().take(20) {
            eprintln!("  {n:>8}  {name}");
        }
    }
    let l = context.inline;
    if l != Default::default() {
        eprintln!(
            "context from the log's rows: {} patient(s) added, {} name(s) or address(es) filled, {} disagreement(s) with a feed (the feed kept), {} user name(s) linked",
            l.patients_added, l.facts_filled, l.conflicts, l.users_linked
        );
    }
    Ok(())
}

/// The `--rejects` file of a scan.
type Rejects = Option<std::io::BufWriter<std::fs::File>>;

/// A scan's findings output (`--out` or stdout) and its rejects file (`--rejects`).
fn scan_outputs(out: Option<&Path>, rejects: Option<&Path>) -> Result<(Box<dyn Write>, Rejects)> {
    let create =
        |p: &Path| std::fs::File::create(p).with_context(|| format!("creating {}", p.display()));
    let out: Box<dyn Write> = match out {
        Some(p) => Box::new(std::io::BufWriter::new(create(p)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let rejects = rejects
        .map(create)
        .transpose()?
        .map(std::io::BufWriter::new);
    Ok((out, rejects))
}

fn demo(a: DemoArgs) -> Result<()> {
    phiwatch::demo::run(&phiwatch::demo::DemoOptions {
        out: a.out,
        events: a.events,
        seed: a.seed,
        generate_only: a.generate_only,
        feeds: a.feeds,
        identifier_percent: a.identifiers,
        days: a.days as usize,
    })
}

fn policies(dir: Option<PathBuf>) -> Result<()> {
    let loaded = Inputs {
        policies: dir,
        ..Inputs::default()
    }
    .load()?;
    for (what, pack) in [
        ("patient-access", &loaded.pack),
        ("PHI-folder", &loaded.file_pack),
    ] {
        println!(
            "{} {what} policies valid against the schema",
            pack.rules().len()
        );
        for r in pack.rules() {
            if r.forbid {
                println!(
                    "  forbid {:<32} {:<18} {:<8} {}:{}",
                    r.id, r.category, r.severity, r.file, r.line
                );
            } else {
                println!(
                    "  permit {:<32} {:<27} {}:{}",
                    r.id, "(explanation)", r.file, r.line
                );
            }
        }
    }
    Ok(())
}

fn admin(s: &StoreArgs) -> Result<phiwatch::alert::admin::Admin> {
    let cfg = phiwatch::config::Config::load(&s.config)?;
    Ok(phiwatch::alert::admin::Admin::open(
        &cfg.data_dir.join("phiwatch.db"),
    )?)
}

fn alerts(c: AlertsCmd) -> Result<()> {
    let out = match c {
        AlertsCmd::List { store, all } => admin(&store)?.list_alerts(all)?,
        AlertsCmd::Ack {
            store,
            id,
            by,
            note,
            disposition,
        } => admin(&store)?.ack(id, &by, &note, disposition.as_deref())?,
    };
    print!("{out}");
    Ok(())
}

fn silence(c: SilenceCmd) -> Result<()> {
    let out = match c {
        SilenceCmd::Add {
            store,
            matchers,
            duration,
            author,
            reason,
        } => {
            let d = phiwatch::alert::routing::parse_duration(&duration)
                .map_err(|e| anyhow::anyhow!("--for: {e}"))?;
            admin(&store)?.silence(&matchers, d, &author, &reason)?
        }
        SilenceCmd::List { store } => admin(&store)?.list_silences()?,
        SilenceCmd::Expire { store, id } => admin(&store)?.expire_silence(id)?,
    };
    print!("{out}");
    Ok(())
}

fn notify(c: NotifyCmd) -> Result<()> {
    match c {
        NotifyCmd::DeadLetters { store } => {
            let (n, out) = admin(&store)?.dead_letters()?;
            print!("{out}");
            if n > 0 {
                std::process::exit(1);
            }
        }
        NotifyCmd::Retry { store, id } => print!("{}", admin(&store)?.retry(id)?),
    }
    Ok(())
}

fn rules_test(
    routing: Option<PathBuf>,
    category: &str,
    severity: &str,
    department: &str,
    hour: Option<u32>,
) -> Result<()> {
    use phiwatch::alert::routing::{RouteInput, Routing};
    let r = match &routing {
        Some(p) => Routing::load(p)?,
        None => Routing::parse(Routing::EMBEDDED).map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    let severity: phiwatch::finding::Severity =
        severity.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let hour = hour.unwrap_or_else(|| chrono::Timelike::hour(&chrono::Utc::now()));
    if hour > 23 {
        anyhow::bail!("--hour {hour}: expected 0-23");
    }
    let receivers = r.receivers_for(&RouteInput {
        category,
        severity,
        department,
        hour,
    });
    if receivers.is_empty() {
        println!("no receiver: this alert would be stored and nobody notified");
    }
    for name in receivers {
        let kind = match r.receiver(&name) {
            Some(phiwatch::alert::Receiver::Email(e)) => format!("email to {}", e.to.join(", ")),
            Some(phiwatch::alert::Receiver::Webhook(w)) => {
                format!("webhook {:?} {}", w.format, w.url)
            }
            Some(phiwatch::alert::Receiver::Syslog(r)) => {
                format!("CEF over syslog {:?} to {}", r.transport, r.address)
            }
            None => "undefined".into(),
        };
        println!("{name}: {kind}");
    }
    Ok(())
}

fn policy_test(dir: &Path, policies: Option<PathBuf>, require_coverage: bool) -> Result<()> {
    let pack = Inputs {
        policies,
        ..Inputs::default()
    }
    .load()?
    .pack;
    let report = phiwatch::detect::policy_test::run(dir, &pack).map_err(|e| anyhow::anyhow!(e))?;
    print!("{}", report.render());
    let uncovered = !report.no_positive.is_empty() || !report.no_negative.is_empty();
    if !report.ok() || (require_coverage && uncovered) {
        std::process::exit(1);
    }
    Ok(())
}

fn policy_explain(a: DetectionArgs, event: &Path) -> Result<()> {
    let loaded = Inputs {
        rules: a.rules,
        policies: a.policies,
        context: Inputs::fhir_dir(a.context),
        journal: None,
        plugins: PluginInputs::default(),
    }
    .load()?;
    let text = std::fs::read(event).with_context(|| format!("reading {}", event.display()))?;
    let value: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: {}",
            event.display(),
            phiwatch::decode::DecodeError::from_json(&e)
        )
    })?;
    let line = serde_json::to_vec(&value)?;
    let ev = match phiwatch::decode::decode_audit_event(&line)
        .map_err(|e| anyhow::anyhow!("{}: {e}", event.display()))?
    {
        phiwatch::decode::Decoded::Access(ev) => ev,
        // The first patient's access: the others are judged the same way.
        phiwatch::decode::Decoded::Many { mut accesses, .. } => accesses.swap_remove(0),
        phiwatch::decode::Decoded::NoPatient => {
            println!("this AuditEvent names no patient: there is nothing to judge");
            return Ok(());
        }
    };
    let mut enricher = phiwatch::enrich::Enricher::new(&loaded.settings);
    let enriched = enricher.enrich(&loaded.context, ev);
    let mut detector = phiwatch::detect::Detector::new(&loaded.pack);
    print!(
        "{}",
        phiwatch::detect::explain::facts(&enriched, &loaded.context)
    );
    let (allowed, reasons) = detector
        .determining(&enriched, &loaded.context)
        .map_err(|e| anyhow::anyhow!("evaluation error: {e}"))?;
    let mut findings = Vec::new();
    detector.findings(&enriched, &loaded.context, &mut findings);
    if allowed {
        println!("decision: explained (no finding), by:");
        for r in &reasons {
            println!("  permit {r}");
        }
    } else if reasons.is_empty() {
        println!("decision: unexplained: no permit matched and no forbid fired (default-deny)");
    } else {
        println!("decision: finding(s)");
    }
    for f in &findings {
        println!(
            "  {} [{} {}] {}",
            f.detector, f.category, f.severity, f.explanation
        );
    }
    Ok(())
}

fn date_arg(s: &str, what: &str) -> Result<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| anyhow::anyhow!("{what} {s:?}: expected YYYY-MM-DD"))
}

fn cases(s: &StoreArgs) -> Result<phiwatch::case::Cases> {
    cases_in(&phiwatch::config::Config::load(&s.config)?)
}

/// The agent's cases, kept to the configuration's deadline rules and reminder settings: a
/// change that moves a clock requeues the case's reminders.
fn cases_in(cfg: &phiwatch::config::Config) -> Result<phiwatch::case::Cases> {
    let (jurisdictions, response) = phiwatch::case::plan_for(cfg)?;
    Ok(
        phiwatch::case::Cases::open(&cfg.data_dir.join("phiwatch.db"))?.with_plan(
            std::sync::Arc::new(phiwatch::case::schedule::Plan {
                jurisdictions,
                response,
            }),
        ),
    )
}

/// `case list`: open cases by urgency, with their next deadline.
fn case_list(rows: &[phiwatch::console::data::CaseRow]) -> String {
    let mut out = format!(
        "{:>5} {:<16} {:<16} {:<12} {:<28} title\n",
        "id", "state", "assignee", "outcome", "next deadline"
    );
    for r in rows {
        let next = match &r.next_deadline {
            Some(d) => format!(
                "{} ({}{})",
                d.due,
                if d.days_left < 0 {
                    format!("overdue {} d", -d.days_left)
                } else {
                    format!("{} d", d.days_left)
                },
                if d.provisional { ", prov." } else { "" }
            ),
            None => "-".into(),
        };
        out.push_str(&format!(
            "{:>5} {:<16} {:<16} {:<12} {:<28} {}\n",
            r.id,
            r.state,
            r.assignee.as_deref().unwrap_or("-"),
            r.determination.as_deref().unwrap_or("-"),
            next,
            r.title
        ));
    }
    out
}

/// What the change did to the case's reminders.
fn reminders_note(c: &phiwatch::case::Cases, id: i64) -> Result<()> {
    let n = c.pending_reminders(id)?;
    println!("{n} deadline reminder(s) pending for case #{id}");
    Ok(())
}

fn case(c: CaseCmd) -> Result<()> {
    use phiwatch::case::clock::{Jurisdictions, LawEnforcementDelay};
    match c {
        CaseCmd::List { store } => {
            let cfg = phiwatch::config::Config::load(&store.config)?;
            let (j, _) = phiwatch::case::plan_for(&cfg)?;
            let today = chrono::Utc::now().date_naive();
            let rows = phiwatch::console::data::cases(&cases_in(&cfg)?, &j, today)
                .map_err(|e| anyhow::anyhow!(e))?;
            print!("{}", case_list(&rows));
        }
        CaseCmd::Show {
            store,
            id,
            jurisdictions,
        } => {
            let j = match jurisdictions {
                Some(p) => Jurisdictions::load(&p),
                None => Jurisdictions::parse(Jurisdictions::EMBEDDED),
            }
            .map_err(|e| anyhow::anyhow!(e))?;
            let cfg = phiwatch::config::Config::load(&store.config)?;
            let c = cases_in(&cfg)?;
            print!("{}", c.show(id, &j)?);
            print!("{}", context_facts(&cfg, &c, id)?);
        }
        CaseCmd::Open {
            store,
            alerts,
            title,
            discovered,
            by,
        } => {
            let d = discovered
                .map(|d| date_arg(&d, "--discovered"))
                .transpose()?;
            let mut c = cases(&store)?;
            let id = c.create(&by, &title, &alerts, d)?;
            println!("case #{id} opened");
            reminders_note(&c, id)?;
        }
        CaseCmd::Assign { store, id, to, by } => {
            cases(&store)?.assign(id, &by, &to)?;
            println!("case #{id} assigned to {to}");
        }
        CaseCmd::Facts {
            store,
            id,
            discovered,
            residents,
            delays,
            licensed_in,
            by,
        } => {
            let d = discovered
                .map(|d| date_arg(&d, "--discovered"))
                .transpose()?;
            let mut r = std::collections::BTreeMap::new();
            for s in &residents {
                let (st, n) = s
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--residents {s:?}: expected STATE=COUNT"))?;
                let n: u32 = n
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--residents {s:?}: COUNT is not a number"))?;
                r.insert(st.to_uppercase(), n);
            }
            let mut ds = Vec::new();
            for s in &delays {
                let parts: Vec<&str> = s.split(':').collect();
                ds.push(match parts.as_slice() {
                    ["written", from, until] => LawEnforcementDelay::Written {
                        from: date_arg(from, "--delay")?,
                        until: date_arg(until, "--delay")?,
                    },
                    ["oral", from, days] => LawEnforcementDelay::Oral {
                        from: date_arg(from, "--delay")?,
                        days: days
                            .parse()
                            .map_err(|_| anyhow::anyhow!("--delay {s:?}: DAYS is not a number"))?,
                    },
                    _ => anyhow::bail!(
                        "--delay {s:?}: expected written:FROM:UNTIL or oral:FROM:DAYS"
                    ),
                });
            }
            let mut c = cases(&store)?;
            c.set_facts(
                id,
                &by,
                d,
                (!residents.is_empty()).then_some(r),
                (!delays.is_empty()).then_some(ds),
                (!licensed_in.is_empty())
                    .then(|| licensed_in.iter().map(|s| s.to_uppercase()).collect()),
            )?;
            println!("case #{id} facts recorded");
            reminders_note(&c, id)?;
        }
        CaseCmd::Assess {
            store,
            id,
            nature,
            person,
            viewed,
            mitigation,
            exclusion,
            low_probability,
            conclusion,
            by,
        } => {
            let exclusion = exclusion
                .map(|e| {
                    serde_json::from_value(serde_json::Value::String(e.clone())).map_err(|_| {
                        anyhow::anyhow!(
                            "--exclusion {e:?}: expected good_faith_workforce, inadvertent_authorized or unable_to_retain"
                        )
                    })
                })
                .transpose()?;
            cases(&store)?.assess(
                id,
                &by,
                &phiwatch::case::Assessment {
                    nature_and_extent: nature,
                    unauthorized_person: person,
                    acquired_or_viewed: viewed,
                    mitigation,
                    exclusion,
                    low_probability,
                    conclusion,
                },
            )?;
            println!("case #{id} risk assessment recorded");
        }
        CaseCmd::Determine {
            store,
            id,
            outcome,
            on,
            by,
        } => {
            let on = on.map(|d| date_arg(&d, "--on")).transpose()?;
            let mut c = cases(&store)?;
            c.determine(id, &by, &outcome, on)?;
            println!("case #{id} determined: {outcome}");
            reminders_note(&c, id)?;
        }
        CaseCmd::Note {
            store,
            id,
            text,
            by,
        } => {
            cases(&store)?.note(id, &by, &text)?;
            println!("note added to case #{id}");
        }
        CaseCmd::Close {
            store,
            id,
            resolution,
            by,
        } => {
            cases(&store)?.close(id, &by, &resolution)?;
            println!("case #{id} closed: {resolution}");
        }
        CaseCmd::Task {
            store,
            id,
            add,
            done,
            by,
        } => match (add, done) {
            (Some(text), None) => {
                let n = cases(&store)?.add_task(id, &by, &text)?;
                println!("case #{id}: task {n} added");
            }
            (None, Some(n)) => {
                cases(&store)?.finish_task(id, &by, n)?;
                println!("case #{id}: task {n} done");
            }
            _ => anyhow::bail!("give --add TEXT or --done N"),
        },
        CaseCmd::Notify { store, id, by } => {
            cases(&store)?.notifying(id, &by)?;
            println!("case #{id}: notifying");
        }
        CaseCmd::Attach {
            store,
            id,
            file,
            by,
        } => {
            let cfg = phiwatch::config::Config::load(&store.config)?;
            let sha = cases_in(&cfg)?.attach(id, &by, &file, &cfg.data_dir.join("attachments"))?;
            println!("attached {} to case #{id}: sha256 {sha}", file.display());
        }
        CaseCmd::Export {
            store,
            id,
            letters,
            hhs,
            annual_log,
            accounting,
        } => {
            use phiwatch::case::output;
            let cfg = phiwatch::config::Config::load(&store.config)?;
            let (_, r) = phiwatch::case::plan_for(&cfg)?;
            let c = cases_in(&cfg)?;
            let today = chrono::Utc::now().date_naive();
            let need_id = || id.ok_or_else(|| anyhow::anyhow!("give the case id"));
            if let Some(dir) = letters {
                let names = phiwatch::case::output::patient_names(cfg.fhir_context().as_deref())?;
                let written =
                    output::letters(&c, need_id()?, &r, &|p| names.get(p).cloned(), today, &dir)?;
                println!("{} letter(s) written to {}", written.len(), dir.display());
            }
            if let Some(file) = hhs {
                let report = output::hhs_report(&c, need_id()?, &r)?;
                std::fs::write(&file, serde_json::to_string_pretty(&report)?)
                    .with_context(|| format!("writing {}", file.display()))?;
                println!("HHS breach report written to {}", file.display());
            }
            if let Some(year) = annual_log {
                print!("{}", output::annual_log(&c, year)?);
            }
            if let Some(p) = accounting {
                print!("{}", output::accounting(&c, &p, today)?);
            }
        }
        CaseCmd::Verify { store } => match cases(&store)?.verify()? {
            Ok((n, head)) => println!("case log intact: {n} entries, head {head}"),
            Err(b) => {
                println!("case log BROKEN at entry #{}: {}", b.seq, b.reason);
                std::process::exit(1);
            }
        },
    }
    Ok(())
}

/// The involved users' and patients' directory facts, from the configured context.
fn context_facts(
    cfg: &phiwatch::config::Config,
    c: &phiwatch::case::Cases,
    id: i64,
) -> Result<String> {
    let feeds = cfg.context_feeds();
    if feeds.is_empty() {
        return Ok("context facts: no context configured\n".into());
    }
    let settings = match &cfg.rules {
        Some(p) => phiwatch::settings::Settings::load(p)?,
        None => phiwatch::settings::Settings::default(),
    };
    let journal = phiwatch::store::journal(&cfg.data_dir.join("phiwatch.db")).unwrap_or_default();
    let (store, _) = phiwatch::context::load_feeds(&feeds, &settings, &journal)
        .context("loading the context feeds")?;
    let (users, patients) = phiwatch::case::output::involved(c, id)?;
    let mut out = String::from("context facts:\n");
    for u in users {
        match store.user(&u) {
            Some(ix) => {
                let f = store.user_facts(ix);
                let status = if f.inactive {
                    "inactive".to_owned()
                } else if let Some(t) = f.terminated_ms {
                    format!("roles ended {}", phiwatch::time::format_ms(t))
                } else {
                    "active".to_owned()
                };
                out.push_str(&format!(
                    "  user {u}: role {}, department {}, {status}\n",
                    f.role, f.department
                ));
            }
            None => out.push_str(&format!("  user {u}: not in the directory\n")),
        }
    }
    for p in patients {
        match store.patient(&p) {
            Some(ix) => {
                let f = store.patient_facts(ix);
                let mut flags = Vec::new();
                for (on, name) in [
                    (f.vip, "VIP"),
                    (f.employee, "workforce member"),
                    (f.restricted, "restricted"),
                    (f.deceased_ms.is_some(), "deceased"),
                    (f.sensitive != 0, "sensitive"),
                ] {
                    if on {
                        flags.push(name);
                    }
                }
                out.push_str(&format!(
                    "  patient {p}: {}\n",
                    if flags.is_empty() {
                        "no special labels".to_owned()
                    } else {
                        flags.join(", ")
                    }
                ));
            }
            None => out.push_str(&format!("  patient {p}: not in the context\n")),
        }
    }
    Ok(out)
}

/// The store of the configured agent, created if the agent has not run yet.
fn user_store(s: &StoreArgs) -> Result<rusqlite::Connection> {
    // SAFETY: umask(2) only sets the process's file-creation mask.
    unsafe { libc::umask(0o077) };
    let cfg = phiwatch::config::Config::load(&s.config)?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data_dir {}", cfg.data_dir.display()))?;
    let db = cfg.data_dir.join("phiwatch.db");
    Store::open(&db)?;
    Ok(Store::open_existing(&db)?)
}

fn read_password(from_stdin: bool) -> Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    let first = rpassword::prompt_password("password: ").context("reading the password")?;
    let again = rpassword::prompt_password("again: ").context("reading the password")?;
    if first != again {
        bail!("the passwords differ");
    }
    Ok(first)
}

fn user(c: UserCmd) -> Result<()> {
    use phiwatch::console::{accounts, authz::Role};
    match c {
        UserCmd::Add {
            store,
            name,
            role,
            staff_id,
            password_stdin,
        } => {
            let conn = user_store(&store)?;
            let role = Role::parse(&role).context("unknown role")?;
            let password = read_password(password_stdin)?;
            accounts::add(&conn, &name, role, staff_id.as_deref(), &password)?;
            println!("user {name} added ({})", role.as_str());
        }
        UserCmd::List { store } => {
            let conn = user_store(&store)?;
            println!("{:<24} {:<16} staff id", "user", "role");
            for a in accounts::list(&conn)? {
                println!(
                    "{:<24} {:<16} {}",
                    a.name,
                    a.role.as_str(),
                    a.staff_id.as_deref().unwrap_or("-")
                );
            }
        }
        UserCmd::Remove { store, name } => {
            accounts::remove(&mut user_store(&store)?, &name)?;
            println!("user {name} removed; their sessions ended");
        }
        UserCmd::Passwd {
            store,
            name,
            password_stdin,
        } => {
            let mut conn = user_store(&store)?;
            let password = read_password(password_stdin)?;
            accounts::set_password(&mut conn, &name, &password)?;
            println!("password of {name} changed; their sessions ended");
        }
    }
    Ok(())
}
