//! `queue "name" { max_attempts, visibility_timeout, max_message_size, max_snoozes, backoff,
//! retention, rate_limit, concurrency_limit }`.

use hcl_edit::expr::Expression;
use hcl_edit::structure::Block;

use super::convert::{duration, duration_in, float_in, int_at_least, int_in, size, string};
use super::reader::Reader;
use super::span;
use crate::ast;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::LimitKey;
use crate::suggest::closest;
use crate::value::Duration;

/// The most snoozes a queue may allow a job.
const MAX_SNOOZES: u32 = 1_000_000;
/// The shortest `rate_limit.per`.
const MIN_RATE_PERIOD: (Duration, &str) = (Duration::from_millis(1), "1ms");
/// The longest `rate_limit.per`.
const MAX_RATE_PERIOD: (Duration, &str) = (Duration::from_secs(86_400), "1d");
/// The longest header name or payload field a `concurrency_limit.key` may name, in bytes.
const MAX_KEY_NAME: usize = 128;
/// What a `concurrency_limit.key` may be.
const KEY_HELP: &str = "key names a header (\"header.customer\") or a top-level payload field (\"payload.account_id\")";

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
        max_snoozes: r.value(diags, "max_snoozes", int_in(0, MAX_SNOOZES)),
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
    if let Some(limit) = r.block(diags, "rate_limit") {
        queue.rate_limit = Some(read_rate_limit(diags, limit, &header));
    }
    if let Some(limit) = r.block(diags, "concurrency_limit") {
        queue.concurrency_limit = Some(read_concurrency_limit(diags, limit, &header));
    }
    r.finish(diags);
    queue.header = header;
    queue
}

/// `rate_limit { jobs, per, burst }`; `jobs` and `per` are required.
fn read_rate_limit(
    diags: &mut Diagnostics,
    limit: &Block,
    header: &ast::Header,
) -> ast::QueueRateLimit {
    let mut l = Reader::nested(&limit.body, header, "rate_limit");
    let rate = ast::QueueRateLimit {
        span: span(&limit.ident),
        jobs: l.value(diags, "jobs", int_at_least(1)),
        per: l.value(diags, "per", duration_in(MIN_RATE_PERIOD, MAX_RATE_PERIOD)),
        burst: l.value(diags, "burst", int_at_least(1)),
    };
    l.finish(diags);
    for (key, example) in [("jobs", "jobs = 10"), ("per", "per = \"1s\"")] {
        if missing(limit, key) {
            diags.push(
                Diagnostic::error(
                    "missing-attribute",
                    rate.span,
                    format!(
                        "`rate_limit` of queue `{}` needs `{key}`",
                        header.name.value
                    ),
                )
                .with_help(format!(
                    "add e.g. `{example}` inside `rate_limit`: at most `jobs` jobs start per `per`"
                )),
            );
        }
    }
    rate
}

/// `concurrency_limit { max, key }`; `max` is required.
fn read_concurrency_limit(
    diags: &mut Diagnostics,
    limit: &Block,
    header: &ast::Header,
) -> ast::ConcurrencyLimit {
    let mut l = Reader::nested(&limit.body, header, "concurrency_limit");
    let concurrency = ast::ConcurrencyLimit {
        span: span(&limit.ident),
        max: l.value(diags, "max", int_at_least(1)),
        key: l.value(diags, "key", limit_key),
    };
    l.finish(diags);
    if missing(limit, "max") {
        diags.push(
            Diagnostic::error(
                "missing-attribute",
                concurrency.span,
                format!(
                    "`concurrency_limit` of queue `{}` needs `max`",
                    header.name.value
                ),
            )
            .with_help(
                "add e.g. `max = 2` inside `concurrency_limit`: the most jobs running at once",
            ),
        );
    }
    concurrency
}

/// Whether the required `key` is left out of `block`: not written (written but invalid is
/// reported by its conversion), nor misspelled (reported as unknown, with the right name).
fn missing(block: &Block, key: &str) -> bool {
    !block.body.has_attribute(key)
        && !block
            .body
            .attributes()
            .any(|attr| closest(attr.key.as_str(), [key]).is_some())
}

