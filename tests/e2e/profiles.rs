//! EHR access-log profiles: one demo day written as FHIR AuditEvents and as each shipped
//! profile's export (Purview's Epic and Healthcare connector files with the field names
//! Microsoft publishes, a Clarity access-log extract, a TouchWorks-style log without an action
//! column), in the shapes real exports have: tab, pipe and comma, a byte order mark, CRLF,
//! header drift, US local times, free-text metric names phiwatch does not know,
//! break-the-glass as a reason, an id of two columns, a re-export overlapping the day, and
//! bad rows. Each must give the findings the FHIR day gives.

mod agent;
mod common;

use chrono::TimeZone;
use phiwatch::decode::{decode_audit_event, Decoded};
use phiwatch::event::{AccessEvent, Action};
use std::collections::BTreeMap;
use std::path::Path;

/// (detector, user, patient, category, severity) -> how many.
type Found = BTreeMap<(String, String, String, String, String), usize>;

fn found(ndjson: &str) -> Found {
    let mut m = Found::new();
    for l in ndjson.lines().filter(|l| !l.trim().is_empty()) {
        let f: serde_json::Value = serde_json::from_str(l).unwrap();
        let s = |k: &str| f[k].as_str().unwrap_or("").to_owned();
        *m.entry((
            s("detector"),
            s("user"),
            s("patient"),
            s("category"),
            s("severity"),
        ))
        .or_default() += 1;
    }
    m
}

/// Metric names as an EHR writes them: free text, most of them unknown to phiwatch.
fn metric(a: &AccessEvent, i: usize) -> &'static str {
    match a.action {
        Action::View => [
            "THE PROBLEM LIST IS VIEWED",
            "CHART REVIEW TAB ACCESSED",
            "Results Review Opened",
        ][i % 3],
        Action::Modify => "PEND A NOTE",
        Action::Print => "PRINT AFTER VISIT SUMMARY",
        Action::Export => "EXPORT TO EXCEL",
        Action::Query => "PATIENT LOOKUP SEARCH",
    }
}

/// The site's own vocabulary (an actions_file): what its metric names mean.
const VOCABULARY: &str = "metric,action\nPEND A NOTE,modify\nPRINT AFTER VISIT SUMMARY,print\nEXPORT TO EXCEL,export\nPATIENT LOOKUP SEARCH,query\n";

struct Day {
    /// Succeeded accesses, one per patient, in log order.
    accesses: Vec<AccessEvent>,
    /// The same events as AuditEvent lines.
    fhir: String,
}

/// The demo day's accesses that every profile can carry (they all lack an outcome column;
/// TouchWorks also lacks an action, so `views_only` keeps chart views alone).
fn day(set: &Path, views_only: bool) -> Day {
    let mut d = Day {
        accesses: Vec::new(),
        fhir: String::new(),
    };
    for line in std::fs::read_to_string(set.join("events.ndjson"))
        .unwrap()
        .lines()
    {
        let accesses = match decode_audit_event(line.as_bytes()) {
            Ok(Decoded::Access(a)) => vec![a],
            Ok(Decoded::Many { accesses, .. }) => accesses,
            _ => continue,
        };
        if accesses
            .iter()
            .any(|a| !a.succeeded || (views_only && a.action != Action::View))
        {
            continue;
        }
        d.fhir.push_str(line);
        d.fhir.push('\n');
        d.accesses.extend(accesses);
    }
    d
}

/// An identifier as an export writes it: the value alone (`M0006517`, not `system|M0006517`).
fn bare(id: &str) -> &str {
    id.rsplit('|').next().unwrap_or(id)
}

fn chicago(ms: i64, fmt: &str) -> String {
    chrono_tz::America::Chicago
        .timestamp_millis_opt(ms)
        .unwrap()
        .format(fmt)
        .to_string()
}

/// One generated demo day (6,000 events, seed 11) in `d/set`: events and FHIR context.
fn demo_day(d: &Path) -> std::path::PathBuf {
    let set = d.join("set");
    let out = common::phiwatch(&[
        "demo",
        "--generate-only",
        "--events",
        "6000",
        "--days",
        "1",
        "--seed",
        "11",
        "--out",
        set.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    set
}

fn scan(config: &Path) -> (Found, String) {
    let out = common::phiwatch(&["scan", "--no-store", "--config", config.to_str().unwrap()]);
    let err = common::text(&out.stderr);
    assert!(out.status.success(), "{err}");
    (found(&common::text(&out.stdout)), err)
}

fn config(d: &Path, name: &str, set: &Path, source: &str) -> std::path::PathBuf {
    let p = d.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "data_dir = \"{}/data-{name}\"\ncontext = \"{}/context\"\n{source}",
            d.display(),
            set.display()
        ),
    )
    .unwrap();
    p
}

