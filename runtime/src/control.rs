//! The operations both HTTP faces share — the JSON API (`service/jobs.rs`, `service/admin.rs`)
//! and the dashboard (`service/dashboard/`): find a caller's job, read its status, cancel it,
//! retry dead letters, pause and resume queues, purge, list. The two rules every one of them
//! obeys live here once each:
//!
//! - the tenant rule ([`View`]): a caller sees its own tenant's jobs, or every tenant's; a job
//!   it may not see is not found, so nobody learns that another tenant's job exists;
//! - the served-queue rule ([`Control::serves`]): a service acts only on the queues it serves;
//!   a job of another queue is not found, a listing covers only served queues, and naming
//!   another queue is [`Error::NotServed`].
//!
//! Failures are domain errors ([`Error`]); what a face answers with them (JSON with a code, or
//! a page) is the face's business.

use crate::engine::Engine;
use crate::job::{Job, JobId, JobState, Timestamp, now};
use crate::store::{CancelOutcome, JobFilter, JobStatus, Page, StateCounts};

/// Whose jobs a caller may see and act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum View {
    /// Every tenant's, and jobs without a tenant.
    All,
    /// Only this tenant's.
    Tenant(String),
}

impl View {
    /// Whether a job of `tenant` is visible.
    pub(crate) fn sees(&self, tenant: Option<&str>) -> bool {
        match self {
            View::All => true,
            View::Tenant(own) => tenant == Some(own.as_str()),
        }
    }

    /// The tenant listings are restricted to: `None` for every tenant.
    fn tenant(&self) -> Option<String> {
        match self {
            View::All => None,
            View::Tenant(own) => Some(own.clone()),
        }
    }
}

/// Why an operation did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The engine or the store refused or failed. A job the caller may not see is
    /// [`crate::Error::NotFound`], like one that does not exist.
    #[error(transparent)]
    Engine(#[from] crate::Error),
    /// The queue is not one this service serves.
    #[error("queue `{0}` is not served here")]
    NotServed(String),
    /// The job to cancel had already ended.
    #[error("job {id} already {state}")]
    AlreadyFinished {
        /// The job.
        id: JobId,
        /// How it ended.
        state: JobState,
    },
}

/// `Result` with the control [`Error`].
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cancelled {
    /// The job was waiting; it will not run.
    Waiting,
    /// The job was running; its worker is told to stop.
    Running,
}

/// A served queue at a glance.
#[derive(Debug, Clone)]
pub(crate) struct QueueState {
    pub(crate) name: String,
    pub(crate) paused: bool,
    pub(crate) counts: StateCounts,
    /// When the oldest job ready to run became ready.
    pub(crate) oldest_ready: Option<Timestamp>,
}

/// The operations of one service: its engine and the queues it serves.
#[derive(Debug)]
pub(crate) struct Control {
    engine: Engine,
    served: Vec<String>,
}

impl Control {
    pub(crate) fn new(engine: Engine, served: Vec<String>) -> Self {
        Self { engine, served }
    }

    /// The engine behind the operations.
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The queues served, in the manifest's order.
    pub(crate) fn served(&self) -> &[String] {
        &self.served
    }

    /// The served-queue rule: whether this service takes jobs for `queue` and acts on it.
    pub(crate) fn serves(&self, queue: &str) -> bool {
        self.served.iter().any(|q| q == queue)
    }

    fn served_queue(&self, queue: &str) -> Result<()> {
        if self.serves(queue) {
            Ok(())
        } else {
            Err(Error::NotServed(queue.to_owned()))
        }
    }

    /// Whether a caller with `view` may see a job of `tenant` in `queue`: the tenant rule and
    /// the served-queue rule together. A job it may not see is not found.
    fn visible(&self, view: &View, queue: &str, tenant: Option<&str>) -> bool {
        view.sees(tenant) && self.serves(queue)
    }

    /// The queues a listing of `asked` covers: those asked, each of which must be served, or
    /// every served queue when none is asked — or no restriction at all when this service
    /// serves every queue of the application.
    fn listed_queues(&self, asked: Vec<String>) -> Result<Vec<String>> {
        if let Some(queue) = asked.iter().find(|q| !self.serves(q)) {
            return Err(Error::NotServed(queue.clone()));
        }
        let every = self.engine.app().queues.len() == self.served.len();
        Ok(if asked.is_empty() && !every {
            self.served.clone()
        } else {
            asked
        })
    }

    /// The whole record of job `id`, if `view` sees it.
    pub(crate) async fn find_job(&self, view: &View, id: JobId) -> Result<Job> {
        self.engine
            .store()
            .get(id)
            .await?
            .filter(|job| self.visible(view, &job.queue, job.tenant.as_deref()))
            .ok_or_else(|| crate::Error::NotFound(id).into())
    }

    /// The status of job `id`, if `view` sees it: one read of its record. (The status
    /// kv_cache derives the same document from the same record, so reading it there would only
    /// add a JSON round trip.)
    pub(crate) async fn status(&self, view: &View, id: JobId) -> Result<JobStatus> {
        Ok(JobStatus::of(&self.find_job(view, id).await?))
    }

