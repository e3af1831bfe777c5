//! A broken policy pack stops `scan` before it reads any event, naming file, line and column.

mod common;

use std::path::Path;

fn pack_with(file: &str, text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(common::repo().join("policies")).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(dir.path().join(file), text).unwrap();
    dir
}

fn scan_with(policies: &Path) -> (bool, String, String) {
    scan_events_with(policies, &common::fixtures().join("clinic/events.ndjson"))
}

fn scan_events_with(policies: &Path, events: &Path) -> (bool, String, String) {
    let fx = common::fixtures().join("clinic");
    let out = common::phiwatch(&[
        "scan",
        "--no-store",
        "--policies",
        policies.to_str().unwrap(),
        "--context",
        fx.join("context").to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
    ]);
    (
        out.status.success(),
        common::text(&out.stdout),
        common::text(&out.stderr),
    )
}

#[test]
fn shipped_pack_is_valid() {
    let out = common::phiwatch(&[
        "policies",
        "--dir",
        common::repo().join("policies").to_str().unwrap(),
    ]);
    let text = common::text(&out.stdout);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    // Count the statements on disk so adding a policy to the pack does not need this test edited,
    // while a policy the loader silently drops still fails it.
    let patient = statements_in(&common::repo().join("policies"));
    let files = statements_in(&common::repo().join("policies/files"));
    assert!(
        patient > 15 && files >= 4,
        "pack shrank: {patient} / {files}"
    );
    assert!(
        text.contains(&format!(
            "{patient} patient-access policies valid against the schema"
        )) && text.contains(&format!(
            "{files} PHI-folder policies valid against the schema"
        )),
        "{text}"
    );
}

fn statements_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cedar"))
        .map(|p| {
            std::fs::read_to_string(&p)
                .unwrap()
                .lines()
                .filter(|l| l.starts_with("permit") || l.starts_with("forbid"))
                .count()
        })
        .sum()
}

#[test]
fn broken_folder_pack_names_its_file() {
    let dir = pack_with("zz-unused.txt", "");
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let shipped = common::repo().join("policies/files");
    std::fs::copy(
        shipped.join("schema.cedarschema"),
        files.join("schema.cedarschema"),
    )
    .unwrap();
    std::fs::write(
        files.join("local.cedar"),
        "@id(\"x\")\n@category(\"c\")\n@severity(\"high\")\n@explain(\"e\")\n@hipaa(\"h\")\nforbid (principal, action == Action::\"file_bulk_read\", resource) when { context.break_glass };\n",
    )
    .unwrap();
    let out = common::phiwatch(&["policies", "--dir", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = common::text(&out.stderr);
    assert!(
        err.contains("folder policy pack")
            && err.contains("local.cedar:6:")
            && err.contains("break_glass"),
        "{err}"
    );
}

#[test]
fn syntax_error_names_file_line_and_column() {
    let dir = pack_with(
        "zz-local.cedar",
        "// local rule\n@id(\"broken\")\nforbid (principal, action, resource)\nwhen { context.self_access && };\n",
    );
    let (ok, stdout, err) = scan_with(dir.path());
    assert!(!ok);
    assert!(stdout.is_empty(), "no findings before the pack is valid");
    assert!(err.contains("zz-local.cedar:4:"), "{err}");
}

#[test]
fn schema_error_names_file_line_and_column() {
    let dir = pack_with(
        "zz-local.cedar",
        "@id(\"typo\")\n@category(\"x\")\n@severity(\"low\")\n@explain(\"x\")\n@hipaa(\"x\")\nforbid (principal, action, resource)\nwhen { context.self_acess };\n",
    );
    let (ok, _, err) = scan_with(dir.path());
    assert!(!ok);
    assert!(err.contains("zz-local.cedar:7:"), "{err}");
    assert!(err.contains("self_acess"), "{err}");
}

#[test]
fn missing_annotations_and_bad_severity_are_rejected() {
    let dir = pack_with(
        "zz-local.cedar",
        "@id(\"bare\")\nforbid (principal, action, resource)\nwhen { context.weekend };\n\n@id(\"loud\")\n@category(\"x\")\n@severity(\"extreme\")\n@explain(\"x\")\n@hipaa(\"x\")\nforbid (principal, action, resource)\nwhen { context.weekend };\n",
    );
    let (ok, _, err) = scan_with(dir.path());
    assert!(!ok);
    assert!(
        err.contains("zz-local.cedar:1:1: forbid policy `bare` has no @category"),
        "{err}"
    );
    assert!(
        err.contains("zz-local.cedar:5:1: policy `loud`: severity \"extreme\""),
        "{err}"
    );
}

#[test]
fn duplicate_ids_are_rejected() {
    let dir = pack_with(
        "zz-local.cedar",
        "@id(\"self-access\")\npermit (principal, action, resource) when { context.weekend };\n",
    );
    let (ok, _, err) = scan_with(dir.path());
    assert!(!ok);
    assert!(
        err.contains("zz-local.cedar:1:1: @id(\"self-access\") is already used"),
        "{err}"
    );
}

#[test]
fn broken_schema_is_reported_with_position() {
    let dir = pack_with(
        "schema.cedarschema",
        "entity User {\n  known: Bool,\n  oops\n};\n",
    );
    let (ok, _, err) = scan_with(dir.path());
    assert!(!ok);
    assert!(err.contains("schema.cedarschema:"), "{err}");
}

#[test]
fn a_local_policy_extends_the_pack() {
    let dir = pack_with(
        "zz-local.cedar",
        "@id(\"print-by-billing\")\n@category(\"print\")\n@severity(\"medium\")\n@explain(\"{user} printed {patient}\")\n@hipaa(\"164.502(b)\")\nforbid (principal, action == Action::\"print\", resource)\nwhen { principal in Role::\"billing\" };\n",
    );
    let fx = common::fixtures().join("clinic");
    let events = dir.path().join("print.ndjson");
    let line = std::fs::read_to_string(fx.join("events.ndjson"))
        .unwrap()
        .lines()
        .find(|l| l.contains("\"afterhours-neg\""))
        .unwrap()
        .replace("\"read\"", "\"print\"");
    std::fs::write(&events, line).unwrap();
    let (ok, stdout, err) = scan_events_with(dir.path(), &events);
    assert!(ok, "{err}");
    let f = common::findings(stdout.as_bytes());
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0]["detector"], "print-by-billing");
    assert_eq!(f[0]["explanation"], "clerk-cal printed pt-plain");
}