fn assert_same(fhir: &Found, other: &Found, what: &str) {
    let missing: Vec<_> = fhir
        .iter()
        .filter(|(k, v)| other.get(*k) != Some(v))
        .take(5)
        .collect();
    let extra: Vec<_> = other
        .iter()
        .filter(|(k, v)| fhir.get(*k) != Some(v))
        .take(5)
        .collect();
    assert!(
        fhir == other,
        "{what}: findings differ from the FHIR day: missing {missing:?}, extra {extra:?}"
    );
}

#[test]
fn every_profile_gives_the_fhir_days_findings() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let set = demo_day(d);
    std::fs::write(d.join("vocabulary.csv"), VOCABULARY).unwrap();
    let fhir_source = |events: &Path| {
        format!(
            "[[source]]\nkind = \"file\"\nname = \"fhir\"\npaths = [\"{}\"]\nformat = \"fhir-auditevent\"\n",
            events.display()
        )
    };
    let csv_source = |file: &str, profile: &str, extra: &str| {
        format!(
            "[[source]]\nkind = \"file\"\nname = \"ehr\"\npaths = [\"{}/{file}\"]\nformat = \"csv\"\n[source.csv]\nprofile = \"{profile}\"\n{extra}",
            d.display()
        )
    };

    // --- Purview Epic connector: tab separated, the published names, BOM and CRLF. ---
    let all = day(&set, false);
    std::fs::write(d.join("all.ndjson"), &all.fhir).unwrap();
    let (want, _) = scan(&config(
        d,
        "fhir-all",
        &set,
        &fhir_source(&d.join("all.ndjson")),
    ));
    assert!(
        want.keys().any(|k| k.3 == "break_glass"),
        "the day has break-the-glass"
    );
    assert!(
        want.keys().any(|k| k.3 == "family"),
        "the day has family snooping"
    );
    let mut f = String::from("\u{feff}ACCESS_LOG.ACCESS_TIME\tACCESS_LOG_METRIC.METRIC_NAME\tACCESS_LOG.WORKSTATION_ID\tZC_METRIC_GROUP.NAME\tZC_ACCESS_ACTION.NAME\tPATIENT.PAT_MRN_ID\tPATIENT.PAT_FIRST_NAME\tPATIENT.PAT_LAST_NAME\tPATIENT.ADD_LINE_1\tPATIENT.CITY\tPATIENT.ZIP\tZC_BTG_REASON.NAME\tPAT_BTG_AUDIT.BTG_EXPLANATION\tEMP.SYSTEM_LOGIN\tCLARITY_EMP.USER_ID\r\n");
    for (i, a) in all.accesses.iter().enumerate() {
        f.push_str(&format!(
            "{}\t{}\t{}\t{}\t\t{}\tPAT\tNAME\t1 MAIN ST\tCITY\t00000\t{}\t{}\t{}\t\r\n",
            chicago(a.time_ms, "%Y-%m-%d %H:%M:%S%.3f"),
            metric(a, i),
            a.workstation,
            a.subtype,
            bare(a.patient.as_deref().unwrap()),
            if a.break_glass { "Emergency care" } else { "" },
            if a.break_glass && i % 2 == 0 {
                "pt arrived by ambulance"
            } else {
                ""
            },
            bare(&a.user),
        ));
    }
    // Bad rows: a time that is none, and no user; a patient's name must not reach the output.
    f.push_str("yesterday\tTHE PROBLEM LIST IS VIEWED\tws-1\t\t\tM0000001\tJanefer\tQuixote\t1 MAIN ST\tCITY\t00000\t\t\tuser1\t\r\n");
    f.push_str("2026-03-10 09:00:00\tTHE PROBLEM LIST IS VIEWED\tws-1\t\t\tM0000001\tJanefer\tQuixote\t1 MAIN ST\tCITY\t00000\t\t\t\t\r\n");
    std::fs::write(d.join("purview-epic.txt"), f).unwrap();
    let (got, err) = scan(&config(
        d,
        "purview-epic",
        &set,
        &csv_source(
            "purview-epic.txt",
            "purview-epic",
            &format!(
                "timezone = \"America/Chicago\"\nactions_file = \"{}/vocabulary.csv\"\n",
                d.display()
            ),
        ),
    ));
    assert_same(&want, &got, "purview-epic");
    assert!(err.contains("2 bad lines"), "{err}");
    assert!(
        err.contains("purview-epic.txt:"),
        "bad rows named by file and line: {err}"
    );
    assert!(
        !err.contains("Janefer") && !err.contains("Quixote"),
        "{err}"
    );
    assert!(
        err.contains("THE PROBLEM LIST IS VIEWED") && err.contains("default_action"),
        "unknown metric names counted: {err}"
    );

    // --- Purview Healthcare connector: pipe separated, header case and spelling drift. ---
    let mut f = String::from("creation time|EVENT NAME|Workstation ID|Event Category|Patient Reg ID|Patient First Name|Patient Last Name|Employee User Name|Restricted Access Reason|Restricted Access Comment\n");
    for (i, a) in all.accesses.iter().enumerate() {
        f.push_str(&format!(
            "{}|{}|{}|{}|{}|A|B|{}|{}|{}\n",
            chicago(a.time_ms, "%m/%d/%Y %H:%M:%S%.3f"),
            metric(a, i),
            a.workstation,
            a.subtype,
            bare(a.patient.as_deref().unwrap()),
            bare(&a.user),
            "",
            if a.break_glass {
                "\"covering for Dr. Smith, pager 4411\""
            } else {
                ""
            },
        ));
    }
    std::fs::write(d.join("healthcare.psv"), f).unwrap();
    let (got, _) = scan(&config(
        d,
        "purview-healthcare",
        &set,
        &csv_source(
            "healthcare.psv",
            "purview-healthcare",
            &format!(
                "timezone = \"America/Chicago\"\nactions_file = \"{}/vocabulary.csv\"\n",
                d.display()
            ),
        ),
    ));
    assert_same(&want, &got, "purview-healthcare");

    // --- Clarity extract: comma, no table prefixes, US 12-hour times, a two-column id, and the
    // next night's export overlapping the last rows (stored once). ---
    let mut f = String::from(
        "ACCESS_INSTANT,PROCESS_ID,METRIC_NAME,WORKSTATION_ID,USER_ID,PAT_ID,BTG_REASON\n",
    );
    let mut rows = Vec::new();
    for (i, a) in all.accesses.iter().enumerate() {
        rows.push(format!(
            "{},{},\"{}\",{},{},{},{}\n",
            chicago(a.time_ms, "%m/%d/%Y %I:%M:%S %p"),
            70_000 + i,
            metric(a, i),
            a.workstation,
            bare(&a.user),
            bare(a.patient.as_deref().unwrap()),
            if a.break_glass { "Emergency" } else { "" },
        ));
    }
    for r in &rows {
        f.push_str(r);
    }
    std::fs::write(d.join("clarity-1.csv"), &f).unwrap();
    let mut overlap = String::from(
        "ACCESS_INSTANT,PROCESS_ID,METRIC_NAME,WORKSTATION_ID,USER_ID,PAT_ID,BTG_REASON\n",
    );
    for r in &rows[rows.len() - 50..] {
        overlap.push_str(r);
    }
    std::fs::write(d.join("clarity-2.csv"), &overlap).unwrap();
    let clarity = config(
        d,
        "clarity",
        &set,
        &csv_source(
            "clarity-*.csv",
            "epic-clarity-access-log",
            "timezone = \"America/Chicago\"\n",
        ),
    );
    let db = d.join("clarity.db");
    let out = common::phiwatch(&[
        "scan",
        "--config",
        clarity.to_str().unwrap(),
        "--store",
        db.to_str().unwrap(),
        "--store-accesses",
    ]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let stored: i64 = conn
        .query_row("SELECT count(*) FROM accesses", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        stored as usize,
        all.accesses.len(),
        "each access stored once, the overlap not again: {}",
        common::text(&out.stderr)
    );
    let id: String = conn
        .query_row(
            "SELECT event_id FROM accesses ORDER BY time_ms LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        id.ends_with("|70000"),
        "id from ACCESS_INSTANT and PROCESS_ID: {id}"
    );
    // The profile's vocabulary knows "PEND A NOTE" and nothing the demo calls print, export or
    // search: the site adds those, as here.
    let (with_vocab, _) = scan(&config(
        d,
        "clarity-vocab",
        &set,
        &csv_source(
            "clarity-1.csv",
            "epic-clarity-access-log",
            &format!(
                "timezone = \"America/Chicago\"\nactions_file = \"{}/vocabulary.csv\"\n",
                d.display()
            ),
        ),
    ));
    assert_same(&want, &with_vocab, "epic-clarity-access-log");

    // --- TouchWorks-style: no action column (chart views), break type BG, the site's names. ---
    let views = day(&set, true);
    std::fs::write(d.join("views.ndjson"), &views.fhir).unwrap();
    let (want_views, _) = scan(&config(
        d,
        "fhir-views",
        &set,
        &fhir_source(&d.join("views.ndjson")),
    ));
    let mut f = String::from("opened_at,login,mrn,break_type,terminal\n");
    for a in &views.accesses {
        f.push_str(&format!(
            "{},{},{},{},{}\n",
            chicago(a.time_ms, "%Y-%m-%dT%H:%M:%S%.3f"),
            bare(&a.user),
            bare(a.patient.as_deref().unwrap()),
            if a.break_glass { "BG" } else { "" },
            a.workstation
        ));
    }
    std::fs::write(d.join("touchworks.csv"), f).unwrap();
    let (got, _) = scan(&config(
        d,
        "touchworks",
        &set,
        &csv_source(
            "touchworks.csv",
            "touchworks-patient-access-log",
            "timezone = \"America/Chicago\"\n[source.csv.columns]\ntime = \"opened_at\"\nuser = \"login\"\npatient = \"mrn\"\nbreak_glass = \"break_type\"\nworkstation = \"terminal\"\n",
        ),
    ));
    assert_same(&want_views, &got, "touchworks-patient-access-log");
    assert!(want_views.keys().any(|k| k.3 == "break_glass"));
}

