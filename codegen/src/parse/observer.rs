//! `observer "name" { queues, source { … rule { actions } }, alert "name" { … } }`.

use hcl_edit::structure::Block;

use super::convert::{duration, float_in, int_at_least, one_of, string, string_list};
use super::header::{label, unlabelled};
use super::reader::Reader;
use super::span;
use crate::ast;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::{AlertMetric, BucketAction};
use crate::source::Spanned;
use crate::suggest::did_you_mean;

pub(super) fn read_observer(
    diags: &mut Diagnostics,
    block: &Block,
    header: ast::Header,
) -> ast::Observer {
    let mut r = Reader::new(&block.body, &header);
    let mut observer = ast::Observer {
        queues: r.value(diags, "queues", string_list).map(|l| l.value),
        ..ast::Observer::default()
    };
    if let Some(source) = r.block(diags, "source") {
        observer.source = Some(read_source(diags, source, &header));
    }
    for alert in r.blocks("alert") {
        if let Some(alert) = read_alert(diags, alert, &header) {
            observer.alerts.push(alert);
        }
    }
    r.finish(diags);
    observer.header = header;
    observer
}

/// `source { queue | bucket, batch_size, rule { actions } }`.
fn read_source(diags: &mut Diagnostics, source: &Block, header: &ast::Header) -> ast::Source {
    let mut s = Reader::nested(&source.body, header, "source");
    let mut read = ast::Source {
        span: span(&source.ident),
        queue: s.value(diags, "queue", string),
        bucket: s.value(diags, "bucket", string),
        batch_size: s.value(diags, "batch_size", int_at_least(1)),
        actions: Vec::new(),
    };
    for rule in s.blocks("rule") {
        read_rule(diags, rule, header, &mut read.actions);
    }
    s.finish(diags);
    read
}

/// `rule { actions = [...] prefix suffix }`: its bucket actions go to `actions`; the object-key
/// filters are checked as strings (bucket observers are not run here).
fn read_rule(
    diags: &mut Diagnostics,
    rule: &Block,
    header: &ast::Header,
    actions: &mut Vec<Spanned<BucketAction>>,
) {
    unlabelled(diags, rule);
    let mut rr = Reader::nested(&rule.body, header, "rule");
    if let Some(list) = rr.value(diags, "actions", string_list) {
        for action in list.value {
            if let Some(action) = bucket_action(diags, action) {
                actions.push(action);
            }
        }
    }
    for filter in ["prefix", "suffix"] {
        let _ = rr.value(diags, filter, string);
    }
    rr.finish(diags);
}

/// The bucket action `action` names; `None` (with an error) when there is no such action.
fn bucket_action(
    diags: &mut Diagnostics,
    action: Spanned<String>,
) -> Option<Spanned<BucketAction>> {
    if let Some((_, a)) = BucketAction::ALL.iter().find(|(n, _)| *n == action.value) {
        return Some(Spanned::new(*a, action.span));
    }
    let names = BucketAction::ALL.iter().map(|(n, _)| *n);
    diags.push(
        Diagnostic::error(
            "invalid-bucket-action",
            action.span,
            format!("`{}` is not a bucket action", action.value),
        )
        .with_help(
            did_you_mean(&action.value, names.clone()).unwrap_or_else(|| {
                format!(
                    "bucket actions are {}",
                    names.collect::<Vec<_>>().join(", ")
                )
            }),
        ),
    );
    None
}

/// `alert "name" { metric, threshold, window }`; `None` (with an error) without a name.
fn read_alert(diags: &mut Diagnostics, alert: &Block, header: &ast::Header) -> Option<ast::Alert> {
    let labels: Vec<Spanned<String>> = alert.labels.iter().map(label).collect();
    let Some(name) = labels.first().cloned() else {
        diags.push(
            Diagnostic::error(
                "missing-name",
                span(&alert.ident),
                "`alert` block without a name",
            )
            .with_help("write `alert \"backlog\" { … }`"),
        );
        return None;
    };
    let mut a = Reader::nested(&alert.body, header, "alert");
    let read = ast::Alert {
        name,
        span: span(&alert.ident),
        metric: a.value(diags, "metric", one_of(&AlertMetric::ALL)),
        threshold: a.value(diags, "threshold", float_in(0.0, f64::MAX)),
        window: a.value(diags, "window", duration),
    };
    a.finish(diags);
    for (key, example, missing) in [
        ("metric", "metric = \"queue_depth\"", read.metric.is_none()),
        ("threshold", "threshold = 1000", read.threshold.is_none()),
    ] {
        if missing && !alert.body.has_attribute(key) {
            diags.push(
                Diagnostic::error(
                    "missing-attribute",
                    read.span,
                    format!("alert `{}` needs `{key}`", read.name.value),
                )
                .with_help(format!("add e.g. `{example}` inside the alert")),
            );
        }
    }
    Some(read)
}
