//! `queue "name" { max_attempts, visibility_timeout, max_message_size, max_snoozes, backoff,
//! retention, rate_limit, concurrency_limit, unique, debounce }`.

use hcl_edit::expr::Expression;
use hcl_edit::structure::Block;

use super::convert::{
    duration, duration_in, float_in, int_at_least, int_in, one_of, size, string, string_list,
};
use super::reader::Reader;
use super::span;
use crate::ast;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::{DebounceMode, LimitKey, UniqueBy, UniqueState};
use crate::source::{Span, Spanned};
use crate::suggest::{closest, did_you_mean};
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
/// `unique.for` may be zero: then only a job in `states` makes a new one its duplicate.
const NO_UNIQUE_WINDOW: (Duration, &str) = (Duration::from_secs(0), "0s");
/// The longest `unique.for`.
const MAX_UNIQUE_WINDOW: (Duration, &str) = (Duration::from_secs(30 * 86_400), "30d");
/// The states `unique.states` may name, as the manifest spells them.
const UNIQUE_STATES: [(&str, UniqueState); 5] = [
    ("waiting", UniqueState::Waiting),
    ("running", UniqueState::Running),
    ("succeeded", UniqueState::Succeeded),
    ("dead", UniqueState::Dead),
    ("cancelled", UniqueState::Cancelled),
];
/// The `states` and `by` of a `unique` block that leaves them out, as the manifest writes them
/// (the model's are `normalize::defaults`).
const DEFAULT_UNIQUE_STATES: &str = "[\"waiting\", \"running\"]";
const DEFAULT_UNIQUE_BY: &str = "[\"kind\", \"payload\"]";
/// What `unique.by` may list.
const BY_HELP: &str = "by lists \"kind\", \"payload\" (the whole payload), top-level payload fields (\"payload.account_id\") and headers (\"header.customer\")";
/// The shortest `debounce.window` and `debounce.max_wait`.
const MIN_DEBOUNCE: (Duration, &str) = (Duration::from_millis(1), "1ms");
/// The longest `debounce.window` and `debounce.max_wait`.
const MAX_DEBOUNCE: (Duration, &str) = (Duration::from_secs(86_400), "1d");
/// The modes `debounce.mode` may name, as the manifest spells them; the first, the default
/// (`normalize::defaults::DEBOUNCE_MODE`), is the example a value of the wrong type is shown.
const DEBOUNCE_MODES: [(&str, DebounceMode); 2] = [
    ("trailing", DebounceMode::Trailing),
    ("leading", DebounceMode::Leading),
];

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
    if let Some(unique) = r.block(diags, "unique") {
        queue.unique = Some(read_unique(diags, unique, &header));
    }
    if let Some(debounce) = r.block(diags, "debounce") {
        queue.debounce = Some(read_debounce(diags, debounce, &header));
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
    let (message, label) = match header_or_field(&text, key) {
        Ok(limit_key) => return Some(limit_key),
        Err(Named::Neither) => (
            format!("`{text}` is not a valid `{key}`"),
            "expected \"header.NAME\" or \"payload.FIELD\"".to_owned(),
        ),
        Err(Named::Wrongly { message, label }) => (message, label),
    };
    diags.push(
        Diagnostic::error("invalid-value", span(expr), message)
            .with_label(label)
            .with_help(KEY_HELP),
    );
    None
}

/// Why a text is no `"header.NAME"` or `"payload.FIELD"`.
enum Named {
    /// It starts with neither `header.` nor `payload.`.
    Neither,
    /// It names a header or a payload field, wrongly.
    Wrongly { message: String, label: String },
}

