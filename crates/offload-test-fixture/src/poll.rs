//! Waiting for something that happens in the background.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long [`eventually`] sleeps between two checks.
const PAUSE: Duration = Duration::from_millis(25);

/// Polls `check` until it returns true, or panics after `limit` saying it
/// timed out waiting for `what`.
///
/// `check` runs at once, then every 25 ms; a check that is slower than
/// that simply makes the polls further apart.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
///
/// use offload_test_fixture::eventually;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let polls = AtomicU32::new(0);
/// eventually(Duration::from_secs(5), "the third poll", || async {
///     polls.fetch_add(1, Ordering::Relaxed) == 2
/// })
/// .await;
/// assert_eq!(polls.load(Ordering::Relaxed), 3);
/// # }
/// ```
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return;
        }
        tokio::time::sleep(PAUSE).await;
    }
    panic!("timed out after {limit:?} waiting for: {what}");
}
