//! `#[task]`, `#[observer]` and `#[service]`: bind a function to a manifest block.
//!
//! Staged like thiserror's attribute: parse the attribute → check the function and the block it
//! names (every problem at once) → expand. On error the function is still emitted, so the rest
//! of the crate does not drown in follow-on errors.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use super::{glue, load, locate, manifest_errors};
use crate::generate::ident;
use crate::model::{Application, ObserverRole, TaskRole};
use crate::name::rust_ident;
use crate::suggest::did_you_mean;

/// Which attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `#[task]`.
    Task,
    /// `#[observer]`.
    Observer,
    /// `#[service]`.
    Service,
}

impl Kind {
    fn article(self) -> &'static str {
        match self {
            Kind::Task => "a task",
            Kind::Observer => "an observer",
            Kind::Service => "a service",
        }
    }

    fn attribute(self) -> &'static str {
        match self {
            Kind::Task => "task",
            Kind::Observer => "observer",
            Kind::Service => "service",
        }
    }
}

/// What a block needs from its function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Worker,
    Cron,
    Monitor,
    Consumer,
    Service,
}

/// Collects every problem before giving up.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        let error = syn::Error::new(span, message);
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }
}

/// Expands `#[raindrop::task]`, `#[raindrop::observer]` or `#[raindrop::service]`.
pub fn handler(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let function = match syn::parse2::<syn::ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(err) => return err.to_compile_error(),
    };
    let mut errors = Errors::default();

    // The attribute: `name = "…"` at most.
    let mut explicit: Option<syn::LitStr> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            explicit = Some(meta.value()?.parse()?);
            Ok(())
        } else {
            Err(meta.error(format!(
                "unknown argument; `#[{}]` takes `name = \"…\"`",
                kind.attribute()
            )))
        }
    });
    if let Err(err) = syn::parse::Parser::parse2(parser, attr) {
        errors.push(err.span(), err);
    }

    let manifest = match load(&locate(None)) {
        Ok(manifest) => manifest,
        Err(tokens) => return quote!(#tokens #item),
    };
    if let Some(errors) = manifest_errors(&manifest) {
        return quote!(#errors #item);
    }
    let Some(app) = &manifest.compiled.application else {
        return item;
    };

    let (name, name_span) = match &explicit {
        Some(lit) => (lit.value(), lit.span()),
        None => (function.sig.ident.to_string(), function.sig.ident.span()),
    };
    let role = resolve(app, kind, &name, name_span, &mut errors);
    check_signature(&function, role.as_ref().map(|(_, r)| *r), &mut errors);
    match (errors.0, role) {
        (None, Some((block, role))) => expand(&function, &block, role),
        // The block exists but the function is wrong: bind a stand-in so the only errors are
        // the function's, not also "this task has no handler".
        (Some(errors), Some((block, role))) => {
            let errors = errors.to_compile_error();
            let stand_in = stand_in(&block, role);
            quote!(#errors #item #stand_in)
        }
        (Some(errors), None) => {
            let errors = errors.to_compile_error();
            quote!(#errors #item)
        }
        (None, None) => item,
    }
}

/// A binding for `block` that never runs (the crate does not compile).
fn stand_in(block: &str, role: Role) -> TokenStream {
    let glue = glue();
    let marker = ident(block);
    let (module, bound, output) = match role {
        Role::Worker => (
            quote!(tasks),
            quote!(BoundTask),
            quote!(::std::sync::Arc<dyn ::raindrop::task::Handler>),
        ),
        Role::Cron => (
            quote!(crons),
            quote!(BoundCron),
            quote!(::std::sync::Arc<dyn ::raindrop::cron::CronHandler>),
        ),
        Role::Monitor => (
            quote!(observers),
            quote!(BoundObserver),
            quote!(::std::sync::Arc<dyn ::raindrop::observer::ObserverHandler>),
        ),
        Role::Consumer => (
            quote!(consumers),
            quote!(BoundConsumer),
            quote!(::std::sync::Arc<dyn ::raindrop::consumer::BatchHandler>),
        ),
        Role::Service => {
            return quote! {
                const _: () = {
                    impl ::raindrop::__private::BoundService<crate::Env> for #glue::services::#marker {
                        fn configure(_: crate::Env, service: ::raindrop::service::Service) -> ::raindrop::service::Service {
                            service
                        }
                    }
                };
            };
        }
    };
    quote! {
        const _: () = {
            impl ::raindrop::__private::#bound<crate::Env> for #glue::#module::#marker {
                fn handler(_: crate::Env) -> #output {
                    ::core::panic!("the handler of this block did not compile")
                }
            }
        };
    }
}