/// `text` as `"header.NAME"` (NAME of letters, digits, `-` and `_`) or `"payload.FIELD"` (a
/// top-level field), the name at most [`MAX_KEY_NAME`] bytes; `key` is the setting it is in.
fn header_or_field(text: &str, key: &str) -> Result<LimitKey, Named> {
    let wrongly = |message: String, label: &str| Named::Wrongly {
        message,
        label: label.to_owned(),
    };
    let (source, name) = match text.split_once('.') {
        Some(("header", name)) => ("header", name),
        Some(("payload", name)) => ("payload", name),
        _ => return Err(Named::Neither),
    };
    let what = if source == "header" {
        "header"
    } else {
        "payload field"
    };
    if name.is_empty() {
        return Err(wrongly(
            format!("`{text}` names no {what}"),
            if source == "header" {
                "expected a header name after `header.`"
            } else {
                "expected a field name after `payload.`"
            },
        ));
    }
    if name.len() > MAX_KEY_NAME {
        return Err(wrongly(
            format!(
                "the {what} name in `{key}` is {} bytes long, more than {MAX_KEY_NAME}",
                name.len()
            ),
            &format!("at most {MAX_KEY_NAME} bytes after `{source}.`"),
        ));
    }
    if source == "header" {
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(wrongly(
                format!("`{name}` is not a header name"),
                "header names are letters, digits, `-` and `_`",
            ));
        }
        return Ok(LimitKey::Header(name.to_owned()));
    }
    if name.contains('.') {
        return Err(wrongly(
            format!("`{text}` names a nested payload field: only top-level fields are supported"),
            "a nested field",
        ));
    }
    Ok(LimitKey::Payload(name.to_owned()))
}

/// `unique { for, states, by }`; each has a default.
fn read_unique(diags: &mut Diagnostics, unique: &Block, header: &ast::Header) -> ast::Unique {
    let mut u = Reader::nested(&unique.body, header, "unique");
    let read = ast::Unique {
        span: span(&unique.ident),
        window: u.value(
            diags,
            "for",
            duration_in(NO_UNIQUE_WINDOW, MAX_UNIQUE_WINDOW),
        ),
        states: u.value(diags, "states", unique_states),
        by: u.value(diags, "by", unique_by),
    };
    u.finish(diags);
    read
}

/// `debounce { key, window, mode, max_wait }`; `key` and `window` are required. How `mode` and
/// `max_wait` go together with `window` is checked in `validate`.
fn read_debounce(diags: &mut Diagnostics, debounce: &Block, header: &ast::Header) -> ast::Debounce {
    let mut d = Reader::nested(&debounce.body, header, "debounce");
    let read = ast::Debounce {
        span: span(&debounce.ident),
        key: d.value(diags, "key", limit_key),
        window: d.value(diags, "window", duration_in(MIN_DEBOUNCE, MAX_DEBOUNCE)),
        mode: d.value(diags, "mode", one_of(&DEBOUNCE_MODES)),
        max_wait: d.value(diags, "max_wait", duration_in(MIN_DEBOUNCE, MAX_DEBOUNCE)),
    };
    d.finish(diags);
    for (key, example) in [
        ("key", "key = \"payload.account_id\""),
        ("window", "window = \"2s\""),
    ] {
        if missing(debounce, key) {
            diags.push(
                Diagnostic::error(
                    "missing-attribute",
                    read.span,
                    format!("`debounce` of queue `{}` needs `{key}`", header.name.value),
                )
                .with_help(format!(
                    "add e.g. `{example}` inside `debounce`: jobs sent with the same `key` within `window` collapse into one"
                )),
            );
        }
    }
    read
}

/// The strings of a non-empty list; `None` when an item is no string (reported) or the list is
/// empty (reported as lacking `what`, with the default `default`).
fn nonempty_strings(
    diags: &mut Diagnostics,
    expr: &Expression,
    key: &str,
    (what, default): (&str, &str),
) -> Option<Vec<Spanned<String>>> {
    let items = string_list(diags, expr, key)?;
    if matches!(expr, Expression::Array(array) if array.len() > items.len()) {
        return None;
    }
    if items.is_empty() {
        diags.push(
            Diagnostic::error("invalid-value", span(expr), format!("`{key}` is empty"))
                .with_label(format!("expected at least one {what}"))
                .with_help(format!("leave `{key}` out for the default, {default}")),
        );
        return None;
    }
    Some(items)
}

