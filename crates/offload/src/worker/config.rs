//! Worker settings.

use std::time::Duration;

use crate::defaults::DEFAULT_QUEUE;
use crate::storage::Backend;
use crate::{Error, Partition, RateLimit};

/// Jobs the promoter moves or the pruner deletes per statement.
pub(crate) const MAINTENANCE_BATCH: usize = 5_000;

/// One queue a worker serves, and how many of its jobs run at once. Add
/// one with [`WorkerConfig::queue`] or [`WorkerConfig::queue_config`].
///
/// ```
/// let mail = offload::QueueConfig::new("mail", 5).global_limit(5);
/// assert_eq!(mail.global_limit, Some(5));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueueConfig {
    /// Queue name.
    pub name: String,
    /// Most jobs of this queue running at once on this worker.
    pub concurrency: usize,
    /// Most jobs of this queue running at once over all workers on the
    /// database. Written to the database at start; `None` leaves whatever
    /// limit the queue has (see [`Client::set_global_limit`](crate::Client::set_global_limit)).
    pub global_limit: Option<usize>,
    /// Most jobs of this queue starting per period over all workers on the
    /// database. Written to the database at start; `None` leaves whatever
    /// limit the queue has (see [`Client::set_rate_limit`](crate::Client::set_rate_limit)).
    pub rate_limit: Option<RateLimit>,
    /// Whether the queue's jobs' keys take turns, and its cap per key over
    /// all workers. Written to the database at start; `None` leaves whatever
    /// the queue has (see [`Client::set_partition`](crate::Client::set_partition)).
    pub partition: Option<Partition>,
}

impl QueueConfig {
    /// Queue `name`, running at most `concurrency` of its jobs at once on
    /// this worker.
    pub fn new(name: impl Into<String>, concurrency: usize) -> Self {
        Self {
            name: name.into(),
            concurrency,
            global_limit: None,
            rate_limit: None,
            partition: None,
        }
    }

    /// Caps the queue at `limit` jobs running at once over all workers.
    pub fn global_limit(mut self, limit: usize) -> Self {
        self.global_limit = Some(limit);
        self
    }

    /// Holds the queue to `rate` job starts per period over all workers.
    ///
    /// ```
    /// let hooks = offload::QueueConfig::new("webhooks", 16)
    ///     .rate_limit(offload::RateLimit::per_second(100).unwrap());
    /// assert_eq!(hooks.rate_limit.unwrap().limit(), 100);
    /// ```
    pub fn rate_limit(mut self, rate: RateLimit) -> Self {
        self.rate_limit = Some(rate);
        self
    }

    /// Partitions the queue: its jobs' keys take turns, and with
    /// [`Partition::concurrency`] at most that many jobs of one key run at
    /// once over all workers.
    ///
    /// ```
    /// use offload::{Partition, QueueConfig};
    /// let exports = QueueConfig::new("exports", 16).partition(Partition::new().concurrency(2).unwrap());
    /// assert_eq!(exports.partition.unwrap().concurrency_limit(), Some(2));
    /// ```
    pub fn partition(mut self, partition: Partition) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// How long finished jobs are kept before the pruner deletes them.
/// `Duration::ZERO` for `completed` deletes jobs as they complete.
///
/// ```
/// use std::time::Duration;
/// let keep = offload::Retention::default()
///     .completed(Duration::ZERO)
///     .discarded(Duration::from_secs(30 * 24 * 3600));
/// assert!(keep.completed.is_zero());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Retention {
    /// For completed jobs.
    pub completed: Duration,
    /// For discarded jobs.
    pub discarded: Duration,
    /// For cancelled jobs.
    pub cancelled: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            completed: Duration::from_secs(24 * 60 * 60),
            discarded: Duration::from_secs(7 * 24 * 60 * 60),
            cancelled: Duration::from_secs(7 * 24 * 60 * 60),
        }
    }
}

impl Retention {
    /// Keeps completed jobs this long (`ZERO`: deleted as they complete).
    pub fn completed(mut self, keep: Duration) -> Self {
        self.completed = keep;
        self
    }

    /// Keeps discarded jobs this long.
    pub fn discarded(mut self, keep: Duration) -> Self {
        self.discarded = keep;
        self
    }

    /// Keeps cancelled jobs this long.
    pub fn cancelled(mut self, keep: Duration) -> Self {
        self.cancelled = keep;
        self
    }
}

