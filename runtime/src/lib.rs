#![doc = include_str!("../../README.md")]

pub mod error;
pub mod event;
pub mod job;
pub mod manifest;
pub mod store;

pub use error::{Error, Result};

/// Long-form documentation.
pub mod docs {
    #[doc = include_str!("docs/manifest.md")]
    pub mod manifest {}
}
