//! The engine: an application's queues, caches, workers, schedules and monitors, running
//! against one store.
//!
//! ```no_run
//! # async fn demo(app: raindrop::manifest::Application) -> raindrop::Result<()> {
//! use raindrop::engine::Engine;
//! use raindrop::task::{JobContext, TaskError, handler_fn};
//!
//! let engine = Engine::builder(app)
//!     .task("job_worker", handler_fn(|ctx: JobContext| async move {
//!         let n: u64 = ctx.payload()?;
//!         Ok::<_, TaskError>(n * 2)
//!     }))
//!     .open()
//!     .await?;
//! engine.queue("job_queue")?.send(&21).await?;
//! engine.run_until(raindrop::engine::shutdown_signal()).await?;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use raindrop_codegen::model::Application;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::consumer::BatchHandler;
use crate::cron::CronHandler;
use crate::error::{Error, Result};
use crate::kv::KvCache;
use crate::observer::{Alerts, ObserverHandler};
use crate::plan::PoolKind;
use crate::queue::Queue;
use crate::secret::Secret;
use crate::service::PayloadSchema;
use crate::store::{Store, StoreUrl};
use crate::task::Handler;
use crate::worker::Work;

pub use crate::settings::{Roles, Settings};

/// Makes a handler once the engine exists, so handlers can hold what the engine provides (the
/// generated `Env` bindings).
pub type Factory<T> = Arc<dyn Fn(&Engine) -> Arc<T> + Send + Sync>;

/// The names `bound` has handlers for.
fn names<T: ?Sized>(bound: &HashMap<String, Factory<T>>) -> Vec<&str> {
    bound.keys().map(String::as_str).collect()
}

fn ready<T: ?Sized + Send + Sync + 'static>(handler: Arc<T>) -> Factory<T> {
    Arc::new(move |_| handler.clone())
}

/// Builds an [`Engine`]: the application, its handlers, the store.
pub struct EngineBuilder {
    app: Application,
    store: Option<Arc<dyn Store>>,
    tasks: HashMap<String, Factory<dyn Handler>>,
    crons: HashMap<String, Factory<dyn CronHandler>>,
    observers: HashMap<String, Factory<dyn ObserverHandler>>,
    consumers: HashMap<String, Factory<dyn BatchHandler>>,
    settings: Settings,
    secrets: HashMap<String, Secret>,
    payload_schemas: HashMap<String, PayloadSchema>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("app", &self.app.name)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// Supplies the secret env value `name` the engine itself needs (an alert sink's
    /// `secret_env`) instead of reading it from the process environment.
    #[must_use]
    pub fn secret(mut self, name: &str, value: Secret) -> Self {
        self.secrets.insert(name.to_owned(), value);
        self
    }

    /// Uses `store` instead of opening one from `RAINDROP_STORE`.
    #[must_use]
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Binds the worker task `name` to `handler`.
    #[must_use]
    pub fn task(mut self, name: &str, handler: impl Handler) -> Self {
        self.tasks.insert(
            name.to_owned(),
            ready(Arc::new(handler) as Arc<dyn Handler>),
        );
        self
    }

    /// Binds the cron task `name` to `handler`.
    #[must_use]
    pub fn cron(mut self, name: &str, handler: impl CronHandler) -> Self {
        self.crons.insert(
            name.to_owned(),
            ready(Arc::new(handler) as Arc<dyn CronHandler>),
        );
        self
    }

    /// Binds the monitor observer `name` to `handler`.
    #[must_use]
    pub fn observer(mut self, name: &str, handler: impl ObserverHandler) -> Self {
        self.observers.insert(
            name.to_owned(),
            ready(Arc::new(handler) as Arc<dyn ObserverHandler>),
        );
        self
    }

    /// Binds the worker task `name` to the handler `make` builds when the engine starts.
    #[must_use]
    pub fn task_factory(mut self, name: &str, make: Factory<dyn Handler>) -> Self {
        self.tasks.insert(name.to_owned(), make);
        self
    }

    /// Binds the cron task `name` to the handler `make` builds when the engine starts.
    #[must_use]
    pub fn cron_factory(mut self, name: &str, make: Factory<dyn CronHandler>) -> Self {
        self.crons.insert(name.to_owned(), make);
        self
    }

    /// Binds the monitor observer `name` to the handler `make` builds when the engine starts.
    #[must_use]
    pub fn observer_factory(mut self, name: &str, make: Factory<dyn ObserverHandler>) -> Self {
        self.observers.insert(name.to_owned(), make);
        self
    }

    /// Binds the consumer observer `name` (`source { queue }`) to `handler`.
    #[must_use]
    pub fn consumer(mut self, name: &str, handler: impl BatchHandler) -> Self {
        self.consumers.insert(
            name.to_owned(),
            ready(Arc::new(handler) as Arc<dyn BatchHandler>),
        );
        self
    }

