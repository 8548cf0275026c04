//! A Raindrop-style manifest: the `email-sender` observer consumes `email-queue` in batches of up
//! to ten. Returning normally acknowledges the batch, an error retries it, and `ack()` /
//! `retry(delay)` on a message win over the outcome. Delivery is at least once: a message may
//! come again, so sending must be idempotent (here, by remembering what was sent).
//!
//! ```sh
//! cargo run -p example-raindrop-consumer
//! curl -s -X POST localhost:8080/v1/jobs -d '{"payload": {"to": "ada@example.com", "subject": "hi"}}'
//! curl -s -X POST localhost:8080/v1/jobs -d '{"payload": {"to": "bounce@example.com", "subject": "hi"}}'
//! ```

use std::time::Duration;

use raindrop::kv::PutOptions;
use raindrop::prelude::*;
use serde::Deserialize;

raindrop::app!();

#[derive(Debug, Deserialize)]
struct Email {
    to: String,
    subject: String,
}

#[raindrop::observer]
async fn email_sender(batch: MessageBatch, env: Env) -> Result<(), TaskError> {
    for message in batch.messages() {
        let Ok(email) = message.json::<Email>() else {
            // It will never parse: acknowledge it rather than retry it forever.
            tracing::warn!(message = %message.id(), "dropping a message that is not an email");
            message.ack();
            continue;
        };
        let key = format!("sent:{}", message.id());
        if env.delivery_status.get(&key).await?.is_some() {
            message.ack();
            continue;
        }
        if email.to.starts_with("bounce@") {
            // The mail server asked us to come back later.
            message.retry(Some(Duration::from_secs(30)));
            continue;
        }
        tracing::info!(to = %email.to, subject = %email.subject, attempt = message.attempts(), "email sent");
        env.delivery_status
            .put(
                &key,
                "sent",
                PutOptions {
                    ttl: Some(Duration::from_secs(86_400)),
                    ..PutOptions::default()
                },
            )
            .await?;
    }
    Ok(())
}

#[raindrop::main]
fn main() {}
