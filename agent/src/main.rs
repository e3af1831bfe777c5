use clap::Parser;
use std::path::PathBuf;

mod cmd;

/// phiwatch: privacy monitoring for healthcare. Detects improper access to patient records
/// (snooping on family, coworkers, neighbours, VIPs, one's own chart) in EHR audit logs.
#[derive(Parser)]
#[command(name = "phiwatch", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Replay FHIR AuditEvent NDJSON files through detection and write findings as NDJSON.
    ///
    /// Each line of the event files is one FHIR R4 AuditEvent (IHE BALP). Bad lines are
    /// counted and reported with file and line; they never stop the scan. Findings go to
    /// stdout (or --out) and into the SQLite store, idempotent by event id and detector, so
    /// scanning the same file twice stores nothing new.
    Scan(cmd::scan::ScanArgs),
    /// Run the agent: tail the configured logs continuously, store accesses and findings.
    ///
    /// Reads a TOML config (see install/phiwatch.example.toml). Checkpoints advance only after a
    /// batch's results are stored, so a crash or kill replays at most the batches in flight and
    /// stores nothing twice. SIGTERM or Ctrl-C stops reading, finishes in-flight batches and
    /// saves checkpoints. /healthz and /metrics (Prometheus) are served on [http] listen.
    ///
    /// Fleet mode ([database] and a role): collect nodes queue what their sources read in
    /// PostgreSQL, detect nodes hold a fenced lease in turn and judge the queue.
    Run(cmd::run::RunArgs),
    /// Generate a synthetic hospital with injected violations, scan it, and score detection.
    Demo(cmd::demo::DemoArgs),
    /// Measure events/s for parse, decode, enrich, Cedar and the whole pipeline.
    Bench(cmd::bench::BenchArgs),
    /// Validate a policy directory (schema.cedarschema + *.cedar) and list its rules.
    Policies {
        /// Directory holding schema.cedarschema and *.cedar files (default: the built-in pack).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// List and acknowledge alerts in the agent's store.
    #[command(subcommand)]
    Alerts(cmd::alerts::AlertsCmd),
    /// Silence alerts matching labels for a while (who and why are recorded).
    #[command(subcommand)]
    Silence(cmd::silence::SilenceCmd),
    /// Inspect and retry notifications that could not be delivered.
    #[command(subcommand)]
    Notify(cmd::notify::NotifyCmd),
    /// Check routing rules.
    #[command(subcommand)]
    Rules(cmd::rules::RulesCmd),
    /// Check a configuration without running it: config, sources (TLS material, folders),
    /// policies against the schema, context, routing rules and receivers. Prints every problem
    /// with its file and line; exits 1 when there is any.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Bring a store's schema to this version: fleet mode's PostgreSQL or the SQLite store.
    ///
    /// Run once after installing or upgrading phiwatch, before the nodes start (they refuse a
    /// schema that is behind, and one written by a newer phiwatch). Several nodes may run it
    /// at once: the database orders them, and a version is applied once, in one transaction.
    Migrate(cmd::migrate::MigrateArgs),
    /// Archive and drop the months of accesses past the retention (fleet mode's PostgreSQL).
    ///
    /// Each month past `retention_months` in [database] (72: HIPAA's six years) is written to
    /// `archive_dir` as CSV with its SHA-256, synced, then detached and dropped. Run it daily
    /// (a systemd timer or cron); `--dry-run` shows what it would do.
    Retention(cmd::retention::RetentionArgs),
    /// Breach-response cases: open from alerts, assign, assess, determine, close, verify the log.
    #[command(subcommand)]
    Case(cmd::case::CaseCmd),
    /// Test policies against cases, or explain the decision on one event.
    #[command(subcommand)]
    Policy(cmd::policy::PolicyCmd),
    /// Explanation mining: propose permits for routine access patterns no policy explains.
    #[command(subcommand)]
    Explain(cmd::explain::ExplainCmd),
    /// Reports on the detection itself: `report noise` shows which detectors make the work.
    #[command(subcommand)]
    Report(cmd::report::ReportCmd),
    /// WASM detection plugins: list the shipped ones, export them, or test one over events.
    #[command(subcommand)]
    Plugin(cmd::plugin::PluginCmd),
    /// Console accounts: add, list, remove, change a password.
    ///
    /// Roles: privacy-officer (everything), investigator (triage alerts, open and work cases;
    /// not the breach decision, silences or assignment), auditor (read everything, change
    /// nothing), admin (agent status only; no PHI). Passwords are stored as Argon2id hashes.
    #[command(subcommand)]
    User(cmd::user::UserCmd),
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
    let result = match Cli::parse().command {
        Command::Scan(a) => cmd::scan::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Demo(a) => cmd::demo::run(a),
        Command::Explain(c) => cmd::explain::run(c),
        Command::Report(c) => cmd::report::run(c),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Policies { dir } => cmd::policy::policies(dir),
        Command::Alerts(c) => cmd::alerts::run(c),
        Command::Case(c) => cmd::case::run(c),
        Command::Check { config } => cmd::check::run(&config),
        Command::Migrate(a) => cmd::migrate::run(a),
        Command::Retention(a) => cmd::retention::run(a),
        Command::Policy(c) => cmd::policy::run(c),
        Command::Plugin(c) => cmd::plugin::run(c),
        Command::User(c) => cmd::user::run(c),
        Command::Silence(c) => cmd::silence::run(c),
        Command::Notify(c) => cmd::notify::run(c),
        Command::Rules(c) => cmd::rules::run(c),
    };
    if let Err(e) = result {
        eprintln!("phiwatch: {e:#}");
        std::process::exit(1);
    }
}
