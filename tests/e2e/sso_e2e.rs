//! Console single sign-on, end to end: the real agent, a real OpenID provider (the certified
//! `oidc-provider` package from npm, `tests/servers/oidc_provider.mjs`) on loopback, and
//! Debian's Chromium. The provider listens on 127.0.0.2 and the console on 127.0.0.1: two
//! sites, so the browser treats the provider's redirect back as cross-site, as it would in a
//! hospital.

mod agent;
mod common;
mod http;
mod postgres;
mod webdriver;

use agent::{count, free_port, start_healthy, wait_for, write_config, Agent};
use http::request;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET_ENV: &str = "PHIWATCH_TEST_OIDC_SECRET";
const SECRET: &str = "phiwatch-test-secret-7f3a";
const OP_HOST: &str = "127.0.0.2";

struct Provider {
    child: Child,
    port: u16,
    /// Kept open: the provider writes warnings to it after `ready`.
    _out: BufReader<std::process::ChildStdout>,
}

impl Provider {
    /// The provider for the console on `console`; its messages go to
    /// target/tmp/sso-provider-PORT.log.
    fn start(console: u16) -> Provider {
        let log =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sso-provider-{console}.log"));
        let modules = std::env::var("PHIWATCH_OIDC_NODE_MODULES").unwrap_or_else(|_| {
            common::repo()
                .join("target/oidc-provider/node_modules")
                .display()
                .to_string()
        });
        assert!(
            Path::new(&modules).join("oidc-provider").is_dir(),
            "oidc-provider is not installed in {modules}: run tests/run, which installs it"
        );
        let mut child = Command::new("node")
            .arg(common::repo().join("tests/servers/oidc_provider.mjs"))
            .args(["--host", OP_HOST, "--secret", SECRET])
            .args([
                "--redirect",
                &format!("http://127.0.0.1:{console}/oidc/callback"),
            ])
            .args([
                "--post-logout",
                &format!("http://127.0.0.1:{console}/login"),
            ])
            .args([
                "--backchannel",
                &format!("http://127.0.0.1:{console}/oidc/backchannel-logout"),
            ])
            .env("PHIWATCH_OIDC_NODE_MODULES", &modules)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("node (Debian's nodejs) runs the test provider");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        let port = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("the provider did not start: {line:?}"));
        Provider {
            child,
            port,
            _out: out,
        }
    }

    fn issuer(&self) -> String {
        format!("http://{OP_HOST}:{}", self.port)
    }

    /// A request to the provider's test controls; the answer's body.
    fn control(&self, method: &str, path: &str) -> String {
        let mut s = TcpStream::connect((OP_HOST, self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {OP_HOST}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `[console]` section with single sign-on against `op`.
fn console_section(port: u16, op: &str, local_accounts: bool) -> String {
    console_section_back(port, port, op, local_accounts)
}

/// As [`console_section`], the provider sending browsers back to the console on `back`.
fn console_section_back(port: u16, back: u16, op: &str, local_accounts: bool) -> String {
    format!(
        r#"[console]
listen = "127.0.0.1:{port}"
local_accounts = {local_accounts}
[console.oidc]
issuer = "{op}"
client_id = "phiwatch"
client_secret_env = "{SECRET_ENV}"
redirect_url = "http://127.0.0.1:{back}/oidc/callback"
scopes = ["profile", "groups", "employee"]
roles_claim = "groups"
staff_id_claim = "employee_id"
[[console.oidc.roles]]
claim = "Privacy Office"
role = "privacy-officer"
[[console.oidc.roles]]
claim = "Internal Audit"
role = "auditor"
"#
    )
}

fn start_agent(d: &Path, port: u16, op: &str, local_accounts: bool) -> (Agent, PathBuf) {
    let fx = common::fixtures().join("clinic");
    let http = free_port();
    let config = write_config(d, http, &fx.join("context"), "");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&config)
        .unwrap();
    f.write_all(console_section(port, op, local_accounts).as_bytes())
        .unwrap();
    let agent = start_healthy(
        &config,
        http,
        &[(SECRET_ENV, SECRET)],
        Duration::from_secs(60),
    );
    console_answers(port);
    (agent, config)
}

/// Waits for the console on `port` to serve its sign-in page.
fn console_answers(port: u16) {
    assert!(
        wait_for(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
                && request(port, "GET", "/login", &[], b"").status == 200
        }),
        "the console on port {port} never answered"
    );
}

/// What a sign-in through the provider ended in.
#[derive(Debug)]
enum Outcome {
    /// The console's `#who`: name and role.
    SignedIn(String),
    /// The console's sign-in error.
    Refused(String),
}

/// Clicks the console's sign-on button and, if the provider asks, signs in as `user` (the
/// provider remembers a user signed in before and does not ask again).
fn sign_in(b: &webdriver::Browser, base: &str, user: &str) -> Outcome {
    b.goto(&format!("{base}/login"));
    b.click("#sso");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut typed = false;
    loop {
        if let Some(_who) = b.try_find("#who") {
            return Outcome::SignedIn(b.text("#who"));
        }
        if b.try_find("#login-error").is_some() {
            return Outcome::Refused(b.text("#login-error"));
        }
        if !typed && b.try_find("input[name=login]").is_some() {
            b.type_into("input[name=login]", user);
            b.type_into("input[name=password]", "any password at all");
            b.click("button.login-submit");
            typed = true;
        }
        assert!(
            Instant::now() < deadline,
            "sign-in of {user} ended nowhere: {}\n{}",
            b.url(),
            b.source().chars().take(2000).collect::<String>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Signs out at the provider alone (after a refused sign-in there is no console session).
fn provider_sign_out(b: &webdriver::Browser, op: &Provider) {
    b.goto(&format!("{}/session/end", op.issuer()));
    b.click("button[name=logout]");
    assert!(
        wait_for(Duration::from_secs(10), || b
            .url()
            .contains("/session/end/success")),
        "{}: {}",
        b.url(),
        b.source()
    );
}

fn signed_in_as(o: Outcome, name: &str, role: &str) {
    match o {
        Outcome::SignedIn(who) => {
            assert!(who.contains(name) && who.contains(role), "{who}")
        }
        Outcome::Refused(e) => panic!("{name} was refused: {e}"),
    }
}

fn refused(o: Outcome, because: &str) -> String {
    match o {
        Outcome::Refused(e) => {
            assert!(
                e.contains(because),
                "refused, but for {e:?}, not {because:?}"
            );
            e
        }
        Outcome::SignedIn(who) => panic!("signed in as {who}; expected a refusal ({because})"),
    }
}

/// The console's sign-in trail as `phiwatch user log` prints it.
fn trail(config: &Path) -> String {
    let o = common::phiwatch(&["user", "log", "--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", common::text(&o.stderr));
    common::text(&o.stdout)
}

#[test]
fn officers_and_auditors_sign_in_through_a_real_provider() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let op = Provider::start(port);
    let (_agent, config) = start_agent(d, port, &op.issuer(), true);
    let db = d.join("data/phiwatch.db");
    let base = format!("http://127.0.0.1:{port}");

    // `phiwatch check` reads the provider's discovery and keys; without the secret it says
    // which variable is missing.
    let checked = Command::new(env!("CARGO_BIN_EXE_phiwatch"))
        .args(["check", "--config", config.to_str().unwrap()])
        .env(SECRET_ENV, SECRET)
        .output()
        .unwrap();
    let out = common::text(&checked.stdout) + &common::text(&checked.stderr);
    assert!(checked.status.success(), "{out}");
    assert!(
        out.contains("single sign-on") && out.contains("1 signing key(s)"),
        "{out}"
    );
    let checked = Command::new(env!("CARGO_BIN_EXE_phiwatch"))
        .args(["check", "--config", config.to_str().unwrap()])
        .env_remove(SECRET_ENV)
        .output()
        .unwrap();
    let out = common::text(&checked.stdout) + &common::text(&checked.stderr);
    assert!(
        !checked.status.success() && out.contains(SECRET_ENV),
        "{out}"
    );

    let b = webdriver::Browser::start();

    // A privacy officer: role from the group, staff id from the claim, and the queue.
    signed_in_as(sign_in(&b, &base, "olivia"), "olivia", "privacy-officer");
    assert!(b.url().ends_with("/alerts"), "{}", b.url());
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM console_users WHERE name = 'olivia' AND role = 'privacy-officer' AND staff_id = 'E-1001'"
        ),
        1
    );
    // The session cookie is the console's usual one: HttpOnly, SameSite=Strict.
    let cookies = b.script("return document.cookie");
    assert!(
        !cookies.as_str().unwrap_or("").contains("phiwatch_session"),
        "the session cookie is readable by scripts: {cookies}"
    );
    // The state of that sign-in, replayed, is refused: a state works once.
    let callback = op.control("GET", "/__test/last-callback");
    assert!(callback.contains("state="), "{callback}");
    // Signing out ends the console session and, through the provider's end-session
    // endpoint, the provider's; the browser comes back to the console's sign-in page.
    b.click("#logout");
    b.click("button[name=logout]");
    assert!(
        wait_for(Duration::from_secs(10), || b
            .url()
            .starts_with(&format!("{base}/login"))),
        "{}",
        b.url()
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM console_sessions WHERE user = 'olivia'"
        ),
        0
    );
    b.goto(&callback);
    refused(
        Outcome::Refused(b.text("#login-error")),
        "expired or was already used",
    );

    // An auditor.
    signed_in_as(sign_in(&b, &base, "audrey"), "audrey", "auditor");
    b.click("#logout");
    b.click("button[name=logout]");
    assert!(wait_for(Duration::from_secs(10), || b
        .url()
        .starts_with(&format!("{base}/login"))));

    // A user in no mapped group is refused, and no account is made.
    refused(sign_in(&b, &base, "mallory"), "not in any group");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM console_users WHERE name = 'mallory'"
        ),
        0
    );
    provider_sign_out(&b, &op);

    // Spoiled ID tokens from the provider's token endpoint: signed by a key it never
    // published, expired, issued to another client, carrying an earlier sign-in's nonce.
    for (mode, because) in [
        ("forge", "ID token was refused"),
        ("expired", "ID token was refused"),
        ("aud", "ID token was refused"),
        ("nonce", "ID token was refused"),
    ] {
        op.control("POST", &format!("/__test/mode?m={mode}"));
        let e = refused(sign_in(&b, &base, "olivia"), because);
        assert!(!e.contains(SECRET), "{e}");
    }
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM console_sessions WHERE user = 'olivia'"
        ),
        0
    );

    // A mover: the provider now puts audrey in the privacy office; her next sign-in has the
    // new role and the trail says so.
    provider_sign_out(&b, &op);
    op.control(
        "POST",
        "/__test/groups?user=audrey&g=Everyone&g=Privacy%20Office",
    );
    signed_in_as(sign_in(&b, &base, "audrey"), "audrey", "privacy-officer");
    b.click("#logout");
    b.click("button[name=logout]");
    assert!(wait_for(Duration::from_secs(10), || b
        .url()
        .starts_with(&format!("{base}/login"))));

    // Key rotation: the provider signs with a new key published beside the old one. The
    // console re-reads the keys (at most every 10 s; the forged token above made it read
    // them) and the sign-in works.
    let kid = op.control("POST", "/__test/rotate");
    std::thread::sleep(Duration::from_secs(11));
    signed_in_as(sign_in(&b, &base, "olivia"), "olivia", "privacy-officer");
    assert!(!kid.is_empty());
    let checked = Command::new(env!("CARGO_BIN_EXE_phiwatch"))
        .args(["check", "--config", config.to_str().unwrap()])
        .env(SECRET_ENV, SECRET)
        .output()
        .unwrap();
    let out = common::text(&checked.stdout);
    assert!(out.contains("2 signing key(s)"), "{out}");

    // Back-channel logout: signing out at the provider alone (another application, or the
    // provider's own page) ends the console session within moments.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM console_sessions WHERE user = 'olivia'"
        ),
        1
    );
    // Logout tokens not signed by the provider's key are refused and end nothing: unsigned,
    // and signed by a key the provider never published.
    let b64 = |v: serde_json::Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = b64(serde_json::json!({
        "iss": op.issuer(), "aud": "phiwatch", "iat": now, "exp": now + 120, "jti": "forged-1",
        "sub": "olivia",
        "events": { "http://schemas.openid.net/event/backchannel-logout": {} }
    }));
    for header in [
        serde_json::json!({"alg": "none", "typ": "logout+jwt"}),
        serde_json::json!({"alg": "RS256", "typ": "logout+jwt", "kid": kid}),
    ] {
        let token = format!("{}.{claims}.{}", b64(header), b64(serde_json::json!("x")));
        let r = request(
            port,
            "POST",
            "/oidc/backchannel-logout",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            format!("logout_token={token}").as_bytes(),
        );
        assert_eq!(r.status, 400, "{}", r.text());
    }
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM console_sessions WHERE user = 'olivia'"
        ),
        1
    );
    provider_sign_out(&b, &op);
    assert!(
        wait_for(Duration::from_secs(10), || count(
            &db,
            "SELECT count(*) FROM console_sessions WHERE user = 'olivia'"
        ) == 0),
        "{}",
        trail(&config)
    );
    b.goto(&format!("{base}/alerts"));
    assert!(b.url().contains("/login"), "{}", b.url());

    let log = trail(&config);
    let lines: Vec<&str> = log.lines().collect();
    let has = |event: &str, user: &str, detail: &str| {
        lines.iter().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 6 && f[2] == event && f[3] == user && f[4] == "sso" && l.contains(detail)
        })
    };
    assert!(has("sign-in", "olivia", "privacy-officer"), "{log}");
    assert!(has("sign-in", "audrey", "auditor"), "{log}");
    assert!(has("refused", "mallory", "not in any group"), "{log}");
    assert!(has("refused", "-", "already used"), "{log}");
    assert!(has("refused", "-", "ID token"), "{log}");
    assert!(
        has("role-change", "audrey", "auditor -> privacy-officer"),
        "{log}"
    );
    assert!(has("sign-out", "olivia", ""), "{log}");
    assert!(has("sign-out", "olivia", "back-channel logout"), "{log}");
    assert!(!log.contains(SECRET), "{log}");
}

