//! The expansions of the `raindrop-macros` entry points, as functions on token streams so they
//! can be tested without a compiler (tokio-macros' `entry.rs`, sqlx-macros-core).
//!
//! Every macro reads the manifest: an explicit path, else `$RAINDROP_MANIFEST`, else the
//! nearest `raindrop.manifest` from `$CARGO_MANIFEST_DIR` up. Its compiled form is cached by path and
//! modification time, since every attribute in a crate asks for it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use proc_macro2::{Span, TokenStream};
use quote::quote;

use crate::{Compiled, SourceFile, Style};

mod app;
mod handler;

pub use app::{app, main};
pub use handler::{Kind, handler};

/// A manifest as a macro sees it.
pub(crate) struct Manifest {
    pub(crate) path: PathBuf,
    pub(crate) source: SourceFile,
    pub(crate) compiled: Compiled,
}

/// Where the manifest is, for a macro in the crate being compiled.
pub(crate) fn locate(explicit: Option<&str>) -> PathBuf {
    let root = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(PathBuf::new, PathBuf::from);
    crate::find_manifest(explicit.map(Path::new), &root)
}

/// The compiled manifest at `path`, or a `compile_error!` saying why there is none.
pub(crate) fn load(path: &Path) -> Result<Arc<Manifest>, TokenStream> {
    type Cache = Mutex<HashMap<PathBuf, (Option<SystemTime>, Arc<Manifest>)>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let cache = CACHE.get_or_init(Cache::default);
    if let Some((when, manifest)) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(path)
        && modified.is_some()
        && *when == modified
    {
        return Ok(manifest.clone());
    }
    let source = crate::read(path).map_err(|err| error(Span::call_site(), &format!("{err}")))?;
    let compiled = crate::compile(&source);
    let manifest = Arc::new(Manifest {
        path: path.to_path_buf(),
        source,
        compiled,
    });
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(path.to_path_buf(), (modified, manifest.clone()));
    Ok(manifest)
}

/// The manifest's errors, rendered compiler-style, as a `compile_error!` at the macro call.
pub(crate) fn manifest_errors(manifest: &Manifest) -> Option<TokenStream> {
    manifest.compiled.has_errors().then(|| {
        let rendered = manifest.compiled.render(&manifest.source, Style::Plain);
        error(
            Span::call_site(),
            &format!("raindrop.manifest has errors:\n\n{rendered}"),
        )
    })
}

/// `compile_error!(message)` at `span`.
pub(crate) fn error(span: Span, message: &str) -> TokenStream {
    syn::Error::new(span, message).to_compile_error()
}

/// The path a generated item uses for the application's glue module.
pub(crate) fn glue() -> TokenStream {
    quote!(crate::__raindrop)
}
