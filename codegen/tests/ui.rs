//! Snapshot tests: `tests/ui/valid/*.manifest` → the normalized model (`.json`), and
//! `tests/ui/invalid/*.manifest` → the rendered diagnostics (`.err`). One named test per file.
//!
//! Each invalid manifest starts with `# expect: CODE`, the diagnostic code its mistake must
//! produce. Re-bless snapshots with `RAINDROP_BLESS=1 cargo test -p raindrop-codegen --test ui`.
//!
//! And `raindrop fmt` on each of them (`fmt::…`): formatting twice changes nothing, only
//! whitespace changes (comments and values are kept), and the formatted manifest compiles to
//! the same application, or fails with the same errors.
//!
//! And `raindrop inspect --format hcl` on each valid one (`inspect_hcl::…`): the printed
//! manifest compiles, without errors, to the same application; the seed's is a snapshot
//! (`seed.inspect.hcl`).

use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Failed, Trial};
use raindrop_codegen::{SourceFile, Style, compile};

fn main() {
    let args = Arguments::from_args();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let mut trials = Vec::new();
    for (dir, check) in [
        ("valid", check_valid as fn(&Path) -> Result<(), Failed>),
        ("invalid", check_invalid),
    ] {
        for path in manifests(&root.join(dir)) {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let formatted = path.clone();
            if dir == "valid" {
                let printed = path.clone();
                trials.push(Trial::test(format!("inspect_hcl::{stem}"), move || {
                    check_inspect_hcl(&printed)
                }));
            }
            trials.push(Trial::test(format!("{dir}::{stem}"), move || check(&path)));
            trials.push(Trial::test(format!("fmt::{dir}::{stem}"), move || {
                check_fmt(&formatted)
            }));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}

fn manifests(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "manifest"))
        .collect();
    paths.sort();
    paths
}

/// Reads a manifest, naming it by its file name so snapshots do not depend on the checkout path.
fn source(path: &Path) -> Result<SourceFile, Failed> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(SourceFile::new(name, text))
}

fn check_valid(path: &Path) -> Result<(), Failed> {
    let source = source(path)?;
    let compiled = compile(&source);
    let Some(app) = &compiled.application else {
        return Err(format!(
            "expected a valid manifest, got:\n{}",
            compiled.render(&source, Style::Plain)
        )
        .into());
    };
    let warnings: Vec<String> = compiled
        .diagnostics
        .iter()
        .map(|d| {
            let at = source.line_col(d.span.start);
            format!("{}:{}: {}: {}", at.line, at.column, d.code, d.message)
        })
        .collect();
    let snapshot = serde_json::json!({ "application": app, "warnings": warnings });
    let actual = serde_json::to_string_pretty(&snapshot)? + "\n";
    // The model must read back as itself: the runtime loads it from this JSON form too.
    let reread: raindrop_codegen::Application =
        serde_json::from_value(snapshot["application"].clone())?;
    if &reread != app {
        return Err("the normalized model does not survive a JSON round trip".into());
    }
    compare(&path.with_extension("json"), &actual)
}

fn check_fmt(path: &Path) -> Result<(), Failed> {
    let source = source(path)?;
    let Ok(formatted) = raindrop_codegen::format::format(source.text()) else {
        // Not HCL at all (a syntax-error snapshot): nothing to format.
        return Ok(());
    };
    let again = raindrop_codegen::format::format(&formatted)?;
    if again != formatted {
        return Err(format!("formatting again changed it:\n{formatted}\n---\n{again}").into());
    }
    let visible = |text: &str| {
        text.chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
    };
    if visible(source.text()) != visible(&formatted) {
        return Err(format!("more than whitespace changed:\n{formatted}").into());
    }
    let before = compile(&source);
    let after = compile(&SourceFile::new(
        source.name().to_owned(),
        formatted.clone(),
    ));
    let codes = |c: &raindrop_codegen::Compiled| {
        let mut codes: Vec<_> = c
            .diagnostics
            .iter()
            .map(|d| (d.is_error(), d.code))
            .collect();
        codes.sort_unstable();
        codes
    };
    if before.application != after.application || codes(&before) != codes(&after) {
        return Err(format!("the formatted manifest compiles differently:\n{formatted}").into());
    }
    Ok(())
}

/// The normalized model printed as HCL compiles back to itself, with no more kinds of warning
/// than the manifest it came from (deprecated spellings and left-out defaults may drop some).
fn check_inspect_hcl(path: &Path) -> Result<(), Failed> {
    let source = source(path)?;
    let compiled = compile(&source);
    let app = compiled
        .application
        .as_ref()
        .ok_or("expected a valid manifest")?;
    let printed = raindrop_codegen::emit::to_hcl(app);
    let again = compile(&SourceFile::new("inspect.hcl".to_owned(), printed.clone()));
    if again.has_errors() {
        return Err(format!(
            "the printed manifest does not compile:\n{printed}\n{}",
            again.render(
                &SourceFile::new("inspect.hcl".to_owned(), printed.clone()),
                Style::Plain
            )
        )
        .into());
    }
    if again.application.as_ref() != Some(app) {
        return Err(
            format!("the printed manifest compiles to another application:\n{printed}").into(),
        );
    }
    let codes = |c: &raindrop_codegen::Compiled| {
        c.diagnostics
            .iter()
            .map(|d| d.code)
            .collect::<std::collections::BTreeSet<_>>()
    };
    let new: Vec<_> = codes(&again)
        .difference(&codes(&compiled))
        .copied()
        .collect();
    if !new.is_empty() {
        return Err(format!("the printed manifest adds warnings {new:?}:\n{printed}").into());
    }
    if path.file_stem().is_some_and(|s| s == "seed") {
        return compare(&path.with_extension("inspect.hcl"), &printed);
    }
    Ok(())
}

fn check_invalid(path: &Path) -> Result<(), Failed> {
    let source = source(path)?;
    let expected_code = source
        .text()
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("# expect: "))
        .map(str::trim)
        .ok_or("an invalid manifest starts with `# expect: CODE`")?;
    let compiled = compile(&source);
    if compiled.application.is_some() || !compiled.has_errors() {
        return Err("expected errors, the manifest compiled".into());
    }
    if !compiled
        .diagnostics
        .iter()
        .any(|d| d.is_error() && d.code == expected_code)
    {
        let codes: Vec<_> = compiled.diagnostics.iter().map(|d| d.code).collect();
        return Err(format!("expected an error `{expected_code}`, got {codes:?}").into());
    }
    compare(
        &path.with_extension("err"),
        &compiled.render(&source, Style::Plain),
    )
}

fn compare(snapshot: &Path, actual: &str) -> Result<(), Failed> {
    if std::env::var_os("RAINDROP_BLESS").is_some() {
        std::fs::write(snapshot, actual)?;
        return Ok(());
    }
    let expected = std::fs::read_to_string(snapshot).map_err(|e| {
        format!(
            "cannot read {} ({e}); create it with RAINDROP_BLESS=1",
            snapshot.display()
        )
    })?;
    if expected == actual {
        Ok(())
    } else {
        Err(format!(
            "{} differs (re-bless with RAINDROP_BLESS=1 if the change is intended)\n--- expected\n{expected}\n--- actual\n{actual}",
            snapshot.display()
        )
        .into())
    }
}
