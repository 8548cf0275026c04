//! HCL text → [`ast::Application`]: syntax, block structure, attribute names and value types.
//!
//! Every mistake becomes a diagnostic and reading goes on, so one run reports them all.
//!
//! This module reads the file and finds the one `application` block; the submodule
//! `application` hands each block inside it to the reader of its kind (one submodule per kind).
//! Each reader walks its body with a `reader::Reader`, whose values `convert` checks.

use hcl_edit::structure::{Block, Structure};

use crate::ast;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::source::{SourceFile, Span};
use crate::suggest::did_you_mean;

mod application;
mod convert;
mod env;
mod header;
mod kv_cache;
mod observer;
mod queue;
mod reader;
mod service;
mod task;

use application::read_application;

/// Block kinds this runtime runs, as they may appear inside `application`.
pub const SUPPORTED_KINDS: [&str; 6] = ["service", "queue", "task", "kv_cache", "observer", "env"];

/// Block kinds Raindrop has that this runtime parses, warns about and does not run.
pub const UNSUPPORTED_KINDS: [&str; 8] = [
    "bucket",
    "sql_database",
    "smartbucket",
    "smartmemory",
    "smartsql",
    "actor",
    "mcp_service",
    "ai",
];

/// The older name of `kv_cache`.
const DEPRECATED_KV_STORE: &str = "kv_store";

/// Parses `source` into the application it declares. `None` when there is nothing to check
/// further (a syntax error, or no `application` block); the reasons are in `diags`.
pub fn parse(source: &SourceFile, diags: &mut Diagnostics) -> Option<ast::Application> {
    let body = match hcl_edit::parser::parse_body(source.text()) {
        Ok(body) => body,
        Err(err) => {
            diags.push(syntax_error(source, &err));
            return None;
        }
    };
    let mut applications = Vec::new();
    for structure in body.iter() {
        match structure {
            Structure::Block(block) if block.ident.as_str() == "application" => {
                applications.push(block)
            }
            Structure::Block(block) => diags.push(outside_application(block)),
            Structure::Attribute(attr) => diags.push(
                Diagnostic::error(
                    "outside-application",
                    span(attr),
                    format!(
                        "attribute `{}` outside the application block",
                        attr.key.as_str()
                    ),
                )
                .with_help("settings go inside a block of `application \"name\" { … }`"),
            ),
        }
    }
    let Some((first, rest)) = applications.split_first() else {
        diags.push(
            Diagnostic::error(
                "missing-application",
                Span::new(0..0),
                "the manifest declares no application",
            )
            .with_help("wrap the blocks in `application \"my-app\" { … }`"),
        );
        return None;
    };
    for extra in rest {
        diags.push(
            Diagnostic::error(
                "duplicate-application",
                span(&extra.ident),
                "a manifest declares exactly one application",
            )
            .with_label("second application")
            .with_related(span(&first.ident), "first declared here")
            .with_help(
                "move these blocks into the first application, or into a manifest of their own",
            ),
        );
    }
    Some(read_application(diags, first))
}

fn syntax_error(source: &SourceFile, err: &hcl_edit::parser::Error) -> Diagnostic {
    let text = source.text();
    // The parser's offset may fall inside a multi-byte character.
    let offset = source
        .clamp(Span::new(err.location().offset()..err.location().offset()))
        .start;
    // Underline the whole word at the error, or one character.
    let rest = &text[offset..];
    let word = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(rest.len());
    let len = if word > 0 {
        word
    } else {
        rest.chars().next().map_or(0, char::len_utf8)
    };
    let help = if err.message().contains("redefined attribute") {
        "an attribute is set once per block; keep one of them"
    } else {
        "blocks are written `kind \"name\" { … }` with one attribute `key = value` per line"
    };
    Diagnostic::error(
        "syntax",
        Span::new(offset..offset + len),
        format!("HCL syntax error: {}", err.message()),
    )
    .with_help(help)
}

fn outside_application(block: &Block) -> Diagnostic {
    let kind = block.ident.as_str();
    let known = SUPPORTED_KINDS.contains(&kind)
        || UNSUPPORTED_KINDS.contains(&kind)
        || kind == DEPRECATED_KV_STORE;
    if known {
        Diagnostic::error(
            "outside-application",
            span(&block.ident),
            format!("`{kind}` block outside the application block"),
        )
        .with_help("move it inside `application \"name\" { … }`")
    } else {
        Diagnostic::error(
            "unknown-block",
            span(&block.ident),
            format!("unknown block `{kind}`"),
        )
        .with_help_opt(did_you_mean(kind, ["application"]))
    }
}

fn span(node: &impl hcl_edit::Span) -> Span {
    node.span().map(Span::from).unwrap_or_default()
}