/// The block `name` and what it needs, reporting a missing name or a block of another kind.
fn resolve(
    app: &Application,
    kind: Kind,
    name: &str,
    span: Span,
    errors: &mut Errors,
) -> Option<(String, Role)> {
    let wanted = rust_ident(name);
    let matches = |block: &str| block == name || rust_ident(block) == wanted;
    let tasks = app.tasks.iter().map(|t| {
        (
            t.name.as_str(),
            if matches!(t.role, TaskRole::Worker { .. }) {
                Role::Worker
            } else {
                Role::Cron
            },
            Kind::Task,
        )
    });
    let observers = app.observers.iter().map(|o| {
        let role = match o.role {
            ObserverRole::Monitor { .. } => Some(Role::Monitor),
            ObserverRole::Consumer { .. } => Some(Role::Consumer),
            ObserverRole::Bucket { .. } => None,
        };
        (o.name.as_str(), role, Kind::Observer)
    });
    let services = app
        .services
        .iter()
        .map(|s| (s.name.as_str(), Role::Service, Kind::Service));
    let all: Vec<(&str, Option<Role>, Kind)> = tasks
        .map(|(n, r, k)| (n, Some(r), k))
        .chain(observers)
        .chain(services.map(|(n, r, k)| (n, Some(r), k)))
        .collect();

    match all.iter().find(|(block, _, _)| matches(block)) {
        Some((block, Some(role), found)) if *found == kind => Some(((*block).to_owned(), *role)),
        Some((block, None, _)) => {
            errors.push(span, format!("observer `{block}` watches a bucket, which this runtime does not run; it takes no handler"));
            None
        }
        Some((block, _, found)) => {
            errors.push(span, format!(
                "`{block}` is {} block in raindrop.manifest, not {} block; use `#[raindrop::{}]`",
                found.article(),
                kind.article(),
                found.attribute()
            ));
            None
        }
        None => {
            let same_kind: Vec<&str> = all
                .iter()
                .filter(|(_, _, k)| *k == kind)
                .map(|(n, _, _)| *n)
                .collect();
            let help = did_you_mean(name, same_kind.iter().copied()).unwrap_or_else(|| {
                match same_kind.as_slice() {
                    [] => format!("raindrop.manifest declares no {} blocks", kind.attribute()),
                    names => format!("{} blocks: {}", kind.attribute(), names.join(", ")),
                }
            });
            errors.push(
                span,
                format!(
                    "raindrop.manifest declares no {} named `{name}`; {help}",
                    kind.attribute()
                ),
            );
            None
        }
    }
}

/// Checks what the compiler would not say clearly about the function's shape.
fn check_signature(function: &syn::ItemFn, role: Option<Role>, errors: &mut Errors) {
    let sig = &function.sig;
    let service = matches!(role, Some(Role::Service));
    if service {
        if let Some(asyncness) = sig.asyncness {
            errors.push(
                asyncness.span(),
                "a `#[service]` function is a plain `fn`: it configures the API once at startup",
            );
        }
    } else if sig.asyncness.is_none() {
        errors.push(sig.fn_token.span(), "a handler must be an `async fn`");
    }
    if !sig.generics.params.is_empty() {
        errors.push(
            sig.generics.span(),
            "a handler cannot be generic: the manifest binds one concrete function",
        );
    }
    for input in &sig.inputs {
        match input {
            syn::FnArg::Receiver(receiver) => errors.push(
                receiver.span(),
                "a handler is a free function, not a method",
            ),
            syn::FnArg::Typed(arg)
                if matches!(*arg.pat, syn::Pat::Ident(_) | syn::Pat::Wild(_)) => {}
            syn::FnArg::Typed(arg) => errors.push(
                arg.pat.span(),
                "bind the argument to a name (`job: Job<T>`); patterns are not supported",
            ),
        }
    }
    match role {
        Some(Role::Worker | Role::Cron | Role::Consumer)
            if matches!(sig.output, syn::ReturnType::Default) =>
        {
            errors.push(sig.ident.span(), "a task handler returns `Result<R, E>`: `R` is the job's result, an `E` error retries it");
        }
        Some(Role::Monitor) if !matches!(sig.output, syn::ReturnType::Default) => {
            errors.push(sig.output.span(), "an observer handler returns nothing");
        }
        Some(Role::Service) if sig.inputs.len() != 1 => {
            errors.push(sig.inputs.span(), "a `#[service]` function takes the API and returns it: `fn api(service: Service) -> Service`");
        }
        _ => {}
    }
}

