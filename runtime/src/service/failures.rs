//! Failed authentications per client address: after [`ALLOWED`] wrong API keys (on the JSON
//! API or the dashboard's login) from one address within [`WINDOW`] of the first, that address
//! is refused (429 `rate_limited`, with `Retry-After`) until the window has passed, whether its
//! next key is right or not, so guessing keys costs a window per few guesses.
//!
//! The address is the connection's peer ([`crate::service::Service::serve`] records it). Behind
//! a proxy declared with [`crate::service::Service::behind_proxy`] it is the last address of
//! `X-Forwarded-For` (the one the proxy appended); otherwise that header is ignored, since a
//! client can write anything in it. A request without a recorded peer (the router served some
//! other way, without axum's `ConnectInfo<SocketAddr>`) counts in one bucket shared by all such
//! requests: guessing stays limited, at the price of one guesser locking out every such caller
//! for a window.
//!
//! At most [`MAX_ADDRESSES`] addresses are tracked; a new one beyond that drops the addresses
//! whose window has passed, then the oldest.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap};
use tokio::time::Instant;

/// Failures allowed from one address within a window.
pub(crate) const ALLOWED: u32 = 10;
/// How long failures are counted from the first, and how long an address is then refused.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most.
pub(crate) const MAX_ADDRESSES: usize = 10_000;

/// Failures from one address in its current window.
#[derive(Debug, Clone, Copy)]
struct Tally {
    since: Instant,
    count: u32,
}

/// The failed authentications of this process, by client address (`None`: no address known).
#[derive(Debug)]
pub(crate) struct Failures {
    capacity: usize,
    by_address: Mutex<HashMap<Option<IpAddr>, Tally>>,
}

impl Default for Failures {
    fn default() -> Self {
        Self {
            capacity: MAX_ADDRESSES,
            by_address: Mutex::new(HashMap::new()),
        }
    }
}

impl Failures {
    fn tallies(&self) -> std::sync::MutexGuard<'_, HashMap<Option<IpAddr>, Tally>> {
        self.by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How long `client` is still refused, if it has failed too often.
    pub(crate) fn blocked(&self, client: Option<IpAddr>) -> Option<Duration> {
        let at = Instant::now();
        let tally = *self.tallies().get(&client)?;
        let ends = tally.since + WINDOW;
        (tally.count >= ALLOWED && at < ends).then(|| ends - at)
    }

    /// Counts a failed authentication from `client`.
    pub(crate) fn record(&self, client: Option<IpAddr>) {
        let at = Instant::now();
        let mut tallies = self.tallies();
        if !tallies.contains_key(&client) && tallies.len() >= self.capacity {
            tallies.retain(|_, tally| at < tally.since + WINDOW);
            // The oldest of those not refused go first: an address refused now stays refused
            // however many others a guesser fails from.
            while tallies.len() >= self.capacity {
                let Some(oldest) = tallies
                    .iter()
                    .min_by_key(|(_, tally)| (tally.count >= ALLOWED, tally.since))
                    .map(|(address, _)| *address)
                else {
                    break;
                };
                tallies.remove(&oldest);
            }
        }
        let tally = tallies.entry(client).or_insert(Tally {
            since: at,
            count: 0,
        });
        if at >= tally.since + WINDOW {
            *tally = Tally {
                since: at,
                count: 0,
            };
        }
        tally.count = tally.count.saturating_add(1);
    }
}

/// The address a request comes from, as described in this module's documentation; an IPv6
/// address counts as its /64 network, which one client holds whole.
pub(crate) fn client(
    headers: &HeaderMap,
    extensions: &Extensions,
    behind_proxy: bool,
) -> Option<IpAddr> {
    address(headers, extensions, behind_proxy).map(network)
}

/// What failures are counted by for `ip`: an IPv4 address (IPv4-mapped IPv6 included) as it
/// is, an IPv6 address by its first 64 bits.
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

fn address(headers: &HeaderMap, extensions: &Extensions, behind_proxy: bool) -> Option<IpAddr> {
    if behind_proxy {
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .last()
            .and_then(|v| v.trim().parse().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_tracked_addresses_are_bounded() {
        let failures = Failures {
            capacity: 3,
            ..Failures::default()
        };
        for n in 0..5u8 {
            failures.record(Some(IpAddr::from([192, 0, 2, n])));
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let tallies = failures.tallies();
        assert_eq!(tallies.len(), 3);
        assert!(!tallies.contains_key(&Some(IpAddr::from([192, 0, 2, 0]))));
        assert!(tallies.contains_key(&Some(IpAddr::from([192, 0, 2, 4]))));
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_proxy() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.7".parse().unwrap(),
        );
        let mut extensions = Extensions::new();
        extensions.insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 1], 4000))));
        assert_eq!(
            client(&headers, &extensions, false),
            Some(IpAddr::from([10, 0, 0, 1]))
        );
        assert_eq!(
            client(&headers, &extensions, true),
            Some(IpAddr::from([198, 51, 100, 7]))
        );
        assert_eq!(client(&HeaderMap::new(), &Extensions::new(), false), None);
    }

    #[test]
    fn an_ipv6_client_counts_as_its_64_network() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(network(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            network(ip("2001:db8:1:2:ffff::9")),
            network(ip("2001:db8:1:2::7"))
        );
        assert_ne!(
            network(ip("2001:db8:1:3::1")),
            network(ip("2001:db8:1:2::1"))
        );
        assert_eq!(network(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(network(ip("192.0.2.1")), ip("192.0.2.1"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_address_is_not_forgotten_for_newer_ones() {
        let failures = Failures {
            capacity: 3,
            ..Failures::default()
        };
        let guesser = Some(IpAddr::from([192, 0, 2, 1]));
        for _ in 0..ALLOWED {
            failures.record(guesser);
        }
        for n in 10..20u8 {
            tokio::time::advance(Duration::from_secs(1)).await;
            failures.record(Some(IpAddr::from([192, 0, 2, n])));
        }
        assert!(
            failures.blocked(guesser).is_some(),
            "the guesser is still refused"
        );
    }
}
