//! Alert rules' standings: what each rule measured last and whether it fires, kept per process
//! for the service and dashboard, and shared through the store by the registry.

use std::collections::BTreeMap;
use std::sync::Mutex;

use raindrop_codegen::model::{self, AlertMetric};
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
    /// The threshold it is compared with.
    pub threshold: f64,
    /// Whether the value is above the threshold.
    pub firing: bool,
    /// When it last changed.
    pub since: Timestamp,
}

/// Alerts raised by observers, readable by the service and dashboard.
#[derive(Debug, Default)]
pub struct Alerts {
    states: Mutex<BTreeMap<(String, String, String), AlertState>>,
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
    /// the rule starts or stops firing (a first measurement that does not fire is no change).
    pub(crate) fn update(
        &self,
        observer: &str,
        rule: &model::Alert,
        queue: &str,
        value: f64,
        at: Timestamp,
    ) -> Option<AlertState> {
        let firing = value > rule.threshold;
        let key = (observer.to_owned(), rule.name.to_string(), queue.to_owned());
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let previous = states.get(&key).map(|s| (s.firing, s.since));
        let since = match previous {
            Some((was, since)) if was == firing => since,
            _ => at,
        };
        let state = AlertState {
            observer: observer.to_owned(),
            name: rule.name.to_string(),
            queue: queue.to_owned(),
            metric: rule.metric,
            value,
            threshold: rule.threshold,
            firing,
            since,
        };
        states.insert(key, state.clone());
        (previous.map(|p| p.0) != Some(firing) && (firing || previous.is_some())).then_some(state)
    }
}