    /// Binds the consumer observer `name` to the handler `make` builds when the engine starts.
    #[must_use]
    pub fn consumer_factory(mut self, name: &str, make: Factory<dyn BatchHandler>) -> Self {
        self.consumers.insert(name.to_owned(), make);
        self
    }

    /// Declares the JSON schema of `queue`'s payloads (`#[task]` does this for a handler taking
    /// `Job<T>` with `T: utoipa::ToSchema`): a service serving the queue documents it and, unless
    /// told not to ([`Service::check_payload_schemas`](crate::service::Service::check_payload_schemas)),
    /// refuses submissions that do not match it.
    #[must_use]
    pub fn payload_schema(mut self, queue: &str, schema: PayloadSchema) -> Self {
        self.payload_schemas.insert(queue.to_owned(), schema);
        self
    }

    /// The application being built.
    pub(crate) fn application(&self) -> &Application {
        &self.app
    }

    /// Replaces the settings.
    #[must_use]
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// Opens the store `RAINDROP_STORE` names (SQLite by default) unless one was given, checks
    /// that every task has a handler, and builds the engine.
    pub async fn open(self) -> Result<Engine> {
        let url = StoreUrl::from_env()?;
        self.open_url(&url).await
    }

    /// Opens the store `url` names unless one was given, and builds the engine.
    pub async fn open_url(mut self, url: &StoreUrl) -> Result<Engine> {
        if self.store.is_none() {
            self.store = Some(crate::store::open(url).await?);
        }
        self.build()
    }

    /// Builds the engine on the given store.
    pub fn build(self) -> Result<Engine> {
        let store = self
            .store
            .ok_or_else(|| Error::Config("no store: call `.store(…)` or `.open()`".into()))?;
        let app = self.app;
        crate::plan::Bindings {
            tasks: names(&self.tasks),
            crons: names(&self.crons),
            consumers: names(&self.consumers),
            observers: names(&self.observers),
        }
        .check(&app)?;
        let wakes = app
            .queues
            .iter()
            .map(|q| {
                let wake = store.queue_wake(q.name.as_str()).unwrap_or_default();
                (q.name.to_string(), wake)
            })
            .collect();
        Ok(Engine {
            inner: Arc::new(Inner {
                worker_id: worker_id(),
                app,
                store,
                wakes,
                tasks: self.tasks,
                crons: self.crons,
                observers: self.observers,
                consumers: self.consumers,
                alerts: Arc::new(Alerts::default()),
                settings: self.settings,
                secrets: self.secrets,
                payload_schemas: self.payload_schemas,
            }),
        })
    }
}

pub use crate::plan::status_cache;