/// The function and the impl that binds it to its block's marker.
// Long: one exhaustive match over the roles, each arm the `quote!` template of its impl.
fn expand(function: &syn::ItemFn, block: &str, role: Role) -> TokenStream {
    let glue = glue();
    let marker = ident(block);
    let function_name = &function.sig.ident;
    let args: Vec<&syn::Type> = function
        .sig
        .inputs
        .iter()
        .filter_map(|input| match input {
            syn::FnArg::Typed(arg) => Some(&*arg.ty),
            syn::FnArg::Receiver(_) => None,
        })
        .collect();
    let names: Vec<syn::Ident> = (0..args.len())
        .map(|i| format_ident!("__raindrop_arg{i}"))
        .collect();
    let output_span = match &function.sig.output {
        syn::ReturnType::Type(_, ty) => ty.span(),
        syn::ReturnType::Default => function.sig.ident.span(),
    };
    let glue_code = match role {
        Role::Worker => {
            let extract = args.iter().zip(&names).map(|(ty, name)| {
                quote_spanned!(ty.span()=> let #name = <#ty as ::raindrop::__private::FromJob<crate::Env>>::from_job(&ctx, &env)?;)
            });
            let call = quote_spanned!(output_span=> ::raindrop::__private::IntoTaskResult::into_task_result(#function_name(#(#names),*).await));
            // Each argument is asked for a payload schema; only `Job<T>` with a schema answers.
            let schemas = args.iter().map(|ty| {
                quote!(.or_else(|| (&::raindrop::__private::SchemaProbe::<#ty>(::core::marker::PhantomData)).payload_schema()))
            });
            quote! {
                impl ::raindrop::__private::BoundTask<crate::Env> for #glue::tasks::#marker {
                    fn handler(env: crate::Env) -> ::std::sync::Arc<dyn ::raindrop::task::Handler> {
                        ::raindrop::__private::task_handler(env, |ctx: ::raindrop::task::JobContext, env: crate::Env| async move {
                            #(#extract)*
                            #call
                        })
                    }

                    fn payload_schema() -> ::core::option::Option<::raindrop::service::PayloadSchema> {
                        #[allow(unused_imports)]
                        use ::raindrop::__private::{HasPayloadSchema as _, NoPayloadSchema as _};
                        ::core::option::Option::None #(#schemas)*
                    }
                }
            }
        }
        Role::Cron => {
            let extract = args.iter().zip(&names).map(|(ty, name)| {
                quote_spanned!(ty.span()=> let #name = <#ty as ::raindrop::__private::FromSchedule<crate::Env>>::from_schedule(&event, &env);)
            });
            let call = quote_spanned!(output_span=> ::raindrop::__private::IntoUnitResult::into_unit_result(#function_name(#(#names),*).await));
            quote! {
                impl ::raindrop::__private::BoundCron<crate::Env> for #glue::crons::#marker {
                    fn handler(env: crate::Env) -> ::std::sync::Arc<dyn ::raindrop::cron::CronHandler> {
                        ::raindrop::__private::cron_handler(env, |event: ::raindrop::cron::ScheduledEvent, env: crate::Env| async move {
                            #(#extract)*
                            #call
                        })
                    }
                }
            }
        }
        Role::Monitor => {
            let extract = args.iter().zip(&names).map(|(ty, name)| {
                quote_spanned!(ty.span()=> let ::core::option::Option::Some(#name) = <#ty as ::raindrop::__private::FromEvent<crate::Env>>::from_event(&observed, &env) else { return };)
            });
            quote! {
                impl ::raindrop::__private::BoundObserver<crate::Env> for #glue::observers::#marker {
                    fn handler(env: crate::Env) -> ::std::sync::Arc<dyn ::raindrop::observer::ObserverHandler> {
                        ::raindrop::__private::observer_handler(env, |observed: ::raindrop::observer::Observed, env: crate::Env| async move {
                            #(#extract)*
                            #function_name(#(#names),*).await
                        })
                    }
                }
            }
        }
        Role::Consumer => {
            let extract = args.iter().zip(&names).map(|(ty, name)| {
                quote_spanned!(ty.span()=> let #name = <#ty as ::raindrop::__private::FromBatch<crate::Env>>::from_batch(&batch, &env);)
            });
            let call = quote_spanned!(output_span=> ::raindrop::__private::IntoUnitResult::into_unit_result(#function_name(#(#names),*).await));
            quote! {
                impl ::raindrop::__private::BoundConsumer<crate::Env> for #glue::consumers::#marker {
                    fn handler(env: crate::Env) -> ::std::sync::Arc<dyn ::raindrop::consumer::BatchHandler> {
                        ::raindrop::__private::consumer_handler(env, |batch: ::raindrop::consumer::MessageBatch, env: crate::Env| async move {
                            #(#extract)*
                            #call
                        })
                    }
                }
            }
        }
        Role::Service => quote! {
            impl ::raindrop::__private::BoundService<crate::Env> for #glue::services::#marker {
                fn configure(_env: crate::Env, service: ::raindrop::service::Service) -> ::raindrop::service::Service {
                    #function_name(service)
                }
            }
        },
    };
    quote! {
        #function
        #[doc(hidden)]
        const _: () = {
            #glue_code
        };
    }
}
