//! `task "name" { queue, concurrency, timeout, cron, type, max_attempts }`.

use hcl_edit::structure::Block;

use super::convert::{cron, duration, int_at_least, one_of, string};
use super::reader::Reader;
use crate::ast;
use crate::diagnostic::{Diagnostic, Diagnostics};

pub(super) fn read_task(diags: &mut Diagnostics, block: &Block, header: ast::Header) -> ast::Task {
    let mut r = Reader::new(&block.body, &header);
    let task = ast::Task {
        queue: r.value(diags, "queue", string),
        concurrency: r.value(diags, "concurrency", int_at_least(1)),
        timeout: r.value(diags, "timeout", duration),
        cron: r.value(diags, "cron", cron),
        cron_type: r
            .value(diags, "type", one_of(&[("cron", ())]))
            .map(|t| t.span),
        max_attempts: r.value(diags, "max_attempts", int_at_least(1)),
        autoscale: None,
        header: header.clone(),
    };
    let autoscale = r.block(diags, "autoscale").map(|block| {
        let mut a = Reader::nested(&block.body, &header, "autoscale");
        let read = ast::Autoscale {
            span: super::span(&block.ident),
            min: a.value(diags, "min", int_at_least(1)),
            max: a.value(diags, "max", int_at_least(1)),
            target_wait: a.value(diags, "target_wait", duration),
        };
        a.finish(diags);
        if read.max.is_none() && !block.body.has_attribute("max") {
            diags.push(
                Diagnostic::error(
                    "missing-attribute",
                    read.span,
                    format!("autoscale of task `{}` needs `max`", header.name.value),
                )
                .with_help("add e.g. `max = 50` inside `autoscale`"),
            );
        }
        read
    });
    r.finish(diags);
    ast::Task { autoscale, ..task }
}
