//! The console and its API, end to end: the real agent, its store, and Debian's Chromium
//! driven headless through ChromeDriver. Screenshots of the main pages are written to
//! `target/tmp/console-screenshots/`.

mod agent;
mod common;
mod http;
mod webdriver;

use agent::{count, free_port, start_healthy, wait_for, write_config, Agent};
use http::{request, Client};
use phiwatch::console::authz::{Perm, Role};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const PASSWORD: &str = "correct horse battery";

struct Console {
    _agent: Agent,
    port: u16,
    db: PathBuf,
    config: PathBuf,
}

/// The agent with a console on loopback, routing (so findings group into alerts), and
/// `events` copied into its tailed log. `console_extra` adds lines to `[console]`.
fn start(d: &Path, context: &Path, events: &Path, console_extra: &str) -> Console {
    let (http, port) = (free_port(), free_port());
    std::fs::write(
        d.join("routing.toml"),
        "[grouping]\ngroup_by = [\"user\", \"patient\", \"category\"]\ngroup_wait = \"1s\"\n",
    )
    .unwrap();
    let config = write_config(
        d,
        http,
        context,
        &format!("routing = \"{}/routing.toml\"\n", d.display()),
    );
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&config)
        .unwrap();
    writeln!(
        f,
        "[console]\nlisten = \"127.0.0.1:{port}\"\n{console_extra}"
    )
    .unwrap();
    for (name, role, staff) in [
        ("olivia", "privacy-officer", Some("dr-ana")),
        ("ivan", "investigator", None),
        ("audrey", "auditor", None),
        ("adam", "admin", None),
    ] {
        add_user(&config, name, role, staff);
    }
    std::fs::copy(events, d.join("logs/events.ndjson")).unwrap();
    let agent = start_healthy(&config, http, &[], Duration::from_secs(60));
    wait_console(port);
    Console {
        _agent: agent,
        port,
        db: d.join("data/phiwatch.db"),
        config,
    }
}

/// Waits for the console to answer its sign-in page.
fn wait_console(port: u16) {
    assert!(
        wait_for(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && request(port, "GET", "/login", &[], b"").status == 200
        }),
        "console never answered"
    );
}

