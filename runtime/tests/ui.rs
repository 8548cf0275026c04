//! ui tests of the macros: each `tests/ui/pass/*.rs` compiles; each `tests/ui/fail/*.rs` fails
//! with the `.stderr` beside it. Re-bless with `TRYBUILD=overwrite cargo test -p raindrop --test
//! ui` after an intended change (snapshots follow the pinned toolchain).
//!
//! trybuild compiles the cases in a crate of its own, so `CARGO_MANIFEST_DIR` does not lead to
//! the manifests here (trybuild issue 202): this driver points `RAINDROP_MANIFEST` at them.

use std::path::Path;

fn main() {
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let batches = [
        ("raindrop.manifest", &["pass"][..], &["fail"][..]),
        ("broken.manifest", &[][..], &["manifest"][..]),
    ];
    for (manifest, pass, fail) in batches {
        // SAFETY: this test binary has no harness and no other threads; nothing reads the
        // environment concurrently.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("RAINDROP_MANIFEST", ui.join(manifest));
        }
        let cases = trybuild::TestCases::new();
        for dir in pass {
            cases.pass(ui.join(dir).join("*.rs"));
        }
        for dir in fail {
            cases.compile_fail(ui.join(dir).join("*.rs"));
        }
        // The cases run when `cases` is dropped, at the end of each batch.
    }
}
