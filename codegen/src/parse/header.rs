//! The header of a block (its kind and name label) and the labels of nested blocks.

use hcl_edit::structure::{Block, BlockLabel};

use super::span;
use crate::ast;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::source::Spanned;

/// The kind and single name label of a block; `None` (with an error) when the name is missing.
pub(super) fn block_header(
    diags: &mut Diagnostics,
    block: &Block,
    kind: &'static str,
) -> Option<ast::Header> {
    let labels: Vec<Spanned<String>> = block.labels.iter().map(label).collect();
    let Some(first) = labels.first() else {
        diags.push(
            Diagnostic::error(
                "missing-name",
                span(&block.ident),
                format!("`{kind}` block without a name"),
            )
            .with_help(format!("write `{} \"name\" {{ … }}`", block.ident.as_str())),
        );
        return None;
    };
    for extra in &labels[1..] {
        diags.push(
            Diagnostic::error(
                "extra-label",
                extra.span,
                format!("a `{kind}` block takes one name"),
            )
            .with_related(first.span, "its name")
            .with_help("remove the extra label"),
        );
    }
    Some(ast::Header {
        kind,
        name: first.clone(),
        span: span(block),
    })
}

pub(super) fn label(label: &BlockLabel) -> Spanned<String> {
    match label {
        BlockLabel::String(s) => Spanned::new(s.value().clone(), span(s)),
        BlockLabel::Ident(i) => Spanned::new(i.as_str().to_owned(), span(i)),
    }
}

/// A nested block that takes no labels (`backoff`, `source`, …).
pub(super) fn unlabelled(diags: &mut Diagnostics, block: &Block) {
    if let Some(first) = block.labels.first() {
        diags.push(
            Diagnostic::error(
                "extra-label",
                span(first),
                format!("a `{}` block takes no name", block.ident.as_str()),
            )
            .with_help(format!("write `{} {{ … }}`", block.ident.as_str())),
        );
    }
}
