//! The script table: every state transition is one Lua script (`lua/*.lua`), loaded once and
//! then called by SHA.
//!
//! A queue script is built from a prelude that names the queue's keys (`keys.rs`) and the
//! fields of a job's hash (`codec.rs`), then `lua/common.lua`, then the script's own file. A
//! key/value script gets the prelude of the entry fields; the rate-limit and leadership scripts
//! stand alone.

use redis::{Script, ScriptInvocation, ToRedisArgs};

use super::codec::{field, kv_field, lua_prelude};
use super::keys;

const COMMON: &str = include_str!("lua/common.lua");

/// The scripts, each loaded once and then called by SHA.
pub(super) struct Scripts {
    pub(super) enqueue: Script,
    pub(super) claim: Script,
    pub(super) heartbeat: Script,
    pub(super) progress: Script,
    pub(super) complete: Script,
    pub(super) fail: Script,
    pub(super) release: Script,
    pub(super) cancel: Script,
    pub(super) recover: Script,
    pub(super) lost: Script,
    pub(super) promote: Script,
    pub(super) retry_dead: Script,
    pub(super) purge: Script,
    pub(super) purge_dead: Script,
    pub(super) oldest: Script,
    pub(super) kv_put: Script,
    pub(super) kv_delete: Script,
    pub(super) kv_list: Script,
    pub(super) kv_purge: Script,
    pub(super) rate: Script,
    pub(super) lead: Script,
    pub(super) unclaimed: Script,
    pub(super) index_tenants: Script,
    pub(super) held: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let queue_prelude = format!("{}{}", keys::lua_prelude(), lua_prelude(field::LUA));
        let queue = |body: &str| Script::new(&format!("{queue_prelude}{COMMON}{body}"));
        let kv_prelude = lua_prelude(kv_field::LUA);
        let kv = |body: &str| Script::new(&format!("{kv_prelude}{body}"));
        Self {
            enqueue: queue(include_str!("lua/enqueue.lua")),
            claim: queue(include_str!("lua/claim.lua")),
            heartbeat: queue(include_str!("lua/heartbeat.lua")),
            progress: queue(include_str!("lua/progress.lua")),
            complete: queue(include_str!("lua/complete.lua")),
            fail: queue(include_str!("lua/fail.lua")),
            release: queue(include_str!("lua/release.lua")),
            cancel: queue(include_str!("lua/cancel.lua")),
            recover: queue(include_str!("lua/recover.lua")),
            lost: queue(include_str!("lua/lost.lua")),
            promote: queue(include_str!("lua/promote.lua")),
            retry_dead: queue(include_str!("lua/retry_dead.lua")),
            purge: queue(include_str!("lua/purge.lua")),
            purge_dead: queue(include_str!("lua/purge_dead.lua")),
            oldest: queue(include_str!("lua/oldest.lua")),
            kv_put: kv(include_str!("lua/kv_put.lua")),
            kv_delete: kv(include_str!("lua/kv_delete.lua")),
            kv_list: kv(include_str!("lua/kv_list.lua")),
            kv_purge: kv(include_str!("lua/kv_purge.lua")),
            rate: Script::new(include_str!("lua/rate.lua")),
            lead: Script::new(include_str!("lua/lead.lua")),
            unclaimed: queue(include_str!("lua/unclaimed.lua")),
            index_tenants: queue(include_str!("lua/index_tenants.lua")),
            held: queue(include_str!("lua/held.lua")),
        }
    }

    pub(super) fn all(&self) -> [&Script; 24] {
        [
            &self.lost,
            &self.enqueue,
            &self.claim,
            &self.heartbeat,
            &self.progress,
            &self.complete,
            &self.fail,
            &self.release,
            &self.cancel,
            &self.recover,
            &self.promote,
            &self.retry_dead,
            &self.purge,
            &self.purge_dead,
            &self.oldest,
            &self.kv_put,
            &self.kv_delete,
            &self.kv_list,
            &self.kv_purge,
            &self.rate,
            &self.lead,
            &self.unclaimed,
            &self.index_tenants,
            &self.held,
        ]
    }
}

/// A script argument.
pub(super) trait ArgLike {
    fn add_to(&self, invocation: &mut ScriptInvocation<'_>);
}

impl<T: ToRedisArgs> ArgLike for T {
    fn add_to(&self, invocation: &mut ScriptInvocation<'_>) {
        invocation.arg(self);
    }
}

/// Script arguments from strings.
pub(super) fn strings(args: &[String]) -> Vec<&(dyn ArgLike + Sync)> {
    args.iter().map(|a| a as &(dyn ArgLike + Sync)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names of the form `F_NAME` that `source` uses.
    fn field_names(source: &str) -> Vec<&str> {
        let mut names = Vec::new();
        let mut rest = source;
        while let Some(at) = rest.find("F_") {
            let boundary = at == 0 || {
                let before = rest.as_bytes()[at - 1];
                !(before.is_ascii_alphanumeric() || before == b'_')
            };
            let len = rest[at..]
                .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
                .unwrap_or(rest.len() - at);
            if boundary {
                names.push(&rest[at..at + len]);
            }
            rest = &rest[at + len..];
        }
        names
    }

    #[test]
    fn every_field_a_script_names_is_in_its_table() {
        let queue_scripts = [
            COMMON,
            include_str!("lua/enqueue.lua"),
            include_str!("lua/claim.lua"),
            include_str!("lua/heartbeat.lua"),
            include_str!("lua/progress.lua"),
            include_str!("lua/complete.lua"),
            include_str!("lua/fail.lua"),
            include_str!("lua/release.lua"),
            include_str!("lua/cancel.lua"),
            include_str!("lua/recover.lua"),
            include_str!("lua/lost.lua"),
            include_str!("lua/promote.lua"),
            include_str!("lua/retry_dead.lua"),
            include_str!("lua/purge.lua"),
            include_str!("lua/purge_dead.lua"),
            include_str!("lua/oldest.lua"),
            include_str!("lua/unclaimed.lua"),
            include_str!("lua/index_tenants.lua"),
            include_str!("lua/held.lua"),
        ];
        let kv_scripts = [
            include_str!("lua/kv_put.lua"),
            include_str!("lua/kv_delete.lua"),
            include_str!("lua/kv_list.lua"),
            include_str!("lua/kv_purge.lua"),
        ];
        for (scripts, table) in [
            (&queue_scripts[..], field::LUA),
            (&kv_scripts[..], kv_field::LUA),
        ] {
            for source in scripts {
                for name in field_names(source) {
                    assert!(
                        table.iter().any(|(declared, _)| *declared == name),
                        "`{name}` is no field"
                    );
                }
            }
        }
        assert!(field_names(include_str!("lua/claim.lua")).contains(&"F_TOKEN"));
    }
}
