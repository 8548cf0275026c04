//! `service "name" { … }`: the HTTP API, with its `domain`, `rate_limit`, `quota`, `streams`
//! and `env` blocks.

use hcl_edit::structure::Block;

use super::convert::{
    boolean, duration, int_at_least, one_of, priority, size, socket_addr, string, string_list,
};
use super::env::read_env;
use super::header::block_header;
use super::reader::Reader;
use super::span;
use crate::ast;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::{AuthMode, Domain, Visibility};
use crate::source::Spanned;

/// Reads a service; its `env` blocks go to `envs`, tagged with the service's name.
pub(super) fn read_service(
    diags: &mut Diagnostics,
    block: &Block,
    header: ast::Header,
    envs: &mut Vec<ast::Env>,
) -> ast::Service {
    let mut r = Reader::new(&block.body, &header);
    let mut service = ast::Service {
        visibility: r.value(diags, "visibility", one_of(&Visibility::ALL)),
        listen: r.value(diags, "listen", socket_addr),
        auth: r.value(diags, "auth", one_of(&AuthMode::ALL)),
        api_keys_env: r.value(diags, "api_keys_env", string),
        max_body: r.value(diags, "max_body", size),
        queues: r.value(diags, "queues", string_list).map(|l| l.value),
        status_cache: r.value(diags, "status_cache", string),
        behind_proxy: r.value(diags, "behind_proxy", boolean),
        ..ast::Service::default()
    };
    if let Some(domain) = r.block(diags, "domain") {
        service.domain = read_domain(diags, domain, &header);
    }
    if let Some(limit) = r.block(diags, "rate_limit") {
        service.rate_limit = Some(read_rate_limit(diags, limit, &header));
    }
    if let Some(quota) = r.block(diags, "quota") {
        service.quota = Some(read_quota(diags, quota, &header));
    }
    if let Some(streams) = r.block(diags, "streams") {
        service.streams = Some(read_streams(diags, streams, &header));
    }
    for env in r.blocks("env") {
        if let Some(h) = block_header(diags, env, "env") {
            envs.push(read_env(diags, env, h, Some(header.name.value.clone())));
        }
    }
    r.finish(diags);
    service.header = header;
    service
}

/// `domain { cname | fqdn }`: exactly one of the two; `None` (with an error) otherwise.
fn read_domain(
    diags: &mut Diagnostics,
    domain: &Block,
    header: &ast::Header,
) -> Option<Spanned<Domain>> {
    let mut d = Reader::nested(&domain.body, header, "domain");
    let cname = d.value(diags, "cname", string);
    let fqdn = d.value(diags, "fqdn", string);
    d.finish(diags);
    let domain_span = span(domain);
    match (cname, fqdn) {
        (Some(c), None) => Some(Spanned::new(Domain::Cname(c.value), domain_span)),
        (None, Some(f)) => Some(Spanned::new(Domain::Fqdn(f.value), domain_span)),
        (Some(c), Some(_)) => {
            diags.push(
                Diagnostic::error(
                    "domain-exclusive",
                    c.span,
                    "`domain` takes `cname` or `fqdn`, not both",
                )
                .with_help("keep one of them"),
            );
            None
        }
        (None, None) => {
            diags.push(
                Diagnostic::error(
                    "missing-attribute",
                    span(&domain.ident),
                    "`domain` needs `cname` or `fqdn`",
                )
                .with_help(
                    "write `domain { cname = \"api\" }` or `domain { fqdn = \"api.example.com\" }`",
                ),
            );
            None
        }
    }
}

/// `rate_limit { requests, per, burst }`; `requests` is required.
fn read_rate_limit(
    diags: &mut Diagnostics,
    limit: &Block,
    header: &ast::Header,
) -> Spanned<ast::RateLimit> {
    let mut l = Reader::nested(&limit.body, header, "rate_limit");
    let rate = ast::RateLimit {
        requests: l.value(diags, "requests", int_at_least(1)),
        per: l.value(diags, "per", duration),
        burst: l.value(diags, "burst", int_at_least(1)),
    };
    l.finish(diags);
    if rate.requests.is_none() {
        diags.push(
            Diagnostic::error(
                "missing-attribute",
                span(&limit.ident),
                "`rate_limit` needs `requests`",
            )
            .with_help(
                "add e.g. `requests = 100` inside `rate_limit`, and `per = \"1m\"` on its own line",
            ),
        );
    }
    Spanned::new(rate, span(limit))
}

/// `quota { max_queued, max_running, max_payload, min_priority, max_priority }`.
fn read_quota(diags: &mut Diagnostics, quota: &Block, header: &ast::Header) -> Spanned<ast::Quota> {
    let mut q = Reader::nested(&quota.body, header, "quota");
    let limits = ast::Quota {
        max_queued: q.value(diags, "max_queued", int_at_least(1)),
        max_running: q.value(diags, "max_running", int_at_least(1)),
        max_payload: q.value(diags, "max_payload", size),
        min_priority: q.value(diags, "min_priority", priority),
        max_priority: q.value(diags, "max_priority", priority),
    };
    q.finish(diags);
    if let (Some(min), Some(max)) = (&limits.min_priority, &limits.max_priority)
        && min.value > max.value
    {
        diags.push(
            Diagnostic::error(
                "quota-priority-range",
                min.span,
                format!(
                    "`min_priority` ({}) is above `max_priority` ({})",
                    min.value, max.value
                ),
            )
            .with_label("the lowest priority a tenant may ask for")
            .with_help("swap them, or lower `min_priority`"),
        );
    }
    Spanned::new(limits, span(quota))
}

/// `streams { per_key, total, lifetime }`: how many event streams may be open and for how long.
fn read_streams(
    diags: &mut Diagnostics,
    streams: &Block,
    header: &ast::Header,
) -> Spanned<ast::Streams> {
    let mut s = Reader::nested(&streams.body, header, "streams");
    let limits = ast::Streams {
        per_key: s.value(diags, "per_key", int_at_least(1)),
        total: s.value(diags, "total", int_at_least(1)),
        lifetime: s.value(diags, "lifetime", duration),
    };
    s.finish(diags);
    if let (Some(per_key), Some(total)) = (&limits.per_key, &limits.total)
        && per_key.value > total.value
    {
        diags.push(
            Diagnostic::error(
                "streams-per-key-above-total",
                per_key.span,
                format!(
                    "`per_key` ({}) is above `total` ({})",
                    per_key.value, total.value
                ),
            )
            .with_label("the most streams one API key may have open")
            .with_help("lower `per_key` to at most `total`, or raise `total`"),
        );
    }
    Spanned::new(limits, span(streams))
}
