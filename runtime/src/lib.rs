#![doc = include_str!("../../README.md")]

mod alert;
pub mod app;
pub mod consumer;
mod control;
pub mod cron;
pub mod engine;
pub mod error;
pub mod event;
pub mod feed;
pub mod job;
pub mod kv;
pub mod manifest;
pub mod observer;
pub mod operations;
mod plan;
pub mod queue;
pub mod registry;
pub mod retry;
pub mod secret;
pub mod service;
mod settings;
mod sink;
pub mod store;
pub mod task;
pub mod telemetry;
mod worker;

pub use axum;
pub use error::{Error, Result};
pub use kv::KvCache;
pub use queue::Queue;
pub use raindrop_macros::{app, main, observer, service, task};
pub use secret::Secret;

/// What handlers usually need.
pub mod prelude {
    pub use crate::consumer::{Message, MessageBatch};
    pub use crate::cron::ScheduledEvent;
    pub use crate::event::Event;
    pub use crate::observer::{AlertState, Observed};
    pub use crate::service::Service;
    pub use crate::task::{Job, JobContext, TaskError};
    pub use crate::{observer, service, task};
}

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

/// Long-form documentation.
pub mod docs {
    #[doc = include_str!("docs/manifest.md")]
    pub mod manifest {}

    #[doc = include_str!("docs/engine.md")]
    pub mod engine {}

    #[doc = include_str!("docs/threat_model.md")]
    pub mod threat_model {}

    #[doc = include_str!("docs/alerting.md")]
    pub mod alerting {}

    #[doc = include_str!("docs/scaling.md")]
    pub mod scaling {}
}