/// A unique id for this process's workers: host, process id and a random suffix.
fn worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!("{host}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}

struct Inner {
    app: Application,
    store: Arc<dyn Store>,
    worker_id: String,
    wakes: HashMap<String, Arc<Notify>>,
    tasks: HashMap<String, Factory<dyn Handler>>,
    crons: HashMap<String, Factory<dyn CronHandler>>,
    observers: HashMap<String, Factory<dyn ObserverHandler>>,
    consumers: HashMap<String, Factory<dyn BatchHandler>>,
    alerts: Arc<Alerts>,
    settings: Settings,
    secrets: HashMap<String, Secret>,
    payload_schemas: HashMap<String, PayloadSchema>,
}

/// A running or runnable application. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("app", &self.inner.app.name)
            .field("worker", &self.inner.worker_id)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts building an engine for `app`.
    pub fn builder(app: Application) -> EngineBuilder {
        EngineBuilder {
            app,
            store: None,
            tasks: HashMap::new(),
            crons: HashMap::new(),
            observers: HashMap::new(),
            consumers: HashMap::new(),
            settings: Settings::default(),
            secrets: HashMap::new(),
            payload_schemas: HashMap::new(),
        }
    }

    /// The application.
    pub fn app(&self) -> &Application {
        &self.inner.app
    }

    /// The JSON schema of `queue`'s payloads, if one was declared.
    pub fn payload_schema(&self, queue: &str) -> Option<&PayloadSchema> {
        self.inner.payload_schemas.get(queue)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// This process's worker id.
    pub fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }

    /// Alerts raised by this process's monitors.
    pub fn alerts(&self) -> &Arc<Alerts> {
        &self.inner.alerts
    }

    /// The producer of queue `name`.
    pub fn queue(&self, name: &str) -> Result<Queue> {
        let queue = self
            .inner
            .app
            .queues
            .iter()
            .find(|q| q.name.as_str() == name)
            .ok_or_else(|| Error::Unknown {
                kind: "queue",
                name: name.to_owned(),
            })?;
        let wake = self.wake(name);
        Ok(Queue::new(
            name,
            self.inner.store.clone(),
            queue.max_attempts,
            queue.max_message_size.bytes(),
            wake,
        )
        .with_limit_key(queue.concurrency_limit.as_ref().and_then(|c| c.key.clone()))
        .with_unique(queue.unique.clone())
        .with_debounce(queue.debounce.clone()))
    }

    /// The kv_cache `name`.
    pub fn kv(&self, name: &str) -> Result<KvCache> {
        let cache = self
            .inner
            .app
            .kv_caches
            .iter()
            .find(|c| c.name.as_str() == name)
            .ok_or_else(|| Error::Unknown {
                kind: "kv_cache",
                name: name.to_owned(),
            })?;
        let status = status_cache(&self.inner.app).filter(|c| c.namespace == name);
        Ok(KvCache::new(
            name,
            self.inner.store.clone(),
            cache.ttl.map(|t| t.get()),
            status,
        ))
    }

    /// Starts every component this process's roles include. Observer handlers receive every
    /// event after this returns.
    pub async fn start(&self) -> Result<Running> {
        let stop = CancellationToken::new();
        let mut components = tokio::task::JoinSet::new();
        let inner = &self.inner;
        let settings = &inner.settings;
        let plan = crate::plan::Plan::of(&inner.app, settings);
        for pool in plan.pools {
            let name = pool.config.task.as_str();
            let work = match pool.kind {
                PoolKind::Task => inner.tasks.get(name).map(|make| Work::Jobs(make(self))),
                PoolKind::Consumer { batch_size } => {
                    inner.consumers.get(name).map(|make| Work::Batches {
                        handler: make(self),
                        size: batch_size,
                    })
                }
            };
            let Some(work) = work else { continue };
            let wake = self.wake(&pool.config.queue);
            components.spawn(crate::worker::run(
                inner.store.clone(),
                work,
                pool.config,
                inner.worker_id.clone(),
                wake,
                stop.clone(),
            ));
        }
        for config in plan.crons {
            let Some(make) = inner.crons.get(&config.task) else {
                continue;
            };
            let handler = make(self);
            components.spawn(crate::cron::run(
                inner.store.clone(),
                handler,
                config,
                stop.clone(),
            ));
        }
        for config in plan.monitors {
            let webhooks = config
                .sinks
                .iter()
                .map(|sink| {
                    let secret = sink
                        .secret_env
                        .as_deref()
                        .map(|name| self.secret_value(name, &config.name, sink.name.as_str()))
                        .transpose()?;
                    Ok(crate::sink::Webhook::new(sink.clone(), secret))
                })
                .collect::<Result<Vec<_>>>()?;
            let handler = inner.observers.get(&config.name).map(|make| make(self));
            let cursor = inner.store.last_event_seq().await?;
            components.spawn(crate::observer::run(
                inner.store.clone(),
                config,
                handler,
                inner.alerts.clone(),
                webhooks,
                cursor,
                stop.clone(),
            ));
        }
        let roles: Vec<&'static str> = [
            (settings.roles.workers, "workers"),
            (settings.roles.scheduler, "scheduler"),
            (settings.roles.observer, "observer"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if !roles.is_empty() {
            components.spawn(crate::registry::keep_announcing(
                inner.store.clone(),
                inner.worker_id.clone(),
                roles,
                stop.clone(),
            ));
        }
        Ok(Running { stop, components })
    }

    /// The secret `name` an alert sink of `observer` needs: supplied to the builder, else from
    /// the environment.
    fn secret_value(&self, name: &str, observer: &str, sink: &str) -> Result<Secret> {
        if let Some(secret) = self.inner.secrets.get(name) {
            return Ok(secret.clone());
        }
        std::env::var(name).map(Secret::new).map_err(|_| {
            Error::Config(format!(
                "the secret `{name}` of sink `{sink}` (observer `{observer}`) has no value: set the environment variable `{name}`"
            ))
        })
    }

    /// What wakes idle workers of `queue` when jobs may have become ready.
    fn wake(&self, queue: &str) -> Arc<Notify> {
        self.inner.wakes.get(queue).cloned().unwrap_or_default()
    }

    /// Runs until `signal` completes, then shuts down gracefully.
    pub async fn run_until(&self, signal: impl Future<Output = ()>) -> Result<()> {
        let running = self.start().await?;
        signal.await;
        tracing::info!("shutting down");
        running.shutdown().await;
        Ok(())
    }
}

/// Components started by [`Engine::start`].
#[derive(Debug)]
pub struct Running {
    stop: CancellationToken,
    components: tokio::task::JoinSet<()>,
}

impl Running {
    /// Stops claiming, lets running jobs finish within the grace period, releases the rest,
    /// and waits for every component to end.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        while let Some(done) = self.components.join_next().await {
            if let Err(err) = done {
                tracing::error!(error = %err, "a component ended abnormally");
            }
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
