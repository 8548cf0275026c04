//! The `application` block: which kind each block inside it is, and the reader for that kind.

use hcl_edit::structure::{Attribute, Block, Structure};

use super::env::read_env;
use super::header::block_header;
use super::kv_cache::read_kv_cache;
use super::observer::read_observer;
use super::queue::read_queue;
use super::service::read_service;
use super::task::read_task;
use super::{DEPRECATED_KV_STORE, SUPPORTED_KINDS, UNSUPPORTED_KINDS, span};
use crate::ast;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::suggest::did_you_mean;

pub(super) fn read_application(diags: &mut Diagnostics, block: &Block) -> ast::Application {
    let mut app = ast::Application {
        header: block_header(diags, block, "application").unwrap_or_default(),
        ..ast::Application::default()
    };
    for structure in block.body.iter() {
        let block = match structure {
            Structure::Block(block) => block,
            Structure::Attribute(attr) if attr.key.as_str() == "metrics_listen" => {
                if let Some(addr) =
                    super::convert::socket_addr(diags, &attr.value, "metrics_listen")
                {
                    app.metrics_listen = Some(crate::source::Spanned::new(addr, span(&attr.value)));
                }
                continue;
            }
            Structure::Attribute(attr) => {
                diags.push(attribute_in_application(attr));
                continue;
            }
        };
        let Some(kind) = block_kind(diags, block) else {
            app.incomplete = true;
            continue;
        };
        let Some(h) = block_header(diags, block, kind) else {
            app.incomplete = true;
            continue;
        };
        read_block(diags, &mut app, block, kind, h);
    }
    app
}

fn attribute_in_application(attr: &Attribute) -> Diagnostic {
    Diagnostic::error(
        "unknown-attribute",
        span(&attr.key),
        format!(
            "unknown attribute `{}` in the application block",
            attr.key.as_str()
        ),
    )
    .with_help("the application block holds only blocks such as `service`, `queue` and `task`")
}

/// The kind of a block inside `application`, as it is shown: `kv_store` is read (with a
/// warning) as `kv_cache`. `None`, with an error, for a kind Raindrop does not have.
fn block_kind(diags: &mut Diagnostics, block: &Block) -> Option<&'static str> {
    let kind = block.ident.as_str();
    let known = SUPPORTED_KINDS
        .iter()
        .chain(&UNSUPPORTED_KINDS)
        .chain(&[DEPRECATED_KV_STORE])
        .find(|k| **k == kind);
    let Some(&kind) = known else {
        let all = SUPPORTED_KINDS.iter().chain(&UNSUPPORTED_KINDS).copied();
        diags.push(
            Diagnostic::error(
                "unknown-block",
                span(&block.ident),
                format!("unknown block kind `{kind}`"),
            )
            .with_help(did_you_mean(kind, all).unwrap_or_else(|| {
                format!("blocks this runtime runs: {}", SUPPORTED_KINDS.join(", "))
            })),
        );
        return None;
    };
    if kind == DEPRECATED_KV_STORE {
        diags.push(
            Diagnostic::warning(
                "deprecated-kind",
                span(&block.ident),
                "`kv_store` is the older name of `kv_cache`",
            )
            .with_help("write `kv_cache`; it means the same"),
        );
        return Some("kv_cache");
    }
    Some(kind)
}

/// Reads `block`, of the known `kind`, into `app`.
fn read_block(
    diags: &mut Diagnostics,
    app: &mut ast::Application,
    block: &Block,
    kind: &'static str,
    h: ast::Header,
) {
    match kind {
        "service" => {
            let service = read_service(diags, block, h, &mut app.envs);
            app.services.push(service);
        }
        "queue" => app.queues.push(read_queue(diags, block, h)),
        "task" => app.tasks.push(read_task(diags, block, h)),
        "kv_cache" => app.kv_caches.push(read_kv_cache(diags, block, h)),
        "observer" => app.observers.push(read_observer(diags, block, h)),
        "env" => app.envs.push(read_env(diags, block, h, None)),
        _ => app.unsupported.push(unsupported(diags, block, kind, h)),
    }
}

/// A block of a kind Raindrop has and this runtime does not run: kept, with a warning.
fn unsupported(
    diags: &mut Diagnostics,
    block: &Block,
    kind: &str,
    h: ast::Header,
) -> ast::Unsupported {
    diags.push(
        Diagnostic::warning(
            "unsupported-kind",
            span(&block.ident),
            format!(
                "`{kind}` blocks are not run by this runtime; `{}` is ignored",
                h.name.value
            ),
        )
        .with_help("the block is kept for Raindrop compatibility; nothing is started for it"),
    );
    ast::Unsupported { header: h }
}
