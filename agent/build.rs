//! Builds the shipped detection plugins (and the test plugins) for wasm32-wasip2, so the
//! agent embeds them and `phiwatch demo` runs them with no separate step.
//!
//! The plugins are members of this workspace; they are built by a nested cargo into their
//! own target directory (`target/wasm`), so the outer build's lock is never contended.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
/// Crates built, and whether the agent embeds them: shipped detection plugins, the tutorial
/// plugin (`phiwatch bench --plugins` measures it), test-only plugins.
#[derive(PartialEq)]
enum Use {
    Shipped,
    Tutorial,
    TestOnly,
}

const PLUGINS: &[(&str, Use)] = &[
    ("volume-anomaly", Use::Shipped),
    ("break-glass", Use::Shipped),
    ("family-match", Use::Shipped),
    ("first-access", Use::Shipped),
    ("night-export", Use::Tutorial),
    ("hostile-plugin", Use::TestOnly),
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .parent()
        .expect("agent/ sits in the workspace")
        .to_owned();
    for dir in ["plugins", "tests/plugins"] {
        watch(&root.join(dir));
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );

    let target_dir = root.join("target").join("wasm");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    for (name, _) in PLUGINS {
        cmd.args(["-p", name]);
    }
    // The outer build's flags and wrappers (clippy, coverage) are for the host, not wasm.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo for the plugins: {e}"));
    if !status.success() {
        panic!(
            "building the detection plugins for {TARGET} failed (see above). If the target is \
             missing, add it with: rustup target add {TARGET}"
        );
    }
    let built = target_dir.join(TARGET).join("release");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let mut shipped = String::from("&[\n");
    for (name, role) in PLUGINS {
        if *role == Use::TestOnly {
            continue;
        }
        let file = format!("{}.wasm", name.replace('-', "_"));
        let src = built.join(&file);
        let dst = out.join(&file);
        std::fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copying {}: {e}", src.display()));
        let include = format!("include_bytes!({:?}).as_slice()", dst.display().to_string());
        match role {
            Use::Shipped => shipped.push_str(&format!("    ({name:?}, {include}),\n")),
            _ => std::fs::write(out.join("tutorial_plugin.rs"), include)
                .expect("writing tutorial_plugin.rs"),
        }
    }
    shipped.push_str("]\n");
    std::fs::write(out.join("shipped_plugins.rs"), shipped).expect("writing shipped_plugins.rs");
    println!("cargo:rustc-env=PHIWATCH_WASM_DIR={}", built.display());
}

fn watch(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "target" || name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            watch(&p);
        } else {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
}
