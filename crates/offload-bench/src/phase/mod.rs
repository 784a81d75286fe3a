//! The phases of a run. Each starts from an empty jobs table.

mod drain;
mod enqueue;
pub(crate) mod latency;
pub(crate) mod limits;

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use offload::{Client, Retention, WorkerConfig};
use sqlx::Pool;

use crate::jobs::QUEUE;
use crate::report::Settings;
use crate::store::BenchStore;

/// What every phase works with.
pub(crate) struct Bench<DB: BenchStore> {
    pub client: Client<DB>,
    pub settings: Settings,
}

impl<DB: BenchStore> Bench<DB> {
    pub fn new(pool: Pool<DB>, settings: Settings) -> Self {
        Self {
            client: Client::new(pool),
            settings,
        }
    }

    fn pool(&self) -> &Pool<DB> {
        self.client.pool()
    }

    /// A worker serving the bench queue with `concurrency`.
    fn worker_config(&self, concurrency: usize, retention: Retention) -> WorkerConfig {
        WorkerConfig::default()
            .fetch_batch(self.settings.fetch_batch)
            .completer_batch(self.settings.completer_batch)
            .retention(retention)
            .queue(QUEUE, concurrency)
    }
}

/// A progress bar on stderr for `len` jobs (hidden when stderr is not a
/// terminal).
pub(crate) fn bar(phase: &str, len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len).with_prefix(phase.to_owned());
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>28} [{bar:30}] {pos:>7}/{len:7} {per_sec:>14} {elapsed:>4}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Ends `bar` and prints a one-line summary that stays when stderr is not
/// a terminal.
pub(crate) fn finish(bar: ProgressBar, summary: &str) {
    bar.finish_and_clear();
    eprintln!("{:>28}: {summary}", bar.prefix());
}

fn retention(delete_on_completion: bool) -> Retention {
    if delete_on_completion {
        Retention::default().completed(Duration::ZERO)
    } else {
        Retention::default()
    }
}
