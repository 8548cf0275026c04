//! The user's mistakes: diagnostics with a span, a message and help, rendered like a compiler's.

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};
use serde::Serialize;

use crate::source::{LineCol, SourceFile, Span};

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The manifest cannot run: validation fails.
    Error,
    /// The manifest runs, but something is likely not what the author meant.
    Warning,
}

/// One problem in a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// A stable, machine-readable code such as `unknown-attribute`.
    pub code: &'static str,
    /// What is wrong, in one sentence.
    pub message: String,
    /// Where it is wrong.
    pub span: Span,
    /// A short label shown under the carets.
    pub label: Option<String>,
    /// Other places that explain this one (e.g. the first declaration of a duplicate).
    pub related: Vec<(Span, String)>,
    /// What to do about it, e.g. a did-you-mean.
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error with `code` and `message` at `span`.
    pub fn error(code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, code, span, message)
    }

    /// A warning with `code` and `message` at `span`.
    pub fn warning(code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, code, span, message)
    }

    fn new(severity: Severity, code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Self {
            severity,
            code,
            message: message.into(),
            span,
            label: None,
            related: Vec::new(),
            help: None,
        }
    }

    /// Sets the label under the carets.
    #[must_use]
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Adds a related place with its own label.
    #[must_use]
    pub fn with_related(mut self, span: Span, label: impl Into<String>) -> Self {
        self.related.push((span, label.into()));
        self
    }

    /// Sets the help line.
    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Sets the help line if there is one.
    #[must_use]
    pub fn with_help_opt(mut self, help: Option<String>) -> Self {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    /// Whether this diagnostic makes validation fail.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Collects diagnostics while a manifest is compiled, so every problem is reported at once.
#[derive(Debug, Default)]
pub struct Diagnostics {
    list: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Records a diagnostic.
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.list.push(diagnostic);
    }

    /// Whether any error has been recorded.
    pub fn has_errors(&self) -> bool {
        self.list.iter().any(Diagnostic::is_error)
    }

    /// The diagnostics in source order (errors before warnings at the same place).
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.list
            .sort_by_key(|d| (d.span.start, d.severity, d.span.end));
        self.list.dedup();
        self.list
    }
}

/// Whether rendered diagnostics carry terminal colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Plain text: files, pipes, snapshots.
    Plain,
    /// ANSI colours for a terminal.
    Colored,
}

/// Renders diagnostics like rustc does: severity, code, `file:line:col`, the source line with
/// carets, and help. Diagnostics are separated by blank lines and followed by a summary line.
pub fn render(source: &SourceFile, diagnostics: &[Diagnostic], style: Style) -> String {
    let renderer = match style {
        Style::Plain => Renderer::plain(),
        Style::Colored => Renderer::styled(),
    };
    let mut out = String::new();
    for diagnostic in diagnostics {
        out.push_str(&renderer.render(&report(source, diagnostic)));
        out.push_str("\n\n");
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    out.push_str(&summary(source.name(), errors, warnings));
    out.push('\n');
    out
}

/// `raindrop.manifest: 2 errors, 1 warning` (or `… is valid`).
pub fn summary(name: &str, errors: usize, warnings: usize) -> String {
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    match (errors, warnings) {
        (0, 0) => format!("{name}: valid"),
        (0, w) => format!("{name}: valid, {}", plural(w, "warning")),
        (e, 0) => format!("{name}: {}", plural(e, "error")),
        (e, w) => format!("{name}: {}, {}", plural(e, "error"), plural(w, "warning")),
    }
}

fn report<'a>(source: &'a SourceFile, d: &'a Diagnostic) -> Vec<Group<'a>> {
    let level = match d.severity {
        Severity::Error => Level::ERROR,
        Severity::Warning => Level::WARNING,
    };
    let primary = source.clamp(d.span);
    let mut primary_annotation = AnnotationKind::Primary.span(primary.range());
    if let Some(label) = &d.label {
        primary_annotation = primary_annotation.label(label.as_str());
    }
    let mut snippet = Snippet::source(source.text())
        .path(source.name())
        .fold(true)
        .annotation(primary_annotation);
    for (span, label) in &d.related {
        snippet = snippet.annotation(
            AnnotationKind::Context
                .span(source.clamp(*span).range())
                .label(label.as_str()),
        );
    }
    let mut group = level
        .primary_title(d.message.as_str())
        .id(d.code)
        .element(snippet);
    if let Some(help) = &d.help {
        group = group.element(Level::HELP.message(help.as_str()));
    }
    vec![group]
}

/// A diagnostic as editors and CI read it (`raindrop validate --format json`).
#[derive(Debug, Serialize)]
pub struct JsonDiagnostic<'a> {
    /// `error` or `warning`.
    pub severity: Severity,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What is wrong.
    pub message: &'a str,
    /// The file.
    pub file: &'a str,
    /// Where the span starts.
    pub start: LineCol,
    /// Where the span ends.
    pub end: LineCol,
    /// The label under the carets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<&'a str>,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<&'a str>,
}

impl<'a> JsonDiagnostic<'a> {
    /// The JSON form of `d`, with positions resolved against `source`.
    pub fn new(source: &'a SourceFile, d: &'a Diagnostic) -> Self {
        let span = source.clamp(d.span);
        Self {
            severity: d.severity,
            code: d.code,
            message: &d.message,
            file: source.name(),
            start: source.line_col(span.start),
            end: source.line_col(span.end),
            label: d.label.as_deref(),
            help: d.help.as_deref(),
        }
    }
}
