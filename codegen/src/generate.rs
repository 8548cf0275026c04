//! Rust code generated from the normalized model: the application's typed bindings.
//!
//! The output names types the `raindrop` runtime crate provides (`::raindrop::Queue`, …) and
//! nothing of tokio, axum or the stores, so this crate stays free of them.

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

use crate::model::{Application, ObserverRole, TaskRole};
use crate::name::{is_keyword, rust_ident};

/// The identifier for a manifest name: [`rust_ident`], written raw when it is a keyword.
pub fn ident(name: &str) -> Ident {
    let ident = rust_ident(name);
    if is_keyword(&ident) {
        Ident::new_raw(&ident, Span::call_site())
    } else {
        Ident::new(&ident, Span::call_site())
    }
}

/// The bindings of `app`: an `Env` struct with one field per queue, kv_cache and env value, and
/// how to build it from the runtime.
pub fn bindings(app: &Application) -> TokenStream {
    let mut fields = Vec::new();
    let mut inits = Vec::new();
    for queue in &app.queues {
        let field = ident(queue.name.as_str());
        let name = queue.name.as_str();
        let doc = format!(" Producer for queue `{name}`.");
        fields.push(quote! { #[doc = #doc] pub #field: ::raindrop::Queue });
        inits.push(quote! { #field: runtime.queue(#name)? });
    }
    for cache in &app.kv_caches {
        let field = ident(cache.name.as_str());
        let name = cache.name.as_str();
        let doc = format!(" Key/value cache `{name}`.");
        fields.push(quote! { #[doc = #doc] pub #field: ::raindrop::KvCache });
        inits.push(quote! { #field: runtime.kv_cache(#name)? });
    }
    for env in &app.env {
        let field = ident(&env.name);
        let name = env.name.as_str();
        if env.secret {
            let doc = format!(" Secret env `{name}`: redacted in `Debug`, never logged.");
            fields.push(quote! { #[doc = #doc] pub #field: ::raindrop::Secret });
            inits.push(quote! { #field: runtime.secret(#name)? });
        } else {
            let doc = format!(" Env `{name}`.");
            fields.push(quote! { #[doc = #doc] pub #field: ::std::string::String });
            inits.push(quote! { #field: runtime.var(#name)? });
        }
    }

    let app_name = app.name.as_str();
    let struct_doc = format!(" Everything application `{app_name}` declares, as handlers see it.");
    quote! {
        #[doc = #struct_doc]
        #[derive(Clone, Debug)]
        pub struct Env {
            #(#fields,)*
        }

        impl ::raindrop::__private::Bindings for Env {
            fn bind(
                runtime: &::raindrop::__private::Runtime<'_>,
            ) -> ::core::result::Result<Self, ::raindrop::__private::BindError> {
                ::core::result::Result::Ok(Self { #(#inits,)* })
            }
        }

    }
}

/// Everything `raindrop::app!()` expands to for `app`, whose manifest is at `manifest_path`:
/// the bindings, one marker type per block that takes a handler (the attributes implement the
/// handler traits on them), and the launch glue `#[raindrop::main]` uses.
// Long: one `quote!` template, the generated module that launches the application.
pub fn application(app: &Application, manifest_path: &str) -> TokenStream {
    let path_str = manifest_path;
    let HandlerNames {
        workers: worker_names,
        crons: cron_names,
        monitors: monitor_names,
        consumers: consumer_names,
        services: service_names,
    } = HandlerNames::of(app);
    let markers = |names: &[&str]| names.iter().copied().map(ident).collect::<Vec<_>>();
    let (workers, crons, monitors, consumers, services) = (
        markers(&worker_names),
        markers(&cron_names),
        markers(&monitor_names),
        markers(&consumer_names),
        markers(&service_names),
    );

    let env = bindings(app);
    let extractors = env_extractors();
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

        #extractors
    }
}

/// `Env` as a handler argument of every kind: each handler gets a clone.
fn env_extractors() -> TokenStream {
    quote! {
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
            fn from_event(_: &::raindrop::observer::Observed, env: &Env) -> ::core::option::Option<Self> {
                ::core::option::Option::Some(::core::clone::Clone::clone(env))
            }
        }
    }
}

/// The names of the blocks that take a handler, one list per marker module.
struct HandlerNames<'a> {
    workers: Vec<&'a str>,
    crons: Vec<&'a str>,
    monitors: Vec<&'a str>,
    consumers: Vec<&'a str>,
    services: Vec<&'a str>,
}

impl<'a> HandlerNames<'a> {
    fn of(app: &'a Application) -> Self {
        Self {
            workers: app
                .tasks
                .iter()
                .filter(|t| matches!(t.role, TaskRole::Worker { .. }))
                .map(|t| t.name.as_str())
                .collect(),
            crons: app
                .tasks
                .iter()
                .filter(|t| matches!(t.role, TaskRole::Cron { .. }))
                .map(|t| t.name.as_str())
                .collect(),
            monitors: app
                .observers
                .iter()
                .filter(|o| matches!(o.role, ObserverRole::Monitor { .. }))
                .map(|o| o.name.as_str())
                .collect(),
            consumers: app
                .observers
                .iter()
                .filter(|o| matches!(o.role, ObserverRole::Consumer { .. }))
                .map(|o| o.name.as_str())
                .collect(),
            services: app.services.iter().map(|s| s.name.as_str()).collect(),
        }
    }
}

/// [`application`] as formatted Rust source, as `raindrop generate` prints it.
#[cfg(feature = "cli")]
pub fn application_source(app: &Application, manifest_path: &str) -> String {
    let tokens = application(app, manifest_path);
    match syn::parse2::<syn::File>(tokens.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        // Generation always yields valid items; fall back to the raw tokens rather than fail.
        Err(_) => tokens.to_string(),
    }
}
