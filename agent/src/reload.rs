//! The detection inputs a running agent can reload: settings, policy pack and context.
//! A change is noticed by a stamp over the files' sizes and modification times (and on
//! SIGHUP); a candidate that fails to load is rejected whole and the running one stays.

use crate::context::feeds::{ContextFeed, FhirFeed};
use crate::context::{load_feeds, ContextStats, ContextStore};
use crate::detect::PolicyPack;
use crate::plugin::{Compiled, PluginInputs};
use crate::settings::Settings;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub rules: Option<PathBuf>,
    pub policies: Option<PathBuf>,
    /// The context feeds (files; an MLLP feed's messages come from `journal`).
    pub context: Vec<ContextFeed>,
    /// The store whose context journal (ADT messages received live) is replayed after the
    /// feeds' files.
    pub journal: Option<PathBuf>,
    pub plugins: PluginInputs,
}

impl Inputs {
    /// What a config names: its rules, policies, context feeds and plugins, with `journal`
    /// (a store whose context journal is replayed after the feeds' files).
    pub fn of_config(cfg: &crate::config::Config, journal: Option<PathBuf>) -> Inputs {
        Inputs {
            rules: cfg.rules.clone(),
            policies: cfg.policies.clone(),
            context: cfg.context_feeds(),
            journal,
            plugins: cfg.plugin_inputs(),
        }
    }

    /// The feeds of a `--context DIR` option: one FHIR directory.
    pub fn fhir_dir(dir: Option<PathBuf>) -> Vec<ContextFeed> {
        dir.map(|path| {
            ContextFeed::Fhir(FhirFeed {
                path,
                max_age_hours: None,
            })
        })
        .into_iter()
        .collect()
    }
}

pub struct Loaded {
    pub settings: Settings,
    pub pack: PolicyPack,
    /// Rules for PHI folder events: `POLICIES/files/`, else the built-in ones.
    pub file_pack: PolicyPack,
    pub context: ContextStore,
    /// What the context load saw (empty without a context directory).
    pub context_stats: ContextStats,
    /// Verified, compiled plugins whose settings they accepted.
    pub plugins: Vec<Arc<Compiled>>,
}

/// What is loaded, for the console's status page: no PHI, names and versions only.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LoadedSummary {
    pub loaded_at: String,
    pub policies: Vec<PolicySummary>,
    pub file_policies: Vec<PolicySummary>,
    pub plugins: Vec<PluginSummary>,
    pub context: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicySummary {
    pub id: String,
    pub category: String,
    pub severity: String,
    pub file: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginSummary {
    pub name: String,
    pub version: String,
    pub categories: Vec<String>,
    pub source: String,
    pub sha256: String,
}

impl Loaded {
    pub fn summary(&self) -> LoadedSummary {
        let rules = |p: &PolicyPack| {
            p.rules()
                .iter()
                .map(|r| PolicySummary {
                    id: r.id.clone(),
                    category: r.category.clone(),
                    severity: r.severity.as_str().to_owned(),
                    file: r.file.clone(),
                })
                .collect()
        };
        LoadedSummary {
            loaded_at: crate::time::format_ms(crate::time::now_ms()),
            policies: rules(&self.pack),
            file_policies: rules(&self.file_pack),
            plugins: self
                .plugins
                .iter()
                .map(|c| PluginSummary {
                    name: c.name.to_string(),
                    version: c.description.version.clone(),
                    categories: c.description.categories.clone(),
                    source: c.source.clone(),
                    sha256: c.sha256.clone(),
                })
                .collect(),
            context: self.context_stats.render().trim().to_owned(),
        }
    }
}

/// Inputs that cannot be loaded; on a reload, the version in force keeps running.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    #[error("{what} {dir} is invalid:\n{error}")]
    Policies {
        what: &'static str,
        dir: String,
        error: crate::detect::PolicyError,
    },
    #[error("reading the context journal of {db}: {error}")]
    Journal { db: String, error: rusqlite::Error },
    #[error("loading the context feeds: {0}")]
    Feeds(std::io::Error),
    #[error(transparent)]
    Plugins(#[from] crate::plugin::PluginError),
}

impl Inputs {
    pub fn load(&self) -> Result<Loaded, LoadError> {
        let journal = match &self.journal {
            Some(db) if db.exists() => {
                crate::store::journal(db).map_err(|error| LoadError::Journal {
                    db: db.display().to_string(),
                    error,
                })?
            }
            _ => Vec::new(),
        };
        self.load_with_journal(&journal)
    }

    /// As [`Inputs::load`], replaying `journal` (feed, message) after the feeds' files rather
    /// than the SQLite store's (fleet mode's detector reads it from PostgreSQL).
    pub fn load_with_journal(&self, journal: &[(String, String)]) -> Result<Loaded, LoadError> {
        let invalid = |what, dir: &Path| {
            let dir = dir.display().to_string();
            move |error| LoadError::Policies { what, dir, error }
        };
        let settings = match &self.rules {
            Some(p) => Settings::load(p)?,
            None => Settings::default(),
        };
        let pack = match &self.policies {
            Some(d) => PolicyPack::load_dir(d).map_err(invalid("policy pack", d))?,
            None => PolicyPack::embedded(),
        };
        let file_pack = match &self.policies {
            Some(d) if d.join("files").is_dir() => {
                let dir = d.join("files");
                PolicyPack::load_files_dir(&dir).map_err(invalid("folder policy pack", &dir))?
            }
            _ => PolicyPack::embedded_files(),
        };
        let (context, context_stats) = if self.context.is_empty() && journal.is_empty() {
            Default::default()
        } else {
            load_feeds(&self.context, &settings, journal).map_err(LoadError::Feeds)?
        };
        tracing::info!(
            users = context.users.len(),
            patients = context.patients.len(),
            relationships = context.relationship_count(),
            bad_lines = context_stats.bad_lines,
            "context loaded"
        );
        for p in &context_stats.problems {
            tracing::warn!("context: {p}");
        }
        let plugins = self.plugins.load()?;
        if !plugins.is_empty() {
            let names: Vec<&str> = plugins.iter().map(|p| &*p.name).collect();
            tracing::info!(plugins = %names.join(", "), "plugins loaded");
        }
        Ok(Loaded {
            settings,
            pack,
            file_pack,
            context,
            context_stats,
            plugins,
        })
    }

    /// Changes whenever a file under the inputs is added, removed, resized or touched.
    pub fn stamp(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for p in [&self.rules, &self.policies].into_iter().flatten() {
            stamp_path(p, &mut h);
        }
        for f in &self.context {
            for p in f.watched() {
                stamp_path(&p, &mut h);
            }
        }
        for p in self.plugins.files() {
            stamp_path(&p, &mut h);
        }
        h.finish()
    }
}

/// A stamp of one file or directory tree (size and modification times).
pub fn stamp_of(p: &Path) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    stamp_path(p, &mut h);
    h.finish()
}

fn stamp_path(p: &Path, h: &mut impl Hasher) {
    let Ok(meta) = std::fs::metadata(p) else {
        p.hash(h);
        0u8.hash(h);
        return;
    };
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        entries.sort();
        for e in entries {
            stamp_path(&e, h);
        }
    } else {
        p.hash(h);
        meta.len().hash(h);
        meta.modified().ok().hash(h);
    }
}
