//! HCL text → [`ast::Application`]: syntax, block structure, attribute names and value types.
//!
//! Every mistake becomes a diagnostic and reading goes on, so one run reports them all.

use std::net::SocketAddr;

use hcl_edit::expr::{Expression, UnaryOperator};
use hcl_edit::structure::{Attribute, Block, BlockLabel, Body, Structure};

use crate::ast;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::{AlertMetric, AuthMode, BucketAction, Domain, Visibility};
use crate::source::{SourceFile, Span, Spanned};
use crate::suggest::did_you_mean;
use crate::value::{ByteSize, CronSchedule, Duration};

/// Block kinds this runtime runs, as they may appear inside `application`.
pub const SUPPORTED_KINDS: [&str; 6] = ["service", "queue", "task", "kv_cache", "observer", "env"];

/// Block kinds Raindrop has that this runtime parses, warns about and does not run.
pub const UNSUPPORTED_KINDS: [&str; 8] = [
    "bucket",
    "sql_database",
    "smartbucket",
    "smartmemory",
    "smartsql",
    "actor",
    "mcp_service",
    "ai",
];

/// The older name of `kv_cache`.
const DEPRECATED_KV_STORE: &str = "kv_store";

/// Parses `source` into the application it declares. `None` when there is nothing to check
/// further (a syntax error, or no `application` block); the reasons are in `diags`.
pub fn parse(source: &SourceFile, diags: &mut Diagnostics) -> Option<ast::Application> {
    let body = match hcl_edit::parser::parse_body(source.text()) {
        Ok(body) => body,
        Err(err) => {
            diags.push(syntax_error(source, &err));
            return None;
        }
    };
    let mut applications = Vec::new();
    for structure in body.iter() {
        match structure {
            Structure::Block(block) if block.ident.as_str() == "application" => {
                applications.push(block)
            }
            Structure::Block(block) => diags.push(outside_application(block)),
            Structure::Attribute(attr) => diags.push(
                Diagnostic::error(
                    "outside-application",
                    span(attr),
                    format!(
                        "attribute `{}` outside the application block",
                        attr.key.as_str()
                    ),
                )
                .with_help("settings go inside a block of `application \"name\" { … }`"),
            ),
        }
    }
    let Some((first, rest)) = applications.split_first() else {
        diags.push(
            Diagnostic::error(
                "missing-application",
                Span::new(0..0),
                "the manifest declares no application",
            )
            .with_help("wrap the blocks in `application \"my-app\" { … }`"),
        );
        return None;
    };
    for extra in rest {
        diags.push(
            Diagnostic::error(
                "duplicate-application",
                span(&extra.ident),
                "a manifest declares exactly one application",
            )
            .with_label("second application")
            .with_related(span(&first.ident), "first declared here")
            .with_help(
                "move these blocks into the first application, or into a manifest of their own",
            ),
        );
    }
    Some(read_application(diags, first))
}

fn syntax_error(source: &SourceFile, err: &hcl_edit::parser::Error) -> Diagnostic {
    let text = source.text();
    // The parser's offset may fall inside a multi-byte character.
    let offset = source
        .clamp(Span::new(err.location().offset()..err.location().offset()))
        .start;
    // Underline the whole word at the error, or one character.
    let rest = &text[offset..];
    let word = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(rest.len());
    let len = if word > 0 {
        word
    } else {
        rest.chars().next().map_or(0, char::len_utf8)
    };
    let help = if err.message().contains("redefined attribute") {
        "an attribute is set once per block; keep one of them"
    } else {
        "blocks are written `kind \"name\" { … }` with one attribute `key = value` per line"
    };
    Diagnostic::error(
        "syntax",
        Span::new(offset..offset + len),
        format!("HCL syntax error: {}", err.message()),
    )
    .with_help(help)
}

