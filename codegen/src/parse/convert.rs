//! Value conversions for [`Reader::value`](super::reader::Reader::value): each reports its own
//! type and range errors.

use std::net::SocketAddr;

use hcl_edit::expr::{Expression, UnaryOperator};

use super::span;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::source::{Span, Spanned};
use crate::suggest::did_you_mean;
use crate::value::{ByteSize, CronSchedule, Duration};

fn describe(expr: &Expression) -> &'static str {
    match expr {
        Expression::Null(_) => "null",
        Expression::Bool(_) => "a boolean",
        Expression::Number(_) => "a number",
        Expression::String(_) => "a string",
        Expression::StringTemplate(_) | Expression::HeredocTemplate(_) => "a template string",
        Expression::Array(_) => "a list",
        Expression::Object(_) => "an object",
        Expression::UnaryOp(op) if op.operator.value() == &UnaryOperator::Neg => "a number",
        _ => "an expression",
    }
}

fn wrong_type(
    diags: &mut Diagnostics,
    expr: &Expression,
    key: &str,
    expected: &str,
    example: &str,
) {
    let mut d = Diagnostic::error(
        "wrong-type",
        span(expr),
        format!("`{key}` expects {expected}, found {}", describe(expr)),
    )
    .with_label(format!("expected {expected}"))
    .with_help(format!("write `{key} = {example}`"));
    if matches!(
        expr,
        Expression::StringTemplate(_) | Expression::HeredocTemplate(_)
    ) {
        d = d.with_help(
            "the manifest takes plain strings; interpolation and heredocs are not evaluated",
        );
    }
    diags.push(d);
}

pub(super) fn string(diags: &mut Diagnostics, expr: &Expression, key: &str) -> Option<String> {
    match expr {
        Expression::String(s) => Some(s.value().clone()),
        _ => {
            wrong_type(diags, expr, key, "a string", "\"…\"");
            None
        }
    }
}

pub(super) fn boolean(diags: &mut Diagnostics, expr: &Expression, key: &str) -> Option<bool> {
    match expr {
        Expression::Bool(b) => Some(*b.value()),
        _ => {
            wrong_type(diags, expr, key, "a boolean", "true");
            None
        }
    }
}

/// A number literal, with a leading minus folded in.
fn number(expr: &Expression) -> Option<f64> {
    match expr {
        Expression::Number(n) => n.value().as_f64(),
        Expression::UnaryOp(op) if op.operator.value() == &UnaryOperator::Neg => {
            number(&op.expr).map(|n| -n)
        }
        _ => None,
    }
}

/// The text of a string that holds a number (`"4"`), to suggest writing it unquoted.
fn quoted_number(expr: &Expression) -> Option<String> {
    match expr {
        Expression::String(s) => Some(s.value().trim().to_owned()),
        _ => None,
    }
}

pub(super) fn int_at_least(
    min: u32,
) -> impl FnOnce(&mut Diagnostics, &Expression, &str) -> Option<u32> {
    int_in(min, u32::MAX)
}

/// A whole number from `min` to `max`.
pub(super) fn int_in(
    min: u32,
    max: u32,
) -> impl FnOnce(&mut Diagnostics, &Expression, &str) -> Option<u32> {
    move |diags, expr, key| {
        let Some(n) = number(expr) else {
            let quoted = quoted_number(expr).filter(|n| n.parse::<u32>().is_ok());
            wrong_type(
                diags,
                expr,
                key,
                "a whole number",
                &quoted.unwrap_or_else(|| min.max(1).to_string()),
            );
            return None;
        };
        if n.fract() != 0.0 {
            wrong_type(
                diags,
                expr,
                key,
                "a whole number",
                &(n.trunc().max(f64::from(min))).to_string(),
            );
            return None;
        }
        if n < f64::from(min) {
            diags.push(
                Diagnostic::error(
                    "out-of-range",
                    span(expr),
                    format!("`{key}` must be at least {min}, found {n}"),
                )
                .with_label(format!("must be {min} or more")),
            );
            return None;
        }
        if n > f64::from(max) {
            let mut d = Diagnostic::error(
                "out-of-range",
                span(expr),
                format!("`{key}` must be at most {max}, found {n}"),
            );
            if max < u32::MAX {
                d = d.with_label(format!("must be {max} or less"));
            }
            diags.push(d);
            return None;
        }
        // In range and whole: the cast is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(n as u32)
    }
}

