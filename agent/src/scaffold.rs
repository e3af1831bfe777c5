//! `phiwatch plugin new NAME --lang rust|python|js`: a new detection plugin's files, from the
//! templates in `plugins/templates/` (a rule that builds and runs as it is, to be replaced),
//! with the WIT and, for Python and JavaScript, the helper module and a pinned build.

use std::path::{Path, PathBuf};
use thiserror::Error;

/// The toolchain versions phiwatch builds and tests its own Python and JavaScript plugins
/// with (plugins/build-guests).
pub const COMPONENTIZE_PY: &str = "0.25.1";
pub const COMPONENTIZE_JS: &str = "0.23.0";

const WIT: &str = include_str!("../../plugins/wit/detector.wit");
const CASES: &str = include_str!("../../plugins/templates/cases.toml");

#[derive(Debug, Error)]
pub enum ScaffoldError {
    #[error("plugin name {0:?}: use lowercase letters, digits and '-', starting with a letter")]
    Name(String),
    #[error("language {0:?}: use rust, python or js")]
    Lang(String),
    #[error("{0} exists and is not empty: choose another --dir")]
    Exists(PathBuf),
    #[error("writing {path}: {error}")]
    Write {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
}

/// Writes the plugin's files into `dir`; answers them. `sdk` is where a Rust plugin finds
/// phiwatch's plugin SDK.
pub fn new_plugin(
    name: &str,
    lang: &str,
    dir: &Path,
    sdk: &str,
) -> Result<Vec<PathBuf>, ScaffoldError> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(ScaffoldError::Name(name.into()));
    }
    let files: Vec<(&str, &str, bool)> = match lang {
        "rust" => vec![
            (
                "Cargo.toml",
                include_str!("../../plugins/templates/rust/Cargo.toml"),
                false,
            ),
            (
                "src/lib.rs",
                include_str!("../../plugins/templates/rust/src/lib.rs"),
                false,
            ),
            ("cases.toml", CASES, false),
        ],
        "python" => vec![
            (
                "app.py",
                include_str!("../../plugins/templates/python/app.py"),
                false,
            ),
            (
                "build.sh",
                include_str!("../../plugins/templates/python/build.sh"),
                true,
            ),
            (
                "phiwatch_plugin.py",
                include_str!("../../plugins/python/phiwatch_plugin.py"),
                false,
            ),
            ("wit/detector.wit", WIT, false),
            ("cases.toml", CASES, false),
        ],
        "js" => vec![
            (
                "app.js",
                include_str!("../../plugins/templates/js/app.js"),
                false,
            ),
            (
                "package.json",
                include_str!("../../plugins/templates/js/package.json"),
                false,
            ),
            (
                "build.mjs",
                include_str!("../../plugins/js/build.mjs"),
                false,
            ),
            (
                "phiwatch-plugin.js",
                include_str!("../../plugins/js/phiwatch-plugin.js"),
                false,
            ),
            ("wit/detector.wit", WIT, false),
            ("cases.toml", CASES, false),
        ],
        other => return Err(ScaffoldError::Lang(other.into())),
    };
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(ScaffoldError::Exists(dir.to_owned()));
    }
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{category}}", &name.replace('-', "_"))
            .replace("{{sdk}}", sdk)
            .replace("{{componentize_py}}", COMPONENTIZE_PY)
            .replace("{{componentize_js}}", COMPONENTIZE_JS)
    };
    let mut written = Vec::new();
    for (rel, template, executable) in files {
        let path = dir.join(rel);
        let io = |error| ScaffoldError::Write {
            path: path.clone(),
            error,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, fill(template)).map_err(io)?;
        if executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        }
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_directories_not_overwritten() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            new_plugin("Bad_Name", "rust", d.path(), "sdk"),
            Err(ScaffoldError::Name(_))
        ));
        assert!(matches!(
            new_plugin("ok", "cobol", d.path(), "sdk"),
            Err(ScaffoldError::Lang(_))
        ));
        let files = new_plugin("late-look", "rust", &d.path().join("p"), "/x/sdk").unwrap();
        let lib = std::fs::read_to_string(&files[1]).unwrap();
        assert!(lib.contains("\"late_look\"") && !lib.contains("{{"));
        let cargo = std::fs::read_to_string(&files[0]).unwrap();
        assert!(cargo.contains("path = \"/x/sdk\""));
        assert!(matches!(
            new_plugin("late-look", "python", &d.path().join("p"), "sdk"),
            Err(ScaffoldError::Exists(_))
        ));
    }
}
