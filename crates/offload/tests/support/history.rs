//! The event history of one fault schedule and the checker of its
//! invariants: no acknowledged job lost, no completion twice, no completion
//! without its effects (nor effects without a completion), no job stuck
//! `running` on a live worker, none given up on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};

use super::faults::JobRow;

/// What happened, as the test and the workers saw it.
#[derive(Debug, Clone)]
pub enum Event {
    /// An enqueue returned the job's id.
    Acked { id: i64 },
    /// An enqueue returned an error (the job may or may not exist).
    EnqueueFailed { error: String },
    /// A job's code started an attempt.
    Claimed { id: i64, attempt: i32 },
    /// A worker's event stream said the attempt completed the job.
    Completed { id: i64, worker: usize },
    /// A fault began (or, for instant ones, happened).
    Fault { name: String },
    /// A fault with a duration ended.
    FaultEnded { name: String },
    /// Every fault was lifted; from here the jobs must finish.
    Healed,
}

/// Events with the milliseconds since the schedule began, shared by the
/// test, its jobs and the workers' event readers.
#[derive(Clone)]
pub struct History {
    began: Instant,
    events: Arc<Mutex<Vec<(u128, Event)>>>,
}

impl History {
    pub fn new() -> Self {
        Self {
            began: Instant::now(),
            events: Arc::default(),
        }
    }

    pub fn record(&self, event: Event) {
        let at = self.began.elapsed().as_millis();
        self.events.lock().expect("history").push((at, event));
    }

    pub fn events(&self) -> Vec<(u128, Event)> {
        self.events.lock().expect("history").clone()
    }
}

/// The end state the checker compares the history with.
pub struct Observed {
    pub jobs: Vec<JobRow>,
    /// Effect rows per job id.
    pub effects: BTreeMap<i64, i64>,
    /// Workers heartbeating at the end.
    pub live_workers: Vec<String>,
}

/// What one schedule did, summed over schedules for the report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub schedules: u64,
    pub acked: u64,
    pub failed_enqueues: u64,
    pub completed: u64,
    pub attempts: u64,
    pub retried_jobs: u64,
    pub faults: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Self) {
        self.schedules += other.schedules;
        self.acked += other.acked;
        self.failed_enqueues += other.failed_enqueues;
        self.completed += other.completed;
        self.attempts += other.attempts;
        self.retried_jobs += other.retried_jobs;
        self.faults += other.faults;
    }
}

/// Checks the invariants; the violations found, or what the schedule did.
pub fn check(events: &[(u128, Event)], observed: &Observed) -> Result<Counts, Vec<String>> {
    let mut violations = Vec::new();
    let rows: BTreeMap<i64, &JobRow> = observed.jobs.iter().map(|row| (row.id, row)).collect();
    let mut counts = Counts {
        schedules: 1,
        ..Counts::default()
    };
    let mut acked = BTreeSet::new();
    let mut claimed: BTreeMap<i64, i32> = BTreeMap::new();
    let mut completions: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (_, event) in events {
        match event {
            Event::Acked { id } => {
                acked.insert(*id);
            }
            Event::EnqueueFailed { .. } => counts.failed_enqueues += 1,
            Event::Claimed { id, attempt } => {
                counts.attempts += 1;
                let last = claimed.entry(*id).or_default();
                *last = (*last).max(*attempt);
            }
            Event::Completed { id, worker } => completions.entry(*id).or_default().push(*worker),
            Event::Fault { .. } => counts.faults += 1,
            Event::FaultEnded { .. } | Event::Healed => {}
        }
    }
    counts.acked = acked.len() as u64;
    for id in &acked {
        match rows.get(id) {
            None => violations.push(format!("job {id}: acknowledged, then lost (no row)")),
            Some(row) if row.state == "running" => {
                let owner = row.worker_id.clone().unwrap_or_default();
                let live = observed.live_workers.contains(&owner);
                violations.push(format!(
                    "job {id}: stuck running on {owner} ({}), attempt {}",
                    if live { "live" } else { "not heartbeating" },
                    row.attempt
                ));
            }
            Some(row) if row.state != "completed" => violations.push(format!(
                "job {id}: acknowledged but ended {} after attempt {}",
                row.state, row.attempt
            )),
            Some(_) => {}
        }
    }
    for row in &observed.jobs {
        let effects = observed.effects.get(&row.id).copied().unwrap_or(0);
        if row.state == "completed" {
            counts.completed += 1;
            if effects != 1 {
                violations.push(format!(
                    "job {}: completed with {effects} effect rows",
                    row.id
                ));
            }
            match claimed.get(&row.id) {
                None => violations.push(format!("job {}: completed but never ran", row.id)),
                Some(attempt) if *attempt > 1 => counts.retried_jobs += 1,
                Some(_) => {}
            }
        } else if effects != 0 {
            violations.push(format!(
                "job {}: {effects} effect rows committed, but it is {}",
                row.id, row.state
            ));
        }
        if let Some(workers) = completions.get(&row.id) {
            if workers.len() > 1 {
                violations.push(format!(
                    "job {}: completed {} times (by workers {workers:?})",
                    row.id,
                    workers.len()
                ));
            }
        }
    }
    if violations.is_empty() {
        Ok(counts)
    } else {
        Err(violations)
    }
}

/// Writes the history and the end state as JSON lines to
/// `dir/<name>.jsonl`; returns the file's path.
pub fn write(dir: &Path, name: &str, events: &[(u128, Event)], observed: &Observed) -> PathBuf {
    std::fs::create_dir_all(dir).expect("history dir");
    let path = dir.join(format!("{name}.jsonl"));
    let mut lines: Vec<Value> = events
        .iter()
        .map(|(at, event)| {
            let mut line = match event {
                Event::Acked { id } => json!({"event": "acked", "id": id}),
                Event::EnqueueFailed { error } => {
                    json!({"event": "enqueue_failed", "error": error})
                }
                Event::Claimed { id, attempt } => {
                    json!({"event": "claimed", "id": id, "attempt": attempt})
                }
                Event::Completed { id, worker } => {
                    json!({"event": "completed", "id": id, "worker": worker})
                }
                Event::Fault { name } => json!({"event": "fault", "fault": name}),
                Event::FaultEnded { name } => json!({"event": "fault_ended", "fault": name}),
                Event::Healed => json!({"event": "healed"}),
            };
            line["ms"] = json!(at);
            line
        })
        .collect();
    for row in &observed.jobs {
        lines.push(json!({
            "end": "job", "id": row.id, "state": row.state, "attempt": row.attempt,
            "worker": row.worker_id,
            "effects": observed.effects.get(&row.id).copied().unwrap_or(0),
        }));
    }
    lines.push(json!({"end": "live_workers", "workers": observed.live_workers}));
    let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
    std::fs::write(&path, text).expect("write the history");
    path
}