fn outside_application(block: &Block) -> Diagnostic {
    let kind = block.ident.as_str();
    let known = SUPPORTED_KINDS.contains(&kind)
        || UNSUPPORTED_KINDS.contains(&kind)
        || kind == DEPRECATED_KV_STORE;
    if known {
        Diagnostic::error(
            "outside-application",
            span(&block.ident),
            format!("`{kind}` block outside the application block"),
        )
        .with_help("move it inside `application \"name\" { … }`")
    } else {
        Diagnostic::error(
            "unknown-block",
            span(&block.ident),
            format!("unknown block `{kind}`"),
        )
        .with_help_opt(did_you_mean(kind, ["application"]))
    }
}

fn read_application(diags: &mut Diagnostics, block: &Block) -> ast::Application {
    let mut app = ast::Application {
        header: block_header(diags, block, "application").unwrap_or_default(),
        ..ast::Application::default()
    };
    for structure in block.body.iter() {
        let block = match structure {
            Structure::Block(block) => block,
            Structure::Attribute(attr) => {
                diags.push(
                    Diagnostic::error(
                        "unknown-attribute",
                        span(&attr.key),
                        format!("unknown attribute `{}` in the application block", attr.key.as_str()),
                    )
                    .with_help("the application block holds only blocks such as `service`, `queue` and `task`"),
                );
                continue;
            }
        };
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
            app.incomplete = true;
            continue;
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
        }
        let shown_kind = if kind == DEPRECATED_KV_STORE {
            "kv_cache"
        } else {
            kind
        };
        let Some(h) = block_header(diags, block, shown_kind) else {
            app.incomplete = true;
            continue;
        };
        match shown_kind {
            "service" => {
                let service = read_service(diags, block, h, &mut app.envs);
                app.services.push(service);
            }
            "queue" => app.queues.push(read_queue(diags, block, h)),
            "task" => app.tasks.push(read_task(diags, block, h)),
            "kv_cache" => app.kv_caches.push(read_kv_cache(diags, block, h)),
            "observer" => app.observers.push(read_observer(diags, block, h)),
            "env" => app.envs.push(read_env(diags, block, h, None)),
            _ => {
                diags.push(
                    Diagnostic::warning(
                        "unsupported-kind",
                        span(&block.ident),
                        format!(
                            "`{kind}` blocks are not run by this runtime; `{}` is ignored",
                            h.name.value
                        ),
                    )
                    .with_help(
                        "the block is kept for Raindrop compatibility; nothing is started for it",
                    ),
                );
                app.unsupported.push(ast::Unsupported { header: h });
            }
        }
    }
    app
}

/// The kind and single name label of a block; `None` (with an error) when the name is missing.
fn block_header(diags: &mut Diagnostics, block: &Block, kind: &'static str) -> Option<ast::Header> {
    let labels: Vec<Spanned<String>> = block.labels.iter().map(label).collect();
    let Some(first) = labels.first() else {
        diags.push(
            Diagnostic::error(
                "missing-name",
                span(&block.ident),
                format!("`{kind}` block without a name"),
            )
            .with_help(format!("write `{} \"name\" {{ … }}`", block.ident.as_str())),
        );
        return None;
    };
    for extra in &labels[1..] {
        diags.push(
            Diagnostic::error(
                "extra-label",
                extra.span,
                format!("a `{kind}` block takes one name"),
            )
            .with_related(first.span, "its name")
            .with_help("remove the extra label"),
        );
    }
    Some(ast::Header {
        kind,
        name: first.clone(),
        span: span(block),
    })
}

fn label(label: &BlockLabel) -> Spanned<String> {
    match label {
        BlockLabel::String(s) => Spanned::new(s.value().clone(), span(s)),
        BlockLabel::Ident(i) => Spanned::new(i.as_str().to_owned(), span(i)),
    }
}

/// A nested block that takes no labels (`backoff`, `source`, …).
fn unlabelled(diags: &mut Diagnostics, block: &Block) {
    if let Some(first) = block.labels.first() {
        diags.push(
            Diagnostic::error(
                "extra-label",
                span(first),
                format!("a `{}` block takes no name", block.ident.as_str()),
            )
            .with_help(format!("write `{} {{ … }}`", block.ident.as_str())),
        );
    }
}