/// `"header.NAME"` or `"payload.FIELD"`.
fn limit_key(diags: &mut Diagnostics, expr: &Expression, key: &str) -> Option<LimitKey> {
    let text = string(diags, expr, key)?;
    let mut invalid = |message: String, label: &str| {
        diags.push(
            Diagnostic::error("invalid-value", span(expr), message)
                .with_label(label)
                .with_help(KEY_HELP),
        );
        None
    };
    let (source, name) = match text.split_once('.') {
        Some(("header", name)) => ("header", name),
        Some(("payload", name)) => ("payload", name),
        _ => {
            return invalid(
                format!("`{text}` is not a valid `{key}`"),
                "expected \"header.NAME\" or \"payload.FIELD\"",
            );
        }
    };
    let what = if source == "header" {
        "header"
    } else {
        "payload field"
    };
    if name.is_empty() {
        return invalid(
            format!("`{text}` names no {what}"),
            if source == "header" {
                "expected a header name after `header.`"
            } else {
                "expected a field name after `payload.`"
            },
        );
    }
    if name.len() > MAX_KEY_NAME {
        return invalid(
            format!(
                "the {what} name in `{key}` is {} bytes long, more than {MAX_KEY_NAME}",
                name.len()
            ),
            &format!("at most {MAX_KEY_NAME} bytes after `{source}.`"),
        );
    }
    if source == "header" {
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return invalid(
                format!("`{name}` is not a header name"),
                "header names are letters, digits, `-` and `_`",
            );
        }
        return Some(LimitKey::Header(name.to_owned()));
    }
    if name.contains('.') {
        return invalid(
            format!("`{text}` names a nested payload field: only top-level fields are supported"),
            "a nested field",
        );
    }
    Some(LimitKey::Payload(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use crate::model::{ConcurrencyLimit, LimitKey};
    use crate::{SourceFile, compile};

    /// The errors of a manifest whose queue `q` (pulled by a worker) has `settings`, as
    /// `code: message`; or its concurrency limit when there are none.
    fn compile_queue(settings: &str) -> Result<Option<ConcurrencyLimit>, Vec<String>> {
        let text = format!(
            "application \"demo\" {{\n  queue \"q\" {{\n{settings}\n  }}\n  task \"worker\" {{}}\n}}\n"
        );
        let compiled = compile(&SourceFile::new("raindrop.manifest", text));
        match compiled.application {
            Some(app) => Ok(app.queues[0].concurrency_limit.clone()),
            None => Err(compiled
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(|d| format!("{}: {}", d.code, d.message))
                .collect()),
        }
    }

    fn key(key: &str) -> Result<Option<LimitKey>, Vec<String>> {
        compile_queue(&format!(
            "concurrency_limit {{\n max = 1\n key = \"{key}\"\n}}"
        ))
        .map(|limit| limit.and_then(|l| l.key))
    }

    #[test]
    fn keys_name_a_header_or_a_top_level_payload_field() {
        assert_eq!(
            key("header.X-Customer_9"),
            Ok(Some(LimitKey::Header("X-Customer_9".into())))
        );
        assert_eq!(
            key("payload.account id"),
            Ok(Some(LimitKey::Payload("account id".into())))
        );
        let longest = "f".repeat(128);
        assert_eq!(
            key(&format!("payload.{longest}")),
            Ok(Some(LimitKey::Payload(longest.clone())))
        );
        assert_eq!(
            key(&format!("header.{longest}")),
            Ok(Some(LimitKey::Header(longest)))
        );
    }

    #[test]
    fn other_keys_are_refused() {
        for (written, message) in [
            ("customer", "`customer` is not a valid `key`"),
            ("body.x", "`body.x` is not a valid `key`"),
            ("Header.x", "`Header.x` is not a valid `key`"),
            ("header.", "`header.` names no header"),
            ("payload.", "`payload.` names no payload field"),
            ("header.a.b", "`a.b` is not a header name"),
            ("header.a b", "`a b` is not a header name"),
            (
                "payload.a.b",
                "`payload.a.b` names a nested payload field: only top-level fields are supported",
            ),
        ] {
            assert_eq!(
                key(written),
                Err(vec![format!("invalid-value: {message}")]),
                "{written}"
            );
        }
        let too_long = "f".repeat(129);
        assert_eq!(
            key(&format!("payload.{too_long}")),
            Err(vec![
                "invalid-value: the payload field name in `key` is 129 bytes long, more than 128"
                    .into()
            ])
        );
    }

    #[test]
    fn ranges_are_checked() {
        for (settings, error) in [
            (
                "rate_limit {\n jobs = 1\n per = \"500us\"\n}",
                "out-of-range: `per` must be at least \"1ms\", found \"500us\"",
            ),
            (
                "rate_limit {\n jobs = 1\n per = \"25h\"\n}",
                "out-of-range: `per` must be at most \"1d\", found \"1day 1h\"",
            ),
            (
                "rate_limit {\n jobs = 1\n per = \"1s\"\n burst = 0\n}",
                "out-of-range: `burst` must be at least 1, found 0",
            ),
            (
                "max_snoozes = 1000001",
                "out-of-range: `max_snoozes` must be at most 1000000, found 1000001",
            ),
            (
                "max_snoozes = 2.5",
                "wrong-type: `max_snoozes` expects a whole number, found a number",
            ),
        ] {
            assert_eq!(
                compile_queue(settings),
                Err(vec![error.to_owned()]),
                "{settings}"
            );
        }
        for settings in [
            "rate_limit {\n jobs = 1\n per = \"1ms\"\n}",
            "rate_limit {\n jobs = 1\n per = \"1d\"\n}",
            "max_snoozes = 1000000",
            "max_snoozes = 0",
        ] {
            assert!(compile_queue(settings).is_ok(), "{settings}");
        }
    }

    #[test]
    fn a_missing_setting_is_reported_once_even_when_misspelled() {
        assert_eq!(
            compile_queue("rate_limit {\n burst = 3\n}"),
            Err(vec![
                "missing-attribute: `rate_limit` of queue `q` needs `jobs`".into(),
                "missing-attribute: `rate_limit` of queue `q` needs `per`".into(),
            ])
        );
        assert_eq!(
            compile_queue("rate_limit {\n job = 3\n per = \"1s\"\n}"),
            Err(vec![
                "unknown-attribute: unknown attribute `job` in `rate_limit` of queue `q`".into()
            ])
        );
        // Written but invalid: reported by the value, not as missing.
        assert_eq!(
            compile_queue("concurrency_limit {\n max = 0\n}"),
            Err(vec![
                "out-of-range: `max` must be at least 1, found 0".into()
            ])
        );
    }
}