/// A job priority: a whole number in `i32`'s range.
pub(super) fn priority(diags: &mut Diagnostics, expr: &Expression, key: &str) -> Option<i32> {
    let Some(n) = number(expr) else {
        wrong_type(diags, expr, key, "a whole number", "0");
        return None;
    };
    if n.fract() != 0.0 || n < f64::from(i32::MIN) || n > f64::from(i32::MAX) {
        diags.push(Diagnostic::error(
            "out-of-range",
            span(expr),
            format!(
                "`{key}` must be a whole number from {} to {}, found {n}",
                i32::MIN,
                i32::MAX
            ),
        ));
        return None;
    }
    // Whole and in range: the cast is exact.
    #[allow(clippy::cast_possible_truncation)]
    Some(n as i32)
}

pub(super) fn float_in(
    min: f64,
    max: f64,
) -> impl FnOnce(&mut Diagnostics, &Expression, &str) -> Option<f64> {
    move |diags, expr, key| {
        let Some(n) = number(expr) else {
            let quoted = quoted_number(expr).filter(|n| n.parse::<f64>().is_ok());
            wrong_type(
                diags,
                expr,
                key,
                "a number",
                &quoted.unwrap_or_else(|| min.to_string()),
            );
            return None;
        };
        if !(min..=max).contains(&n) {
            let range = if max == f64::MAX {
                format!("at least {min}")
            } else {
                format!("between {min} and {max}")
            };
            diags.push(
                Diagnostic::error(
                    "out-of-range",
                    span(expr),
                    format!("`{key}` must be {range}, found {n}"),
                )
                .with_label(format!("must be {range}")),
            );
            return None;
        }
        Some(n)
    }
}

pub(super) fn duration(diags: &mut Diagnostics, expr: &Expression, key: &str) -> Option<Duration> {
    let d = duration_or_zero(diags, expr, key)?;
    if d.get().is_zero() {
        diags.push(
            Diagnostic::error(
                "invalid-duration",
                span(expr),
                format!("`{key}` must be longer than zero"),
            )
            .with_help("write e.g. \"250ms\", \"30s\" or \"5m\""),
        );
        return None;
    }
    Some(d)
}

/// A duration that may be zero (`"0s"`).
fn duration_or_zero(diags: &mut Diagnostics, expr: &Expression, key: &str) -> Option<Duration> {
    if number(expr).is_some() {
        wrong_type(diags, expr, key, "a duration string", "\"30s\"");
        return None;
    }
    let text = string(diags, expr, key)?;
    match text.parse::<Duration>() {
        Ok(d) => Some(d),
        Err(message) => {
            diags.push(
                Diagnostic::error(
                    "invalid-duration",
                    span(expr),
                    format!("invalid duration for `{key}`: {message}"),
                )
                .with_help(
                    "durations are strings with a unit: \"250ms\", \"30s\", \"5m\", \"2h\", \"7d\"",
                ),
            );
            None
        }
    }
}

