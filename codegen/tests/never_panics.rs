//! Property tests: no input makes the compiler panic, and its outcome is always consistent.

use proptest::prelude::*;
use raindrop_codegen::diagnostic::JsonDiagnostic;
use raindrop_codegen::{SourceFile, Style, compile};

/// Compiles `text` and checks what every outcome must satisfy.
fn check(text: &str) -> Result<(), TestCaseError> {
    let source = SourceFile::new("fuzz.manifest", text);
    let compiled = compile(&source);
    prop_assert_eq!(compiled.application.is_some(), !compiled.has_errors());
    let rendered = compiled.render(&source, Style::Plain);
    prop_assert!(rendered.ends_with('\n'));
    for diagnostic in &compiled.diagnostics {
        let json = JsonDiagnostic::new(&source, diagnostic);
        prop_assert!(json.start.line >= 1 && json.start.line <= text.lines().count().max(1) + 1);
        prop_assert!(!diagnostic.message.is_empty());
    }
    if let Some(app) = &compiled.application {
        // Whatever compiles also generates code that parses as Rust.
        let tokens = raindrop_codegen::generate::application(app, "/app/raindrop.manifest");
        prop_assert!(
            syn_parses(&tokens.to_string()),
            "generated code does not parse"
        );
    }
    Ok(())
}

fn syn_parses(code: &str) -> bool {
    code.parse::<proc_macro2::TokenStream>().is_ok()
}

const VALID: &[&str] = &[
    include_str!("ui/valid/seed.manifest"),
    include_str!("ui/valid/every_raindrop_kind.manifest"),
    include_str!("ui/valid/framework_settings.manifest"),
    include_str!("ui/valid/raindrop_quirks.manifest"),
    include_str!("ui/valid/kebab_and_keyword_names.manifest"),
];

/// Fragments a mutation may splice in: the manifest's own vocabulary and HCL punctuation.
const FRAGMENTS: &[&str] = &[
    "{",
    "}",
    "\"",
    "=",
    "[",
    "]",
    "\n",
    "#",
    "//",
    "/*",
    "*/",
    "${",
    ",",
    "-",
    "0",
    "-1",
    "1.5",
    "queue",
    "task",
    "observer",
    "service",
    "kv_cache",
    "env",
    "source",
    "cron",
    "\"0 2 * * *\"",
    "\"30s\"",
    "\"1MiB\"",
    "true",
    "null",
    "application",
    "\"x\"",
    "é",
    "\u{0}",
    "\t",
    "(",
    ")",
    "a.b",
    "f(1)",
    "1 + 2",
    "<<EOT\nx\nEOT\n",
];

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, fragment: usize },
    Duplicate { at: usize, len: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..20usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), 0..FRAGMENTS.len())
            .prop_map(|(at, fragment)| Mutation::Insert { at, fragment }),
        (any::<usize>(), 1..80usize).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

/// The nearest char boundary at or below `at % (len + 1)`.
fn boundary(text: &str, at: usize) -> usize {
    let mut at = at % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &mut String, mutation: &Mutation) {
    match *mutation {
        Mutation::Delete { at, len } => {
            let start = boundary(text, at);
            let end = boundary(text, start.saturating_add(len).min(text.len()));
            text.replace_range(start..end.max(start), "");
        }
        Mutation::Insert { at, fragment } => {
            let at = boundary(text, at);
            text.insert_str(at, FRAGMENTS[fragment]);
        }
        Mutation::Duplicate { at, len } => {
            let start = boundary(text, at);
            let end = boundary(text, start.saturating_add(len).min(text.len()));
            let copy = text[start..end.max(start)].to_owned();
            text.insert_str(end.max(start), &copy);
        }
        Mutation::Truncate { at } => {
            let at = boundary(text, at);
            text.truncate(at);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_text_never_panics(text in any::<String>()) {
        check(&text)?;
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn mutated_valid_manifests_never_panic(
        base in 0..VALID.len(),
        mutations in proptest::collection::vec(mutation(), 1..8),
    ) {
        let mut text = VALID[base].to_owned();
        for mutation in &mutations {
            apply(&mut text, mutation);
        }
        check(&text)?;
    }
}

#[test]
fn every_valid_snapshot_generates_parseable_rust() {
    for text in VALID {
        let compiled = compile(&SourceFile::new("m", *text));
        let app = compiled.application.expect("valid manifest");
        let code = raindrop_codegen::generate::application_source(&app, "/app/raindrop.manifest");
        assert!(code.contains("pub struct Env"), "{code}");
    }
}
