//! Every command's `--help`, held to a snapshot: moving commands between modules must not
//! change what users read. After a deliberate change, refresh the snapshot with
//! `PHIWATCH_BLESS=1 cargo test -p phiwatch --test cli_help`.

mod common;

/// The subcommand names listed under "Commands:" in a help text.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // Wrapped descriptions are indented further than the names.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

fn walk(path: &mut Vec<String>, out: &mut String) {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let o = common::phiwatch(&args);
    assert!(o.status.success(), "{args:?}: {}", common::text(&o.stderr));
    let help = common::text(&o.stdout);
    out.push_str(&format!("=== phiwatch {}\n{help}\n", path.join(" ")));
    for sub in subcommands(&help) {
        path.push(sub);
        walk(path, out);
        path.pop();
    }
}

#[test]
fn every_help_text_matches_the_snapshot() {
    let mut got = String::new();
    walk(&mut Vec::new(), &mut got);
    let file = common::fixtures().join("cli-help.txt");
    if std::env::var_os("PHIWATCH_BLESS").is_some() {
        std::fs::write(&file, &got).unwrap();
    }
    let want = std::fs::read_to_string(&file).expect("tests/fixtures/cli-help.txt");
    assert!(
        got.matches("=== phiwatch").count() > 40,
        "every command walked"
    );
    if got != want {
        let first = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "help changed at line {}:\n  now:  {:?}\n  was:  {:?}\n(PHIWATCH_BLESS=1 to accept)",
            first + 1,
            got.lines().nth(first),
            want.lines().nth(first)
        );
    }
}
