//! `queue "name" { max_attempts, visibility_timeout, max_message_size, backoff, retention }`.

use hcl_edit::structure::Block;

use super::convert::{duration, float_in, int_at_least, size};
use super::reader::Reader;
use super::span;
use crate::ast;
use crate::diagnostic::Diagnostics;

pub(super) fn read_queue(
    diags: &mut Diagnostics,
    block: &Block,
    header: ast::Header,
) -> ast::Queue {
    let mut r = Reader::new(&block.body, &header);
    let mut queue = ast::Queue {
        max_attempts: r.value(diags, "max_attempts", int_at_least(1)),
        visibility_timeout: r.value(diags, "visibility_timeout", duration),
        max_message_size: r.value(diags, "max_message_size", size),
        ..ast::Queue::default()
    };
    if let Some(backoff) = r.block(diags, "backoff") {
        let mut b = Reader::nested(&backoff.body, &header, "backoff");
        queue.backoff = Some(ast::Backoff {
            span: span(backoff),
            initial: b.value(diags, "initial", duration),
            max: b.value(diags, "max", duration),
            multiplier: b.value(diags, "multiplier", float_in(1.0, 100.0)),
            jitter: b.value(diags, "jitter", float_in(0.0, 1.0)),
        });
        b.finish(diags);
    }
    if let Some(retention) = r.block(diags, "retention") {
        let mut b = Reader::nested(&retention.body, &header, "retention");
        queue.retention = Some(ast::Retention {
            succeeded: b.value(diags, "succeeded", duration),
            failed: b.value(diags, "failed", duration),
            dead: b.value(diags, "dead", duration),
        });
        b.finish(diags);
    }
    r.finish(diags);
    queue.header = header;
    queue
}
