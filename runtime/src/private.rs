//! What the macros expand to. Not a public API: names and shapes change without notice.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::consumer::{BatchHandler, MessageBatch};
use crate::cron::{CronHandler, ScheduledEvent};
use crate::engine::{Engine, EngineBuilder};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::kv::KvCache;
use crate::observer::{Observed, ObserverHandler};
use crate::queue::Queue;
use crate::secret::Secret;
use crate::service::{PayloadSchema, Service};
use crate::task::{Handler, JobContext, TaskError};

pub use crate::app::{Launch, main};

/// What the generated `Env` is bound from.
#[derive(Debug)]
pub struct Runtime<'a> {
    engine: &'a Engine,
}

impl<'a> Runtime<'a> {
    /// Bindings of `engine`'s application.
    pub fn new(engine: &'a Engine) -> Self {
        Self { engine }
    }

    /// The producer of queue `name`.
    pub fn queue(&self, name: &str) -> Result<Queue> {
        self.engine.queue(name)
    }

    /// The kv_cache `name`.
    pub fn kv_cache(&self, name: &str) -> Result<KvCache> {
        self.engine.kv(name)
    }

    /// The secret env value `name`: required.
    pub fn secret(&self, name: &str) -> Result<Secret> {
        match std::env::var(name) {
            Ok(value) => Ok(Secret::new(value)),
            Err(_) => Err(Error::Config(format!(
                "the secret `{name}` has no value: set the environment variable `{name}`"
            ))),
        }
    }

    /// The env value `name`, or its default from the manifest.
    pub fn var(&self, name: &str) -> Result<String> {
        if let Ok(value) = std::env::var(name) {
            return Ok(value);
        }
        let declared = self.engine.app().env.iter().find(|e| e.name == name);
        declared.and_then(|e| e.default.clone()).ok_or_else(|| {
            Error::Config(format!("the env value `{name}` is not set and has no default: set the environment variable `{name}`"))
        })
    }
}

/// The generated `Env`: one field per queue, kv_cache and env value.
pub trait Bindings: Clone + Send + Sync + 'static {
    /// Binds every field, or says which one cannot be.
    fn bind(runtime: &Runtime<'_>) -> Result<Self>;
}

/// The error a failed binding reports.
pub type BindError = Error;

/// Binds `E` for `engine`: the macros call this once at startup (where a failure stops the
/// process with its message) and again for each handler.
pub fn bind<E: Bindings>(engine: &Engine) -> Result<E> {
    E::bind(&Runtime::new(engine))
}

fn bound<E: Bindings>(engine: &Engine) -> E {
    // Binding was checked once at startup; it reads the same environment now.
    bind::<E>(engine).unwrap_or_else(|err| panic!("bindings changed after startup: {err}"))
}

/// A worker task's handler, implemented by `#[task]` on the task's marker type.
#[diagnostic::on_unimplemented(
    message = "the task `{Self}` declared in raindrop.manifest has no handler",
    label = "no `#[raindrop::task]` function for this task",
    note = "add `#[raindrop::task] async fn <task name>(job: Job<T>) -> Result<R, E>` to the crate"
)]
pub trait BoundTask<E> {
    /// Makes the handler.
    fn handler(env: E) -> Arc<dyn Handler>;

    /// The JSON schema of the payload its `Job<T>` argument takes, when `T` has one.
    fn payload_schema() -> Option<PayloadSchema> {
        None
    }
}

/// A cron task's handler, implemented by `#[task]`.
#[diagnostic::on_unimplemented(
    message = "the cron task `{Self}` declared in raindrop.manifest has no handler",
    label = "no `#[raindrop::task]` function for this task",
    note = "add `#[raindrop::task] async fn <task name>(event: ScheduledEvent) -> Result<(), E>` to the crate"
)]
pub trait BoundCron<E> {
    /// Makes the handler.
    fn handler(env: E) -> Arc<dyn CronHandler>;
}

/// A monitor observer's handler, implemented by `#[observer]` (optional).
pub trait BoundObserver<E> {
    /// Makes the handler.
    fn handler(env: E) -> Arc<dyn ObserverHandler>;
}

/// A service's configuration, implemented by `#[service]` (optional).
pub trait BoundService<E> {
    /// Adds validation hooks and routes.
    fn configure(env: E, service: Service) -> Service;
}

