//! `raindrop::app!()` and `#[raindrop::main]`.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::spanned::Spanned;

use super::{error, load, locate, manifest_errors};

/// `app!()` / `app!("path/to/raindrop.manifest")`: the typed application at the crate root.
pub fn app(input: TokenStream) -> TokenStream {
    let explicit = if input.is_empty() {
        None
    } else {
        match syn::parse2::<syn::LitStr>(input) {
            Ok(path) => Some(path.value()),
            Err(err) => return err.to_compile_error(),
        }
    };
    let path = locate(explicit.as_deref());
    let manifest = match load(&path) {
        Ok(manifest) => manifest,
        Err(tokens) => return tokens,
    };
    let path_str = manifest.path.display().to_string();
    if let Some(errors) = manifest_errors(&manifest) {
        // Still depend on the file, so fixing it recompiles.
        return quote! {
            const _: &str = ::core::include_str!(#path_str);
            #errors
        };
    }
    let Some(app) = &manifest.compiled.application else {
        return error(Span::call_site(), "raindrop.manifest has errors");
    };

    crate::generate::application(app, &path_str)
}

/// `#[raindrop::main] fn main() { … }`: runs the body (setup), then the application.
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Vec::new();
    if !attr.is_empty() {
        errors.push(syn::Error::new(
            attr.span(),
            "`#[raindrop::main]` takes no arguments",
        ));
    }
    let function = match syn::parse2::<syn::ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(err) => return err.to_compile_error(),
    };
    if let Some(asyncness) = function.sig.asyncness {
        errors.push(syn::Error::new(
            asyncness.span(),
            "`#[raindrop::main]` takes a plain `fn main()`: the async runtime is started for you",
        ));
    }
    if function.sig.ident != "main" || !function.sig.inputs.is_empty() {
        errors.push(syn::Error::new(
            function.sig.span(),
            "`#[raindrop::main]` goes on `fn main()`",
        ));
    }
    if !matches!(function.sig.output, syn::ReturnType::Default) {
        errors.push(syn::Error::new(
            function.sig.output.span(),
            "`#[raindrop::main]` returns nothing: the process's exit code is the application's",
        ));
    }
    if let Some(combined) = errors.into_iter().reduce(|mut a, b| {
        a.combine(b);
        a
    }) {
        // Keep a `main`, so these are the crate's only errors.
        let errors = combined.to_compile_error();
        return quote!(#errors fn main() {});
    }
    let attrs = &function.attrs;
    let vis = &function.vis;
    let body = &function.block;
    quote! {
        #(#attrs)*
        #[allow(unreachable_code)]
        #vis fn main() -> ::std::process::ExitCode {
            #body
            ::raindrop::__private::main(crate::__raindrop::LAUNCH)
        }
    }
}
