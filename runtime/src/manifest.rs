//! The application's manifest, loaded and checked at startup.
//!
//! The runtime starts from the same normalized model `raindrop inspect` prints: every default
//! filled in, every wire resolved. A manifest with errors stops startup with the same
//! compiler-style diagnostics `raindrop validate` shows.

use std::path::Path;

pub use raindrop_codegen::graph::mermaid as diagram;
pub use raindrop_codegen::locate::{MANIFEST_ENV, find, overridden};
pub use raindrop_codegen::model::*;
pub use raindrop_codegen::{MANIFEST_FILE, Style};

/// Why the manifest could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] raindrop_codegen::Error),
    /// The manifest has errors; `rendered` shows each one compiler-style.
    #[error("{rendered}")]
    Invalid {
        /// Every diagnostic, rendered, with a summary line.
        rendered: String,
    },
}

/// A checked manifest.
#[derive(Debug)]
pub struct Loaded {
    /// The normalized application.
    pub application: Application,
    /// Rendered warnings, empty when there are none.
    pub warnings: String,
}

/// Reads, validates and normalizes the manifest at `path`.
pub fn load(path: &Path, style: Style) -> Result<Loaded, Error> {
    let (source, compiled) = raindrop_codegen::load(path)?;
    let rendered = || compiled.render(&source, style);
    match &compiled.application {
        Some(application) => Ok(Loaded {
            application: application.clone(),
            warnings: if compiled.diagnostics.is_empty() {
                String::new()
            } else {
                rendered()
            },
        }),
        None => Err(Error::Invalid {
            rendered: rendered(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(MANIFEST_FILE);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("raindrop-manifest-{name}-{}", std::process::id()))
    }

    #[test]
    fn a_valid_manifest_loads_with_its_wiring() {
        let path = write(
            &scratch("valid"),
            "application \"a\" {\n  queue \"q\" {}\n  task \"t\" {}\n}\n",
        );
        let loaded = load(&path, Style::Plain).unwrap();
        assert_eq!(loaded.application.tasks[0].name.as_str(), "t");
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn warnings_are_rendered_but_do_not_stop_startup() {
        let path = write(
            &scratch("warn"),
            "application \"a\" {\n  queue \"q\" {}\n  task \"t\" {}\n  kv_store \"s\" {}\n}\n",
        );
        let loaded = load(&path, Style::Plain).unwrap();
        assert!(
            loaded.warnings.contains("warning[deprecated-kind]"),
            "{}",
            loaded.warnings
        );
    }

    #[test]
    fn errors_stop_startup_with_rendered_diagnostics() {
        let path = write(
            &scratch("invalid"),
            "application \"a\" {\n  queue \"q\" {}\n  task \"t\" {\n    concurrency = 0\n  }\n}\n",
        );
        let err = load(&path, Style::Plain).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("error[out-of-range]"), "{message}");
        assert!(message.contains(":4:19"), "{message}");
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let err = load(Path::new("/nonexistent/raindrop.manifest"), Style::Plain).unwrap_err();
        assert!(matches!(err, Error::Read(_)));
        assert!(err.to_string().contains("/nonexistent/raindrop.manifest"));
    }
}