fn read_service(
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
        ..ast::Service::default()
    };
    if let Some(domain) = r.block(diags, "domain") {
        let mut d = Reader::nested(&domain.body, &header, "domain");
        let cname = d.value(diags, "cname", string);
        let fqdn = d.value(diags, "fqdn", string);
        d.finish(diags);
        let domain_span = span(domain);
        service.domain = match (cname, fqdn) {
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
                    Diagnostic::error("missing-attribute", span(&domain.ident), "`domain` needs `cname` or `fqdn`")
                        .with_help("write `domain { cname = \"api\" }` or `domain { fqdn = \"api.example.com\" }`"),
                );
                None
            }
        };
    }
    if let Some(limit) = r.block(diags, "rate_limit") {
        let mut l = Reader::nested(&limit.body, &header, "rate_limit");
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
                .with_help("add e.g. `requests = 100` inside `rate_limit`, and `per = \"1m\"` on its own line"),
            );
        }
        service.rate_limit = Some(Spanned::new(rate, span(limit)));
    }
    if let Some(quota) = r.block(diags, "quota") {
        let mut q = Reader::nested(&quota.body, &header, "quota");
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
        service.quota = Some(Spanned::new(limits, span(quota)));
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

fn read_queue(diags: &mut Diagnostics, block: &Block, header: ast::Header) -> ast::Queue {
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

fn read_task(diags: &mut Diagnostics, block: &Block, header: ast::Header) -> ast::Task {
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

fn read_kv_cache(diags: &mut Diagnostics, block: &Block, header: ast::Header) -> ast::KvCache {
    let mut r = Reader::new(&block.body, &header);
    let ttl = r.value(diags, "ttl", duration);
    r.finish(diags);
    ast::KvCache { header, ttl }
}

fn read_observer(diags: &mut Diagnostics, block: &Block, header: ast::Header) -> ast::Observer {
    let mut r = Reader::new(&block.body, &header);
    let mut observer = ast::Observer {
        queues: r.value(diags, "queues", string_list).map(|l| l.value),
        ..ast::Observer::default()
    };
    if let Some(source) = r.block(diags, "source") {
        let mut s = Reader::nested(&source.body, &header, "source");
        let mut read = ast::Source {
            span: span(&source.ident),
            queue: s.value(diags, "queue", string),
            bucket: s.value(diags, "bucket", string),
            batch_size: s.value(diags, "batch_size", int_at_least(1)),
            actions: Vec::new(),
        };
        for rule in s.blocks("rule") {
            unlabelled(diags, rule);
            let mut rr = Reader::nested(&rule.body, &header, "rule");
            if let Some(actions) = rr.value(diags, "actions", string_list) {
                for action in actions.value {
                    match BucketAction::ALL.iter().find(|(n, _)| *n == action.value) {
                        Some((_, a)) => read.actions.push(Spanned::new(*a, action.span)),
                        None => {
                            let names = BucketAction::ALL.iter().map(|(n, _)| *n);
                            diags.push(
                                Diagnostic::error(
                                    "invalid-bucket-action",
                                    action.span,
                                    format!("`{}` is not a bucket action", action.value),
                                )
                                .with_help(
                                    did_you_mean(&action.value, names.clone()).unwrap_or_else(
                                        || {
                                            format!(
                                                "bucket actions are {}",
                                                names.collect::<Vec<_>>().join(", ")
                                            )
                                        },
                                    ),
                                ),
                            );
                        }
                    }
                }
            }
            rr.finish(diags);
        }
        s.finish(diags);
        observer.source = Some(read);
    }
    for alert in r.blocks("alert") {
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
            continue;
        };
        let mut a = Reader::nested(&alert.body, &header, "alert");
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
        observer.alerts.push(read);
    }
    r.finish(diags);
    observer.header = header;
    observer
}

fn read_env(
    diags: &mut Diagnostics,
    block: &Block,
    header: ast::Header,
    service: Option<String>,
) -> ast::Env {
    let mut r = Reader::new(&block.body, &header);
    let env = ast::Env {
        secret: r.value(diags, "secret", boolean),
        default: r.value(diags, "default", string),
        service,
        header: header.clone(),
    };
    r.finish(diags);
    env
}

/// Reads the attributes and blocks of one body, remembering what it was asked for, so that
/// whatever is left over is reported as unknown with a suggestion from what is known.
struct Reader<'a> {
    body: &'a Body,
    owner: String,
    used: Vec<bool>,
    known_attrs: Vec<&'static str>,
    known_blocks: Vec<&'static str>,
}

impl<'a> Reader<'a> {
    fn new(body: &'a Body, header: &ast::Header) -> Self {
        let owner = format!("{} `{}`", header.kind, header.name.value);
        Self::with_owner(body, owner)
    }

    fn nested(body: &'a Body, header: &ast::Header, block: &str) -> Self {
        let owner = format!("`{block}` of {} `{}`", header.kind, header.name.value);
        Self::with_owner(body, owner)
    }

    fn with_owner(body: &'a Body, owner: String) -> Self {
        Self {
            body,
            owner,
            used: vec![false; body.len()],
            known_attrs: Vec::new(),
            known_blocks: Vec::new(),
        }
    }

    /// The attribute `key` (the HCL parser already refuses a key set twice in one body).
    fn attr(&mut self, key: &'static str) -> Option<&'a Attribute> {
        self.known_attrs.push(key);
        let (index, attr) = self
            .body
            .iter()
            .enumerate()
            .find_map(|(index, structure)| match structure {
                Structure::Attribute(attr) if attr.key.as_str() == key => Some((index, attr)),
                _ => None,
            })?;
        self.used[index] = true;
        Some(attr)
    }

    /// The value of attribute `key`, converted by `convert` (which reports type errors).
    fn value<T>(
        &mut self,
        diags: &mut Diagnostics,
        key: &'static str,
        convert: impl FnOnce(&mut Diagnostics, &Expression, &str) -> Option<T>,
    ) -> Option<Spanned<T>> {
        let attr = self.attr(key)?;
        convert(diags, &attr.value, key).map(|v| Spanned::new(v, span(&attr.value)))
    }

    /// Every nested block called `key`.
    fn blocks(&mut self, key: &'static str) -> Vec<&'a Block> {
        self.known_blocks.push(key);
        let mut found = Vec::new();
        for (index, structure) in self.body.iter().enumerate() {
            if let Structure::Block(block) = structure
                && block.ident.as_str() == key
            {
                self.used[index] = true;
                found.push(block);
            }
        }
        found
    }

    /// The nested block `key`, which may appear once and takes no labels.
    fn block(&mut self, diags: &mut Diagnostics, key: &'static str) -> Option<&'a Block> {
        let blocks = self.blocks(key);
        let first = *blocks.first()?;
        for extra in &blocks[1..] {
            diags.push(
                Diagnostic::error(
                    "duplicate-block",
                    span(&extra.ident),
                    format!("`{key}` appears twice in {}", self.owner),
                )
                .with_related(span(&first.ident), "first here")
                .with_help("merge them into one block"),
            );
        }
        unlabelled(diags, first);
        Some(first)
    }

    /// Reports everything in the body that nobody asked for.
    fn finish(self, diags: &mut Diagnostics) {
        for (structure, &used) in self.body.iter().zip(&self.used) {
            if used {
                continue;
            }
            match structure {
                Structure::Attribute(attr) => {
                    let key = attr.key.as_str();
                    let in_blocks = self.known_blocks.contains(&key);
                    let help = if in_blocks {
                        format!("`{key}` is a block: write `{key} {{ … }}`")
                    } else {
                        did_you_mean(key, self.known_attrs.iter().copied())
                            .unwrap_or_else(|| self.accepted())
                    };
                    diags.push(
                        Diagnostic::error(
                            "unknown-attribute",
                            span(&attr.key),
                            format!("unknown attribute `{key}` in {}", self.owner),
                        )
                        .with_help(help),
                    );
                }
                Structure::Block(block) => {
                    let ident = block.ident.as_str();
                    if ident == "env" {
                        diags.push(
                            Diagnostic::error(
                                "misplaced-env",
                                span(&block.ident),
                                format!("`env` block inside {}", self.owner),
                            )
                            .with_help(
                                "declare `env` at the top of the application or inside a service",
                            ),
                        );
                        continue;
                    }
                    let help = if self.known_attrs.contains(&ident) {
                        format!("`{ident}` is an attribute: write `{ident} = …`")
                    } else {
                        did_you_mean(ident, self.known_blocks.iter().copied())
                            .unwrap_or_else(|| self.accepted())
                    };
                    diags.push(
                        Diagnostic::error(
                            "unknown-block",
                            span(&block.ident),
                            format!("unknown block `{ident}` in {}", self.owner),
                        )
                        .with_help(help),
                    );
                }
            }
        }
    }

    fn accepted(&self) -> String {
        let mut names: Vec<String> = self.known_attrs.iter().map(|a| format!("`{a}`")).collect();
        names.extend(self.known_blocks.iter().map(|b| format!("`{b} {{ … }}`")));
        if names.is_empty() {
            format!("{} takes no settings", self.owner)
        } else {
            format!("{} accepts {}", self.owner, names.join(", "))
        }
    }
}

fn span(node: &impl hcl_edit::Span) -> Span {
    node.span().map(Span::from).unwrap_or_default()
}

// ---- value conversions: each reports its own type and range errors ----

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

fn string(diags: &mut Diagnostics, expr: &Expression, key: &str) -> Option<String> {
    match expr {
        Expression::String(s) => Some(s.value().clone()),
        _ => {
            wrong_type(diags, expr, key, "a string", "\"…\"");
            None
        }
    }
}

fn boolean(diags: &mut Diagnostics, expr: &Expression, key: &str) -> Option<bool> {
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

fn int_at_least(min: u32) -> impl FnOnce(&mut Diagnostics, &Expression, &str) -> Option<u32> {
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
        if n > f64::from(u32::MAX) {
            diags.push(Diagnostic::error(
                "out-of-range",
                span(expr),
                format!("`{key}` must be at most {}, found {n}", u32::MAX),
            ));
            return None;
        }
        // In range and whole: the cast is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(n as u32)
    }
}

/// A job priority: a whole number in `i32`'s range.
fn priority(diags: &mut Diagnostics, expr: &Expression, key: &str) -> Option<i32> {
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

fn float_in(min: f64, max: f64) -> impl FnOnce(&mut Diagnostics, &Expression, &str) -> Option<f64> {
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

fn duration(diags: &mut Diagnostics, expr: &Expression, key: &str) -> Option<Duration> {
    if number(expr).is_some() {
        wrong_type(diags, expr, key, "a duration string", "\"30s\"");
        return None;
    }
    let text = string(diags, expr, key)?;
    match text.parse::<Duration>() {
        Ok(d) if d.get().is_zero() => {
            diags.push(
                Diagnostic::error(
                    "invalid-duration",
                    span(expr),
                    format!("`{key}` must be longer than zero"),
                )
                .with_help("write e.g. \"250ms\", \"30s\" or \"5m\""),
            );
            None
        }
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

fn size(diags: &mut Diagnostics, expr: &Expression, key: &str) -> Option<ByteSize> {
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

fn cron(diags: &mut Diagnostics, expr: &Expression, key: &str) -> Option<Option<CronSchedule>> {
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

fn one_of<'t, T: Copy>(
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

fn string_list(
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

fn socket_addr(diags: &mut Diagnostics, expr: &Expression, key: &str) -> Option<SocketAddr> {
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