fn add_user(config: &Path, name: &str, role: &str, staff: Option<&str>) {
    let mut args = vec![
        "user",
        "add",
        name,
        "--role",
        role,
        "--password-stdin",
        "--config",
        config.to_str().unwrap(),
    ];
    if let Some(s) = staff {
        args.extend(["--staff-id", s]);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_phiwatch"))
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", common::text(&out.stderr));
}

fn wait_alerts(db: &Path, at_least: i64) {
    assert!(
        wait_for(Duration::from_secs(60), || count(
            db,
            "SELECT count(*) FROM alerts"
        ) >= at_least),
        "alerts: {}",
        count(db, "SELECT count(*) FROM alerts")
    );
}

fn clinic(d: &Path) -> Console {
    let fx = common::fixtures().join("clinic");
    let c = start(d, &fx.join("context"), &fx.join("events.ndjson"), "");
    wait_alerts(&c.db, 13);
    c
}

/// Opens a case on one alert through the API; its id.
fn open_case(c: &Client, alert: i64) -> i64 {
    let r = c.send(
        "POST",
        "/api/v1/cases",
        &json!({ "alerts": [alert.to_string()] }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["case"].as_i64().unwrap()
}

fn shots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A privacy officer's morning in the real browser: sign in, triage a demo alert, open a
/// case, fill in the four-factor assessment, determine the breach, watch the deadline count
/// down, look at the dashboards in both themes, sign out.
#[test]
fn browser_walkthrough_on_demo_data() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let demo = common::demo_set(&d.join("demo"), 20_000);
    let c = start(d, &demo.join("context"), &demo.join("events.ndjson"), "");
    wait_alerts(&c.db, 50);
    // Let the tail settle so the queue stops moving under the browser.
    let mut last = -1;
    assert!(wait_for(Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(500));
        let n = count(&c.db, "SELECT count(*) FROM accesses");
        let settled = n == last;
        last = n;
        settled
    }));
    let shots = shots();
    let base = format!("http://127.0.0.1:{}", c.port);
    let b = webdriver::Browser::start();

    // Not signed in: the queue sends us to sign in, and comes back after.
    b.goto(&format!("{base}/alerts"));
    assert!(b.url().contains("/login"), "{}", b.url());
    b.type_into("#user", "olivia");
    b.type_into("#password", "wrong password!!");
    b.click("#sign-in");
    assert!(b
        .text("#login-error")
        .contains("wrong user name or password"));
    b.screenshot(&shots.join("01-login.png"));
    b.type_into("#user", "olivia");
    b.type_into("#password", PASSWORD);
    b.click("#sign-in");
    b.find("#queue");
    assert!(b.url().ends_with("/alerts"), "{}", b.url());
    b.screenshot(&shots.join("02-alert-queue.png"));
    let total: i64 = b
        .text("#total")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        total,
        count(&c.db, "SELECT count(*) FROM alerts WHERE status = 'open'")
    );
    let rows = b.find_all("#queue tbody tr");
    assert_eq!(rows.len() as i64, total.min(100));
    // Most severe first.
    let first_sev = b.text("#queue tbody tr:first-child .sev");
    assert_eq!(first_sev.to_lowercase(), "critical");

    // Triage the first critical alert.
    let link = b.find("#queue tbody tr:first-child .alert-link");
    let alert_id: i64 = b
        .element_text(&link)
        .trim_start_matches('#')
        .parse()
        .unwrap();
    b.click_element(&link);
    b.find("#evidence");
    assert!(!b.text("#explanation").is_empty());
    assert!(!b.find_all("#evidence tbody tr").is_empty());
    b.screenshot(&shots.join("03-alert.png"));
    b.type_into("#ack-note", "reviewed in the browser test");
    b.script("document.querySelector('#ack-disposition').value = 'confirmed'");
    b.click("#ack");
    assert!(wait_for(Duration::from_secs(10), || b
        .text("#alert-status")
        == "acknowledged"));
    assert_eq!(
        count(
            &c.db,
            &format!("SELECT count(*) FROM alerts WHERE id = {alert_id} AND ack_by = 'olivia' AND ack_disposition = 'confirmed'")
        ),
        1
    );
    assert_eq!(b.text("#disposition"), "confirmed");

    // Open a case from it; the case page shows the provisional clock at once.
    b.click("#open-case");
    b.find("#assessment");
    assert!(b.url().contains("/cases/"), "{}", b.url());
    let case_id: i64 = b.url().rsplit('/').next().unwrap().parse().unwrap();
    assert!(b.try_find("#provisional").is_some());
    for (field, text) in [
        (
            "#nature_and_extent",
            "Demographics and diagnoses of one patient",
        ),
        (
            "#unauthorized_person",
            "A nurse of the same hospital, bound by HIPAA",
        ),
        (
            "#acquired_or_viewed",
            "Viewed on screen; no export or print",
        ),
        (
            "#mitigation",
            "Access revoked; staff member retrained and attested",
        ),
        ("#conclusion", "Low probability not demonstrated: notify"),
    ] {
        b.type_into(field, text);
    }
    b.screenshot(&shots.join("04-assessment.png"));
    b.click("#save-assessment");
    assert!(wait_for(Duration::from_secs(10), || b.text("#case-state")
        == "risk assessment"));
    // Discovered 55 days ago: five days are left to notify.
    let today = chrono::Utc::now().date_naive();
    let discovered = today - chrono::Duration::days(55);
    b.type_into("#residents", "CA=1");
    b.script(&format!(
        "document.querySelector('#facts-form [name=discovered]').value = '{discovered}'"
    ));
    b.click("#save-facts");
    assert!(wait_for(Duration::from_secs(10), || b
        .text("#log")
        .contains("facts")));
    b.click("#determine");
    assert!(wait_for(Duration::from_secs(10), || b.text("#outcome") == "breach"));
    assert!(
        b.try_find("#provisional").is_none(),
        "final deadlines after the determination"
    );

    // The deadline: a date 60 days from discovery, and a clock that ticks.
    let due = b.text("#deadlines .due");
    assert_eq!(due, (today + chrono::Duration::days(5)).to_string());
    assert!(b.try_find("#deadlines .clock.soon").is_some());
    let first = b.text("#deadlines .countdown");
    assert!(
        first.ends_with(" left") && first.contains("d ") && first.matches(':').count() == 2,
        "countdown {first:?}"
    );
    assert!(
        wait_for(Duration::from_secs(5), || b.text("#deadlines .countdown")
            != first),
        "the countdown does not tick"
    );
    b.screenshot(&shots.join("05-case-deadlines.png"));
    let stored = Client::login(c.port, "audrey", PASSWORD)
        .get(&format!("/api/v1/cases/{case_id}"))
        .json();
    assert_eq!(stored["case"]["determination"], "breach");
    assert_eq!(
        stored["assessment"]["mitigation"],
        "Access revoked; staff member retrained and attested"
    );
    assert!(stored["log"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["actor"] == "olivia"));

    // Dashboards, light then dark.
    b.goto(&format!("{base}/dashboard"));
    b.find("#chart-alerts svg");
    b.find("#chart-users svg");
    b.find("#chart-policies svg");
    assert!(b.text("#chart-due").contains(&format!("#{case_id}")));
    b.screenshot(&shots.join("06-dashboard-light.png"));
    let light = b.script("return getComputedStyle(document.body).backgroundColor");
    b.click("#theme");
    let dark = b.script("return getComputedStyle(document.body).backgroundColor");
    assert_ne!(light, dark, "the theme switch changes the page");
    b.screenshot(&shots.join("07-dashboard-dark.png"));
    b.goto(&format!("{base}/noise"));
    b.find("#noise tbody tr");
    b.find("#chart-noise svg");
    b.screenshot(&shots.join("09-noise-dark.png"));
    b.goto(&format!("{base}/cases/{case_id}"));
    b.find("#timeline");
    b.screenshot(&shots.join("08-case-dark.png"));

    // Sign out: the session is gone for good.
    b.click("#logout");
    b.find("#login");
    b.goto(&format!("{base}/alerts"));
    assert!(b.url().contains("/login"), "{}", b.url());
    assert_eq!(
        count(
            &c.db,
            "SELECT count(*) FROM console_sessions WHERE user = 'olivia'"
        ),
        0
    );

    // What olivia looked at was itself recorded and judged as her accesses.
    assert!(count(
        &c.db,
        "SELECT count(*) FROM accesses WHERE workstation = 'phiwatch-console' AND user_id = 'dr-ana'"
    ) > 0);
    for f in [
        "01-login.png",
        "02-alert-queue.png",
        "03-alert.png",
        "05-case-deadlines.png",
        "06-dashboard-light.png",
        "07-dashboard-dark.png",
    ] {
        assert!(
            std::fs::metadata(shots.join(f)).unwrap().len() > 5_000,
            "{f}"
        );
    }
}

