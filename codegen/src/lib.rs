//! The Raindrop manifest compiler.
//!
//! `raindrop.manifest` (HCL) goes through four stages, each its own module:
//!
//! 1. [`parse`](parse::parse) — syntax, block kinds, attribute names and value types;
//! 2. [`validate`](validate::validate) — names, duplicates, references, settings that conflict;
//! 3. [`normalize`](normalize::normalize) — defaults and inferred wiring, giving the
//!    [`model::Application`] the runtime runs;
//! 4. [`generate`] — the Rust bindings (`Env`, handler names) the macros expand to.
//!
//! Every stage records the user's mistakes as [`Diagnostic`]s and goes on, so one run reports
//! all of them; [`Error`] is only for what stops work (an unreadable file).
//!
//! ```
//! let source = raindrop_codegen::SourceFile::new(
//!     "raindrop.manifest",
//!     r#"application "demo" {
//!          queue "jobs" {}
//!          task "worker" {}
//!        }"#,
//! );
//! let compiled = raindrop_codegen::compile(&source);
//! let app = compiled.application.expect("valid manifest");
//! assert_eq!(app.tasks[0].name.as_str(), "worker");
//! ```

pub mod ast;
pub mod diagnostic;
#[cfg(feature = "cli")]
pub mod emit;
pub mod format;
pub mod generate;
pub mod graph;
pub mod locate;
pub mod model;
pub mod name;
pub mod normalize;
pub mod parse;
pub mod source;
pub mod suggest;
pub mod validate;
pub mod value;

#[cfg(feature = "cli")]
pub mod scaffold;

#[cfg(feature = "macros")]
pub mod expand;

use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, Severity, Style};
pub use locate::{MANIFEST_ENV, find as find_manifest};
pub use model::Application;
pub use source::{SourceFile, Span};

/// The file name a manifest has.
pub const MANIFEST_FILE: &str = "raindrop.manifest";

/// What stops the compiler before it can report on the manifest itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The manifest file could not be read.
    #[error("cannot read manifest `{path}`: {source}")]
    Read {
        /// The path that was tried.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The outcome of compiling a manifest.
#[derive(Debug)]
pub struct Compiled {
    /// The normalized application; `None` when there are errors.
    pub application: Option<Application>,
    /// Every error and warning, in source order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Compiled {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The diagnostics rendered compiler-style, with a summary line.
    pub fn render(&self, source: &SourceFile, style: Style) -> String {
        diagnostic::render(source, &self.diagnostics, style)
    }
}

/// Parses, validates and normalizes a manifest.
pub fn compile(source: &SourceFile) -> Compiled {
    let mut diags = diagnostic::Diagnostics::default();
    let application = parse::parse(source, &mut diags).and_then(|ast| {
        validate::validate(&ast, &mut diags);
        normalize::normalize(&ast, &mut diags)
    });
    let application = if diags.has_errors() {
        None
    } else {
        application
    };
    Compiled {
        application,
        diagnostics: diags.into_sorted(),
    }
}

/// Reads the manifest at `path` (a file, or a directory holding `raindrop.manifest`).
pub fn read(path: &Path) -> Result<SourceFile> {
    let path = if path.is_dir() {
        path.join(MANIFEST_FILE)
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
        path: path.clone(),
        source,
    })?;
    Ok(SourceFile::new(path.display().to_string(), text))
}

/// Reads and compiles the manifest at `path`.
pub fn load(path: &Path) -> Result<(SourceFile, Compiled)> {
    let source = read(path)?;
    let compiled = compile(&source);
    Ok((source, compiled))
}