/// A profile whose columns are not public refuses to load until the site names them, and an
/// unknown profile is named with the ones that exist.
#[test]
fn profiles_without_public_columns_must_be_completed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (profile, want) in [
        (
            "touchworks-patient-access-log",
            "columns.time is not set (profile touchworks-patient-access-log)",
        ),
        (
            "cerner-millennium",
            "profile \"cerner-millennium\" is not one of epic-clarity-access-log, purview-epic",
        ),
    ] {
        let config = d.join("phiwatch.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}/data\"\n[[source]]\nkind = \"file\"\nname = \"ehr\"\npaths = [\"{}/*.csv\"]\nformat = \"csv\"\n[source.csv]\nprofile = \"{profile}\"\n",
                d.display(),
                d.display()
            ),
        )
        .unwrap();
        let out = common::phiwatch(&["check", "--config", config.to_str().unwrap()]);
        let text = common::text(&out.stdout) + &common::text(&out.stderr);
        assert!(!out.status.success());
        assert!(text.contains(want), "{profile}: {text}");
    }
}

/// The live agent on a nightly extract that is replaced each night by a new file of the same
/// name (its columns in another order): every row read once, none skipped, none re-read after a
/// restart, and the metric names the mapping does not know counted in /metrics.
#[test]
fn a_nightly_extract_replaced_under_the_same_name() {
    use agent::{count, free_port, get, start_healthy, wait_for};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fx = common::fixtures().join("clinic");
    let http = free_port();
    std::fs::create_dir_all(d.join("logs")).unwrap();
    let config = d.join("phiwatch.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{d}/data\"\ncontext = \"{ctx}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n[[source]]\nkind = \"file\"\nname = \"epic\"\npaths = [\"{d}/logs/extract.txt\"]\nformat = \"csv\"\npoll_ms = 20\n[source.csv]\nprofile = \"purview-epic\"\n",
            d = d.display(),
            ctx = fx.join("context").display()
        ),
    )
    .unwrap();
    let night = |n: usize, from: usize, reordered: bool| {
        let mut f = if reordered {
            String::from("EMP.SYSTEM_LOGIN\tPATIENT.PAT_MRN_ID\tACCESS_LOG_METRIC.METRIC_NAME\tACCESS_LOG.ACCESS_TIME\n")
        } else {
            String::from("ACCESS_LOG.ACCESS_TIME\tACCESS_LOG_METRIC.METRIC_NAME\tPATIENT.PAT_MRN_ID\tEMP.SYSTEM_LOGIN\n")
        };
        for i in from..from + n {
            let time = format!(
                "2026-03-10T{:02}:{:02}:{:02}Z",
                8 + i / 3600,
                (i / 60) % 60,
                i % 60
            );
            let (user, patient, metric) = ("dr-ana", "pt-stranger", "SNAPSHOT REPORT VIEWED");
            if reordered {
                f.push_str(&format!("{user}\t{patient}\t{metric}\t{time}\n"));
            } else {
                f.push_str(&format!("{time}\t{metric}\t{patient}\t{user}\n"));
            }
        }
        f
    };
    let extract = d.join("logs/extract.txt");
    std::fs::write(&extract, night(300, 0, false)).unwrap();
    let db = d.join("data/phiwatch.db");
    let agent = start_healthy(&config, http, &[], Duration::from_secs(60));
    let stored = || count(&db, "SELECT count(*) FROM accesses");
    assert!(
        wait_for(Duration::from_secs(30), || stored() == 300),
        "{}",
        stored()
    );
    // The next night: a new file written beside it and renamed over it.
    let next = d.join("logs/extract.txt.new");
    std::fs::write(&next, night(200, 300, true)).unwrap();
    std::fs::rename(&next, &extract).unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || stored() == 500),
        "{}",
        stored()
    );
    let metrics = get(http, "/metrics").unwrap();
    assert!(
        metrics.contains("phiwatch_source_unknown_actions_total{source=\"epic\",action=\"SNAPSHOT REPORT VIEWED\"} 500"),
        "{}",
        metrics.lines().filter(|l| l.contains("unknown_actions")).collect::<Vec<_>>().join("\n")
    );
    let (status, _) = agent.stop();
    assert!(status.success());
    // The night after: deleted, then written anew (the inode may be recycled).
    std::fs::remove_file(&extract).unwrap();
    std::fs::write(&extract, night(100, 500, false)).unwrap();
    let agent = start_healthy(&config, http, &[], Duration::from_secs(60));
    assert!(
        wait_for(Duration::from_secs(30), || stored() == 600),
        "{}",
        stored()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stored(), 600, "nothing read twice");
    let distinct = count(&db, "SELECT count(DISTINCT time_ms) FROM accesses");
    assert_eq!(distinct, 600, "every row its own access");
    drop(agent);
}

