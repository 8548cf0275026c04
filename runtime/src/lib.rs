#![doc = include_str!("../../README.md")]

pub mod manifest;

/// Long-form documentation.
pub mod docs {
    #[doc = include_str!("docs/manifest.md")]
    pub mod manifest {}
}