/// A duration from `min` to `max`, both written as the message says them (`"1ms"`, `"1d"`);
/// zero only when `min` is zero.
pub(super) fn duration_in(
    (min, min_text): (Duration, &'static str),
    (max, max_text): (Duration, &'static str),
) -> impl FnOnce(&mut Diagnostics, &Expression, &str) -> Option<Duration> {
    move |diags, expr, key| {
        let d = if min.get().is_zero() {
            duration_or_zero(diags, expr, key)?
        } else {
            duration(diags, expr, key)?
        };
        let bound = if d < min {
            Some(format!("at least \"{min_text}\""))
        } else if d > max {
            Some(format!("at most \"{max_text}\""))
        } else {
            None
        };
        if let Some(bound) = bound {
            diags.push(
                Diagnostic::error(
                    "out-of-range",
                    span(expr),
                    format!("`{key}` must be {bound}, found \"{d}\""),
                )
                .with_label(format!("must be from \"{min_text}\" to \"{max_text}\"")),
            );
            return None;
        }
        Some(d)
    }
}

pub(super) fn size(diags: &mut Diagnostics, expr: &Expression, key: &str) -> Option<ByteSize> {
    if number(expr).is_some() {
        wrong_type(diags, expr, key, "a size string", "\"128KiB\"");
        return None;
    }
    let text = string(diags, expr, key)?;
    match text.parse::<ByteSize>() {
        Ok(s) if s.bytes() == 0 => {
            diags.push(Diagnostic::error(
                "invalid-size",
                span(expr),
                format!("`{key}` must be larger than zero"),
            ));
            None
        }
        Ok(s) => Some(s),
        Err(message) => {
            diags.push(Diagnostic::error(
                "invalid-size",
                span(expr),
                format!("invalid size for `{key}`: {message}"),
            ));
            None
        }
    }
}

pub(super) fn cron(
    diags: &mut Diagnostics,
    expr: &Expression,
    key: &str,
) -> Option<Option<CronSchedule>> {
    let text = string(diags, expr, key)?;
    match CronSchedule::parse(&text) {
        Ok(schedule) => Some(Some(schedule)),
        Err(err) => {
            // Point at the offending field inside the string when we know it.
            let whole = span(expr);
            let field_span = err.field.and_then(|index| {
                let (start, field) = field_positions(&text).nth(index)?;
                // +1 skips the opening quote of a plain string literal.
                let start = whole.start + 1 + start;
                Some(Span::new(start..start + field.len()))
            });
            diags.push(
                Diagnostic::error("invalid-cron", field_span.unwrap_or(whole), format!("invalid cron expression: {}", err.message))
                    .with_help("cron takes 5 fields in UTC: minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\""),
            );
            Some(None)
        }
    }
}

fn field_positions(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split(' ')
        .scan(0, |offset, field| {
            let start = *offset;
            *offset += field.len() + 1;
            Some((start, field))
        })
        .filter(|(_, field)| !field.is_empty())
}

pub(super) fn one_of<'t, T: Copy>(
    table: &'t [(&'static str, T)],
) -> impl FnOnce(&mut Diagnostics, &Expression, &str) -> Option<T> + 't {
    move |diags, expr, key| {
        let names = table.iter().map(|(n, _)| *n);
        let example = format!("\"{}\"", table[0].0);
        let text = match expr {
            Expression::String(s) => s.value().clone(),
            _ => {
                wrong_type(diags, expr, key, "a string", &example);
                return None;
            }
        };
        if let Some((_, value)) = table.iter().find(|(n, _)| *n == text) {
            return Some(*value);
        }
        let list = names
            .clone()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ");
        diags.push(
            Diagnostic::error(
                "invalid-value",
                span(expr),
                format!("`{text}` is not a valid `{key}`"),
            )
            .with_label(format!("expected one of {list}"))
            .with_help_opt(did_you_mean(&text, names)),
        );
        None
    }
}

pub(super) fn string_list(
    diags: &mut Diagnostics,
    expr: &Expression,
    key: &str,
) -> Option<Vec<Spanned<String>>> {
    let Expression::Array(array) = expr else {
        wrong_type(diags, expr, key, "a list of strings", "[\"…\"]");
        return None;
    };
    let mut items = Vec::new();
    for item in array.iter() {
        match item {
            Expression::String(s) => items.push(Spanned::new(s.value().clone(), span(item))),
            other => wrong_type(diags, other, key, "a list of strings", "[\"…\"]"),
        }
    }
    Some(items)
}

pub(super) fn socket_addr(
    diags: &mut Diagnostics,
    expr: &Expression,
    key: &str,
) -> Option<SocketAddr> {
    let text = string(diags, expr, key)?;
    match text.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            diags.push(
                Diagnostic::error(
                    "invalid-value",
                    span(expr),
                    format!("`{text}` is not an address to listen on"),
                )
                .with_help(
                    "write an IP address and a port, e.g. \"127.0.0.1:8080\" or \"0.0.0.0:8080\"",
                ),
            );
            None
        }
    }
}