/// A patient's household as the demo's Patient resource writes it.
struct Household {
    mrn: String,
    family: String,
    line: String,
    city: String,
    state: String,
    zip: String,
}

/// Patients by id and by MRN.
fn households(context: &Path) -> BTreeMap<String, std::rc::Rc<Household>> {
    let mut m = BTreeMap::new();
    for l in std::fs::read_to_string(context.join("Patient.ndjson"))
        .unwrap()
        .lines()
    {
        let p: serde_json::Value = serde_json::from_str(l).unwrap();
        let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
        let a = &p["address"][0];
        let h = std::rc::Rc::new(Household {
            mrn: s(&p["identifier"][0]["value"]),
            family: s(&p["name"][0]["family"]),
            line: s(&a["line"][0]),
            city: s(&a["city"]),
            state: s(&a["state"]),
            zip: s(&a["postalCode"]),
        });
        m.insert(h.mrn.clone(), h.clone());
        m.insert(s(&p["id"]), h);
    }
    m
}

/// An address as an EHR extract writes it: upper case, USPS abbreviations, ZIP+4.
fn as_epic_writes(h: &Household) -> (String, String) {
    let line = h
        .line
        .to_uppercase()
        .replace("STREET", "ST")
        .replace("DRIVE", "DR")
        .replace("AVENUE", "AVE");
    (line, format!("{}-0001", h.zip))
}

