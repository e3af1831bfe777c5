//! `phiwatch case`: breach-response cases from the command line.

use super::StoreArgs;
use anyhow::{Context as _, Result};
use clap::Subcommand;
use phiwatch::case::book::CaseBook;
use phiwatch::case::clock::{Jurisdictions, LawEnforcementDelay};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum CaseCmd {
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
    Facts(FactsArgs),
    /// The four-factor risk assessment (45 CFR 164.402(2)).
    Assess(AssessArgs),
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

pub fn run(c: CaseCmd) -> Result<()> {
    match c {
        CaseCmd::List { store } => list(&store)?,
        CaseCmd::Show {
            store,
            id,
            jurisdictions,
        } => show(&store, id, jurisdictions.as_deref())?,
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
            let mut c = book(&store)?;
            let id = c.create(&by, &title, &alerts, d)?;
            println!("case #{id} opened");
            reminders_note(&c, id)?;
        }
        CaseCmd::Assign { store, id, to, by } => {
            book(&store)?.assign(id, &by, &to)?;
            println!("case #{id} assigned to {to}");
        }
        CaseCmd::Facts(a) => facts(a)?,
        CaseCmd::Assess(a) => assess(a)?,
        CaseCmd::Determine {
            store,
            id,
            outcome,
            on,
            by,
        } => {
            let on = on.map(|d| date_arg(&d, "--on")).transpose()?;
            let mut c = book(&store)?;
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
            book(&store)?.note(id, &by, &text)?;
            println!("note added to case #{id}");
        }
        CaseCmd::Close {
            store,
            id,
            resolution,
            by,
        } => {
            book(&store)?.close(id, &by, &resolution)?;
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
                let n = book(&store)?.add_task(id, &by, &text)?;
                println!("case #{id}: task {n} added");
            }
            (None, Some(n)) => {
                book(&store)?.finish_task(id, &by, n)?;
                println!("case #{id}: task {n} done");
            }
            _ => anyhow::bail!("give --add TEXT or --done N"),
        },
        CaseCmd::Notify { store, id, by } => {
            book(&store)?.notifying(id, &by)?;
            println!("case #{id}: notifying");
        }
        CaseCmd::Attach {
            store,
            id,
            file,
            by,
        } => {
            let cfg = phiwatch::config::Config::load(&store.config)?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let dir = cfg.data_dir.join("attachments");
            let sha = open_book(&cfg)?.attach_bytes(id, &by, &name, &bytes, &dir)?;
            println!("attached {} to case #{id}: sha256 {sha}", file.display());
        }
        CaseCmd::Export {
            store,
            id,
            letters,
            hhs,
            annual_log,
            accounting,
        } => export(&store, id, letters, hhs, annual_log, accounting)?,
        CaseCmd::Verify { store } => match book(&store)?.verify()? {
            Ok((n, head)) => println!("case log intact: {n} entries, head {head}"),
            Err(b) => {
                println!("case log BROKEN at entry #{}: {}", b.seq, b.reason);
                std::process::exit(1);
            }
        },
    }
    Ok(())
}

pub fn date_arg(s: &str, what: &str) -> Result<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| anyhow::anyhow!("{what} {s:?}: expected YYYY-MM-DD"))
}

/// The cases the config names: the single process's store or the fleet's database.
fn book(s: &StoreArgs) -> Result<Book> {
    open_book(&phiwatch::config::Config::load(&s.config)?)
}

/// Cases, with the runtime the fleet database's calls run on (dropped after its client).
pub struct Book {
    cases: CaseBook,
    _rt: Option<tokio::runtime::Runtime>,
}

impl std::ops::Deref for Book {
    type Target = CaseBook;
    fn deref(&self) -> &CaseBook {
        &self.cases
    }
}

impl std::ops::DerefMut for Book {
    fn deref_mut(&mut self) -> &mut CaseBook {
        &mut self.cases
    }
}

/// The cases the config names, kept to its deadline rules and reminder settings.
pub fn open_book(cfg: &phiwatch::config::Config) -> Result<Book> {
    Ok(match &cfg.database {
        Some(db) => {
            let (rt, client) = super::alert_store::fleet_client(db)?;
            Book {
                cases: CaseBook::Fleet {
                    rt: rt.handle().clone(),
                    client,
                    plan: Some(std::sync::Arc::new(plan_of(cfg)?)),
                },
                _rt: Some(rt),
            }
        }
        None => Book {
            cases: CaseBook::Sqlite(cases_in(cfg)?),
            _rt: None,
        },
    })
}

/// What the change did to the case's reminders.
fn reminders_note(c: &CaseBook, id: i64) -> Result<()> {
    let n = c.pending_reminders(id)?;
    println!("{n} deadline reminder(s) pending for case #{id}");
    Ok(())
}

/// The agent's cases, kept to the configuration's deadline rules and reminder settings: a
/// change that moves a clock requeues the case's reminders.
/// The configuration's deadline rules and reminder settings (else the built-in ones).
fn plan_of(cfg: &phiwatch::config::Config) -> Result<phiwatch::case::schedule::Plan> {
    let (jurisdictions, response) = phiwatch::case::plan_for(cfg)?;
    Ok(phiwatch::case::schedule::Plan {
        jurisdictions,
        response,
    })
}