/// With local accounts switched off, the password form is gone and the password sign-in is
/// refused by both the page and the API, even for an account that exists.
#[test]
fn local_accounts_can_be_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let op = Provider::start(port);
    let (agent, config) = start_agent(d, port, &op.issuer(), false);
    let mut child = Command::new(env!("CARGO_BIN_EXE_phiwatch"))
        .args(["user", "add", "adam", "--role", "admin", "--password-stdin"])
        .args(["--config", config.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "correct horse battery").unwrap();
    assert!(child.wait().unwrap().success());

    let page = request(port, "GET", "/login", &[], b"");
    assert!(page.text().contains("id=\"sso\""), "{}", page.text());
    assert!(!page.text().contains("id=\"password\""), "{}", page.text());
    let api = request(
        port,
        "POST",
        "/api/v1/session",
        &[("Content-Type", "application/json")],
        br#"{"user":"adam","password":"correct horse battery"}"#,
    );
    assert_eq!(api.status, 403, "{}", api.text());
    assert!(trail(&config).contains("refused"));
    // Sign-ins started and not finished are bounded per client address: a flood of
    // /oidc/login from one address cannot fill the table for everyone.
    let statuses: Vec<u16> = (0..20)
        .map(|_| request(port, "GET", "/oidc/login", &[], b"").status)
        .collect();
    assert!(statuses.iter().all(|s| *s == 303), "{statuses:?}");
    let busy = request(port, "GET", "/oidc/login", &[], b"");
    assert_eq!(busy.status, 503, "{}", busy.text());
    assert!(busy.text().contains("too many sign-ins"), "{}", busy.text());
    drop(agent);
}

