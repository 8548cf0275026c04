//! `raindrop::app!()` and `#[raindrop::main]`.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::spanned::Spanned;

use super::{error, load, locate, manifest_errors};
use crate::generate::{bindings, ident};
use crate::model::{ObserverRole, TaskRole};

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

    let markers = |names: Vec<&str>| names.into_iter().map(ident).collect::<Vec<_>>();
    let worker_names: Vec<&str> = app
        .tasks
        .iter()
        .filter(|t| matches!(t.role, TaskRole::Worker { .. }))
        .map(|t| t.name.as_str())
        .collect();
    let cron_names: Vec<&str> = app
        .tasks
        .iter()
        .filter(|t| matches!(t.role, TaskRole::Cron { .. }))
        .map(|t| t.name.as_str())
        .collect();
    let monitor_names: Vec<&str> = app
        .observers
        .iter()
        .filter(|o| matches!(o.role, ObserverRole::Monitor { .. }))
        .map(|o| o.name.as_str())
        .collect();
    let consumer_names: Vec<&str> = app
        .observers
        .iter()
        .filter(|o| matches!(o.role, ObserverRole::Consumer { .. }))
        .map(|o| o.name.as_str())
        .collect();
    let service_names: Vec<&str> = app.services.iter().map(|s| s.name.as_str()).collect();
    let (workers, crons, monitors, consumers, services) = (
        markers(worker_names.clone()),
        markers(cron_names.clone()),
        markers(monitor_names.clone()),
        markers(consumer_names.clone()),
        markers(service_names.clone()),
    );

    let env = bindings(app);
    quote! {
        #env

        #[doc(hidden)]
        #[allow(non_camel_case_types, dead_code, unreachable_pub)]
        pub mod __raindrop {
            /// One marker type per block that takes a handler; the attributes implement the
            /// handler traits on them.
            pub mod tasks { #( pub struct #workers; )* }
            pub mod crons { #( pub struct #crons; )* }
            pub mod observers { #( pub struct #monitors; )* }
            pub mod consumers { #( pub struct #consumers; )* }
            pub mod services { #( pub struct #services; )* }

            pub const MANIFEST_PATH: &str = #path_str;
            /// The manifest's text: editing the file recompiles the crate.
            pub const MANIFEST: &str = ::core::include_str!(#path_str);

            pub fn bind(builder: ::raindrop::engine::EngineBuilder) -> ::raindrop::engine::EngineBuilder {
                #[allow(unused_imports)]
                use ::raindrop::__private::{HasObserver as _, NoObserver as _};
                #( let builder = ::raindrop::__private::task::<tasks::#workers, super::Env>(builder, #worker_names); )*
                #( let builder = ::raindrop::__private::cron::<crons::#crons, super::Env>(builder, #cron_names); )*
                #( let builder = ::raindrop::__private::consumer::<consumers::#consumers, super::Env>(builder, #consumer_names); )*
                #(
                    let builder = (&::raindrop::__private::Probe::<observers::#monitors, super::Env>(::core::marker::PhantomData))
                        .observer(builder, #monitor_names);
                )*
                builder
            }

            pub fn check(engine: &::raindrop::engine::Engine) -> ::raindrop::Result<()> {
                ::raindrop::__private::bind::<super::Env>(engine).map(::core::mem::drop)
            }

            pub fn configure(
                engine: &::raindrop::engine::Engine,
                name: &str,
                service: ::raindrop::service::Service,
            ) -> ::raindrop::service::Service {
                #[allow(unused_imports)]
                use ::raindrop::__private::{HasService as _, NoService as _};
                match name {
                    #(
                        #service_names => (&::raindrop::__private::Probe::<services::#services, super::Env>(::core::marker::PhantomData))
                            .service(engine, service),
                    )*
                    _ => service,
                }
            }

            pub const LAUNCH: ::raindrop::__private::Launch = ::raindrop::__private::Launch {
                manifest_path: MANIFEST_PATH,
                manifest_text: MANIFEST,
                bind,
                check,
                configure,
            };
        }

        impl ::raindrop::__private::FromJob<Env> for Env {
            fn from_job(_: &::raindrop::task::JobContext, env: &Env) -> ::core::result::Result<Self, ::raindrop::task::TaskError> {
                ::core::result::Result::Ok(::core::clone::Clone::clone(env))
            }
        }

        impl ::raindrop::__private::FromSchedule<Env> for Env {
            fn from_schedule(_: &::raindrop::cron::ScheduledEvent, env: &Env) -> Self {
                ::core::clone::Clone::clone(env)
            }
        }

        impl ::raindrop::__private::FromBatch<Env> for Env {
            fn from_batch(_: &::raindrop::consumer::MessageBatch, env: &Env) -> Self {
                ::core::clone::Clone::clone(env)
            }
        }

        impl ::raindrop::__private::FromEvent<Env> for Env {
            fn from_event(_: &::raindrop::event::Event, env: &Env) -> Self {
                ::core::clone::Clone::clone(env)
            }
        }
    }
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
