//! ui tests of the macros: each `tests/ui/pass/*.rs` compiles; each `tests/ui/fail/*.rs` fails
//! with the `.stderr` beside it. Re-bless with `TRYBUILD=overwrite cargo test -p raindrop --test
//! ui` after an intended change (snapshots follow the pinned toolchain).
//!
//! trybuild compiles the cases in a crate of its own, so `CARGO_MANIFEST_DIR` does not lead to
//! the manifests here (trybuild issue 202): this driver points `RAINDROP_MANIFEST` at them.

use std::path::Path;

fn main() {
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    // What `raindrop new` writes must build: tests/ui/scaffold holds its files (checked against
    // the scaffold here, rewritten with TRYBUILD=overwrite), compiled like a pass case.
    let scaffold = ui.join("scaffold");
    let name = raindrop_codegen::name::Name::parse("scaffolded").expect("valid name");
    let expected = [
        (
            "raindrop.manifest",
            raindrop_codegen::scaffold::manifest(&name),
        ),
        // Exit before serving: trybuild runs what it compiles.
        (
            "new_application.rs",
            raindrop_codegen::scaffold::MAIN
                .replace("fn main() {}", "fn main() {\n    std::process::exit(0);\n}"),
        ),
    ];
    for (file, contents) in expected {
        let path = scaffold.join(file);
        if std::env::var_os("TRYBUILD").is_some_and(|v| v == "overwrite") {
            std::fs::write(&path, &contents).expect("write");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            committed,
            contents,
            "{} is not what `raindrop new` writes; re-bless with TRYBUILD=overwrite",
            path.display()
        );
    }
    let batches = [
        (
            ui.join("raindrop.manifest"),
            vec![ui.join("pass")],
            vec![ui.join("fail")],
        ),
        (
            ui.join("broken.manifest"),
            vec![],
            vec![ui.join("manifest")],
        ),
        (
            scaffold.join("raindrop.manifest"),
            vec![scaffold.clone()],
            vec![],
        ),
    ];
    for (manifest, pass, fail) in batches {
        // SAFETY: this test binary has no harness and no other threads; nothing reads the
        // environment concurrently.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("RAINDROP_MANIFEST", manifest);
        }
        let cases = trybuild::TestCases::new();
        for dir in pass {
            cases.pass(dir.join("*.rs"));
        }
        for dir in fail {
            cases.compile_fail(dir.join("*.rs"));
        }
        // The cases run when `cases` is dropped, at the end of each batch.
    }
}