/// Registers the worker task `name`'s handler, and its payload's schema for the queue it pulls.
pub fn task<M: BoundTask<E>, E: Bindings>(builder: EngineBuilder, name: &str) -> EngineBuilder {
    let queue = builder
        .application()
        .tasks
        .iter()
        .find_map(|t| match &t.role {
            raindrop_codegen::model::TaskRole::Worker { queue, .. } if t.name.as_str() == name => {
                Some(queue.to_string())
            }
            _ => None,
        });
    let builder = match (queue, M::payload_schema()) {
        (Some(queue), Some(schema)) => builder.payload_schema(&queue, schema),
        _ => builder,
    };
    builder.task_factory(
        name,
        Arc::new(|engine: &Engine| M::handler(bound::<E>(engine))),
    )
}

/// Probes, at compile time, whether a task handler's argument is `Job<T>` with a `T` that
/// describes its JSON schema (autoref specialization, like [`Probe`]): `#[task]` asks each
/// argument, and a payload type without a schema stays untyped.
#[derive(Debug)]
pub struct SchemaProbe<A>(pub PhantomData<A>);

/// The argument is `Job<T>` with `T: utoipa::ToSchema`.
pub trait HasPayloadSchema {
    /// `T`'s schema.
    fn payload_schema(&self) -> Option<PayloadSchema>;
}

/// Any other argument.
pub trait NoPayloadSchema {
    /// None.
    fn payload_schema(&self) -> Option<PayloadSchema>;
}

impl<T: utoipa::ToSchema> HasPayloadSchema for SchemaProbe<crate::task::Job<T>> {
    fn payload_schema(&self) -> Option<PayloadSchema> {
        Some(PayloadSchema::of::<T>())
    }
}

impl<A> NoPayloadSchema for &SchemaProbe<A> {
    fn payload_schema(&self) -> Option<PayloadSchema> {
        None
    }
}

/// Registers the cron task `name`'s handler.
pub fn cron<M: BoundCron<E>, E: Bindings>(builder: EngineBuilder, name: &str) -> EngineBuilder {
    builder.cron_factory(
        name,
        Arc::new(|engine: &Engine| M::handler(bound::<E>(engine))),
    )
}

/// Probes, at compile time, whether a marker has an optional handler: method resolution picks
/// the `Has…` trait when the marker implements the handler trait and falls back to the `No…`
/// trait otherwise (autoref specialization; it works on the concrete types the generated code
/// names).
#[derive(Debug)]
pub struct Probe<M, E>(pub PhantomData<(M, E)>);

/// The observer marker has a handler.
pub trait HasObserver {
    /// Registers it.
    fn observer(&self, builder: EngineBuilder, name: &str) -> EngineBuilder;
}

/// The observer marker has none.
pub trait NoObserver {
    /// Leaves the builder as it is.
    fn observer(&self, builder: EngineBuilder, name: &str) -> EngineBuilder;
}

impl<M: BoundObserver<E>, E: Bindings> HasObserver for Probe<M, E> {
    fn observer(&self, builder: EngineBuilder, name: &str) -> EngineBuilder {
        builder.observer_factory(
            name,
            Arc::new(|engine: &Engine| M::handler(bound::<E>(engine))),
        )
    }
}

impl<M, E> NoObserver for &Probe<M, E> {
    fn observer(&self, builder: EngineBuilder, _name: &str) -> EngineBuilder {
        builder
    }
}

/// The service marker has a configuration.
pub trait HasService {
    /// Applies it.
    fn service(&self, engine: &Engine, service: Service) -> Service;
}

/// The service marker has none.
pub trait NoService {
    /// Leaves the service as it is.
    fn service(&self, engine: &Engine, service: Service) -> Service;
}

impl<M: BoundService<E>, E: Bindings> HasService for Probe<M, E> {
    fn service(&self, engine: &Engine, service: Service) -> Service {
        M::configure(bound::<E>(engine), service)
    }
}

impl<M, E> NoService for &Probe<M, E> {
    fn service(&self, _engine: &Engine, service: Service) -> Service {
        service
    }
}

/// An argument of a task handler.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an argument of a task handler",
    label = "not an extractor",
    note = "task handlers take `Job<T>` (the payload), `JobContext` and `Env`"
)]
pub trait FromJob<E>: Sized {
    /// Extracts the argument.
    fn from_job(ctx: &JobContext, env: &E) -> Result<Self, TaskError>;
}

impl<E> FromJob<E> for JobContext {
    fn from_job(ctx: &JobContext, _env: &E) -> Result<Self, TaskError> {
        Ok(ctx.clone())
    }
}

