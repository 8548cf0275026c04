//! The seed application: background job processing declared in `raindrop.manifest`.
//!
//! Until the runtime's engine lands, this loads the manifest, reports any problems
//! compiler-style, and prints the checked application: its wiring as a Mermaid diagram and its
//! settings, defaults filled in, as JSON.

use std::path::Path;
use std::process::ExitCode;

use raindrop::manifest::{self, Style};

fn main() -> ExitCode {
    let path = manifest::locate(Path::new(env!("CARGO_MANIFEST_DIR")));
    let loaded = match manifest::load(&path, Style::Plain) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    eprint!("{}", loaded.warnings);
    println!("{}", manifest::diagram(&loaded.application));
    match serde_json::to_string_pretty(&loaded.application) {
        Ok(json) => println!("{json}"),
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
