//! Alert sinks: webhooks a monitor sends each firing and each resolve of its alerts to, as
//! Raindrop's JSON, a Slack-compatible message or a PagerDuty Events v2 event.
//!
//! Each sink has one delivery task, so a sink hears of an alert's firing before its resolve;
//! a delivery that fails for a reason that may pass (no connection, a timeout, 429, 5xx) is
//! retried with backoff, up to [`ATTEMPTS`] times.

use std::time::Duration;

use raindrop_codegen::model::{Sink, SinkAuth, SinkFormat};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::alert::AlertState;
use crate::secret::Secret;

/// Attempts per delivery, the first included.
pub(crate) const ATTEMPTS: u32 = 6;
/// The wait before the second attempt; it doubles after each failure, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A sink ready to deliver: its settings and its secret's value.
#[derive(Debug, Clone)]
pub(crate) struct Webhook {
    sink: Sink,
    secret: Option<Secret>,
}

impl Webhook {
    pub(crate) fn new(sink: Sink, secret: Option<Secret>) -> Self {
        Self { sink, secret }
    }

    /// The request body for `alert`.
    fn body(&self, alert: &AlertState) -> serde_json::Value {
        match self.sink.format {
            SinkFormat::Json => serde_json::json!({
                "status": alert.status(),
                "observer": alert.observer,
                "alert": alert.name,
                "queue": alert.queue,
                "metric": alert.metric,
                "comparison": alert.comparison,
                "threshold": alert.threshold,
                "value": alert.value,
                "severity": alert.severity,
                "since": alert.since,
                "dedup_key": alert.dedup_key(),
                "summary": alert.summary(),
            }),
            SinkFormat::Slack => {
                let icon = if alert.firing {
                    ":rotating_light:"
                } else {
                    ":white_check_mark:"
                };
                serde_json::json!({ "text": format!("{icon} {}", alert.summary()) })
            }
            SinkFormat::Pagerduty => {
                let routing_key = self.secret.as_ref().map(|s| s.expose().to_owned());
                if alert.firing {
                    serde_json::json!({
                        "routing_key": routing_key,
                        "event_action": "trigger",
                        "dedup_key": alert.dedup_key(),
                        "payload": {
                            "summary": alert.summary(),
                            "source": alert.observer,
                            "severity": alert.severity,
                            "component": alert.queue,
                            "class": alert.metric,
                            "custom_details": {
                                "value": alert.value,
                                "comparison": alert.comparison,
                                "threshold": alert.threshold,
                                "since": alert.since,
                            },
                        },
                    })
                } else {
                    serde_json::json!({
                        "routing_key": routing_key,
                        "event_action": "resolve",
                        "dedup_key": alert.dedup_key(),
                    })
                }
            }
        }
    }

    /// Sends `alert`, retrying with backoff; whether it was accepted.
    async fn deliver(&self, client: &reqwest::Client, alert: &AlertState) -> bool {
        let body = self.body(alert).to_string();
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let mut request = client
                .post(&self.sink.url)
                .header("content-type", "application/json")
                .body(body.clone());
            if let (SinkFormat::Json, Some(secret)) = (self.sink.format, &self.secret) {
                request = match self.sink.auth {
                    SinkAuth::Bearer => request.bearer_auth(secret.expose()),
                    SinkAuth::Hmac => request.header(
                        "x-raindrop-signature",
                        format!(
                            "sha256={}",
                            hex(&hmac_sha256(secret.expose().as_bytes(), body.as_bytes()))
                        ),
                    ),
                };
            }
            let failure = match request.send().await {
                Ok(response) if response.status().is_success() => return true,
                Ok(response) => {
                    let status = response.status();
                    if !(status.is_server_error() || status.as_u16() == 429) {
                        tracing::warn!(sink = %self.sink.name, alert = %alert.name, %status, "the alert sink refused the alert; not retrying");
                        return false;
                    }
                    format!("answered {status}")
                }
                Err(err) => err.to_string(),
            };
            if attempt == ATTEMPTS {
                tracing::warn!(sink = %self.sink.name, alert = %alert.name, attempts = ATTEMPTS, error = %failure, "delivering the alert failed; giving up");
                return false;
            }
            tracing::debug!(sink = %self.sink.name, alert = %alert.name, attempt, error = %failure, retry_in_ms = backoff.as_millis() as u64, "delivering the alert failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        false
    }
}

/// The delivery tasks of a monitor's sinks.
pub(crate) struct Sinks {
    senders: Vec<mpsc::UnboundedSender<AlertState>>,
    tasks: tokio::task::JoinSet<()>,
}

impl Sinks {
    /// Starts one delivery task per webhook.
    pub(crate) fn start(webhooks: Vec<Webhook>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        let mut tasks = tokio::task::JoinSet::new();
        let senders = webhooks
            .into_iter()
            .map(|webhook| {
                let (sender, mut receiver) = mpsc::unbounded_channel::<AlertState>();
                let client = client.clone();
                tasks.spawn(async move {
                    while let Some(alert) = receiver.recv().await {
                        let delivered = webhook.deliver(&client, &alert).await;
                        metrics::counter!(
                            "raindrop_alert_notifications_total",
                            "sink" => webhook.sink.name.to_string(),
                            "outcome" => if delivered { "delivered" } else { "failed" }
                        )
                        .increment(1);
                    }
                });
                sender
            })
            .collect();
        Self { senders, tasks }
    }

    /// Queues `alert` for every sink.
    pub(crate) fn send(&self, alert: &AlertState) {
        for sender in &self.senders {
            // The task ends only after its sender is dropped.
            let _ = sender.send(alert.clone());
        }
    }

    /// Delivers what is queued (retries included), waiting at most `grace`.
    pub(crate) async fn finish(mut self, grace: Duration) {
        self.senders.clear();
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("alert notifications still undelivered at shutdown were dropped");
        }
    }
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hmac_hashes_keys_longer_than_a_block() {
        // RFC 4231 test case 6: a 131-byte key.
        let key = [0xaa; 131];
        let mac = hmac_sha256(
            &key,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
