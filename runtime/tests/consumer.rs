//! Raindrop-style queue consumers: batches, ack, retry with a delay, and what the handler's
//! outcome means for the messages it did not decide for.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use raindrop::consumer::{MessageBatch, consumer_fn};
use raindrop::engine::{Engine, Settings};
use raindrop::event::EventKind;
use raindrop::feed::EventFollower;
use raindrop::job::{JobId, JobState};
use raindrop::task::TaskError;
use tokio::sync::mpsc;

mod support;
use support::{app, memory};

const MANIFEST: &str = r#"application "c" {
  queue "emails" {
    max_attempts = 3
    backoff {
      initial = "50ms"
      jitter  = 0
    }
  }
  observer "sender" {
    source {
      queue      = "emails"
      batch_size = 4
    }
  }
}"#;

/// A delivered batch: (message body, attempts) in order.
type Seen = Vec<(String, u32)>;

async fn engine(
    decide: fn(&MessageBatch) -> Result<(), TaskError>,
) -> (Engine, mpsc::UnboundedReceiver<Seen>) {
    let app = app(MANIFEST);
    let (sender, received) = mpsc::unbounded_channel();
    let engine = Engine::builder(app)
        .store(memory())
        .settings(Settings {
            idle_poll: Duration::from_millis(10),
            observer_tick: Duration::from_millis(20),
            ..Settings::default()
        })
        .consumer(
            "sender",
            consumer_fn(move |batch: MessageBatch| {
                let sender = sender.clone();
                async move {
                    let seen = batch
                        .messages()
                        .iter()
                        .map(|m| (m.json::<String>().unwrap(), m.attempts()))
                        .collect();
                    sender.send(seen).unwrap();
                    decide(&batch)
                }
            }),
        )
        .build()
        .unwrap();
    (engine, received)
}

async fn send_all(engine: &Engine, bodies: &[&str]) -> Vec<JobId> {
    let queue = engine.queue("emails").unwrap();
    let mut ids = Vec::new();
    for body in bodies {
        ids.push(queue.send(body).await.unwrap());
    }
    ids
}

async fn next(received: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("a batch arrives")
        .unwrap()
}

async fn finished(engine: &Engine, follower: &mut EventFollower, ids: &[JobId]) {
    for id in ids {
        tokio::time::timeout(
            Duration::from_secs(10),
            follower.wait_for(|e| {
                e.job == *id && matches!(e.kind, EventKind::Succeeded | EventKind::DeadLettered)
            }),
        )
        .await
        .expect("the message finishes")
        .unwrap();
    }
    let _ = engine;
}

#[tokio::test]
async fn returning_normally_acknowledges_the_whole_batch() {
    let (engine, mut received) = engine(|_| Ok(())).await;
    let ids = send_all(&engine, &["a", "b", "c", "d", "e"]).await;
    let mut follower = EventFollower::after(engine.store().clone(), 0);
    let running = engine.start().await.unwrap();
    let first = next(&mut received).await;
    assert_eq!(
        first,
        vec![
            ("a".into(), 1),
            ("b".into(), 1),
            ("c".into(), 1),
            ("d".into(), 1)
        ],
        "batches hold up to batch_size"
    );
    assert_eq!(next(&mut received).await, vec![("e".into(), 1)]);
    finished(&engine, &mut follower, &ids).await;
    for id in ids {
        assert_eq!(
            engine.store().get(id).await.unwrap().unwrap().state,
            JobState::Succeeded
        );
    }
    running.shutdown().await;
}

#[tokio::test]
async fn an_error_retries_every_undecided_message_and_explicit_decisions_win() {
    // "keep" is acknowledged explicitly; the handler then fails, which retries the others.
    let (engine, mut received) = engine(|batch| {
        for message in batch.messages() {
            if message.json::<String>().unwrap() == "keep" {
                message.ack();
            }
        }
        if batch.messages().iter().all(|m| m.attempts() > 1) {
            Ok(())
        } else {
            Err(TaskError::retry("smtp down"))
        }
    })
    .await;
    let ids = send_all(&engine, &["keep", "again"]).await;
    let mut follower = EventFollower::after(engine.store().clone(), 0);
    let running = engine.start().await.unwrap();
    assert_eq!(
        next(&mut received).await,
        vec![("keep".into(), 1), ("again".into(), 1)]
    );
    assert_eq!(
        next(&mut received).await,
        vec![("again".into(), 2)],
        "only the undecided message comes back"
    );
    finished(&engine, &mut follower, &ids).await;
    let again = engine.store().get(ids[1]).await.unwrap().unwrap();
    assert_eq!((again.state, again.attempt), (JobState::Succeeded, 2));
    assert_eq!(
        again.attempts[0].error.as_ref().unwrap().message,
        "smtp down"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn retry_with_a_delay_is_not_delivered_before_it() {
    let (engine, mut received) = engine(|batch| {
        let first = &batch.messages()[0];
        if first.attempts() == 1 {
            first.retry(Some(Duration::from_millis(400)));
        }
        Ok(())
    })
    .await;
    let ids = send_all(&engine, &["later"]).await;
    let mut follower = EventFollower::after(engine.store().clone(), 0);
    let running = engine.start().await.unwrap();
    next(&mut received).await;
    next(&mut received).await;
    finished(&engine, &mut follower, &ids).await;
    let job = engine.store().get(ids[0]).await.unwrap().unwrap();
    let gap = job.attempts[1].started_at - job.attempts[0].finished_at.unwrap();
    assert!(gap.num_milliseconds() >= 400, "redelivered after {gap}");
    running.shutdown().await;
}

#[tokio::test]
async fn retry_all_exhausts_the_attempts_into_dead_letters() {
    let (engine, mut received) = engine(|batch| {
        batch.retry_all(None);
        Ok(())
    })
    .await;
    let ids = send_all(&engine, &["x", "y"]).await;
    let mut follower = EventFollower::after(engine.store().clone(), 0);
    let running = engine.start().await.unwrap();
    for attempt in 1..=3 {
        let batch = next(&mut received).await;
        assert!(batch.iter().all(|(_, a)| *a == attempt), "{batch:?}");
    }
    finished(&engine, &mut follower, &ids).await;
    for id in ids {
        assert_eq!(
            engine.store().get(id).await.unwrap().unwrap().state,
            JobState::Dead
        );
    }
    running.shutdown().await;
}

#[tokio::test]
async fn ack_all_wins_over_an_error() {
    let (engine, mut received) = engine(|batch| {
        batch.ack_all();
        Err(TaskError::retry("ignored: everything was acknowledged"))
    })
    .await;
    let ids = send_all(&engine, &["p", "q"]).await;
    let mut follower = EventFollower::after(engine.store().clone(), 0);
    let running = engine.start().await.unwrap();
    next(&mut received).await;
    finished(&engine, &mut follower, &ids).await;
    for id in &ids {
        assert_eq!(
            engine.store().get(*id).await.unwrap().unwrap().state,
            JobState::Succeeded
        );
    }
    running.shutdown().await;
}

#[tokio::test]
async fn a_consumer_without_a_handler_is_a_startup_error() {
    let app = app(MANIFEST);
    let err = Engine::builder(app)
        .store(memory())
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("no handler for observer `sender`"), "{err}");
}