/// An error at `item`, which is already in the list at `first`.
fn repeated(diags: &mut Diagnostics, item: &Spanned<String>, first: Span, key: &str) {
    diags.push(
        Diagnostic::error(
            "duplicate-value",
            item.span,
            format!("`{}` appears twice in `{key}`", item.value),
        )
        .with_related(first, "first here")
        .with_help("list it once"),
    );
}

/// `states = ["waiting", …]`: some of [`UNIQUE_STATES`], each once.
fn unique_states(
    diags: &mut Diagnostics,
    expr: &Expression,
    key: &str,
) -> Option<Vec<UniqueState>> {
    let items = nonempty_strings(diags, expr, key, ("state", DEFAULT_UNIQUE_STATES))?;
    let mut states: Vec<Spanned<UniqueState>> = Vec::new();
    let mut valid = true;
    for item in &items {
        let Some(&(_, state)) = UNIQUE_STATES.iter().find(|(n, _)| *n == item.value) else {
            let names = UNIQUE_STATES.iter().map(|(n, _)| *n);
            let list = names
                .clone()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ");
            diags.push(
                Diagnostic::error(
                    "invalid-value",
                    item.span,
                    format!("`{}` is not a valid state in `{key}`", item.value),
                )
                .with_label(format!("expected one of {list}"))
                .with_help_opt(did_you_mean(&item.value, names)),
            );
            valid = false;
            continue;
        };
        if let Some(first) = states.iter().find(|s| s.value == state) {
            repeated(diags, item, first.span, key);
            valid = false;
            continue;
        }
        states.push(Spanned::new(state, item.span));
    }
    valid.then(|| states.into_iter().map(|s| s.value).collect())
}

/// `by = ["kind", …]`: parts of the key, each once; `payload.FIELD` beside `payload` is a
/// warning (the whole payload has the field already).
fn unique_by(diags: &mut Diagnostics, expr: &Expression, key: &str) -> Option<Vec<UniqueBy>> {
    let items = nonempty_strings(diags, expr, key, ("part", DEFAULT_UNIQUE_BY))?;
    let mut parts: Vec<Spanned<UniqueBy>> = Vec::new();
    let mut valid = true;
    for item in &items {
        let Some(part) = unique_by_part(diags, item, key) else {
            valid = false;
            continue;
        };
        if let Some(first) = parts.iter().find(|p| p.value == part) {
            repeated(diags, item, first.span, key);
            valid = false;
            continue;
        }
        parts.push(Spanned::new(part, item.span));
    }
    if let Some(whole) = parts.iter().find(|p| p.value == UniqueBy::Payload) {
        for part in &parts {
            if let UniqueBy::PayloadField(field) = &part.value {
                diags.push(
                    Diagnostic::warning(
                        "redundant-value",
                        part.span,
                        format!("`payload.{field}` adds nothing to `{key}`: the whole `payload` is in it"),
                    )
                    .with_related(whole.span, "the whole payload")
                    .with_help(format!(
                        "remove `payload.{field}`, or `payload` to key by the field alone"
                    )),
                );
            }
        }
    }
    valid.then(|| parts.into_iter().map(|p| p.value).collect())
}

