//! Worker processes of the test binary itself, each an `#[ignore]`d test
//! that acts as a child when its env var is set: spawned, watched for
//! crashes, killed with SIGKILL, restarted. A child prints each job id whose
//! enqueue returned `Ok` on stdout (`enqueued=<id>`) and logs to a file.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The child's database URL; a child without it returns at once.
pub const URL_ENV: &str = "OFFLOAD_CHILD_URL";
/// How many jobs the child enqueues while it works (none if unset).
pub const ENQUEUE_ENV: &str = "OFFLOAD_CHILD_ENQUEUE";
/// What a child prints before each acknowledged job id.
pub const ACK: &str = "enqueued=";
/// What a child prints once it has enqueued all its jobs.
pub const ENQUEUED_ALL: &str = "enqueued-all";

/// One slot: the process now in it and the thread reading its acks.
struct Slot {
    child: Child,
    reader: Option<JoinHandle<()>>,
    enqueued_all: Arc<AtomicBool>,
    /// Jobs the slot is to enqueue, and those acknowledged so far by any of
    /// its processes: a restart enqueues the rest.
    planned: usize,
    acked: Arc<AtomicUsize>,
    log: PathBuf,
}

/// Child processes, killed when dropped, failed test or not.
pub struct Children {
    test: &'static str,
    url: String,
    logs: PathBuf,
    slots: Vec<Slot>,
    acked: Arc<Mutex<Vec<i64>>>,
    /// SIGKILLs sent by the test.
    pub kills: usize,
}

impl Children {
    /// A set that will run `test` (the child's test name) against `url`,
    /// logging under `logs`.
    pub fn new(test: &'static str, url: &str, logs: &Path) -> Self {
        Self {
            test,
            url: url.to_owned(),
            logs: logs.to_owned(),
            slots: Vec::new(),
            acked: Arc::default(),
            kills: 0,
        }
    }

    /// Starts a child in a new slot, enqueueing `enqueue` jobs as it works.
    pub fn spawn(&mut self, enqueue: usize) {
        let index = self.slots.len();
        let log = self.logs.join(format!("child-{index}.log"));
        let slot = self.start(log, enqueue, Arc::default());
        self.slots.push(slot);
    }

    fn start(&self, log: PathBuf, planned: usize, acked_here: Arc<AtomicUsize>) -> Slot {
        let enqueue = planned.saturating_sub(acked_here.load(Ordering::SeqCst));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("child log");
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", self.test, "--ignored", "--nocapture"])
            .env(URL_ENV, &self.url)
            .env(ENQUEUE_ENV, enqueue.to_string())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn child process");
        let stdout = child.stdout.take().expect("piped stdout");
        let acked = self.acked.clone();
        let counted = acked_here.clone();
        let enqueued_all = Arc::new(AtomicBool::new(false));
        let done = enqueued_all.clone();
        // Reads until the child exits; a line cut by SIGKILL does not parse.
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(id) = line.split(ACK).nth(1).and_then(|id| id.parse().ok()) {
                    acked.lock().unwrap().push(id);
                    counted.fetch_add(1, Ordering::SeqCst);
                } else if line.contains(ENQUEUED_ALL) {
                    done.store(true, Ordering::SeqCst);
                }
            }
        });
        Slot {
            child,
            reader: Some(reader),
            enqueued_all,
            planned,
            acked: acked_here,
            log,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The pid of the child now in `index`.
    pub fn pid(&self, index: usize) -> u32 {
        self.slots[index].child.id()
    }

    /// SIGKILLs the child in `index` and starts another there, which
    /// enqueues what the killed one had not.
    pub fn kill_and_restart(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        slot.child.kill().expect("SIGKILL");
        slot.child.wait().expect("reap");
        if let Some(reader) = slot.reader.take() {
            reader.join().expect("ack reader");
        }
        self.kills += 1;
        let (log, planned, acked) = (slot.log.clone(), slot.planned, slot.acked.clone());
        self.slots[index] = self.start(log, planned, acked);
    }

    /// Panics if a child exited on its own (a crash), with its log's tail.
    pub fn assert_alive(&mut self) {
        for slot in &mut self.slots {
            if let Some(status) = slot.child.try_wait().expect("poll child") {
                let log = std::fs::read_to_string(&slot.log).unwrap_or_default();
                let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
                panic!("a child exited on its own ({status}); its log, last lines first:\n{tail}");
            }
        }
    }

    /// Whether every child now running has enqueued all its jobs.
    pub fn enqueued_all(&self) -> bool {
        self.slots
            .iter()
            .all(|slot| slot.enqueued_all.load(Ordering::SeqCst))
    }

    /// Ids of every job whose enqueue returned `Ok` in a child so far.
    pub fn acked(&self) -> Vec<i64> {
        self.acked.lock().unwrap().clone()
    }

    /// Every child's log, restarts included.
    pub fn logs(&self) -> String {
        self.slots
            .iter()
            .map(|slot| std::fs::read_to_string(&slot.log).unwrap_or_default())
            .collect()
    }

    /// Kills every child and waits for its acks to be read.
    pub fn stop(&mut self) {
        for slot in &mut self.slots {
            slot.child.kill().ok();
            slot.child.wait().ok();
            if let Some(reader) = slot.reader.take() {
                reader.join().ok();
            }
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for slot in &mut self.slots {
            slot.child.kill().ok();
            slot.child.wait().ok();
        }
    }
}

/// Log lines that name SQLite's lock contention.
pub fn busy_lines(logs: &str) -> Vec<&str> {
    logs.lines()
        .filter(|line| {
            let line = line.to_ascii_lowercase();
            line.contains("database is locked") || line.contains("sqlite_busy")
        })
        .collect()
}
