//! Alert rules' standings: what each rule measured last and whether it fires, kept per process
//! for the service and dashboard, and shared through the store by the registry.

use std::collections::BTreeMap;
use std::sync::Mutex;

use raindrop_codegen::model::{self, AlertMetric, Comparison, Severity};
use serde::{Deserialize, Serialize};

use crate::job::Timestamp;

/// An alert rule's current standing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    /// The observer that owns the rule.
    pub observer: String,
    /// The rule's name.
    pub name: String,
    /// The queue it was measured on.
    pub queue: String,
    /// What it measures.
    pub metric: AlertMetric,
    /// The measured value.
    pub value: f64,
    /// How the value is compared with the threshold.
    #[serde(default)]
    pub comparison: Comparison,
    /// The threshold it is compared with.
    pub threshold: f64,
    /// How urgent the rule says it is.
    #[serde(default)]
    pub severity: Severity,
    /// Whether it fires: the condition has held for the rule's `for`.
    pub firing: bool,
    /// When it last started or stopped firing.
    pub since: Timestamp,
}

impl AlertState {
    /// `firing` or `resolved`.
    pub fn status(&self) -> &'static str {
        if self.firing { "firing" } else { "resolved" }
    }

    /// The same for every firing and resolve of one rule on one queue (PagerDuty's dedup key).
    pub fn dedup_key(&self) -> String {
        format!("raindrop/{}/{}/{}", self.observer, self.name, self.queue)
    }

    /// One line for people: what fired or resolved, and the value against the threshold.
    pub fn summary(&self) -> String {
        format!(
            "[{}] {} {} on queue {}: {} is {} ({} {})",
            self.severity.as_str(),
            self.status().to_uppercase(),
            self.name,
            self.queue,
            self.metric.as_str(),
            self.value,
            self.comparison.as_str(),
            self.threshold,
        )
    }
}

/// Alerts raised by observers, readable by the service and dashboard.
#[derive(Debug, Default)]
pub struct Alerts {
    states: Mutex<BTreeMap<(String, String, String), AlertState>>,
    /// Since when each rule's condition has held without it firing yet (its `for`), on the
    /// monotonic clock.
    pending: Mutex<BTreeMap<(String, String, String), tokio::time::Instant>>,
}

impl Alerts {
    /// Every rule's standing, firing or not.
    pub fn all(&self) -> Vec<AlertState> {
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The alerts currently firing.
    pub fn firing(&self) -> Vec<AlertState> {
        self.all().into_iter().filter(|a| a.firing).collect()
    }

    /// Records `value` measured by `observer`'s `rule` on `queue` at `at`; the new standing when
    /// the rule starts firing (its condition has held for its `for`) or resolves (it no longer
    /// holds). Each firing and each resolve is returned once; a rule that has never fired does
    /// not resolve.
    pub(crate) fn update(
        &self,
        observer: &str,
        rule: &model::Alert,
        queue: &str,
        value: f64,
        at: Timestamp,
    ) -> Option<AlertState> {
        let holds = rule.comparison.holds(value, rule.threshold);
        let key = (observer.to_owned(), rule.name.to_string(), queue.to_owned());
        let was_firing = self
            .states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .map(|s| (s.firing, s.since));
        let firing = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if !holds {
                pending.remove(&key);
                false
            } else if was_firing.is_some_and(|(firing, _)| firing) {
                true
            } else {
                let since = *pending
                    .entry(key.clone())
                    .or_insert_with(tokio::time::Instant::now);
                let due = rule.pending_for.is_none_or(|d| since.elapsed() >= d.get());
                if due {
                    pending.remove(&key);
                }
                due
            }
        };
        let since = match was_firing {
            Some((was, since)) if was == firing => since,
            _ => at,
        };
        let state = AlertState {
            observer: observer.to_owned(),
            name: rule.name.to_string(),
            queue: queue.to_owned(),
            metric: rule.metric,
            value,
            comparison: rule.comparison,
            threshold: rule.threshold,
            severity: rule.severity,
            firing,
            since,
        };
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, state.clone());
        let previous = was_firing.map(|(f, _)| f);
        (previous != Some(firing) && (firing || previous.is_some())).then_some(state)
    }
}
