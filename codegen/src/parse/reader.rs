//! [`Reader`]: reads one body's attributes and blocks and reports whatever nobody asked for.

use hcl_edit::expr::Expression;
use hcl_edit::structure::{Attribute, Block, Body, Structure};

use super::header::unlabelled;
use super::span;
use crate::ast;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::source::Spanned;
use crate::suggest::did_you_mean;

/// Reads the attributes and blocks of one body, remembering what it was asked for, so that
/// whatever is left over is reported as unknown with a suggestion from what is known.
pub(super) struct Reader<'a> {
    body: &'a Body,
    owner: String,
    used: Vec<bool>,
    known_attrs: Vec<&'static str>,
    known_blocks: Vec<&'static str>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(body: &'a Body, header: &ast::Header) -> Self {
        let owner = format!("{} `{}`", header.kind, header.name.value);
        Self::with_owner(body, owner)
    }

    pub(super) fn nested(body: &'a Body, header: &ast::Header, block: &str) -> Self {
        let owner = format!("`{block}` of {} `{}`", header.kind, header.name.value);
        Self::with_owner(body, owner)
    }

    fn with_owner(body: &'a Body, owner: String) -> Self {
        Self {
            body,
            owner,
            used: vec![false; body.len()],
            known_attrs: Vec::new(),
            known_blocks: Vec::new(),
        }
    }

    /// The attribute `key` (the HCL parser already refuses a key set twice in one body).
    fn attr(&mut self, key: &'static str) -> Option<&'a Attribute> {
        self.known_attrs.push(key);
        let (index, attr) = self
            .body
            .iter()
            .enumerate()
            .find_map(|(index, structure)| match structure {
                Structure::Attribute(attr) if attr.key.as_str() == key => Some((index, attr)),
                _ => None,
            })?;
        self.used[index] = true;
        Some(attr)
    }

    /// The value of attribute `key`, converted by `convert` (which reports type errors).
    pub(super) fn value<T>(
        &mut self,
        diags: &mut Diagnostics,
        key: &'static str,
        convert: impl FnOnce(&mut Diagnostics, &Expression, &str) -> Option<T>,
    ) -> Option<Spanned<T>> {
        let attr = self.attr(key)?;
        convert(diags, &attr.value, key).map(|v| Spanned::new(v, span(&attr.value)))
    }

    /// Every nested block called `key`.
    pub(super) fn blocks(&mut self, key: &'static str) -> Vec<&'a Block> {
        self.known_blocks.push(key);
        let mut found = Vec::new();
        for (index, structure) in self.body.iter().enumerate() {
            if let Structure::Block(block) = structure
                && block.ident.as_str() == key
            {
                self.used[index] = true;
                found.push(block);
            }
        }
        found
    }

    /// The nested block `key`, which may appear once and takes no labels.
    pub(super) fn block(
        &mut self,
        diags: &mut Diagnostics,
        key: &'static str,
    ) -> Option<&'a Block> {
        let blocks = self.blocks(key);
        let first = *blocks.first()?;
        for extra in &blocks[1..] {
            diags.push(
                Diagnostic::error(
                    "duplicate-block",
                    span(&extra.ident),
                    format!("`{key}` appears twice in {}", self.owner),
                )
                .with_related(span(&first.ident), "first here")
                .with_help("merge them into one block"),
            );
        }
        unlabelled(diags, first);
        Some(first)
    }

    /// Reports everything in the body that nobody asked for.
    pub(super) fn finish(self, diags: &mut Diagnostics) {
        for (structure, &used) in self.body.iter().zip(&self.used) {
            if used {
                continue;
            }
            match structure {
                Structure::Attribute(attr) => {
                    let key = attr.key.as_str();
                    let in_blocks = self.known_blocks.contains(&key);
                    let help = if in_blocks {
                        format!("`{key}` is a block: write `{key} {{ … }}`")
                    } else {
                        did_you_mean(key, self.known_attrs.iter().copied())
                            .unwrap_or_else(|| self.accepted())
                    };
                    diags.push(
                        Diagnostic::error(
                            "unknown-attribute",
                            span(&attr.key),
                            format!("unknown attribute `{key}` in {}", self.owner),
                        )
                        .with_help(help),
                    );
                }
                Structure::Block(block) => {
                    let ident = block.ident.as_str();
                    if ident == "env" {
                        diags.push(
                            Diagnostic::error(
                                "misplaced-env",
                                span(&block.ident),
                                format!("`env` block inside {}", self.owner),
                            )
                            .with_help(
                                "declare `env` at the top of the application or inside a service",
                            ),
                        );
                        continue;
                    }
                    let help = if self.known_attrs.contains(&ident) {
                        format!("`{ident}` is an attribute: write `{ident} = …`")
                    } else {
                        did_you_mean(ident, self.known_blocks.iter().copied())
                            .unwrap_or_else(|| self.accepted())
                    };
                    diags.push(
                        Diagnostic::error(
                            "unknown-block",
                            span(&block.ident),
                            format!("unknown block `{ident}` in {}", self.owner),
                        )
                        .with_help(help),
                    );
                }
            }
        }
    }

    fn accepted(&self) -> String {
        let mut names: Vec<String> = self.known_attrs.iter().map(|a| format!("`{a}`")).collect();
        names.extend(self.known_blocks.iter().map(|b| format!("`{b} {{ … }}`")));
        if names.is_empty() {
            format!("{} takes no settings", self.owner)
        } else {
            format!("{} accepts {}", self.owner, names.join(", "))
        }
    }
}