/// Officers' conclusions on acknowledged alerts reach the noise report, per detector, the same
/// through the API, the page and the command line; a conclusion that is not one is refused.
#[test]
fn noise_report_counts_what_officers_concluded() {
    let dir = tempfile::tempdir().unwrap();
    let c = clinic(dir.path());
    let po = Client::login(c.port, "olivia", PASSWORD);
    let ids: Vec<i64> = {
        let conn = rusqlite::Connection::open(&c.db).unwrap();
        let mut st = conn
            .prepare("SELECT id FROM alerts ORDER BY id LIMIT 3")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(ids.len(), 3);
    let bad = po.send(
        "POST",
        &format!("/api/v1/alerts/{}/ack", ids[0]),
        &json!({ "note": "x", "disposition": "maybe" }),
    );
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.json()["error"]
        .as_str()
        .unwrap()
        .contains("disposition"));
    assert_eq!(
        count(
            &c.db,
            "SELECT count(*) FROM alerts WHERE ack_by IS NOT NULL"
        ),
        0,
        "a refused acknowledgement changes nothing"
    );
    for (id, d) in ids.iter().zip(["false-positive", "benign", "confirmed"]) {
        let r = po.send(
            "POST",
            &format!("/api/v1/alerts/{id}/ack"),
            &json!({ "note": "triaged", "disposition": d }),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let judged = |conclusion: &str| {
        count(
            &c.db,
            &format!(
                "SELECT count(*) FROM (SELECT DISTINCT af.alert_id, af.detector FROM alert_findings af
                 JOIN alerts a ON a.id = af.alert_id WHERE a.ack_disposition = '{conclusion}')"
            ),
        )
    };
    let r = po.get("/api/v1/reports/noise?since=3650d");
    assert_eq!(r.status, 200, "{}", r.text());
    let api = r.json();
    let sum = |k: &str| -> i64 {
        api["detectors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d[k].as_i64().unwrap())
            .sum()
    };
    assert_eq!(sum("false_positive"), judged("false_positive"));
    assert_eq!(sum("benign"), judged("benign"));
    assert_eq!(sum("confirmed"), judged("confirmed"));
    assert!(sum("confirmed") >= 1);
    assert_eq!(
        api["findings"].as_i64().unwrap(),
        count(&c.db, "SELECT count(*) FROM findings")
    );
    assert_eq!(
        sum("findings"),
        api["findings"].as_i64().unwrap(),
        "every finding is some detector's"
    );
    assert!(
        api["accesses"].as_i64().unwrap() > 0,
        "the agent keeps an access log"
    );
    assert_eq!(po.get("/api/v1/reports/noise?since=soon").status, 400);

    let page = po.get("/noise?since=3650d");
    assert_eq!(page.status, 200);
    for d in api["detectors"].as_array().unwrap() {
        assert!(
            page.text().contains(&format!(
                "data-detector=\"{}\"",
                d["detector"].as_str().unwrap()
            )),
            "{} missing from the page",
            d["detector"]
        );
    }

    let out = common::phiwatch(&[
        "report",
        "noise",
        "--config",
        c.config.to_str().unwrap(),
        "--since",
        "3650d",
        "--json",
    ]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_detector = |v: &Value| -> Vec<(String, i64, i64, i64)> {
        v["detectors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["detector"].as_str().unwrap().to_owned(),
                    d["false_positive"].as_i64().unwrap(),
                    d["benign"].as_i64().unwrap(),
                    d["confirmed"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(by_detector(&cli), by_detector(&api));
    let text = common::phiwatch(&["report", "noise", "--config", c.config.to_str().unwrap()]);
    assert!(text.status.success(), "{}", common::text(&text.stderr));
    assert!(common::text(&text.stdout).contains("detector"));
}

/// What each role may do, written out independently of the agent's own table.
fn allowed(role: &str, perm: &str) -> bool {
    match role {
        "privacy-officer" => true,
        "investigator" => [
            "signed",
            "read-alerts",
            "triage",
            "read-cases",
            "open-case",
            "work-case",
        ]
        .contains(&perm),
        "auditor" => ["signed", "read-alerts", "read-cases", "read-status"].contains(&perm),
        "admin" => ["signed", "read-status"].contains(&perm),
        other => panic!("role {other}"),
    }
}

/// Every endpoint of the OpenAPI file refuses anonymous callers and every role without its
/// permission, and serves the roles with it.
#[test]
fn api_refuses_anonymous_and_underprivileged_on_every_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let c = clinic(dir.path());
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo().join("agent/src/console/openapi.json")).unwrap(),
    )
    .unwrap();
    // Something for the path parameters to name.
    let po = Client::login(c.port, "olivia", PASSWORD);
    let alert = count(&c.db, "SELECT min(id) FROM alerts");
    let case = open_case(&po, alert);
    po.send(
        "POST",
        &format!("/api/v1/cases/{case}/tasks"),
        &json!({ "text": "call HR" }),
    );
    let silence = po.send(
        "POST",
        "/api/v1/silences",
        &json!({ "matchers": ["user=nobody"], "hours": 1, "reason": "test" }),
    );
    assert_eq!(silence.status, 200, "{}", silence.text());
    let mut endpoints = Vec::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let concrete = path
                .replace("/silences/{id}", "/silences/1")
                .replace("/alerts/{id}", &format!("/alerts/{alert}"))
                .replace("{id}", &case.to_string())
                .replace("{n}", "1");
            let concrete = match concrete.as_str() {
                "/api/v1/timeline" | "/api/v1/reports/accounting" => {
                    format!("{concrete}?patient=pt-self")
                }
                "/api/v1/reports/annual-log" => format!("{concrete}?year=2026"),
                p if p.ends_with("/evidence") => format!("{concrete}?name=note.txt"),
                _ => concrete,
            };
            endpoints.push((
                method.to_uppercase(),
                concrete,
                op["x-phiwatch-permission"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert!(endpoints.len() >= 30, "{} endpoints", endpoints.len());
    // Signing out ends the session the rest of the run needs: it goes last.
    endpoints.sort_by_key(|(m, p, _)| (m == "DELETE" && p == "/api/v1/session", p.clone()));
    let port = c.port;
    let send = |client: Option<&Client>, method: &str, path: &str| {
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(c) = client {
            headers.push(("Cookie", &c.cookie));
            headers.push(("X-CSRF-Token", &c.csrf));
        }
        let (ct, body): (&str, &[u8]) = if path.contains("/evidence") {
            ("application/octet-stream", b"evidence bytes")
        } else {
            ("application/json", b"{}")
        };
        headers.push(("Content-Type", ct));
        let body = if method == "GET" { &b""[..] } else { body };
        request(port, method, path, &headers, body)
    };

    let mut checked = 0;
    for (method, path, perm) in &endpoints {
        if perm == "public" {
            continue;
        }
        let r = send(None, method, path);
        assert_eq!(r.status, 401, "anonymous {method} {path}: {}", r.text());
        assert!(r.json()["error"].is_string());
        checked += 1;
    }
    for (user, role) in [
        ("ivan", "investigator"),
        ("audrey", "auditor"),
        ("adam", "admin"),
        ("olivia", "privacy-officer"),
    ] {
        let client = Client::login(c.port, user, PASSWORD);
        for (method, path, perm) in &endpoints {
            if perm == "public" {
                continue;
            }
            let r = send(Some(&client), method, path);
            if allowed(role, perm) {
                assert!(
                    r.status != 401 && r.status != 403,
                    "{role} {method} {path} ({perm}) refused: {} {}",
                    r.status,
                    r.text()
                );
            } else {
                assert_eq!(
                    r.status,
                    403,
                    "{role} {method} {path} ({perm}) not refused: {}",
                    r.text()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 150, "{checked} checks");

    // Pages follow the same table: an administrator sees no alerts, an auditor changes nothing.
    let admin = Client::login(c.port, "adam", PASSWORD);
    assert_eq!(admin.get("/alerts").status, 403);
    assert_eq!(admin.get(&format!("/cases/{case}")).status, 403);
    assert_eq!(admin.get("/status").status, 200);
    let anon = request(c.port, "GET", "/cases", &[], b"");
    assert_eq!(anon.status, 303);
    assert!(anon.header("location").unwrap().starts_with("/login"));
}

/// Writes need the session's CSRF token and a same-site origin; forms carry it as a field.
#[test]
fn csrf_origin_and_forms() {
    let dir = tempfile::tempdir().unwrap();
    let c = clinic(dir.path());
    let po = Client::login(c.port, "olivia", PASSWORD);
    let alert = count(&c.db, "SELECT min(id) FROM alerts");
    let ack = format!("/api/v1/alerts/{alert}/ack");
    let no_token = request(
        c.port,
        "POST",
        &ack,
        &[("Cookie", &po.cookie), ("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(no_token.status, 403, "{}", no_token.text());
    let wrong = request(
        c.port,
        "POST",
        &ack,
        &[
            ("Cookie", &po.cookie),
            ("X-CSRF-Token", "not-the-token"),
            ("Content-Type", "application/json"),
        ],
        b"{}",
    );
    assert_eq!(wrong.status, 403);
    let foreign = request(
        c.port,
        "POST",
        &ack,
        &[
            ("Cookie", &po.cookie),
            ("X-CSRF-Token", &po.csrf),
            ("Origin", "https://evil.example"),
            ("Content-Type", "application/json"),
        ],
        b"{}",
    );
    assert_eq!(foreign.status, 403);
    assert_eq!(
        count(
            &c.db,
            "SELECT count(*) FROM alerts WHERE ack_by IS NOT NULL"
        ),
        0
    );
    // A console form: token as a field, answered by a redirect back.
    let form = format!(
        "csrf={}&return_to=%2Falerts%2F{alert}&note=looked+at+it",
        po.csrf
    );
    let r = request(
        c.port,
        "POST",
        &ack,
        &[
            ("Cookie", &po.cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", &format!("http://127.0.0.1:{}", c.port)),
        ],
        form.as_bytes(),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("/alerts/{alert}").as_str())
    );
    assert_eq!(
        count(
            &c.db,
            "SELECT count(*) FROM alerts WHERE ack_by = 'olivia' AND ack_note = 'looked at it'"
        ),
        1
    );
    // return_to never leaves the site.
    let r = request(
        c.port,
        "POST",
        &ack,
        &[
            ("Cookie", &po.cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        format!("csrf={}&return_to=%2F%2Fevil.example&note=x", po.csrf).as_bytes(),
    );
    assert_ne!(r.header("location"), Some("//evil.example"));
    // Security headers on pages.
    let page = po.get("/alerts");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'self'"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert!(page
        .header("server-timing")
        .unwrap()
        .starts_with("app;dur="));
    // Bad input is answered with its reason, not a crash.
    let bad = po.send(
        "POST",
        "/api/v1/cases",
        &json!({ "alerts": ["not-a-number"] }),
    );
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("alert ids"));
    let missing = po.get("/api/v1/cases/9999");
    assert_eq!(missing.status, 404);
    let bad_status = po.get("/api/v1/alerts?status=closed");
    assert_eq!(bad_status.status, 400);
}

/// The monitor is monitored: a privacy officer linked to dr-ana opens the case of dr-ana's
/// own chart; that view is stored as dr-ana's access and flagged as self-access.
#[test]
fn console_views_are_judged_like_ehr_accesses() {
    let dir = tempfile::tempdir().unwrap();
    let c = clinic(dir.path());
    let po = Client::login(c.port, "olivia", PASSWORD);
    let alerts = po.get("/api/v1/alerts?category=self_access").json();
    let alert = alerts["alerts"][0]["id"].as_i64().unwrap();
    assert_eq!(alerts["alerts"][0]["user"], "dr-ana");
    let case = open_case(&po, alert);
    let before = count(
        &c.db,
        "SELECT count(*) FROM findings WHERE category = 'self_access'",
    );
    let view = po.get(&format!("/api/v1/cases/{case}/timeline"));
    assert_eq!(view.status, 200);
    assert_eq!(view.json()["accesses"][0]["patient"], "pt-self");
    assert!(
        wait_for(Duration::from_secs(20), || count(
            &c.db,
            "SELECT count(*) FROM findings f JOIN accesses a ON a.event_id = f.event_id
             WHERE f.category = 'self_access' AND a.workstation = 'phiwatch-console'
               AND a.user_id = 'dr-ana' AND a.patient_id = 'pt-self'"
        ) >= 1),
        "the console view was not judged"
    );
    assert!(
        count(
            &c.db,
            "SELECT count(*) FROM findings WHERE category = 'self_access'"
        ) > before
    );
    // An account without a staff id is recorded under its console name.
    let ivan = Client::login(c.port, "ivan", PASSWORD);
    assert_eq!(ivan.get(&format!("/alerts/{alert}")).status, 200);
    assert!(wait_for(Duration::from_secs(20), || count(
        &c.db,
        "SELECT count(*) FROM accesses WHERE user_id = 'console:ivan' AND patient_id = 'pt-self'"
    ) == 1));
    // The alert queue itself shows no patient: it is not recorded.
    let n = count(
        &c.db,
        "SELECT count(*) FROM accesses WHERE workstation = 'phiwatch-console'",
    );
    assert_eq!(po.get("/alerts").status, 200);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        count(
            &c.db,
            "SELECT count(*) FROM accesses WHERE workstation = 'phiwatch-console'"
        ),
        n
    );
}

/// Sign-in is rate limited per address and per name, sessions survive a restart, and a
/// changed password ends them.
#[test]
fn login_limits_and_sessions_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fx = common::fixtures().join("clinic");
    let c = start(
        d,
        &fx.join("context"),
        &fx.join("events.ndjson"),
        "login_failures = 3\nlogin_window_minutes = 10\n",
    );
    let port = c.port;
    let login = |user: &str, pw: &str| {
        request(
            port,
            "POST",
            "/api/v1/session",
            &[("Content-Type", "application/json")],
            json!({ "user": user, "password": pw })
                .to_string()
                .as_bytes(),
        )
    };
    let po = Client::login(port, "olivia", PASSWORD);
    for _ in 0..3 {
        assert_eq!(login("audrey", "wrong password 123").status, 401);
    }
    let limited = login("audrey", PASSWORD);
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert!(limited.json()["error"]
        .as_str()
        .unwrap()
        .contains("try again"));
    // The lock is on this address and this name together: other names from the same
    // address still sign in (an address is locked only after four times the limit).
    let other = login("ivan", PASSWORD);
    assert_eq!(other.status, 200, "{}", other.text());
    // Unknown names answer like wrong passwords.
    assert_eq!(
        login("nobody", "x").json()["error"],
        login("nobody", "y").json()["error"]
    );
    // Nothing secret in the store: hashes and token digests only.
    let conn = rusqlite::Connection::open(&c.db).unwrap();
    let hashes: Vec<String> = conn
        .prepare("SELECT hash FROM console_users")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(hashes.iter().all(|h| h.starts_with("$argon2id$")));
    let token = po.cookie.split_once('=').unwrap().1.to_owned();
    assert_eq!(
        count(
            &c.db,
            &format!("SELECT count(*) FROM console_sessions WHERE token_hash = '{token}'")
        ),
        0
    );

    // Restart: the session holds.
    drop(c);
    let agent = start_healthy(
        &d.join("phiwatch.toml"),
        agent_http_port(d),
        &[],
        Duration::from_secs(60),
    );
    wait_console(port);
    let me = po.get("/api/v1/session");
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["user"], "olivia");
    // A new password ends every session of the account.
    let mut child = Command::new(env!("CARGO_BIN_EXE_phiwatch"))
        .args(["user", "passwd", "olivia", "--password-stdin", "--config"])
        .arg(d.join("phiwatch.toml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "another long passphrase").unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(po.get("/api/v1/session").status, 401);
    drop(agent);
}

fn agent_http_port(d: &Path) -> u16 {
    let text = std::fs::read_to_string(d.join("phiwatch.toml")).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    v["http"]["listen"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// With a certificate the console speaks only HTTPS, and its cookies are Secure.
#[test]
fn console_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert_pem = common::write_localhost_cert(d);
    let fx = common::fixtures().join("clinic");
    let c = {
        let (http, port) = (free_port(), free_port());
        let config = write_config(d, http, &fx.join("context"), "");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&config)
            .unwrap();
        writeln!(
            f,
            "[console]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{0}/cert.pem\"\ntls_key = \"{0}/key.pem\"",
            d.display()
        )
        .unwrap();
        add_user(&config, "olivia", "privacy-officer", None);
        let agent = start_healthy(&config, http, &[], Duration::from_secs(60));
        (agent, port)
    };
    let port = c.1;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
            .build()
            .unwrap();
        let url = format!("https://localhost:{port}");
        let mut ok = false;
        for _ in 0..100 {
            if client.get(format!("{url}/login")).send().await.is_ok() {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "no HTTPS answer");
        let r = client
            .post(format!("{url}/api/v1/session"))
            .json(&json!({ "user": "olivia", "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(
            cookie.contains("; Secure")
                && cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        assert!(r.headers().contains_key("strict-transport-security"));
    });
    // Plain HTTP on the TLS port gets no page.
    let plain = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
        use std::io::Read;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        Ok(buf)
    });
    assert!(!plain.unwrap_or_default().starts_with(b"HTTP/1.1 200"));
}

/// Misconfigurations are refused before anything starts.
#[test]
fn console_config_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fx = common::fixtures().join("clinic");
    let config = write_config(d, free_port(), &fx.join("context"), "");
    let base = std::fs::read_to_string(&config).unwrap();
    for (extra, want) in [
        ("[console]\nlisten = \"0.0.0.0:8443\"\n", "not loopback"),
        (
            "[console]\nlisten = \"127.0.0.1:8443\"\ntls_cert = \"/x.crt\"\n",
            "tls_cert and tls_key go together",
        ),
        (
            "[console]\nlisten = \"127.0.0.1:8443\"\ncolour = \"blue\"\n",
            "unknown field",
        ),
    ] {
        std::fs::write(&config, format!("{base}{extra}")).unwrap();
        let out = common::phiwatch(&["run", "--config", config.to_str().unwrap()]);
        assert!(!out.status.success());
        let err = common::text(&out.stderr);
        assert!(err.contains(want), "{extra}: {err}");
    }
    // `check` reports the console, a missing certificate, and the lack of accounts.
    std::fs::write(
        &config,
        format!("{base}[console]\nlisten = \"127.0.0.1:8443\"\n"),
    )
    .unwrap();
    let out = common::phiwatch(&["check", "--config", config.to_str().unwrap()]);
    let text = common::text(&out.stdout);
    assert!(
        text.contains("ok: console http://127.0.0.1:8443: 0 account(s)"),
        "{text}"
    );
    assert!(
        text.contains("warning: [console] no accounts yet"),
        "{text}"
    );
    std::fs::write(
        &config,
        format!("{base}[console]\nlisten = \"127.0.0.1:8443\"\ntls_cert = \"{0}/none.crt\"\ntls_key = \"{0}/none.key\"\n", d.display()),
    )
    .unwrap();
    let out = common::phiwatch(&["check", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        common::text(&out.stdout).contains("error: [console] TLS:"),
        "{}",
        common::text(&out.stdout)
    );
    std::fs::write(&config, &base).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_phiwatch"))
        .args([
            "user",
            "add",
            "x",
            "--role",
            "auditor",
            "--password-stdin",
            "--config",
        ])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            writeln!(c.stdin.take().unwrap(), "short")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(!out.status.success());
    assert!(common::text(&out.stderr).contains("at least 12 characters"));
}

/// The OpenAPI document is what the server does, for every role: Schemathesis (installed by
/// `tests/run`) generates conforming and non-conforming requests for every operation from
/// `openapi.json`, signed in as each of the four roles in turn, and checks each answer's
/// status, content type and body against it, that nothing is accepted without a session, and
/// with tests/schemathesis/hooks.py that an operation the role may not use answers 401/403
/// to every request and that no error answer carries a patient id or name the request did
/// not. Logging out (DELETE /api/v1/session) is left out: it would end the session the run
/// uses (`api_refuses_anonymous_and_underprivileged_on_every_endpoint` covers it).
#[test]
fn openapi_document_matches_the_server_for_every_role() {
    let st = std::env::var("PHIWATCH_SCHEMATHESIS").unwrap_or_else(|_| {
        format!(
            "{}/../target/schemathesis/bin/schemathesis",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    assert!(
        Path::new(&st).exists(),
        "schemathesis is not installed at {st}: run the tests with tests/run"
    );
    let dir = tempfile::tempdir().unwrap();
    let c = clinic(dir.path());
    let po = Client::login(c.port, "olivia", PASSWORD);
    assert_eq!(open_case(&po, 1), 1, "the configuration names case 1");
    let root = common::repo();
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("agent/src/console/openapi.json")).unwrap(),
    )
    .unwrap();
    let phi = clinic_phi();
    let base = std::fs::read_to_string(root.join("tests/schemathesis/schemathesis.toml")).unwrap();
    // Everyone signs in first: the runs' generated sign-ins trip the per-address limit.
    let signed_in: Vec<_> = [
        ("olivia", Role::PrivacyOfficer),
        ("ivan", Role::Investigator),
        ("audrey", Role::Auditor),
        ("adam", Role::Admin),
    ]
    .into_iter()
    .map(|(user, role)| (user, role, Client::login(c.port, user, PASSWORD)))
    .collect();
    for (user, role, client) in signed_in {
        let perms: Vec<&str> = PERMS
            .iter()
            .filter(|p| role.may(**p))
            .map(|p| p.as_str())
            .collect();
        // Valid data to an operation the role may not use is rightly refused (403): the
        // hooks' authorization check stands in for positive_data_acceptance there.
        let mut config = base.clone();
        for (path, ops) in spec["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let need = op["x-phiwatch-permission"].as_str().unwrap();
                if !perms.contains(&need) && need != "public" {
                    config.push_str(&format!(
                        "\n[[operations]]\ninclude-name = \"{} {path}\"\n\
                         checks.positive_data_acceptance.enabled = false\n",
                        method.to_uppercase()
                    ));
                }
            }
        }
        let config_file = dir.path().join(format!("schemathesis-{user}.toml"));
        std::fs::write(&config_file, config).unwrap();
        let session = client.cookie.split_once('=').unwrap().1.to_owned();
        let judged = dir.path().join(format!("judged-{user}.json"));
        // Schemathesis keeps a cache in its working directory: not in the checkout.
        let out = Command::new(&st)
            .current_dir(dir.path())
            .env("SESSION", &session)
            .env("CSRF", &client.csrf)
            .env("SCHEMATHESIS_HOOKS", "hooks")
            .env("PYTHONPATH", root.join("tests/schemathesis"))
            .env("PHIWATCH_PERMS", perms.join(","))
            .env("PHIWATCH_PHI", phi.join("\n"))
            .env("PHIWATCH_HOOK_LOG", &judged)
            .args(["--config-file", config_file.to_str().unwrap(), "run"])
            .arg(root.join("agent/src/console/openapi.json"))
            .args([
                "--url",
                &format!("http://127.0.0.1:{}", c.port),
                "--exclude-method",
                "DELETE",
                "--max-examples",
                if role == Role::PrivacyOfficer {
                    "30"
                } else {
                    "12"
                },
                "--workers",
                "1",
                "--seed",
                "1",
                "--no-color",
            ])
            .output()
            .unwrap();
        let text = common::text(&out.stdout) + &common::text(&out.stderr);
        assert!(
            out.status.success(),
            "as {user} ({}): {text}",
            role.as_str()
        );
        assert!(text.contains(" passed"), "as {user}: {text}");
        let judged: Value = serde_json::from_str(
            &std::fs::read_to_string(&judged).expect("the hooks did not load"),
        )
        .unwrap();
        for check in ["authorization_holds", "no_phi_in_errors"] {
            assert!(
                judged[check].as_u64().unwrap() > 100,
                "as {user}: {check} judged {judged}"
            );
        }
    }
}

/// Every permission a route can require.
const PERMS: [Perm; 11] = [
    Perm::Public,
    Perm::Signed,
    Perm::ReadAlerts,
    Perm::Triage,
    Perm::Silence,
    Perm::ReadCases,
    Perm::OpenCase,
    Perm::WorkCase,
    Perm::DecideCase,
    Perm::ReadStatus,
    Perm::AuthorPolicies,
];

/// The clinic's patient ids, family names and street lines.
fn clinic_phi() -> Vec<String> {
    let text =
        std::fs::read_to_string(common::fixtures().join("clinic/context/Patient.ndjson")).unwrap();
    let mut phi = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let p: Value = serde_json::from_str(line).unwrap();
        phi.push(p["id"].as_str().unwrap().to_owned());
        for n in p["name"].as_array().into_iter().flatten() {
            phi.extend(n["family"].as_str().map(str::to_owned));
        }
        for a in p["address"].as_array().into_iter().flatten() {
            for l in a["line"].as_array().into_iter().flatten() {
                phi.extend(l.as_str().map(str::to_owned));
            }
        }
    }
    phi.sort();
    phi.dedup();
    assert!(phi.len() >= 10, "{phi:?}");
    phi
}

/// `/backtest`: a privacy officer pastes a draft of snooping.cedar without the neighbor rule
/// and sees exactly the stored neighbor findings removed; an investigator may not; a draft
/// that does not compile is shown with its problem.
#[test]
fn backtest_page_replays_a_pasted_draft() {
    let dir = tempfile::tempdir().unwrap();
    let c = clinic(dir.path());
    // The tail has stored the clinic's accesses once the neighbor finding is there.
    assert!(wait_for(Duration::from_secs(30), || count(
        &c.db,
        "SELECT count(*) FROM findings WHERE detector = 'neighbor'"
    ) >= 1));
    let neighbor = count(
        &c.db,
        "SELECT count(*) FROM findings WHERE detector = 'neighbor'",
    );
    let po = Client::login(c.port, "olivia", PASSWORD);
    let page = po.get("/backtest");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("snooping.cedar"), "{}", page.text());
    let shipped = std::fs::read_to_string(common::repo().join("policies/snooping.cedar")).unwrap();
    let i = shipped.find("@id(\"neighbor\")").unwrap();
    let end = shipped[i..].find("};\n").unwrap() + i + 3;
    let draft = format!("{}{}", &shipped[..i], &shipped[end..]);
    let post = |client: &Client, file: &str, text: &str| {
        let body = serde_urlencoded::to_string([
            ("csrf", client.csrf.as_str()),
            ("file", file),
            ("text", text),
            ("since", "90d"),
        ])
        .unwrap();
        request(
            c.port,
            "POST",
            "/backtest",
            &[
                ("Cookie", &client.cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            body.as_bytes(),
        )
    };
    let r = post(&po, "snooping.cedar", &draft);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains(&format!("and removes {neighbor} (")),
        "{}",
        r.text()
    );
    assert!(r.text().contains("<td>neighbor</td>"), "{}", r.text());
    // No patient is named on the page: the samples stay in the CLI.
    assert!(!r.text().contains("pt-neighbor"), "{}", r.text());

    let broken = post(
        &po,
        "snooping.cedar",
        "forbid (principal, action, resource) when {",
    );
    assert_eq!(broken.status, 400);
    assert!(broken.text().contains("the draft:"), "{}", broken.text());
    let bad_name = post(&po, "../etc/passwd", "x");
    assert_eq!(bad_name.status, 400);

    let ivan = Client::login(c.port, "ivan", PASSWORD);
    assert_eq!(ivan.get("/backtest").status, 403);
    assert_eq!(post(&ivan, "snooping.cedar", &draft).status, 403);
}
