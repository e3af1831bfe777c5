//! The install script into a throwaway root: files and permissions, the unit's hardening
//! score, a running agent fed events from the installed layout, and a second run that keeps
//! the operator's config.

mod agent;
mod common;

use agent::{count, free_port, start_healthy, wait_for};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn install(root: &Path, port: u16) -> std::process::Output {
    Command::new("sh")
        .arg(common::repo().join("install/install.sh"))
        .args(["--prefix", root.to_str().unwrap()])
        .args(["--binary", env!("CARGO_BIN_EXE_phiwatch")])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--no-start")
        .output()
        .unwrap()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn install_script_into_a_throwaway_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let port = free_port();
    let out = install(&root, port);
    assert!(
        out.status.success(),
        "{}{}",
        common::text(&out.stdout),
        common::text(&out.stderr)
    );
    let etc = root.join("etc/phiwatch");
    let lib = root.join("var/lib/phiwatch");
    assert_eq!(mode(&root.join("usr/bin/phiwatch")), 0o755);
    assert_eq!(mode(&etc), 0o750);
    assert_eq!(mode(&etc.join("phiwatch.toml")), 0o640);
    assert_eq!(mode(&etc.join("phiwatch.env")), 0o600, "secrets");
    assert_eq!(mode(&lib), 0o700, "the store holds PHI");
    assert!(root
        .join("usr/share/phiwatch/policies/tests/snooping.toml")
        .is_file());
    let unit = root.join("lib/systemd/system/phiwatch.service");
    assert!(std::fs::read_to_string(&unit).unwrap().contains(&format!(
        "ExecStart={}/usr/bin/phiwatch run",
        root.display()
    )));

    if have("systemd-analyze") {
        let sec = Command::new("systemd-analyze")
            .args(["security", "--offline=true", unit.to_str().unwrap()])
            .output()
            .unwrap();
        let text = common::text(&sec.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split("exposure level for phiwatch.service: ").nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no score in:\n{text}"));
        assert!(score <= 2.0, "exposure {score}");
        let verify = Command::new("systemd-analyze")
            .args(["verify", unit.to_str().unwrap()])
            .output()
            .unwrap();
        let problems = common::text(&verify.stderr);
        assert!(
            !problems.contains("phiwatch.service:"),
            "systemd-analyze verify: {problems}"
        );
    }

    // Run the installed agent on its installed config.
    for e in std::fs::read_dir(common::fixtures().join("clinic/context")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, lib.join("context").join(p.file_name().unwrap())).unwrap();
    }
    let config = etc.join("phiwatch.toml");
    let agent = start_healthy(&config, port, &[], Duration::from_secs(20));
    std::fs::copy(
        common::fixtures().join("clinic/events.ndjson"),
        root.join("var/log/ehr/audit.ndjson"),
    )
    .unwrap();
    let db = lib.join("phiwatch.db");
    assert!(
        wait_for(Duration::from_secs(20), || count(
            &db,
            "SELECT count(*) FROM findings WHERE category = 'vip'"
        ) == 1),
        "findings from the installed agent"
    );
    assert!(agent.stop().0.success());
    assert_eq!(
        mode(&db),
        0o600,
        "the store is the agent's alone, whatever the umask"
    );
    assert_eq!(mode(&lib.join("checkpoints")), 0o700);

    // A second install keeps the operator's edits.
    let mut cfg = std::fs::read_to_string(&config).unwrap();
    cfg.push_str("\n# edited by the operator\n");
    std::fs::write(&config, &cfg).unwrap();
    assert!(install(&root, port).status.success());
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .contains("# edited by the operator"));
}
