//! `task "name" { queue, concurrency, timeout, cron, type, max_attempts }`.

use hcl_edit::structure::Block;

use super::convert::{cron, duration, int_at_least, one_of, string};
use super::reader::Reader;
use crate::ast;
use crate::diagnostic::Diagnostics;

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
        header: header.clone(),
    };
    r.finish(diags);
    task
}
