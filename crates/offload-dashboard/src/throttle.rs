//! Limits wrong tokens per client, so the token cannot be guessed at
//! network speed: a token bucket per client address, spent by failures
//! only, so a client sending the right token is never slowed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong tokens a client may send in a burst.
const BURST: f64 = 10.0;
/// How often a client earns back one wrong guess.
const REFILL_EVERY: Duration = Duration::from_secs(3);
/// Clients tracked at most; past this, new ones share one bucket.
const MAX_CLIENTS: usize = 10_000;

/// Who is guessing: an IPv4 address or an IPv6 /64 (one host's usual
/// allotment). `None` when the server does not pass the peer address
/// (`into_make_service_with_connect_info`): then every client shares one
/// bucket.
type ClientKey = Option<IpAddr>;

pub(crate) struct LoginThrottle {
    buckets: Mutex<HashMap<ClientKey, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    guesses: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant) -> Self {
        let earned =
            now.saturating_duration_since(self.at).as_secs_f64() / REFILL_EVERY.as_secs_f64();
        Self {
            guesses: (self.guesses + earned).min(BURST),
            at: now,
        }
    }
}

impl LoginThrottle {
    pub(crate) fn new() -> Self {
        Self {
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(retry_after)` while `client` has no guesses left: it must not
    /// even have its token checked, or the right one would still get in.
    pub(crate) fn check(&self, client: ClientKey, now: Instant) -> Result<(), Duration> {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(bucket) = buckets.get(&client).map(|b| b.refilled(now)) else {
            return Ok(());
        };
        if bucket.guesses >= 1.0 {
            return Ok(());
        }
        Err(REFILL_EVERY.mul_f64(1.0 - bucket.guesses))
    }

    /// Spends one of `client`'s guesses on a wrong token.
    pub(crate) fn failed(&self, client: ClientKey, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let key = if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            // Clients whose buckets are full again need no memory.
            buckets.retain(|_, b| b.refilled(now).guesses < BURST);
            if buckets.len() >= MAX_CLIENTS {
                None
            } else {
                client
            }
        } else {
            client
        };
        let bucket = buckets.entry(key).or_insert(Bucket {
            guesses: BURST,
            at: now,
        });
        let refilled = bucket.refilled(now);
        *bucket = Bucket {
            guesses: (refilled.guesses - 1.0).max(0.0),
            at: now,
        };
    }
}

/// The throttle's key for the request's peer, if the server passed it.
pub(crate) fn client_key(peer: Option<SocketAddr>) -> ClientKey {
    Some(match peer?.ip().to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    })
}

/// Whole seconds to wait, for `Retry-After`.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_run_out_after_the_burst_and_come_back_with_time() {
        let throttle = LoginThrottle::new();
        let client = Some(IpAddr::from([192, 0, 2, 1]));
        let start = Instant::now();
        for _ in 0..BURST as usize {
            assert!(throttle.check(client, start).is_ok());
            throttle.failed(client, start);
        }
        let wait = throttle.check(client, start).unwrap_err();
        assert_eq!(retry_after_secs(wait), REFILL_EVERY.as_secs());
        assert!(
            throttle
                .check(Some(IpAddr::from([192, 0, 2, 2])), start)
                .is_ok(),
            "other clients are not slowed"
        );
        assert!(throttle.check(client, start + REFILL_EVERY).is_ok());
        throttle.failed(client, start + REFILL_EVERY);
        assert!(throttle.check(client, start + REFILL_EVERY).is_err());
    }

    #[test]
    fn an_ipv6_host_is_one_client_across_its_slash_64() {
        let key = |ip: &str| client_key(Some(format!("[{ip}]:4000").parse().unwrap()));
        assert_eq!(key("2001:db8::1"), key("2001:db8::ffff:2"));
        assert_ne!(key("2001:db8::1"), key("2001:db8:0:1::1"));
        assert_eq!(key("::ffff:192.0.2.1"), Some(IpAddr::from([192, 0, 2, 1])));
        assert_eq!(client_key(None), None);
    }
}
