//! `phiwatch check --config`: every problem at once, with file and line, and a clean bill
//! for a good configuration.

mod common;

use std::path::Path;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn good_config_passes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        &d.join("phiwatch.toml"),
        &format!(
            "data_dir = \"{d}/data\"\ncontext = \"{ctx}\"\nrouting = \"{repo}/rules/routing.toml\"\n[[source]]\nkind = \"file\"\nname = \"ehr\"\npaths = [\"{d}/logs/*.ndjson\"]\nformat = \"fhir-auditevent\"\n",
            d = d.display(),
            ctx = common::fixtures().join("clinic/context").display(),
            repo = common::repo().display(),
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_phiwatch"))
        .args([
            "check",
            "--config",
            d.join("phiwatch.toml").to_str().unwrap(),
        ])
        .env("PHIWATCH_SMTP_PASSWORD", "x")
        .env(
            "PHIWATCH_WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .output()
        .unwrap();
    let text = common::text(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("ok: routing") && text.contains("2 receiver(s)"),
        "{text}"
    );
    assert!(
        text.contains("ok: context") && text.contains("patients"),
        "{text}"
    );
    assert!(
        text.contains("warning: source \"ehr\": no file matches"),
        "{text}"
    );
}

#[test]
fn every_problem_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let policies = d.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    for e in std::fs::read_dir(common::repo().join("policies")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, policies.join(p.file_name().unwrap())).unwrap();
        }
    }
    write(
        &policies.join("zz.cedar"),
        "@id(\"x\")\npermit (principal, action, resource)\nwhen { context.no_such_fact };\n",
    );
    write(
        &d.join("routing.toml"),
        "[[receiver]]\nkind = \"webhook\"\nname = \"siem\"\nurl = \"https://siem.example.org/\"\nsecret_env = \"PHIWATCH_CHECK_TEST_UNSET\"\n[[route]]\nreceivers = [\"siem\"]\n",
    );
    write(
        &d.join("phiwatch.toml"),
        &format!(
            "data_dir = \"{d}/data\"\npolicies = \"{d}/policies\"\nrouting = \"{d}/routing.toml\"\n[[source]]\nkind = \"syslog\"\nname = \"atna\"\nlisten = \"127.0.0.1:6514\"\ntransport = \"tls\"\ntls_cert = \"{d}/missing-cert.pem\"\ntls_key = \"{d}/missing-key.pem\"\n[[source]]\nkind = \"folder\"\nname = \"phi\"\npaths = [\"{d}/no-such-folder\"]\n",
            d = d.display()
        ),
    );
    let out = common::phiwatch(&[
        "check",
        "--config",
        d.join("phiwatch.toml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = common::text(&out.stdout);
    for want in [
        "zz.cedar:3:",
        "no_such_fact",
        "source \"atna\": TLS",
        "missing-cert.pem",
        "source \"phi\": folder",
        "no-such-folder",
        "PHIWATCH_CHECK_TEST_UNSET is not set",
        "reminder receiver \"privacy-office\" is not defined",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }

    write(&d.join("phiwatch.toml"), "data_dir = \"/x\"\nsourcez = 1\n");
    let out = common::phiwatch(&[
        "check",
        "--config",
        d.join("phiwatch.toml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = common::text(&out.stdout);
    assert!(
        text.contains("line 2") && text.contains("sourcez"),
        "{text}"
    );
}