impl<T: DeserializeOwned + Send, E> FromJob<E> for crate::task::Job<T> {
    fn from_job(ctx: &JobContext, _env: &E) -> Result<Self, TaskError> {
        // A payload that does not fit its type can never succeed: dead-letter it now.
        let payload = ctx
            .payload::<T>()
            .map_err(|e| TaskError::abort(format!("the payload does not fit the handler: {e}")))?;
        Ok(crate::task::Job::new(ctx.id(), payload))
    }
}

/// An argument of a cron handler.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an argument of a cron task handler",
    label = "not an extractor",
    note = "cron handlers take `ScheduledEvent` and `Env`"
)]
pub trait FromSchedule<E>: Sized {
    /// Extracts the argument.
    fn from_schedule(event: &ScheduledEvent, env: &E) -> Self;
}

impl<E> FromSchedule<E> for ScheduledEvent {
    fn from_schedule(event: &ScheduledEvent, _env: &E) -> Self {
        event.clone()
    }
}

/// An argument of an observer handler; `None` when the handler does not take what was
/// observed (a handler of `Event`s is not called for an alert).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an argument of an observer handler",
    label = "not an extractor",
    note = "observer handlers take `Event`, `AlertState`, `Observed` and `Env`"
)]
pub trait FromEvent<E>: Sized {
    /// Extracts the argument.
    fn from_event(observed: &Observed, env: &E) -> Option<Self>;
}

impl<E> FromEvent<E> for Event {
    fn from_event(observed: &Observed, _env: &E) -> Option<Self> {
        match observed {
            Observed::Event(event) => Some(event.clone()),
            Observed::Alert(_) => None,
        }
    }
}

impl<E> FromEvent<E> for crate::observer::AlertState {
    fn from_event(observed: &Observed, _env: &E) -> Option<Self> {
        match observed {
            Observed::Alert(alert) => Some(alert.clone()),
            Observed::Event(_) => None,
        }
    }
}

impl<E> FromEvent<E> for Observed {
    fn from_event(observed: &Observed, _env: &E) -> Option<Self> {
        Some(observed.clone())
    }
}

/// What a task handler may return: `Result<R, E>` with a serializable `R`.
#[diagnostic::on_unimplemented(
    message = "a task handler returns `Result<R, E>`, not `{Self}`",
    label = "the handler's return type",
    note = "`R` becomes the job's result (it must be `Serialize`); an `E` error retries the job"
)]
pub trait IntoTaskResult {
    /// Converts the handler's output.
    fn into_task_result(self) -> Result<crate::job::Payload, TaskError>;
}

impl<R: serde::Serialize, Err: Into<TaskError>> IntoTaskResult for Result<R, Err> {
    fn into_task_result(self) -> Result<crate::job::Payload, TaskError> {
        let value = self.map_err(Into::into)?;
        crate::job::Payload::from_value(&value)
            .map_err(|e| TaskError::abort(format!("cannot serialize the result: {e}")))
    }
}

/// What a cron or consumer handler may return: `Result<(), E>`.
#[diagnostic::on_unimplemented(
    message = "a cron task or queue consumer handler returns `Result<(), E>`, not `{Self}`",
    label = "the handler's return type"
)]
pub trait IntoUnitResult {
    /// Converts the handler's output.
    fn into_unit_result(self) -> Result<(), TaskError>;
}

impl<Err: Into<TaskError>> IntoUnitResult for Result<(), Err> {
    fn into_unit_result(self) -> Result<(), TaskError> {
        self.map_err(Into::into)
    }
}

/// A queue consumer's handler, implemented by `#[observer]` on its marker type.
#[diagnostic::on_unimplemented(
    message = "the queue consumer `{Self}` declared in raindrop.manifest has no handler",
    label = "no `#[raindrop::observer]` function for this observer",
    note = "add `#[raindrop::observer] async fn <observer name>(batch: MessageBatch) -> Result<(), E>` to the crate"
)]
pub trait BoundConsumer<E> {
    /// Makes the handler.
    fn handler(env: E) -> Arc<dyn BatchHandler>;
}

/// Registers the consumer observer `name`'s handler.
pub fn consumer<M: BoundConsumer<E>, E: Bindings>(
    builder: EngineBuilder,
    name: &str,
) -> EngineBuilder {
    builder.consumer_factory(
        name,
        Arc::new(|engine: &Engine| M::handler(bound::<E>(engine))),
    )
}

