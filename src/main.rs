//! The seed application: background job processing declared in `raindrop.manifest`.
//!
//! Until the runtime lands, this loads the manifest, reports any problems compiler-style and
//! prints the checked application with its wiring.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(raindrop_codegen::MANIFEST_FILE);
    let (source, compiled) = match raindrop_codegen::load(&path) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    if !compiled.diagnostics.is_empty() {
        eprint!(
            "{}",
            compiled.render(&source, raindrop_codegen::Style::Plain)
        );
    }
    let Some(app) = compiled.application else {
        return ExitCode::FAILURE;
    };
    println!("{}", raindrop_codegen::graph::mermaid(&app));
    match serde_json::to_string_pretty(&app) {
        Ok(json) => println!("{json}"),
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