/// One entry of `by`: `"kind"`, `"payload"`, `"payload.FIELD"` or `"header.NAME"`.
fn unique_by_part(diags: &mut Diagnostics, item: &Spanned<String>, key: &str) -> Option<UniqueBy> {
    let text = item.value.as_str();
    let (message, label, help) = match text {
        "kind" => return Some(UniqueBy::Kind),
        "payload" => return Some(UniqueBy::Payload),
        _ => match header_or_field(text, key) {
            Ok(LimitKey::Header(name)) => return Some(UniqueBy::Header(name)),
            Ok(LimitKey::Payload(field)) => return Some(UniqueBy::PayloadField(field)),
            Err(Named::Neither) => (
                format!("`{text}` is not a valid part of `{key}`"),
                "expected \"kind\", \"payload\", \"payload.FIELD\" or \"header.NAME\"".to_owned(),
                by_suggestion(text),
            ),
            Err(Named::Wrongly { message, label }) => (message, label, None),
        },
    };
    diags.push(
        Diagnostic::error("invalid-value", item.span, message)
            .with_label(label)
            .with_help(help.unwrap_or_else(|| BY_HELP.to_owned())),
    );
    None
}

/// What a wrong part of `by` may have meant: `kind` or `payload`, or its name after `header.`
/// or `payload.` (`"headers.customer"` → `header.customer`).
fn by_suggestion(text: &str) -> Option<String> {
    let meant = match text.split_once('.') {
        None => closest(text, ["kind", "payload"])?.to_owned(),
        Some((source, name)) => format!("{}.{name}", closest(source, ["header", "payload"])?),
    };
    Some(format!("did you mean `{meant}`?"))
}

#[cfg(test)]
mod tests {
    use super::{DEBOUNCE_MODES, UNIQUE_STATES};
    use crate::model::{
        ConcurrencyLimit, Debounce, DebounceMode, LimitKey, Unique, UniqueBy, UniqueState,
    };
    use crate::value::Duration;
    use crate::{SourceFile, compile};

    /// The errors of a manifest whose queue `q` (pulled by a worker) has `settings`, as
    /// `code: message`; or its concurrency limit when there are none.
    fn compile_queue(settings: &str) -> Result<Option<ConcurrencyLimit>, Vec<String>> {
        queue_of(settings, |q| q.concurrency_limit.clone())
    }

