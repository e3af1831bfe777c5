//! The library's layer order, checked by a test: a module may use modules of its own layer
//! or below, never above, and no two modules may use each other, even indirectly.
//!
//! Accesses flow source → decode → enrich → detect → alert → respond → notify, but code
//! depends the other way round from its entry points: an intake server (syslog, MLLP, a
//! watched folder) builds itself from its declaration in `config` and hands lines to `decode`,
//! so it sits above both. See ARCHITECTURE.md for the reasons of each layer.

/// Top-level modules of `agent/src` by layer, lowest first. A new module must be placed here.
pub const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundation",
        &[
            "time",
            "errors",
            "event",
            "finding",
            "fhir",
            "tabular",
            "net",
            "tls",
            "fault",
            "spool",
            "tail",
            "settings",
            "quarantine",
            "invalid",
            "layers",
        ],
    ),
    ("decode", &["decode"]),
    ("context", &["context"]),
    ("enrich", &["enrich"]),
    ("detect", &["detect", "plugin"]),
    (
        "assembly",
        &["pipeline", "store", "fleet", "outbox", "config"],
    ),
    (
        "intake and alerting",
        &["mllp", "syslog", "watch", "alert", "reload", "coverage"],
    ),
    ("respond", &["scan", "notify", "case", "mine", "backtest"]),
    ("reporting", &["metrics", "noise"]),
    ("console", &["console"]),
    (
        "commands",
        &[
            "demo", "trial", "scaffold", "source", "run", "check", "bench",
        ],
    ),
];

/// Whether a module may use `anyhow`: only the commands layer, where errors are reported to
/// a person and never matched on. Below it, errors are typed so callers can act on them.
pub fn may_use_anyhow(module: &str) -> bool {
    layer_of(module) == Some(LAYERS.len() - 1)
}

/// Layer index of a module, if declared.
pub fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
}

/// What breaks the order in `edges` (module, module it uses): undeclared modules, edges to a
/// higher layer, and cycles.
pub fn violations(edges: &[(String, String)]) -> Vec<String> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut out = BTreeSet::new();
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, to) in edges {
        for m in [from, to] {
            if layer_of(m).is_none() {
                out.insert(format!("module `{m}` is not placed in layers::LAYERS"));
            }
        }
        if let (Some(a), Some(b)) = (layer_of(from), layer_of(to)) {
            if b > a {
                out.insert(format!(
                    "`{from}` ({}) uses `{to}` ({}), a higher layer",
                    LAYERS[a].0, LAYERS[b].0
                ));
            }
        }
        graph.entry(from).or_default().insert(to);
    }
    // A cycle inside one layer: depth-first search for a path back to the start.
    for &start in graph.keys() {
        let mut stack: Vec<&str> = graph[start].iter().copied().collect();
        let mut seen = BTreeSet::new();
        while let Some(m) = stack.pop() {
            if m == start {
                out.insert(format!("`{start}` depends on itself through other modules"));
                break;
            }
            if seen.insert(m) {
                stack.extend(graph.get(m).into_iter().flatten().copied());
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The top-level module a source file belongs to, or `None` for the crate root.
    fn module_of(src: &Path, file: &Path) -> Option<String> {
        let rel = file.strip_prefix(src).ok()?;
        let first = rel.components().next()?.as_os_str().to_str()?;
        let name = first.strip_suffix(".rs").unwrap_or(first);
        (!matches!(name, "lib" | "main" | "cmd")).then(|| name.to_owned())
    }

    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).expect("agent/src is readable") {
            let p = e.expect("directory entry").path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// `crate::x` paths in a file's code before its unit tests (tests may reach anywhere).
    fn uses(text: &str) -> Vec<String> {
        let code = text
            .split("\n#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or(text);
        code.match_indices("crate::")
            .map(|(i, m)| {
                code[i + m.len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .filter(|m| !m.is_empty())
            .collect()
    }

    fn edges() -> Vec<(String, String)> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut edges = Vec::new();
        for f in files {
            let Some(from) = module_of(&src, &f) else {
                continue;
            };
            let text = std::fs::read_to_string(&f).expect("source file is readable");
            for to in uses(&text) {
                if to != from {
                    edges.push((from.clone(), to));
                }
            }
        }
        edges.sort();
        edges.dedup();
        edges
    }

    #[test]
    fn the_library_keeps_its_layer_order() {
        let e = edges();
        assert!(
            e.len() > 100,
            "the scan found the crate's imports ({})",
            e.len()
        );
        let v = violations(&e);
        assert!(v.is_empty(), "layering broken:\n  {}", v.join("\n  "));
    }

    #[test]
    fn anyhow_stays_in_the_commands_layer() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut offenders = Vec::new();
        for f in files {
            let Some(m) = module_of(&src, &f) else {
                continue;
            };
            let text = std::fs::read_to_string(&f).expect("source file is readable");
            let code = text
                .split("\n#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or(&text);
            let uses_anyhow = code.contains("anyhow::") || code.contains("anyhow!");
            if uses_anyhow && !may_use_anyhow(&m) {
                offenders.push(f.strip_prefix(&src).unwrap_or(&f).display().to_string());
            }
        }
        assert!(
            offenders.is_empty(),
            "anyhow below the commands layer: {offenders:?}"
        );
        assert!(may_use_anyhow("run") && !may_use_anyhow("store"));
    }

    #[test]
    fn a_back_edge_or_a_cycle_is_reported() {
        let mut e = edges();
        e.push(("decode".into(), "console".into()));
        let v = violations(&e);
        assert!(
            v.iter()
                .any(|x| x.contains("`decode` (decode) uses `console`")),
            "{v:?}"
        );
        let cycle = [
            ("alert".to_owned(), "reload".to_owned()),
            ("reload".to_owned(), "alert".to_owned()),
        ];
        let v = violations(&cycle);
        assert!(v.iter().any(|x| x.contains("depends on itself")), "{v:?}");
        let v = violations(&[("decode".into(), "brand_new".into())]);
        assert!(v.iter().any(|x| x.contains("not placed")), "{v:?}");
    }
}
