//! Raindrop's macros. Each entry point hands its tokens to `raindrop_codegen::expand`, where the
//! logic lives and is tested; use them through the `raindrop` crate.

use proc_macro::TokenStream;
use raindrop_codegen::expand::{self, Kind};

/// Generates the typed application from `raindrop.manifest` at the crate root: the `Env`
/// bindings and the glue the attributes bind handlers to. Takes an optional path.
#[proc_macro]
pub fn app(input: TokenStream) -> TokenStream {
    expand::app(input.into()).into()
}

/// Binds an async function to the `task` block of its name (or `name = "…"`).
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::handler(Kind::Task, attr.into(), item.into()).into()
}

/// Binds an async function to the monitor `observer` block of its name (or `name = "…"`).
#[proc_macro_attribute]
pub fn observer(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::handler(Kind::Observer, attr.into(), item.into()).into()
}

/// Binds a function that configures the `service` block of its name (or `name = "…"`).
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::handler(Kind::Service, attr.into(), item.into()).into()
}

/// Turns `fn main() {}` into the application's entry point.
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::main(attr.into(), item.into()).into()
}