/// Two fleet console nodes behind what a load balancer would do: the sign-in starts on node
/// A and the provider sends the browser back to node B, which finishes it from the fleet's
/// database; the session is good on A; the provider's back-channel logout reaches B and ends
/// the session on A too.
#[test]
fn single_sign_on_spans_the_fleets_console_nodes() {
    let pg = postgres::Postgres::start();
    let url = pg.url();
    let out = common::phiwatch(&["migrate", "--database", &url]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (port_a, port_b) = (free_port(), free_port());
    let op = Provider::start(port_b);
    let node = |name: &str, port: u16| {
        let http = free_port();
        let config = d.join(format!("{name}.toml"));
        let text = format!(
            "data_dir = \"{d}/{name}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n[database]\nurl = \"{url}\"\n[fleet]\nrole = \"console\"\nnode = \"{name}\"\n{console}",
            d = d.display(),
            console = console_section_back(port, port_b, &op.issuer(), true),
        );
        std::fs::write(&config, text).unwrap();
        let agent = start_healthy(
            &config,
            http,
            &[(SECRET_ENV, SECRET)],
            Duration::from_secs(60),
        );
        console_answers(port);
        (agent, config)
    };
    let (_a, config_a) = node("console-a", port_a);
    let (_b, _config_b) = node("console-b", port_b);
    let (base_a, base_b) = (
        format!("http://127.0.0.1:{port_a}"),
        format!("http://127.0.0.1:{port_b}"),
    );
    let sql = |q: &str| pg.psql("phiwatch", q).trim().to_owned();

    let b = webdriver::Browser::start();
    signed_in_as(sign_in(&b, &base_a, "olivia"), "olivia", "privacy-officer");
    assert!(b.url().starts_with(&base_b), "{}", b.url());
    assert_eq!(
        sql("SELECT role || ' ' || staff_id FROM console_users WHERE name = 'olivia'"),
        "privacy-officer E-1001"
    );
    assert_eq!(sql("SELECT count(*) FROM console_sso_pending"), "0");
    // The session is the fleet's: node A, which started the sign-in, serves it.
    b.goto(&format!("{base_a}/alerts"));
    assert!(
        b.try_find("#who")
            .is_some_and(|_| b.text("#who").contains("olivia")),
        "{}",
        b.url()
    );
    // The sign-in's state, taken on B, is refused on A.
    let callback = op.control("GET", "/__test/last-callback");
    assert!(callback.starts_with(&base_b), "{callback}");
    b.goto(&callback.replacen(&base_b, &base_a, 1));
    refused(
        Outcome::Refused(b.text("#login-error")),
        "expired or was already used",
    );

    // Signing out at the provider: its back-channel logout reaches B, and A's session ends.
    assert_eq!(
        sql("SELECT count(*) FROM console_sessions WHERE user_name = 'olivia' AND sso_sid IS NOT NULL"),
        "1"
    );
    provider_sign_out(&b, &op);
    assert!(
        wait_for(Duration::from_secs(10), || sql(
            "SELECT count(*) FROM console_sessions WHERE user_name = 'olivia'"
        ) == "0"),
        "{}",
        trail(&config_a)
    );
    b.goto(&format!("{base_a}/alerts"));
    assert!(b.url().contains("/login"), "{}", b.url());
    // The logout token was taken once, for every node.
    assert_eq!(sql("SELECT count(*) FROM console_sso_logouts"), "1");

    let log = trail(&config_a);
    assert!(
        log.lines()
            .any(|l| l.contains("sign-in") && l.contains("olivia") && l.contains("sso")),
        "{log}"
    );
    assert!(log.contains("back-channel logout"), "{log}");
    assert!(log.contains("already used"), "{log}");
}
