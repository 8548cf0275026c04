//! Rust code generated from the normalized model: the application's typed bindings.
//!
//! The output names types the `raindrop` runtime crate provides (`::raindrop::Queue`, …) and
//! nothing of tokio, axum or the stores, so this crate stays free of them.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote};

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

/// A constant name for a manifest name (`job-worker` → `JOB_WORKER`).
pub fn const_ident(name: &str) -> Ident {
    format_ident!("{}", rust_ident(name).to_ascii_uppercase())
}

/// The bindings of `app`: an `Env` struct with one field per queue, kv_cache and env value, how
/// to build it from the runtime, and the names the handler attributes bind to.
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
    let consts = |names: Vec<&str>| -> Vec<TokenStream> {
        names
            .into_iter()
            .map(|name| {
                let konst = const_ident(name);
                quote! { pub const #konst: &str = #name; }
            })
            .collect()
    };
    let workers = consts(
        app.tasks
            .iter()
            .filter(|t| matches!(t.role, TaskRole::Worker { .. }))
            .map(|t| t.name.as_str())
            .collect(),
    );
    let crons = consts(
        app.tasks
            .iter()
            .filter(|t| matches!(t.role, TaskRole::Cron { .. }))
            .map(|t| t.name.as_str())
            .collect(),
    );
    let monitors = consts(
        app.observers
            .iter()
            .filter(|o| matches!(o.role, ObserverRole::Monitor { .. }))
            .map(|o| o.name.as_str())
            .collect(),
    );
    let consumers = consts(
        app.observers
            .iter()
            .filter(|o| matches!(o.role, ObserverRole::Consumer { .. }))
            .map(|o| o.name.as_str())
            .collect(),
    );
    let services = consts(app.services.iter().map(|s| s.name.as_str()).collect());

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

        /// The manifest's block names, by the role of the handler that binds to them.
        #[doc(hidden)]
        pub mod __raindrop_manifest {
            pub const APPLICATION: &str = #app_name;
            pub mod worker_tasks { #(#workers)* }
            pub mod cron_tasks { #(#crons)* }
            pub mod monitor_observers { #(#monitors)* }
            pub mod consumer_observers { #(#consumers)* }
            pub mod services { #(#services)* }
        }
    }
}

/// [`bindings`] as formatted Rust source.
#[cfg(feature = "cli")]
pub fn bindings_source(app: &Application) -> String {
    let tokens = bindings(app);
    match syn::parse2::<syn::File>(tokens.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        // Generation always yields valid items; fall back to the raw tokens rather than fail.
        Err(_) => tokens.to_string(),
    }
}
