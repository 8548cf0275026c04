#![doc = include_str!("../../README.md")]

pub mod cron;
pub mod engine;
pub mod error;
pub mod event;
pub mod job;
pub mod kv;
pub mod manifest;
pub mod observer;
pub mod queue;
pub mod retry;
pub mod service;
pub mod store;
pub mod task;
mod worker;

pub use error::{Error, Result};

/// Long-form documentation.
pub mod docs {
    #[doc = include_str!("docs/manifest.md")]
    pub mod manifest {}

    #[doc = include_str!("docs/engine.md")]
    pub mod engine {}
}
