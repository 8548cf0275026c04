//! What the runtime's integration tests share: a compiled manifest, the stores, a handler that
//! succeeds. A test file takes it with `mod support;`.
#![allow(dead_code, unreachable_pub)] // each test file uses its own part of it

use std::path::Path;
use std::sync::Arc;

use raindrop::manifest::Application;
use raindrop::store::Store;
use raindrop::store::memory::MemoryStore;
use raindrop::store::redis::RedisStore;
use raindrop::store::sqlite::SqliteStore;
use raindrop::task::{Handler, JobContext, TaskError, handler_fn};

/// The application `manifest` declares; a manifest with errors panics with its diagnostics.
pub fn app(manifest: &str) -> Application {
    let source = raindrop_codegen::SourceFile::new("test.manifest", manifest);
    let compiled = raindrop_codegen::compile(&source);
    let rendered = compiled.render(&source, raindrop_codegen::Style::Plain);
    compiled.application.unwrap_or_else(|| panic!("{rendered}"))
}

/// An empty in-memory store.
pub fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

/// The SQLite store in the file at `path`, created if missing.
pub async fn sqlite(path: &Path) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::open(path)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display())),
    )
}

/// The Redis store at `url` (a test's `?prefix=` included).
pub async fn redis(url: &str) -> Arc<dyn Store> {
    Arc::new(
        RedisStore::open(url)
            .await
            .unwrap_or_else(|e| panic!("open the Redis store: {e}")),
    )
}

/// A task handler that succeeds at once with no result.
pub fn succeed() -> impl Handler {
    handler_fn(|_ctx: JobContext| async move { Ok::<_, TaskError>(()) })
}
pub mod counting;