/// Purview files carry the patient's name and address on every row. With a staff directory and
/// no patient feed, those rows alone let phiwatch find family snooping; a file without them
/// finds none; and what the live agent learned from them survives its restart.
#[test]
fn inline_demographics_find_family_without_a_patient_feed() {
    use agent::{count, free_port, get, start_healthy, wait_for};
    use std::collections::BTreeSet;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let set = demo_day(d);
    // The staff directory only: no Patient, Person, Encounter, CareTeam or Appointment.
    let staff = d.join("staff");
    std::fs::create_dir_all(&staff).unwrap();
    for r in ["Practitioner", "PractitionerRole", "Organization"] {
        let name = format!("{r}.ndjson");
        std::fs::copy(set.join("context").join(&name), staff.join(&name)).unwrap();
    }
    let people = households(&set.join("context"));
    let all = day(&set, false);
    std::fs::write(d.join("all.ndjson"), &all.fhir).unwrap();
    let (want, _) = scan(&config(
        d,
        "fhir",
        &set,
        &format!(
            "[[source]]\nkind = \"file\"\nname = \"fhir\"\npaths = [\"{}/all.ndjson\"]\nformat = \"fhir-auditevent\"\n",
            d.display()
        ),
    ));
    let family_in = |found: &Found| -> BTreeSet<(String, String)> {
        found
            .keys()
            .filter(|k| k.3 == "family")
            .map(|k| (k.1.clone(), people[k.2.as_str()].mrn.clone()))
            .collect()
    };
    let want_family = family_in(&want);
    assert!(!want_family.is_empty(), "the day has family snooping");

    let header = "ACCESS_LOG.ACCESS_TIME\tACCESS_LOG_METRIC.METRIC_NAME\tPATIENT.PAT_MRN_ID\tPATIENT.PAT_LAST_NAME\tPATIENT.ADD_LINE_1\tPATIENT.CITY\tZC_STATE.NAME\tPATIENT.ZIP\tEMP.SYSTEM_LOGIN\n";
    let row = |a: &AccessEvent, i: usize, time_ms: i64, demographics: bool| {
        let h = &people[bare(a.patient.as_deref().unwrap())];
        let (line, zip) = as_epic_writes(h);
        let who = if demographics {
            format!(
                "{}\t{}\t{}\t{}\t{zip}",
                h.family.to_uppercase(),
                line,
                h.city,
                h.state
            )
        } else {
            "\t\t\t\t".to_owned()
        };
        format!(
            "{}\t{}\t{}\t{who}\t{}\n",
            chicago(time_ms, "%Y-%m-%d %H:%M:%S%.3f"),
            metric(a, i),
            h.mrn,
            bare(&a.user),
        )
    };
    let scan_staff = |name: &str, body: &str| {
        std::fs::write(d.join(format!("{name}.txt")), body).unwrap();
        let config = d.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{d}/data-{name}\"\ncontext = \"{staff}\"\n[[source]]\nkind = \"file\"\nname = \"ehr\"\npaths = [\"{d}/{name}.txt\"]\nformat = \"csv\"\n[source.csv]\nprofile = \"purview-epic\"\ntimezone = \"America/Chicago\"\n",
                d = d.display(),
                staff = staff.display()
            ),
        )
        .unwrap();
        scan(&config).0
    };
    let mut with = String::from(header);
    let mut without = String::from(header);
    for (i, a) in all.accesses.iter().enumerate() {
        with.push_str(&row(a, i, a.time_ms, true));
        without.push_str(&row(a, i, a.time_ms, false));
    }
    let got = family_in(&scan_staff("with", &with));
    let missed: Vec<_> = want_family.difference(&got).collect();
    assert!(
        missed.is_empty(),
        "family snooping the inline households should find: {missed:?} (found {got:?})"
    );
    assert!(
        family_in(&scan_staff("without", &without)).is_empty(),
        "without a household nobody is family"
    );
    // The join coverage report counts a patient the row describes as resolved, and says the
    // log, not a feed, describes them; rows without demographics leave them unresolved.
    let coverage = |name: &str| {
        let config = d.join(format!("{name}.toml"));
        let out = common::phiwatch(&["check", "--config", config.to_str().unwrap()]);
        common::text(&out.stdout) + &common::text(&out.stderr)
    };
    let text = coverage("with");
    let sampled = text
        .split("coverage over ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        text.contains("patients 100.0% resolved")
            && text.contains(&format!(
                "{sampled} of the resolved patients no feed describes"
            )),
        "{text}"
    );
    let text = coverage("without");
    assert!(
        text.contains("patients 0.0% resolved") && !text.contains("no feed describes"),
        "{text}"
    );

    // Live: the first night's rows teach the household; after a restart the next night's
    // file, without demographic columns, still finds the family member.
    let (user, mrn) = want_family.iter().next().unwrap().clone();
    let (i, snoop) = all
        .accesses
        .iter()
        .enumerate()
        .find(|(_, a)| people[bare(a.patient.as_deref().unwrap())].mrn == mrn)
        .unwrap();
    let http = free_port();
    std::fs::create_dir_all(d.join("logs")).unwrap();
    let config = d.join("live.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{d}/live\"\ncontext = \"{staff}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n[[source]]\nkind = \"file\"\nname = \"epic\"\npaths = [\"{d}/logs/extract.txt\"]\nformat = \"csv\"\npoll_ms = 20\n[source.csv]\nprofile = \"purview-epic\"\ntimezone = \"America/Chicago\"\n",
            d = d.display(),
            staff = staff.display()
        ),
    )
    .unwrap();
    let extract = d.join("logs/extract.txt");
    // Night one: another user's routine view of the patient, demographics inline.
    let other = all
        .accesses
        .iter()
        .find(|a| bare(&a.user) != bare(&snoop.user))
        .unwrap();
    let mut visit = snoop.clone();
    visit.user = other.user.clone();
    std::fs::write(
        &extract,
        format!("{header}{}", row(&visit, i, snoop.time_ms, true)),
    )
    .unwrap();
    let db = d.join("live/phiwatch.db");
    let agent = start_healthy(&config, http, &[], Duration::from_secs(60));
    assert!(wait_for(Duration::from_secs(30), || count(
        &db,
        "SELECT count(*) FROM accesses"
    ) == 1));
    let metrics = get(http, "/metrics").unwrap();
    assert!(
        metrics.contains("phiwatch_context_from_log{kind=\"patients_added\"} 1"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("from_log"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let (status, _) = agent.stop();
    assert!(status.success());
    // Night two, after the restart: the snoop, with no demographic columns at all.
    std::fs::remove_file(&extract).unwrap();
    std::fs::write(
        &extract,
        format!(
            "ACCESS_LOG.ACCESS_TIME\tACCESS_LOG_METRIC.METRIC_NAME\tPATIENT.PAT_MRN_ID\tEMP.SYSTEM_LOGIN\n{}\t{}\t{mrn}\t{}\n",
            chicago(snoop.time_ms + 3_600_000, "%Y-%m-%d %H:%M:%S%.3f"),
            metric(snoop, i),
            bare(&snoop.user)
        ),
    )
    .unwrap();
    let agent = start_healthy(&config, http, &[], Duration::from_secs(60));
    let family = format!(
        "SELECT count(*) FROM findings WHERE category = 'family' AND user_id = '{user}' AND patient_id = '{mrn}'"
    );
    assert!(
        wait_for(Duration::from_secs(30), || count(&db, &family) == 1),
        "the household learned before the restart finds the family member: {} accesses, {} family findings",
        count(&db, "SELECT count(*) FROM accesses"),
        count(&db, &family)
    );
    drop(agent);
}

/// Epic's Security-SIEM feed: the keys Google Security Operations' Epic parser documents and
/// the Exabeam content library's `epic-siem-leef` parsers read (`UID`, `LOGIN_LDAP_ID`,
/// `usrName`, `PATIENT`, `devTime` as `MMM dd yyyy HH:mm:ss`, `shost`, `DEP`, `BTGREASON`,
/// `BTGNOACCESSREAS`, `NEWDEPARTMENT`; event ids `IC_SERVICE_AUDIT`,
/// `AC_BREAK_THE_GLASS_ACCESS`, `LOGIN`, `CONTEXTCHANGE`). Epic publishes no sample: each
/// record is composed from that list, in CEF and in LEEF 1.0 and 2.0.
fn siem_record(a: &AccessEvent, i: usize) -> String {
    let time = chicago(a.time_ms, "%b %d %Y %H:%M:%S");
    let (user, patient) = (bare(&a.user), bare(a.patient.as_deref().unwrap()));
    let event = if a.break_glass {
        "AC_BREAK_THE_GLASS_ACCESS"
    } else {
        "IC_SERVICE_AUDIT"
    };
    let btg = if a.break_glass {
        "Emergency \\= urgent care"
    } else {
        ""
    };
    match i % 3 {
        0 => format!(
            "CEF:0|Epic|Security-SIEM|2024|{event}|Chart access|3|usrName={user}-PATIENT, A- UID={user} PATIENT={patient} devTime={time} shost={} BTGREASON={btg}",
            a.workstation
        ),
        1 => format!(
            "LEEF:1.0|Epic|Security-SIEM|2024|{event}|UID={user}\tPATIENT={patient}\tdevTime={time}\tshost={}\tBTGNOACCESSREAS={}",
            a.workstation,
            btg.replace('\\', "")
        ),
        _ => format!(
            "LEEF:2.0|Epic|Security-SIEM|2024|{event}|^|UID={user}^PATIENT={patient}^devTime={time}^shost={}^BTGREASON={}",
            a.workstation,
            btg.replace('\\', "")
        ),
    }
}

/// The demo day's chart views as Epic SIEM records (CEF and LEEF, some after a syslog
/// header, logins and context changes between them) give the FHIR day's findings; the live
/// agent takes the same records over TCP and UDP syslog.
#[test]
fn epic_siem_cef_and_leef_give_the_fhir_days_findings() {
    use agent::{count, free_port, get, start_healthy, wait_for};
    use std::io::Write as _;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let set = demo_day(d);
    let views = day(&set, true);
    std::fs::write(d.join("views.ndjson"), &views.fhir).unwrap();
    let (want, _) = scan(&config(
        d,
        "fhir",
        &set,
        &format!(
            "[[source]]\nkind = \"file\"\nname = \"fhir\"\npaths = [\"{}/views.ndjson\"]\nformat = \"fhir-auditevent\"\n",
            d.display()
        ),
    ));
    assert!(want.keys().any(|k| k.3 == "break_glass"));
    let mut f = String::new();
    for (i, a) in views.accesses.iter().enumerate() {
        if i % 50 == 0 {
            f.push_str(&format!(
                "<134>Mar 10 07:00:00 epicprd01 CEF:0|Epic|Security-SIEM|2024|LOGIN|Login|3|UID={} LOGIN_LDAP_ID=ldap{i} DEP=SOMEWHERE\n",
                bare(&a.user)
            ));
            f.push_str(&format!(
                "LEEF:2.0|Epic|Security-SIEM|2024|CONTEXTCHANGE|^|UID={}^NEWDEPARTMENT=ELSEWHERE^PREVDEPARTMENT=SOMEWHERE\n",
                bare(&a.user)
            ));
        }
        if i % 7 == 0 {
            f.push_str("<134>Mar 10 08:00:00 epicprd01 ");
        }
        f.push_str(&siem_record(a, i));
        f.push('\n');
    }
    f.push_str("CEF:0|Epic|Security-SIEM|2024|IC_SERVICE_AUDIT|Chart access|3|UID=u1 PATIENT=M0000001 devTime=yesterday\n");
    std::fs::write(d.join("siem.log"), &f).unwrap();
    let (got, err) = scan(&config(
        d,
        "siem",
        &set,
        &format!(
            "[[source]]\nkind = \"file\"\nname = \"siem\"\npaths = [\"{}/siem.log\"]\nformat = \"cef\"\ntimezone = \"America/Chicago\"\n",
            d.display()
        ),
    ));
    assert_same(&want, &got, "Epic SIEM CEF/LEEF");
    assert!(err.contains("1 bad line"), "{err}");
    assert!(
        err.contains("siem.log:") && !err.contains("M0000001"),
        "{err}"
    );

    // Live: the same records over TCP (octet counting, RFC 5424) and UDP (RFC 3164).
    let (tcp, udp, http) = (free_port(), free_port(), free_port());
    let config = d.join("live.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{d}/live\"\ncontext = \"{ctx}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n[[source]]\nkind = \"syslog\"\nname = \"epic-tcp\"\nlisten = \"127.0.0.1:{tcp}\"\ntransport = \"tcp\"\ntimezone = \"America/Chicago\"\n[[source]]\nkind = \"syslog\"\nname = \"epic-udp\"\nlisten = \"127.0.0.1:{udp}\"\ntransport = \"udp\"\ntimezone = \"America/Chicago\"\n",
            d = d.display(),
            ctx = set.join("context").display()
        ),
    )
    .unwrap();
    let agent = start_healthy(&config, http, &[], Duration::from_secs(60));
    let n = 200.min(views.accesses.len());
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for (i, a) in views.accesses.iter().take(n).enumerate() {
        let record = siem_record(a, i);
        if i % 2 == 0 {
            let msg = format!("<134>1 2026-03-10T08:00:00Z epicprd01 Epic - SIEM - {record}");
            write!(stream, "{} {msg}", msg.len()).unwrap();
        } else {
            sock.send_to(
                format!("<134>Mar 10 08:00:00 epicprd01 {record}").as_bytes(),
                ("127.0.0.1", udp),
            )
            .unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let login = "<134>Mar 10 08:00:00 epicprd01 CEF:0|Epic|Security-SIEM|2024|LOGIN|Login|3|UID=someone DEP=ED";
    write!(stream, "{} {login}", login.len()).unwrap();
    stream.flush().unwrap();
    let db = d.join("live/phiwatch.db");
    assert!(
        wait_for(Duration::from_secs(30), || count(
            &db,
            "SELECT count(*) FROM accesses"
        ) == n as i64),
        "{} of {n} accesses stored",
        count(&db, "SELECT count(*) FROM accesses")
    );
    // The login line was sent last and names no patient: it may still be on its way from the
    // spool when the last access is stored.
    let tcp_lines = format!(
        "phiwatch_source_lines_total{{source=\"epic-tcp\"}} {}",
        n / 2 + 1
    );
    wait_for(Duration::from_secs(10), || {
        get(http, "/metrics").is_some_and(|m| m.contains(&tcp_lines))
    });
    let metrics = get(http, "/metrics").unwrap();
    for line in [
        tcp_lines.clone(),
        "phiwatch_source_bad_lines_total{source=\"epic-tcp\"} 0".to_owned(),
        "phiwatch_source_bad_lines_total{source=\"epic-udp\"} 0".to_owned(),
    ] {
        assert!(
            metrics.contains(&line),
            "{line} in {}",
            metrics
                .lines()
                .filter(|l| l.contains("epic-"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    drop(agent);
}
