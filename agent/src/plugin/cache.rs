//! Compiled components on disk, keyed by the component's SHA-256 and the engine's
//! compatibility hash (wasmtime version and settings): a restart skips compilation.

use super::sandbox::engine;
use std::hash::{Hash, Hasher};
use std::path::Path;
use wasmtime::component::Component;

/// Why a component cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Engine(#[from] super::PluginError),
    #[error("cannot compile: {0:#}")]
    Compile(wasmtime::Error),
}

pub fn compile(
    bytes: &[u8],
    sha256: &str,
    cache_dir: Option<&Path>,
) -> Result<Component, CompileError> {
    let engine = engine()?;
    let Some(dir) = cache_dir else {
        return Component::new(engine, bytes).map_err(CompileError::Compile);
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let file = dir.join(format!("{sha256}-{:016x}.cwasm", h.finish()));
    if file.is_file() {
        // SAFETY: the file was written by this agent from `Component::serialize` under its
        // own data directory (mode 0700); wasmtime checks version and settings on load. A
        // file that fails those checks is recompiled below.
        match unsafe { Component::deserialize_file(engine, &file) } {
            Ok(c) => return Ok(c),
            Err(e) => tracing::warn!(
                "plugin cache {} unusable, recompiling: {e:#}",
                file.display()
            ),
        }
    }
    let component = Component::new(engine, bytes).map_err(CompileError::Compile)?;
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| component.serialize().map_err(std::io::Error::other))
        .and_then(|bytes| {
            let tmp = file.with_extension("tmp");
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &file)
        });
    if let Err(e) = written {
        tracing::warn!("cannot cache the compiled plugin in {}: {e}", dir.display());
    }
    Ok(component)
}