pub fn cases_in(cfg: &phiwatch::config::Config) -> Result<phiwatch::case::Cases> {
    let plan = std::sync::Arc::new(plan_of(cfg)?);
    Ok(phiwatch::case::Cases::open(&super::sqlite_store(cfg)?)?.with_plan(plan))
}

/// `case list`: open cases by urgency, with their next deadline.
pub fn case_list(rows: &[phiwatch::console::data::CaseRow]) -> String {
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

/// The involved users' and patients' directory facts, from the configured context.
pub fn context_facts(
    cfg: &phiwatch::config::Config,
    users: &[String],
    patients: &[String],
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
    let mut out = String::from("context facts:\n");
    for u in users {
        match store.user(u) {
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
        match store.patient(p) {
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

fn list(store: &StoreArgs) -> Result<()> {
    let cfg = phiwatch::config::Config::load(&store.config)?;
    let (j, _) = phiwatch::case::plan_for(&cfg)?;
    let today = chrono::Utc::now().date_naive();
    let rows = open_book(&cfg)?.list(&j, today)?;
    print!("{}", case_list(&rows));
    Ok(())
}

fn show(store: &StoreArgs, id: i64, jurisdictions: Option<&std::path::Path>) -> Result<()> {
    let j = match jurisdictions {
        Some(p) => Jurisdictions::load(p),
        None => Jurisdictions::parse(Jurisdictions::EMBEDDED),
    }?;
    let cfg = phiwatch::config::Config::load(&store.config)?;
    let c = open_book(&cfg)?;
    let today = chrono::Utc::now().date_naive();
    let detail = c
        .detail(id, &j, today)?
        .ok_or_else(|| anyhow::anyhow!("no case #{id}"))?;
    let evidence = c.evidence(id)?;
    print!("{}", case_text(&detail, &evidence));
    print!("{}", context_facts(&cfg, &detail.users, &detail.patients)?);
    Ok(())
}

/// The case, its evidence timeline, its deadlines and its log, as `case show` prints them.
fn case_text(
    d: &phiwatch::case::query::CaseDetail,
    evidence: &[phiwatch::case::timeline::TimelineRow],
) -> String {
    use std::fmt::Write as _;
    let c = &d.case;
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    let mut out = String::new();
    let _ = writeln!(out, "case #{}: {}", c.id, c.title);
    let _ = writeln!(
        out,
        "state {}; assignee {}; determination {}; resolution {}",
        c.state,
        dash(&c.assignee),
        dash(&c.determination),
        dash(&c.resolution)
    );
    let _ = writeln!(
        out,
        "discovered {}; affected {} ({})",
        dash(&c.discovered),
        d.residents.values().sum::<u32>(),
        d.residents
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(a) = &d.assessment {
        let _ = writeln!(
            out,
            "risk assessment: low probability of compromise {}; exclusion {}; {}",
            if a.low_probability {
                "shown"
            } else {
                "not shown"
            },
            a.exclusion.map(|e| format!("{e:?}")).unwrap_or("-".into()),
            a.conclusion
        );
    }
    if !d.tasks.is_empty() {
        out.push_str("tasks:\n");
        for t in &d.tasks {
            let done = if t.done { "x" } else { " " };
            let _ = writeln!(out, "  [{done}] {}. {}", t.n, t.text);
        }
    }
    out.push_str("evidence: accesses by the involved users to the involved patients\n");
    for t in evidence {
        let _ = writeln!(
            out,
            "  {} {} {} {} [{}] {}",
            t.time,
            t.user,
            t.action,
            t.patient,
            t.event_id,
            t.flagged_by.join(",")
        );
    }
    if d.deadlines_provisional {
        out.push_str(
            "deadlines (provisional: they run from discovery; a determination of not_breach stops them):\n",
        );
    } else {
        out.push_str("deadlines:\n");
    }
    if let Some(why) = &d.no_clock {
        let _ = writeln!(out, "  none: {why}");
    }
    for c in &d.deadlines {
        let left = c.days_left;
        let _ = writeln!(
            out,
            "  {} {} ({}; {})\n    {}",
            c.due,
            c.notify,
            if left < 0 {
                format!("overdue {} d", -left)
            } else {
                format!("{left} d left")
            },
            c.why,
            c.basis
        );
    }
    out.push_str("log:\n");
    for e in &d.log {
        let _ = writeln!(
            out,
            "  #{} {} {} {} {} -> {}",
            e.seq, e.at, e.actor, e.action, e.before, e.after
        );
    }
    out
}

/// `--residents STATE=COUNT`, repeated.
fn residents_arg(residents: &[String]) -> Result<std::collections::BTreeMap<String, u32>> {
    let mut r = std::collections::BTreeMap::new();
    for s in residents {
        let (st, n) = s
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--residents {s:?}: expected STATE=COUNT"))?;
        let n: u32 = n
            .parse()
            .map_err(|_| anyhow::anyhow!("--residents {s:?}: COUNT is not a number"))?;
        r.insert(st.to_uppercase(), n);
    }
    Ok(r)
}

/// `--delay written:FROM:UNTIL` or `--delay oral:FROM:DAYS`, repeated.
fn delays_arg(delays: &[String]) -> Result<Vec<LawEnforcementDelay>> {
    let mut ds = Vec::new();
    for s in delays {
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
            _ => anyhow::bail!("--delay {s:?}: expected written:FROM:UNTIL or oral:FROM:DAYS"),
        });
    }
    Ok(ds)
}

fn exclusion_arg(e: &str) -> Result<phiwatch::case::Exclusion> {
    serde_json::from_value(serde_json::Value::String(e.to_owned())).map_err(|_| {
        anyhow::anyhow!(
            "--exclusion {e:?}: expected good_faith_workforce, inadvertent_authorized or unable_to_retain"
        )
    })
}

/// `case export`: letters, the HHS report, the annual log, an accounting of disclosures.
fn export(
    store: &StoreArgs,
    id: Option<i64>,
    letters: Option<PathBuf>,
    hhs: Option<PathBuf>,
    annual_log: Option<i32>,
    accounting: Option<String>,
) -> Result<()> {
    use phiwatch::case::output;
    let cfg = phiwatch::config::Config::load(&store.config)?;
    let (_, r) = phiwatch::case::plan_for(&cfg)?;
    let c = open_book(&cfg)?;
    let today = chrono::Utc::now().date_naive();
    let need_id = || id.ok_or_else(|| anyhow::anyhow!("give the case id"));
    if let Some(dir) = letters {
        let names = output::patient_names(cfg.fhir_context().as_deref())?;
        let id = need_id()?;
        let n = c.notice(id)?;
        let written = output::letters(&n, id, &r, &|p| names.get(p).cloned(), today, &dir)?;
        println!("{} letter(s) written to {}", written.len(), dir.display());
    }
    if let Some(file) = hhs {
        let id = need_id()?;
        let report = output::hhs_report(&c.notice(id)?, id, &r)?;
        std::fs::write(&file, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", file.display()))?;
        println!("HHS breach report written to {}", file.display());
    }
    if let Some(year) = annual_log {
        print!("{}", c.annual_log(year)?);
    }
    if let Some(p) = accounting {
        print!("{}", c.accounting(&p, today)?);
    }
    Ok(())
}

/// `case facts`: the discovery date, residents per state, law-enforcement delays, licences.
fn facts(a: FactsArgs) -> Result<()> {
    let FactsArgs {
        store,
        id,
        discovered,
        residents,
        delays,
        licensed_in,
        by,
    } = a;
    let discovered = discovered
        .map(|d| date_arg(&d, "--discovered"))
        .transpose()?;
    let residents = (!residents.is_empty())
        .then(|| residents_arg(&residents))
        .transpose()?;
    let delays = (!delays.is_empty())
        .then(|| delays_arg(&delays))
        .transpose()?;
    let licensed_in =
        (!licensed_in.is_empty()).then(|| licensed_in.iter().map(|s| s.to_uppercase()).collect());
    let mut c = book(&store)?;
    c.set_facts(id, &by, discovered, residents, delays, licensed_in)?;
    println!("case #{id} facts recorded");
    reminders_note(&c, id)?;
    Ok(())
}

/// `case assess`: the four-factor risk assessment.
fn assess(a: AssessArgs) -> Result<()> {
    let AssessArgs {
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
    } = a;
    let exclusion = exclusion.as_deref().map(exclusion_arg).transpose()?;
    book(&store)?.assess(
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
    Ok(())
}

#[derive(clap::Args)]
pub struct FactsArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    pub id: i64,
    #[arg(long)]
    pub discovered: Option<String>,
    /// Affected individuals per state: --residents CA=12 --residents TX=300.
    #[arg(long = "residents")]
    pub residents: Vec<String>,
    /// Law-enforcement delay: written:FROM:UNTIL or oral:FROM:DAYS (dates YYYY-MM-DD).
    #[arg(long = "delay")]
    pub delays: Vec<String>,
    /// States whose facility licence the organization holds (for California's rule).
    #[arg(long = "licensed-in")]
    pub licensed_in: Vec<String>,
    #[arg(long)]
    pub by: String,
}

#[derive(clap::Args)]
pub struct AssessArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    pub id: i64,
    /// (i) nature and extent of the PHI and likelihood of re-identification.
    #[arg(long)]
    pub nature: String,
    /// (ii) the unauthorized person.
    #[arg(long)]
    pub person: String,
    /// (iii) whether the PHI was actually acquired or viewed.
    #[arg(long)]
    pub viewed: String,
    /// (iv) extent of mitigation.
    #[arg(long)]
    pub mitigation: String,
    /// good_faith_workforce, inadvertent_authorized or unable_to_retain.
    #[arg(long)]
    pub exclusion: Option<String>,
    /// The assessment demonstrates a low probability of compromise.
    #[arg(long)]
    pub low_probability: bool,
    #[arg(long)]
    pub conclusion: String,
    #[arg(long)]
    pub by: String,
}
