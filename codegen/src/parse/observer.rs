//! `observer "name" { queues, source { … rule { actions } }, alert "name" { … } }`.

use hcl_edit::structure::Block;

use super::convert::{duration, float_in, int_at_least, one_of, string, string_list};
use super::header::{label, unlabelled};
use super::reader::Reader;
use super::span;
use crate::ast;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::{AlertMetric, BucketAction, Comparison, Severity, SinkAuth, SinkFormat};
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
    for sink in r.blocks("sink") {
        if let Some(sink) = read_sink(diags, sink, &header) {
            observer.sinks.push(sink);
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

/// The name of a nested labelled block (`alert`, `sink`); `None` (with an error) without one.
fn nested_name(diags: &mut Diagnostics, block: &Block, example: &str) -> Option<Spanned<String>> {
    let labels: Vec<Spanned<String>> = block.labels.iter().map(label).collect();
    let name = labels.first().cloned();
    if name.is_none() {
        diags.push(
            Diagnostic::error(
                "missing-name",
                span(&block.ident),
                format!("`{}` block without a name", block.ident.as_str()),
            )
            .with_help(format!("write `{example} {{ … }}`")),
        );
    }
    name
}

/// `sink "name" { url, format, secret_env, auth }`; `None` (with an error) without a name.
fn read_sink(diags: &mut Diagnostics, sink: &Block, header: &ast::Header) -> Option<ast::Sink> {
    let name = nested_name(diags, sink, "sink \"oncall\"")?;
    let mut s = Reader::nested(&sink.body, header, "sink");
    let read = ast::Sink {
        name,
        span: span(&sink.ident),
        url: s.value(diags, "url", string),
        format: s.value(diags, "format", one_of(&SinkFormat::ALL)),
        secret_env: s.value(diags, "secret_env", string),
        auth: s.value(diags, "auth", one_of(&SinkAuth::ALL)),
    };
    s.finish(diags);
    match &read.url {
        None if !sink.body.has_attribute("url") => diags.push(
            Diagnostic::error(
                "missing-attribute",
                read.span,
                format!("sink `{}` needs `url`", read.name.value),
            )
            .with_help("add e.g. `url = \"http://alert-relay:9000/raindrop\"` inside the sink"),
        ),
        Some(url) if !url.value.starts_with("http://") => {
            let help = if url.value.starts_with("https://") {
                "this runtime sends webhooks over plain HTTP: point the sink at a relay inside your network (an egress proxy or sidecar) that forwards to the HTTPS endpoint"
            } else {
                "write an address such as \"http://alert-relay:9000/raindrop\""
            };
            diags.push(
                Diagnostic::error(
                    "invalid-value",
                    url.span,
                    format!(
                        "sink `{}` has a url that is not `http://…`",
                        read.name.value
                    ),
                )
                .with_help(help),
            );
        }
        _ => {}
    }
    Some(read)
}

/// `alert "name" { metric, comparison, threshold, window, for, severity }`; `None` (with an
/// error) without a name.
fn read_alert(diags: &mut Diagnostics, alert: &Block, header: &ast::Header) -> Option<ast::Alert> {
    let name = nested_name(diags, alert, "alert \"backlog\"")?;
    let mut a = Reader::nested(&alert.body, header, "alert");
    let read = ast::Alert {
        name,
        span: span(&alert.ident),
        metric: a.value(diags, "metric", one_of(&AlertMetric::ALL)),
        threshold: a.value(diags, "threshold", float_in(0.0, f64::MAX)),
        window: a.value(diags, "window", duration),
        comparison: a.value(diags, "comparison", one_of(&Comparison::ALL)),
        pending_for: a.value(diags, "for", duration),
        severity: a.value(diags, "severity", one_of(&Severity::ALL)),
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