/// An argument of a queue consumer handler.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an argument of a queue consumer handler",
    label = "not an extractor",
    note = "queue consumer handlers take `MessageBatch` and `Env`"
)]
pub trait FromBatch<E>: Sized {
    /// Extracts the argument.
    fn from_batch(batch: &MessageBatch, env: &E) -> Self;
}

impl<E> FromBatch<E> for MessageBatch {
    fn from_batch(batch: &MessageBatch, _env: &E) -> Self {
        batch.clone()
    }
}

/// A consumer handler from the generated adapter closure.
pub fn consumer_handler<E, F, Fut>(env: E, f: F) -> Arc<dyn BatchHandler>
where
    E: Bindings,
    F: Fn(MessageBatch, E) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
{
    Arc::new(crate::consumer::consumer_fn(move |batch: MessageBatch| {
        f(batch, env.clone())
    }))
}

/// A task handler from the generated adapter closure.
pub fn task_handler<E, F, Fut>(env: E, f: F) -> Arc<dyn Handler>
where
    E: Bindings,
    F: Fn(JobContext, E) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<crate::job::Payload, TaskError>> + Send + 'static,
{
    Arc::new(crate::task::handler_fn(move |ctx: JobContext| {
        f(ctx, env.clone())
    }))
}

/// A cron handler from the generated adapter closure.
pub fn cron_handler<E, F, Fut>(env: E, f: F) -> Arc<dyn CronHandler>
where
    E: Bindings,
    F: Fn(ScheduledEvent, E) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
{
    Arc::new(crate::cron::cron_fn(move |event: ScheduledEvent| {
        f(event, env.clone())
    }))
}

/// An observer handler from the generated adapter closure, which it calls with each event and
/// each alert (the closure skips what its function does not take).
pub fn observer_handler<E, F, Fut>(env: E, f: F) -> Arc<dyn ObserverHandler>
where
    E: Bindings,
    F: Fn(Observed, E) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    struct FnObserver<F, E>(F, E);

    #[async_trait::async_trait]
    impl<F, Fut, E> ObserverHandler for FnObserver<F, E>
    where
        E: Bindings,
        F: Fn(Observed, E) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        async fn on_event(&self, event: &Event) {
            (self.0)(Observed::Event(event.clone()), self.1.clone()).await;
        }

        async fn on_alert(&self, alert: &crate::observer::AlertState) {
            (self.0)(Observed::Alert(alert.clone()), self.1.clone()).await;
        }
    }

    Arc::new(FnObserver(f, env))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::observer::AlertState;

    #[derive(Clone)]
    struct NoEnv;

    impl Bindings for NoEnv {
        fn bind(_: &Runtime<'_>) -> Result<Self> {
            Ok(NoEnv)
        }
    }

    fn alert() -> AlertState {
        serde_json::from_value(serde_json::json!({
            "observer": "o", "name": "backlog", "queue": "q", "metric": "queue_depth",
            "value": 5.0, "threshold": 1.0, "firing": true, "since": "2026-01-01T00:00:00Z"
        }))
        .unwrap()
    }

    /// What a generated adapter of a function taking `T` passes on: the observed things `T`
    /// extracts, nothing else.
    async fn seen<T: FromEvent<NoEnv> + Send + 'static>(name: fn(&T) -> String) -> Vec<String> {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let handler = observer_handler(NoEnv, move |observed: Observed, env: NoEnv| {
            let sink = sink.clone();
            async move {
                let Some(value) = T::from_event(&observed, &env) else {
                    return;
                };
                sink.lock().unwrap().push(name(&value));
            }
        });
        let event = Event {
            seq: 1,
            at: crate::job::now(),
            kind: crate::event::EventKind::Enqueued,
            job: crate::job::JobId::new(),
            queue: "q".into(),
            state: crate::job::JobState::Queued,
            attempt: 0,
            detail: None,
        };
        handler.on_event(&event).await;
        handler.on_alert(&alert()).await;
        let mut out = Vec::new();
        out.extend(got.lock().unwrap().iter().cloned());
        out
    }

    #[tokio::test]
    async fn observer_functions_get_events_alerts_or_both_as_their_argument_says() {
        assert_eq!(
            seen::<Event>(|e| e.kind.as_str().to_owned()).await,
            ["enqueued"]
        );
        assert_eq!(seen::<AlertState>(|a| a.name.clone()).await, ["backlog"]);
        let both = seen::<Observed>(|o| match o {
            Observed::Event(_) => "event".into(),
            Observed::Alert(_) => "alert".into(),
        })
        .await;
        assert_eq!(both, ["event", "alert"]);
    }
}
