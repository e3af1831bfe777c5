//! The daemon's configuration file (`phiwatch run --config FILE`).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// toml's message names the line and column and quotes the offending text.
    #[error("config {path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Store (`phiwatch.db`) and source checkpoints live here.
    pub data_dir: PathBuf,
    /// FHIR NDJSON context directory; without it every access is judged without directory facts.
    pub context: Option<PathBuf>,
    /// Policy directory; default: the built-in pack.
    pub policies: Option<PathBuf>,
    /// Detection settings; default: the built-in rules/detection.toml.
    pub rules: Option<PathBuf>,
    #[serde(default)]
    pub http: Http,
    #[serde(default, rename = "source")]
    pub sources: Vec<Source>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Address for `/healthz` and `/metrics`. Loopback by default: metrics are not public.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            listen: default_listen(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    /// Tail files matching globs.
    File(FileSource),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// One FHIR R4 AuditEvent (IHE BALP) per line.
    FhirAuditevent,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    /// Unique name: labels metrics and names the checkpoint file.
    pub name: String,
    /// Glob patterns. Include rotated names (`audit.ndjson*`) so nothing written just before a
    /// rotation is missed; events are idempotent, so reading a copy twice stores nothing twice.
    pub paths: Vec<String>,
    pub format: Format,
    /// How often to look for new data, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

fn default_poll_ms() -> u64 {
    250
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        let c: Config = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: p.clone(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: p.clone(),
            message,
        };
        if c.sources.is_empty() {
            return Err(invalid("no [[source]] declared: nothing to watch".into()));
        }
        let mut names = std::collections::HashSet::new();
        for Source::File(s) in &c.sources {
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            {
                return Err(invalid(format!(
                    "source name {:?}: use letters, digits, - and _",
                    s.name
                )));
            }
            if !names.insert(s.name.clone()) {
                return Err(invalid(format!("source name {:?} is used twice", s.name)));
            }
            if s.paths.is_empty() {
                return Err(invalid(format!("source {:?} has no paths", s.name)));
            }
            for g in &s.paths {
                glob::Pattern::new(g)
                    .map_err(|e| invalid(format!("source {:?}: glob {g:?}: {e}", s.name)))?;
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("phiwatch.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(&p)
    }

    #[test]
    fn minimal_config() {
        let c = load(
            "data_dir = \"/tmp/x\"\n[[source]]\nkind = \"file\"\nname = \"ehr\"\npaths = [\"/var/log/ehr/*.ndjson\"]\nformat = \"fhir-auditevent\"\n",
        )
        .unwrap();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:9464");
        let Source::File(s) = &c.sources[0];
        assert_eq!(s.poll_ms, 250);
    }

    #[test]
    fn unknown_key_names_line() {
        let e = load("data_dir = \"/tmp/x\"\ncontxt = \"/etc\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("contxt"), "{e}");
    }

    #[test]
    fn bad_source_is_explained() {
        let e = load("data_dir = \"/x\"\n[[source]]\nkind = \"file\"\nname = \"a b\"\npaths = [\"x\"]\nformat = \"fhir-auditevent\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("source name \"a b\""), "{e}");
        let e = load("data_dir = \"/x\"\n[[source]]\nkind = \"file\"\nname = \"a\"\npaths = [\"x\"]\nformat = \"csv\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("fhir-auditevent"), "{e}");
        let e = load("data_dir = \"/x\"\n").unwrap_err().to_string();
        assert!(e.contains("no [[source]]"), "{e}");
    }
}