    /// What `pick` takes from queue `q` (pulled by a worker) of a manifest where it has
    /// `settings`; or the manifest's errors, each as `code: message`.
    fn queue_of<T>(
        settings: &str,
        pick: impl FnOnce(&crate::model::Queue) -> T,
    ) -> Result<T, Vec<String>> {
        let text = format!(
            "application \"demo\" {{\n  queue \"q\" {{\n{settings}\n  }}\n  task \"worker\" {{}}\n}}\n"
        );
        let compiled = compile(&SourceFile::new("raindrop.manifest", text));
        match compiled.application {
            Some(app) => Ok(pick(&app.queues[0])),
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

    /// A manifest whose queue `q` (pulled by a worker) has `unique { settings }`: its unique
    /// block and warnings, or its errors, each as `code: message`.
    fn unique(settings: &str) -> Result<(Option<Unique>, Vec<String>), Vec<String>> {
        let text = format!(
            "application \"demo\" {{\n  queue \"q\" {{\n    unique {{\n{settings}\n    }}\n  }}\n  task \"worker\" {{}}\n}}\n"
        );
        let compiled = compile(&SourceFile::new("raindrop.manifest", text));
        let messages = |errors: bool| {
            compiled
                .diagnostics
                .iter()
                .filter(|d| d.is_error() == errors)
                .map(|d| format!("{}: {}", d.code, d.message))
                .collect::<Vec<_>>()
        };
        match &compiled.application {
            Some(app) => Ok((app.queues[0].unique.clone(), messages(false))),
            None => Err(messages(true)),
        }
    }

    #[test]
    fn unique_fills_in_its_defaults() {
        assert_eq!(
            unique(""),
            Ok((
                Some(Unique {
                    window: Duration::from_secs(0),
                    states: vec![UniqueState::Waiting, UniqueState::Running],
                    by: vec![UniqueBy::Kind, UniqueBy::Payload],
                }),
                vec![]
            ))
        );
        assert_eq!(compile_queue("").map(|_| ()), Ok(()));
    }

    #[test]
    fn unique_reads_every_setting_in_its_order() {
        assert_eq!(
            unique(
                "for = \"10m\"\nstates = [\"dead\", \"succeeded\", \"cancelled\", \"waiting\", \"running\"]\nby = [\"header.X-Tenant_9\", \"payload.account id\", \"kind\"]"
            ),
            Ok((
                Some(Unique {
                    window: Duration::from_secs(600),
                    states: vec![
                        UniqueState::Dead,
                        UniqueState::Succeeded,
                        UniqueState::Cancelled,
                        UniqueState::Waiting,
                        UniqueState::Running,
                    ],
                    by: vec![
                        UniqueBy::Header("X-Tenant_9".into()),
                        UniqueBy::PayloadField("account id".into()),
                        UniqueBy::Kind,
                    ],
                }),
                vec![]
            ))
        );
        for (window, secs) in [("0s", 0), ("30d", 30 * 86_400), ("720h", 30 * 86_400)] {
            assert_eq!(
                unique(&format!("for = \"{window}\"")).map(|(u, _)| u.map(|u| u.window)),
                Ok(Some(Duration::from_secs(secs))),
                "{window}"
            );
        }
    }

    /// The spelling of each state is the model's JSON one, which the runtime reads.
    #[test]
    fn unique_states_are_spelled_as_the_model_serializes_them() {
        for (name, state) in UNIQUE_STATES {
            assert_eq!(
                serde_json::to_value(state).ok(),
                Some(name.into()),
                "{name}"
            );
        }
    }

    #[test]
    fn wrong_unique_settings_are_refused() {
        for (settings, errors) in [
            (
                "for = \"30d 1s\"",
                vec!["out-of-range: `for` must be at most \"30d\", found \"30days 1s\""],
            ),
            (
                "for = \"1y\"",
                vec!["out-of-range: `for` must be at most \"30d\", found \"1year\""],
            ),
            (
                "for = 10",
                vec!["wrong-type: `for` expects a duration string, found a number"],
            ),
            (
                "states = [\"runing\"]",
                vec!["invalid-value: `runing` is not a valid state in `states`"],
            ),
            ("states = []", vec!["invalid-value: `states` is empty"]),
            (
                "states = [\"running\", \"dead\", \"running\"]",
                vec!["duplicate-value: `running` appears twice in `states`"],
            ),
            (
                "states = \"running\"",
                vec!["wrong-type: `states` expects a list of strings, found a string"],
            ),
            // Reported once: as a wrong type, not also as an empty list.
            (
                "states = [1]",
                vec!["wrong-type: `states` expects a list of strings, found a number"],
            ),
            ("by = []", vec!["invalid-value: `by` is empty"]),
            (
                "by = [\"body\"]",
                vec!["invalid-value: `body` is not a valid part of `by`"],
            ),
            (
                "by = [\"payload.a.b\"]",
                vec![
                    "invalid-value: `payload.a.b` names a nested payload field: only top-level fields are supported",
                ],
            ),
            (
                "by = [\"payload.\"]",
                vec!["invalid-value: `payload.` names no payload field"],
            ),
            (
                "by = [\"header.a b\"]",
                vec!["invalid-value: `a b` is not a header name"],
            ),
            (
                "by = [\"kind\", \"header.a\", \"kind\", \"header.a\"]",
                vec![
                    "duplicate-value: `kind` appears twice in `by`",
                    "duplicate-value: `header.a` appears twice in `by`",
                ],
            ),
            (
                "stats = [\"running\"]",
                vec!["unknown-attribute: unknown attribute `stats` in `unique` of queue `q`"],
            ),
        ] {
            assert_eq!(
                unique(settings),
                Err(errors.into_iter().map(str::to_owned).collect()),
                "{settings}"
            );
        }
        let too_long = "h".repeat(129);
        assert_eq!(
            unique(&format!("by = [\"header.{too_long}\"]")),
            Err(vec![
                "invalid-value: the header name in `by` is 129 bytes long, more than 128".into()
            ])
        );
        // Header names are case-sensitive: two headers, no repeat.
        assert!(unique("by = [\"header.Customer\", \"header.customer\"]").is_ok());
    }

    #[test]
    fn a_wrong_part_of_by_gets_did_you_mean() {
        let help = |part: &str| {
            let text = format!(
                "application \"demo\" {{\n  queue \"q\" {{\n    unique {{ by = [\"{part}\"] }}\n  }}\n  task \"worker\" {{}}\n}}\n"
            );
            compile(&SourceFile::new("raindrop.manifest", text))
                .diagnostics
                .first()
                .and_then(|d| d.help.clone())
        };
        assert_eq!(help("knd").as_deref(), Some("did you mean `kind`?"));
        assert_eq!(help("paylod").as_deref(), Some("did you mean `payload`?"));
        assert_eq!(
            help("headers.customer").as_deref(),
            Some("did you mean `header.customer`?")
        );
        assert_eq!(help("body").as_deref(), Some(super::BY_HELP));
    }

    #[test]
    fn a_payload_field_beside_the_whole_payload_is_a_warning() {
        assert_eq!(
            unique("by = [\"payload.account_id\", \"kind\", \"payload\"]"),
            Ok((
                Some(Unique {
                    window: Duration::from_secs(0),
                    states: vec![UniqueState::Waiting, UniqueState::Running],
                    by: vec![
                        UniqueBy::PayloadField("account_id".into()),
                        UniqueBy::Kind,
                        UniqueBy::Payload,
                    ],
                }),
                vec![
                    "redundant-value: `payload.account_id` adds nothing to `by`: the whole `payload` is in it"
                        .into()
                ]
            ))
        );
    }

    /// A manifest whose queue `q` (pulled by a worker) has `debounce { settings }`: its debounce
    /// block, or its errors, each as `code: message`.
    fn debounce(settings: &str) -> Result<Option<Debounce>, Vec<String>> {
        queue_of(&format!("    debounce {{\n{settings}\n    }}"), |q| {
            q.debounce.clone()
        })
    }

    #[test]
    fn debounce_reads_every_setting_and_defaults_to_trailing() {
        assert_eq!(
            debounce("key = \"payload.account\"\nwindow = \"2s\""),
            Ok(Some(Debounce {
                key: LimitKey::Payload("account".into()),
                window: Duration::from_secs(2),
                mode: DebounceMode::Trailing,
                max_wait: None,
            }))
        );
        assert_eq!(
            debounce(
                "key = \"header.X-Account_9\"\nwindow = \"1ms\"\nmode = \"trailing\"\nmax_wait = \"1d\""
            ),
            Ok(Some(Debounce {
                key: LimitKey::Header("X-Account_9".into()),
                window: Duration::from_millis(1),
                mode: DebounceMode::Trailing,
                max_wait: Some(Duration::from_secs(86_400)),
            }))
        );
        assert_eq!(
            debounce("key = \"payload.device id\"\nwindow = \"1d\"\nmode = \"leading\""),
            Ok(Some(Debounce {
                key: LimitKey::Payload("device id".into()),
                window: Duration::from_secs(86_400),
                mode: DebounceMode::Leading,
                max_wait: None,
            }))
        );
        // `max_wait` may equal `window`.
        assert_eq!(
            debounce("key = \"header.a\"\nwindow = \"30s\"\nmax_wait = \"30s\"")
                .map(|d| d.and_then(|d| d.max_wait)),
            Ok(Some(Duration::from_secs(30)))
        );
    }

    /// The spelling of each mode is the model's JSON one, which the runtime reads.
    #[test]
    fn debounce_modes_are_spelled_as_the_model_serializes_them() {
        for (name, mode) in DEBOUNCE_MODES {
            assert_eq!(serde_json::to_value(mode).ok(), Some(name.into()), "{name}");
        }
        assert_eq!(
            DEBOUNCE_MODES[0].1,
            crate::normalize::defaults::DEBOUNCE_MODE
        );
        assert_eq!(DEBOUNCE_MODES[0].1, DebounceMode::default());
    }

    #[test]
    fn wrong_debounce_settings_are_refused() {
        for (settings, errors) in [
            (
                "window = \"2s\"",
                vec!["missing-attribute: `debounce` of queue `q` needs `key`"],
            ),
            (
                "key = \"header.a\"",
                vec!["missing-attribute: `debounce` of queue `q` needs `window`"],
            ),
            (
                "",
                vec![
                    "missing-attribute: `debounce` of queue `q` needs `key`",
                    "missing-attribute: `debounce` of queue `q` needs `window`",
                ],
            ),
            // Misspelled: reported as unknown, not also as missing.
            (
                "key = \"header.a\"\nwindw = \"2s\"",
                vec!["unknown-attribute: unknown attribute `windw` in `debounce` of queue `q`"],
            ),
            // Written but invalid: reported by the value, not as missing.
            (
                "key = \"customer\"\nwindow = \"2s\"",
                vec!["invalid-value: `customer` is not a valid `key`"],
            ),
            (
                "key = \"payload.a.b\"\nwindow = \"2s\"",
                vec![
                    "invalid-value: `payload.a.b` names a nested payload field: only top-level fields are supported",
                ],
            ),
            (
                "key = \"header.a\"\nwindow = \"500us\"",
                vec!["out-of-range: `window` must be at least \"1ms\", found \"500us\""],
            ),
            (
                "key = \"header.a\"\nwindow = \"25h\"",
                vec!["out-of-range: `window` must be at most \"1d\", found \"1day 1h\""],
            ),
            (
                "key = \"header.a\"\nwindow = \"0s\"",
                vec!["invalid-duration: `window` must be longer than zero"],
            ),
            (
                "key = \"header.a\"\nwindow = 2",
                vec!["wrong-type: `window` expects a duration string, found a number"],
            ),
            (
                "key = \"header.a\"\nwindow = \"2s\"\nmax_wait = \"25h\"",
                vec!["out-of-range: `max_wait` must be at most \"1d\", found \"1day 1h\""],
            ),
            (
                "key = \"header.a\"\nwindow = \"2s\"\nmode = \"trailng\"",
                vec!["invalid-value: `trailng` is not a valid `mode`"],
            ),
            (
                "key = \"header.a\"\nwindow = \"2s\"\nmode = \"leading\"\nmax_wait = \"30s\"",
                vec![
                    "conflicting-settings: debounce of queue `q` is leading: `max_wait` applies to trailing debounce only",
                ],
            ),
            // Leading: only the mode is reported, not also `max_wait` below `window`.
            (
                "key = \"header.a\"\nwindow = \"2s\"\nmode = \"leading\"\nmax_wait = \"1s\"",
                vec![
                    "conflicting-settings: debounce of queue `q` is leading: `max_wait` applies to trailing debounce only",
                ],
            ),
            (
                "key = \"header.a\"\nwindow = \"2s\"\nmax_wait = \"1999ms\"",
                vec!["conflicting-settings: debounce of queue `q` has `max_wait` below `window`"],
            ),
        ] {
            assert_eq!(
                debounce(settings),
                Err(errors.into_iter().map(str::to_owned).collect()),
                "{settings}"
            );
        }
    }

    #[test]
    fn debounce_and_unique_on_one_queue_are_refused() {
        assert_eq!(
            compile_queue("debounce {\n key = \"header.a\"\n window = \"2s\"\n}\nunique {}"),
            Err(vec![
                "conflicting-settings: queue `q` has both `debounce` and `unique`: a job could be dropped by one and merged by the other".into()
            ])
        );
    }
}