    /// Cancels job `id` (waiting or running) if `view` sees it.
    pub(crate) async fn cancel(&self, view: &View, id: JobId) -> Result<Cancelled> {
        let queue = self.status(view, id).await?.queue;
        let cancelled = match self.engine.store().cancel(id, now()).await? {
            CancelOutcome::Cancelled => Cancelled::Waiting,
            CancelOutcome::CancelledRunning => Cancelled::Running,
            CancelOutcome::AlreadyFinished(state) => {
                return Err(Error::AlreadyFinished { id, state });
            }
        };
        metrics::counter!("raindrop_jobs_cancelled_total", "queue" => queue).increment(1);
        Ok(cancelled)
    }

    /// Puts dead letter `id` back in its queue with a fresh set of attempts, if `view` sees it.
    pub(crate) async fn retry_dead(&self, view: &View, id: JobId) -> Result<()> {
        self.status(view, id).await?;
        Ok(self.engine.store().retry_dead(id, now()).await?)
    }

    /// Retries every dead letter `view` sees, up to `most`; how many were retried.
    pub(crate) async fn retry_all_dead(&self, view: &View, most: usize) -> Result<usize> {
        let store = self.engine.store();
        let mut retried = 0;
        while retried < most {
            // Retried jobs leave the listing, so each page starts over.
            let page = self.dead_letters(view, None, None, 500).await?;
            if page.items.is_empty() {
                break;
            }
            let at = now();
            for job in page.items {
                store.retry_dead(job.id, at).await?;
                retried += 1;
            }
        }
        Ok(retried)
    }

    /// Stops workers taking jobs from served queue `queue` (jobs are still accepted).
    pub(crate) async fn pause(&self, queue: &str) -> Result<()> {
        self.served_queue(queue)?;
        Ok(self.engine.store().pause(queue).await?)
    }

    /// Lets workers take jobs from served queue `queue` again.
    pub(crate) async fn resume(&self, queue: &str) -> Result<()> {
        self.served_queue(queue)?;
        Ok(self.engine.store().resume(queue).await?)
    }

    /// Removes the dead letters of served queue `queue` (of every served queue when `None`)
    /// for good, every tenant's: only admins may, and they see every tenant. How many were
    /// removed.
    pub(crate) async fn purge_dead(&self, queue: Option<&str>) -> Result<u64> {
        let store = self.engine.store();
        match queue {
            Some(queue) => {
                self.served_queue(queue)?;
                Ok(store.purge_dead(Some(queue)).await?)
            }
            None => {
                let mut purged = 0;
                for queue in &self.served {
                    purged += store.purge_dead(Some(queue)).await?;
                }
                Ok(purged)
            }
        }
    }

    /// The jobs `filter` selects among those `view` sees (whatever tenant `filter` names),
    /// newest first, at most `limit` after job `after`.
    pub(crate) async fn list(
        &self,
        view: &View,
        filter: JobFilter,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Page<Job>> {
        let filter = JobFilter {
            tenant: view.tenant(),
            queues: self.listed_queues(filter.queues)?,
            ..filter
        };
        Ok(self.engine.store().list(&filter, after, limit).await?)
    }

    /// The dead letters of `queue` (every queue when `None`) that `view` sees, as [`Self::list`].
    pub(crate) async fn dead_letters(
        &self,
        view: &View,
        queue: Option<String>,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Page<Job>> {
        let filter = JobFilter {
            queues: queue.into_iter().collect(),
            states: vec![JobState::Dead],
            ..JobFilter::default()
        };
        self.list(view, filter, after, limit).await
    }

    /// Each served queue's pause state and counts of the jobs `view` sees; for a view of every
    /// tenant, also its oldest ready job at `at` (a tenant learns nothing of the others' jobs,
    /// not even how old the oldest is).
    pub(crate) async fn queues(&self, view: &View, at: Timestamp) -> Result<Vec<QueueState>> {
        let store = self.engine.store();
        let paused = store.paused().await?;
        let mut out = Vec::with_capacity(self.served.len());
        match view {
            View::All => {
                let counts = store.counts().await?;
                for name in &self.served {
                    out.push(QueueState {
                        name: name.clone(),
                        paused: paused.contains(name),
                        counts: counts.get(name).cloned().unwrap_or_default(),
                        oldest_ready: store.oldest_ready(name, at).await?,
                    });
                }
            }
            View::Tenant(tenant) => {
                for name in &self.served {
                    out.push(QueueState {
                        name: name.clone(),
                        paused: paused.contains(name),
                        counts: store.tenant_counts(name, tenant).await?,
                        oldest_ready: None,
                    });
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::View;

    #[test]
    fn a_tenant_sees_only_its_own_jobs_and_all_sees_every_job() {
        let acme = View::Tenant("acme".into());
        assert!(acme.sees(Some("acme")));
        assert!(!acme.sees(Some("globex")));
        assert!(!acme.sees(None), "jobs without a tenant are not a tenant's");
        assert_eq!(acme.tenant().as_deref(), Some("acme"));
        assert!(View::All.sees(None) && View::All.sees(Some("globex")));
        assert_eq!(View::All.tenant(), None);
    }
}
