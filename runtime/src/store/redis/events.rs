//! The event log: each queue's stream (`P:{q}:events`) holds an entry per script call, a field
//! per event named by its job, its value `kind state attempt at[ detail]` (`event` in
//! `common.lua`). An event's seq is its entry's id and its place in the entry; streams of
//! different queues are merged by entry id, which is Redis's clock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::RedisStore;
use super::codec::{from_ms, ms};
use crate::error::Result;
use crate::event::{Event, EventKind};
use crate::job::{JobState, Timestamp};
use crate::store::EventLog;

/// Bits of an event's seq below its stream entry's millisecond: the entry's sequence number
/// within the millisecond, then the event's place in the entry.
const SEQ_BITS: u32 = 20;
/// Bits of an event's seq that hold its place within its stream entry (`common.lua` puts at
/// most 100 events in one). The 13 bits above them number the entries of one millisecond:
/// 8,192, beyond which (a clock stepping back by seconds) later entries share a seq.
const PLACE_BITS: u32 = 7;
/// Stream entries read at once when counting events by scanning.
const SCAN_BATCH: usize = 1000;

type StreamEntries = Vec<(String, Vec<(String, String)>)>;

/// The seq of the first event of stream entry `MS-N`: `MS << 20 | N << 7`.
fn seq_of(entry_id: &str) -> u64 {
    let (ms, n) = entry_id.split_once('-').unwrap_or((entry_id, "0"));
    let ms: u64 = ms.parse().unwrap_or(0);
    let n: u64 = n
        .parse::<u64>()
        .unwrap_or(0)
        .min((1 << (SEQ_BITS - PLACE_BITS)) - 1);
    (ms << SEQ_BITS) | (n << PLACE_BITS)
}

/// The id of the stream entry holding the event `seq`.
fn entry_of(seq: u64) -> String {
    format!(
        "{}-{}",
        seq >> SEQ_BITS,
        (seq & ((1 << SEQ_BITS) - 1)) >> PLACE_BITS
    )
}

/// The first `limit` of `events` in seq order, and any beyond that share the last one's seq:
/// streams of different queues can hold events with the same seq, and a page that split them
/// would leave the rest behind its cursor.
fn first_page(mut events: Vec<Event>, limit: usize) -> Vec<Event> {
    events.sort_by_key(|e| e.seq);
    if events.len() > limit && limit > 0 {
        let last = events[limit - 1].seq;
        let end = events.partition_point(|e| e.seq <= last);
        events.truncate(end);
    }
    events
}

/// The events of one stream entry, in order: a field per event named by its job, its value
/// `kind state attempt at[ detail]`.
fn decode_events(queue: &str, entry_id: &str, fields: &[(String, String)]) -> Vec<Event> {
    let first = seq_of(entry_id);
    let decode = |place: u64, job: &str, value: &str| {
        let mut words = value.splitn(5, ' ');
        Some(Event {
            seq: first | place,
            kind: EventKind::parse(words.next()?)?,
            state: words.next()?.parse().ok()?,
            attempt: words.next()?.parse().ok()?,
            at: from_ms(words.next()?.parse().ok()?).ok()?,
            detail: words.next().map(str::to_owned),
            job: job.parse().ok()?,
            queue: queue.to_owned(),
        })
    };
    fields
        .iter()
        .zip(0..1 << PLACE_BITS)
        .filter_map(|((job, value), place)| decode(place, job, value))
        .collect()
}

impl RedisStore {
    /// How many events of `kind` the stream of `queue` holds since `since`, newest entries
    /// first, stopping at the first entry older than that.
    async fn scan_events(&self, queue: &str, kind: EventKind, since: Timestamp) -> Result<u64> {
        let stream = self.shared.keys.queue_to_read(queue);
        let mut n = 0;
        let mut end = "+".to_owned();
        loop {
            let entries: StreamEntries = self
                .shared
                .redis
                .query(
                    "count events",
                    redis::cmd("XREVRANGE")
                        .arg(stream.events())
                        .arg(&end)
                        .arg("-")
                        .arg("COUNT")
                        .arg(SCAN_BATCH),
                )
                .await?;
            for (id, fields) in &entries {
                let events = decode_events(queue, id, fields);
                if !events.is_empty() && events.iter().all(|event| event.at < since) {
                    return Ok(n);
                }
                n += events
                    .iter()
                    .filter(|event| event.kind == kind && event.at >= since)
                    .count() as u64;
            }
            match entries.last() {
                Some((id, _)) if entries.len() == SCAN_BATCH => end = format!("({id}"),
                _ => return Ok(n),
            }
        }
    }
}