/// Everything a [`Worker`](crate::Worker) can be tuned by. Start from
/// `Default` and change what you need with the setters, one per field:
///
/// ```
/// use std::time::Duration;
/// let config = offload::WorkerConfig::default()
///     .lease(Duration::from_secs(10))
///     .queue("default", 20)
///     .queue("mail", 5);
/// assert_eq!(config.queues.len(), 2);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Queues served. Empty means `default` with concurrency 10.
    pub queues: Vec<QueueConfig>,
    /// Most jobs claimed in one statement.
    pub fetch_batch: usize,
    /// How often an idle queue polls; `None` uses the backend's default
    /// (1 s on PostgreSQL, which also wakes on `NOTIFY`; 200 ms on SQLite).
    pub poll_interval: Option<Duration>,
    /// How often this worker proves it is alive.
    pub heartbeat_interval: Duration,
    /// How long a worker may miss heartbeats before its running jobs are
    /// rescued by another worker.
    pub lease: Duration,
    /// How often the rescuer looks for jobs of dead workers.
    pub rescue_interval: Duration,
    /// How often due scheduled and retryable jobs are made available.
    pub promote_interval: Duration,
    /// How often old finished jobs are pruned.
    pub prune_interval: Duration,
    /// How long finished jobs are kept.
    pub retention: Retention,
    /// How long shutdown waits for running jobs before cancelling them.
    pub shutdown_timeout: Duration,
    /// How long cancelled jobs get to stop before they are aborted and
    /// handed back to the queue.
    pub cancel_grace: Duration,
    /// Most completions written in one statement.
    pub completer_batch: usize,
    /// How long leadership lasts without renewal. The leader renews every
    /// third of it; when it dies another worker takes over within about
    /// `leader_ttl` (at once when it shuts down gracefully).
    pub leader_ttl: Duration,
    /// Whether the worker's writes (claims, completions, outcomes and job
    /// transactions) share one transaction, each in its own savepoint, and
    /// commit together. `None` uses the backend's default: on for SQLite,
    /// which admits one writer at a time, off for PostgreSQL. See
    /// [`group_commit`](Self::group_commit).
    pub group_commit: Option<bool>,
    /// How long the worker waits for the database to answer one of its own
    /// statements (a claim, a completion, an outcome, a heartbeat) before it
    /// gives that statement up as lost. `None` uses the backend's default:
    /// 15 s on PostgreSQL, where a server that stops answering while the
    /// connection stays open (a half-open connection) would otherwise hold
    /// the job `running` on a live worker for good; none on SQLite, whose
    /// busy timeout bounds every wait. See
    /// [`database_timeout`](Self::database_timeout).
    pub database_timeout: Option<Duration>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            queues: Vec::new(),
            fetch_batch: 500,
            poll_interval: None,
            heartbeat_interval: Duration::from_secs(2),
            lease: Duration::from_secs(15),
            rescue_interval: Duration::from_secs(5),
            promote_interval: Duration::from_secs(1),
            prune_interval: Duration::from_secs(60),
            retention: Retention::default(),
            shutdown_timeout: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(2),
            completer_batch: 1000,
            leader_ttl: Duration::from_secs(10),
            group_commit: None,
            database_timeout: None,
        }
    }
}

impl WorkerConfig {
    /// Sets `fetch_batch`: most jobs claimed in one statement.
    pub fn fetch_batch(mut self, fetch_batch: usize) -> Self {
        self.fetch_batch = fetch_batch;
        self
    }

    /// Sets `heartbeat_interval`: how often this worker proves it is alive.
    pub fn heartbeat_interval(mut self, heartbeat_interval: Duration) -> Self {
        self.heartbeat_interval = heartbeat_interval;
        self
    }

    /// Sets `lease`: how long a worker may miss heartbeats before its running jobs are
    /// rescued by another worker.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets `rescue_interval`: how often the rescuer looks for jobs of dead workers.
    pub fn rescue_interval(mut self, rescue_interval: Duration) -> Self {
        self.rescue_interval = rescue_interval;
        self
    }

    /// Sets `promote_interval`: how often due scheduled and retryable jobs are made available.
    pub fn promote_interval(mut self, promote_interval: Duration) -> Self {
        self.promote_interval = promote_interval;
        self
    }

    /// Sets `prune_interval`: how often old finished jobs are pruned.
    pub fn prune_interval(mut self, prune_interval: Duration) -> Self {
        self.prune_interval = prune_interval;
        self
    }

    /// Sets `retention`: how long finished jobs are kept.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Sets `shutdown_timeout`: how long shutdown waits for running jobs before cancelling them.
    pub fn shutdown_timeout(mut self, shutdown_timeout: Duration) -> Self {
        self.shutdown_timeout = shutdown_timeout;
        self
    }

    /// Sets `cancel_grace`: how long cancelled jobs get to stop before they are aborted and
    /// handed back to the queue.
    pub fn cancel_grace(mut self, cancel_grace: Duration) -> Self {
        self.cancel_grace = cancel_grace;
        self
    }

    /// Sets `completer_batch`: most completions written in one statement.
    pub fn completer_batch(mut self, completer_batch: usize) -> Self {
        self.completer_batch = completer_batch;
        self
    }

