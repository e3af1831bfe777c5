//! `phiwatch plugin`: list, export and try the WASM detection plugins.

use super::DetectionArgs;
use anyhow::{bail, Result};
use clap::Subcommand;
use phiwatch::plugin::PluginInputs;
use phiwatch::reload::Inputs;
use std::io::Write;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum PluginCmd {
    /// The plugins shipped in this binary, with version, categories and SHA-256.
    List,
    /// Write the shipped plugin components to DIR (NAME.wasm), to inspect or pin them.
    Export { dir: PathBuf },
    /// Start a new plugin in Rust, Python or JavaScript: its source (a small working rule to
    /// replace), the WIT, a build (Python: ./build.sh with componentize-py; JavaScript:
    /// `npm install && node build.mjs app.js NAME.wasm` with componentize-js; Rust: `cargo
    /// build --release --target wasm32-wasip2`) and a cases file.
    New {
        /// The plugin's name (lowercase letters, digits and '-').
        name: String,
        #[arg(long, value_parser = ["rust", "python", "js"])]
        lang: String,
        /// Where to write it (default ./NAME); must be empty or missing.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rust: the path of phiwatch's plugin SDK (plugins/sdk in a phiwatch checkout) as the
        /// new Cargo.toml should name it.
        #[arg(long, default_value = "../phiwatch/plugins/sdk")]
        sdk: String,
    },
    /// Run one plugin over AuditEvent NDJSON and print its findings (NDJSON on stdout, a
    /// summary with failures and cost per access on stderr). For plugin authors: no sha256
    /// pin is needed here. Exits 1 when a call failed.
    Test {
        /// The component (.wasm), or builtin:NAME for a shipped plugin.
        plugin: String,
        /// AuditEvent NDJSON files.
        #[arg(long, num_args = 1.., required_unless_present = "cases", conflicts_with = "cases")]
        events: Vec<PathBuf>,
        /// Run the test cases in this TOML file instead (events in, exactly the findings
        /// expected out; README: Testing a plugin). Exits 1 when a case fails.
        #[arg(long)]
        cases: Option<PathBuf>,
        /// With --cases: also fail when a category the plugin declares has no case raising
        /// it, or no case expects nothing.
        #[arg(long, requires = "cases")]
        require_coverage: bool,
        #[command(flatten)]
        detection: DetectionArgs,
        /// TOML file holding the plugin's settings (the keys of [plugin.settings]).
        #[arg(long)]
        settings: Option<PathBuf>,
        /// Facts to expose: names, addresses (comma-separated). Default: none for a file,
        /// what a shipped plugin declares it needs.
        #[arg(long, value_delimiter = ',')]
        expose: Option<Vec<String>>,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        #[arg(long, default_value_t = 64)]
        memory_mb: u64,
        /// Accesses per call.
        #[arg(long, default_value_t = 512)]
        batch: usize,
    },
}

pub fn run(c: PluginCmd) -> Result<()> {
    use phiwatch::plugin::{Exposed, PluginSpec};
    use phiwatch::trial;
    match c {
        PluginCmd::List => print!("{}", trial::list()?),
        PluginCmd::Export { dir } => {
            for p in trial::export(&dir)? {
                println!("{}", p.display());
            }
        }
        PluginCmd::New {
            name,
            lang,
            dir,
            sdk,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            for f in phiwatch::scaffold::new_plugin(&name, &lang, &dir, &sdk)? {
                println!("{}", f.display());
            }
        }
        PluginCmd::Test {
            plugin,
            events,
            cases,
            require_coverage,
            detection,
            settings,
            expose,
            timeout_ms,
            memory_mb,
            batch,
        } => {
            let expose = expose
                .map(|v| {
                    v.iter()
                        .map(|e| match e.trim() {
                            "names" => Ok(Exposed::Names),
                            "addresses" => Ok(Exposed::Addresses),
                            other => bail!("--expose {other:?}: use names, addresses"),
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .transpose()?;
            let mut spec = PluginSpec::builtin("");
            spec.builtin = None;
            spec.expose = expose;
            spec.timeout_ms = timeout_ms;
            spec.memory_mb = memory_mb;
            spec.batch = batch;
            let inputs = Inputs {
                rules: detection.rules,
                policies: detection.policies,
                context: Inputs::fhir_dir(detection.context),
                journal: None,
                plugins: PluginInputs::default(),
            };
            if let Some(file) = cases {
                let r = trial::run_cases(&plugin, spec, settings.as_deref(), &file, inputs)?;
                print!("{}", r.text);
                if r.failed > 0 || (require_coverage && !r.uncovered.is_empty()) {
                    std::process::exit(1);
                }
                return Ok(());
            }
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let summary = trial::run(
                trial::TrialOptions {
                    plugin,
                    events,
                    inputs,
                    settings,
                    spec,
                },
                &mut out,
            )?;
            out.flush()?;
            eprint!("{}", summary.text);
            if summary.failed > 0 {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