#[async_trait]
impl EventLog for RedisStore {
    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let queues = self.queues().await?;
        if queues.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        // Streams of different queues are merged by entry id, which is Redis's clock. Events
        // of the current millisecond may still be joined by others with the same id in another
        // stream, so read only up to a millisecond that has passed.
        let (secs, micros): (u64, u64) =
            self.shared.redis.query("time", &redis::cmd("TIME")).await?;
        let upto = secs * 1000 + micros / 1000;
        tokio::time::sleep(Duration::from_millis(2)).await;
        // The entry holding event `after` may hold later events too.
        let start = if after == 0 {
            "-".to_owned()
        } else {
            entry_of(after)
        };
        let cmds = queues
            .iter()
            .map(|queue| {
                redis::cmd("XRANGE")
                    .arg(self.shared.keys.queue_to_read(queue).events())
                    .arg(&start)
                    .arg(upto)
                    .arg("COUNT")
                    .arg(limit)
                    .clone()
            })
            .collect();
        let streams: Vec<StreamEntries> = self.shared.redis.many("read events", cmds).await?;
        // A stream read to its limit may have later events unread: none past its last entry
        // can be returned yet.
        let mut horizon = u64::MAX;
        for entries in &streams {
            if entries.len() >= limit
                && let Some((id, _)) = entries.last()
            {
                horizon = horizon.min(seq_of(id) | ((1 << PLACE_BITS) - 1));
            }
        }
        let events: Vec<Event> = queues
            .iter()
            .zip(&streams)
            .flat_map(|(queue, entries)| {
                entries
                    .iter()
                    .flat_map(move |(id, fields)| decode_events(queue, id, fields))
            })
            .filter(|e| e.seq > after && e.seq <= horizon)
            .collect();
        Ok(first_page(events, limit))
    }

    async fn last_event_seq(&self) -> Result<u64> {
        let queues = self.queues().await?;
        if queues.is_empty() {
            return Ok(0);
        }
        let cmds = queues
            .iter()
            .map(|queue| {
                redis::cmd("XREVRANGE")
                    .arg(self.shared.keys.queue_to_read(queue).events())
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .clone()
            })
            .collect();
        let streams: Vec<StreamEntries> = self.shared.redis.many("last event", cmds).await?;
        Ok(queues
            .iter()
            .zip(&streams)
            .filter_map(|(queue, entries)| {
                let (id, fields) = entries.first()?;
                decode_events(queue, id, fields).last().map(|e| e.seq)
            })
            .max()
            .unwrap_or(0))
    }

    async fn count_events(
        &self,
        kind: EventKind,
        since: Timestamp,
    ) -> Result<BTreeMap<String, u64>> {
        let mut counts = BTreeMap::new();
        for queue in self.queues().await? {
            let keys = self.shared.keys.queue_to_read(&queue);
            // The kinds a dashboard asks for have an index by time; others scan the stream.
            let indexed = match kind {
                EventKind::Succeeded => keys.finished(JobState::Succeeded),
                EventKind::DeadLettered => keys.finished(JobState::Dead),
                EventKind::Cancelled => keys.finished(JobState::Cancelled),
                EventKind::Failed => Some(keys.failures()),
                _ => None,
            };
            let n: u64 = match indexed {
                Some(key) => {
                    self.shared
                        .redis
                        .query(
                            "count events",
                            redis::cmd("ZCOUNT").arg(key).arg(ms(since)).arg("+inf"),
                        )
                        .await?
                }
                None => self.scan_events(&queue, kind, since).await?,
            };
            if n > 0 {
                counts.insert(queue, n);
            }
        }
        Ok(counts)
    }

    fn event_notify(&self) -> Arc<Notify> {
        self.notify.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn an_entry_holds_events_in_order_each_with_its_own_seq() {
        let a = "0190c0de-0000-7000-8000-000000000001";
        let b = "0190c0de-0000-7000-8000-000000000002";
        let fields = pairs(&[
            (a, "started running 1 1700000000000"),
            (b, "failed retrying 2 1700000000001 it broke: badly, twice"),
        ]);
        let events = decode_events("q", "1700000000005-3", &fields);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].kind, EventKind::Started);
        assert_eq!(events[0].job.to_string(), a);
        assert_eq!(events[0].detail, None);
        assert_eq!(events[1].state, JobState::Retrying);
        assert_eq!(events[1].attempt, 2);
        assert_eq!(events[1].at, from_ms(1_700_000_000_001).unwrap());
        assert_eq!(events[1].detail.as_deref(), Some("it broke: badly, twice"));
        assert_eq!(events[1].seq, events[0].seq + 1);
        // Both events are found again from their entry id.
        assert_eq!(entry_of(events[0].seq), "1700000000005-3");
        assert_eq!(entry_of(events[1].seq), "1700000000005-3");
        // A later entry, even of the same millisecond, comes after every event of this one.
        assert!(seq_of("1700000000005-4") > events[1].seq);
    }

    #[test]
    fn a_page_never_splits_events_that_share_a_seq() {
        let fields = |job: &str| pairs(&[(job, "started running 1 1700000000000")]);
        let a = "0190c0de-0000-7000-8000-00000000000a";
        let b = "0190c0de-0000-7000-8000-00000000000b";
        // The first entries of one millisecond in two queues' streams: equal seqs.
        let mut events = decode_events("qa", "1700000000000-0", &fields(a));
        events.extend(decode_events("qb", "1700000000000-0", &fields(b)));
        events.extend(decode_events("qa", "1700000000000-1", &fields(a)));
        assert_eq!(events[0].seq, events[1].seq);
        let page = first_page(events.clone(), 1);
        assert_eq!(page.len(), 2, "both events of the shared seq");
        assert!(page.iter().any(|e| e.queue == "qa") && page.iter().any(|e| e.queue == "qb"));
        assert_eq!(first_page(events, 3).len(), 3);
    }
}