    /// Sets `leader_ttl`: how long leadership lasts without renewal.
    pub fn leader_ttl(mut self, leader_ttl: Duration) -> Self {
        self.leader_ttl = leader_ttl;
        self
    }

    /// Sets `group_commit`. With it, the worker's writes queue for one
    /// connection instead of SQLite's busy handler, and one commit covers
    /// many jobs. Each job's transaction is still all or nothing with its
    /// completion, but it is durable only when its group commits (within
    /// milliseconds: the group commits as soon as the writers already
    /// waiting have had their turn), a crash before that runs the group's
    /// jobs again, and a job that holds its transaction open delays the
    /// others' (as SQLite's one write lock does anyway).
    ///
    /// ```
    /// // One commit per job, as on PostgreSQL.
    /// let config = offload::WorkerConfig::default().group_commit(false);
    /// assert_eq!(config.group_commit, Some(false));
    /// ```
    pub fn group_commit(mut self, on: bool) -> Self {
        self.group_commit = Some(on);
        self
    }

    /// Sets `poll_interval`: how often an idle queue polls (`None`: the
    /// backend's default).
    pub fn poll_interval(mut self, every: Option<Duration>) -> Self {
        self.poll_interval = every;
        self
    }

    /// Sets `database_timeout`. When a statement runs past it, the worker
    /// drops its connection and treats the statement as failed: a claim is
    /// retried (and jobs it may have claimed unseen are handed back), an
    /// attempt's outcome is recorded by the worker's watchdog (the job
    /// goes back to the queue unless its completion did commit), a
    /// heartbeat is tried again.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = offload::WorkerConfig::default().database_timeout(Duration::from_secs(5));
    /// assert_eq!(config.database_timeout, Some(Duration::from_secs(5)));
    /// ```
    pub fn database_timeout(mut self, limit: Duration) -> Self {
        self.database_timeout = Some(limit);
        self
    }

    /// Adds (or replaces) a queue.
    pub fn queue_config(mut self, queue: QueueConfig) -> Self {
        self.queues.retain(|other| other.name != queue.name);
        self.queues.push(queue);
        self
    }

    /// Adds (or resizes) a queue.
    pub fn queue(self, name: impl Into<String>, concurrency: usize) -> Self {
        self.queue_config(QueueConfig::new(name, concurrency))
    }

    /// Adds (or resizes) a queue and caps it at `global_limit` jobs running
    /// at once over all workers.
    ///
    /// ```
    /// // 5 mail jobs on this worker, but at most 5 cluster-wide too.
    /// let config = offload::WorkerConfig::default().queue_with_global_limit("mail", 5, 5);
    /// assert_eq!(config.queues[0].global_limit, Some(5));
    /// ```
    pub fn queue_with_global_limit(
        self,
        name: impl Into<String>,
        concurrency: usize,
        global_limit: usize,
    ) -> Self {
        self.queue_config(QueueConfig::new(name, concurrency).global_limit(global_limit))
    }

    /// `database_timeout`, or the backend's default.
    pub(crate) fn database_timeout_on<DB: Backend>(&self) -> Option<Duration> {
        self.database_timeout.or(DB::DEFAULT_DATABASE_TIMEOUT)
    }

    pub(crate) fn validated(mut self) -> Result<Self, Error> {
        if self.queues.is_empty() {
            self = self.queue(DEFAULT_QUEUE, 10);
        }
        for queue in &self.queues {
            crate::queue_name::check_queue_name(&queue.name)?;
        }
        if let Some(queue) = self.queues.iter().find(|q| q.concurrency == 0) {
            return Err(Error::Config(format!(
                "queue `{}` needs a concurrency of at least 1",
                queue.name
            )));
        }
        if let Some(queue) = self.queues.iter().find(|q| q.global_limit == Some(0)) {
            return Err(Error::Config(format!(
                "queue `{}` needs a global limit of at least 1",
                queue.name
            )));
        }
        if self.leader_ttl < Duration::from_millis(300) {
            return Err(Error::Config(format!(
                "leader_ttl ({:?}) must be at least 300 ms",
                self.leader_ttl
            )));
        }
        if self.fetch_batch == 0 || self.completer_batch == 0 {
            return Err(Error::Config(
                "fetch_batch and completer_batch must be at least 1".into(),
            ));
        }
        if self.database_timeout.is_some_and(|limit| limit.is_zero()) {
            return Err(Error::Config("database_timeout must be above zero".into()));
        }
        if self.lease <= self.heartbeat_interval {
            return Err(Error::Config(format!(
                "lease ({:?}) must be longer than heartbeat_interval ({:?}), or live workers lose their jobs",
                self.lease, self.heartbeat_interval
            )));
        }
        Ok(self)
    }
}
