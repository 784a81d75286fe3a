//! Human tables and JSON.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};
use offload::{
    admin::{JobPage, QueueSummary},
    JobRecord, JobState,
};

pub(crate) fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    table
}

fn ellipsize(text: &str, max: usize) -> String {
    let one_line = text.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut short: String = one_line.chars().take(max - 1).collect();
        short.push('…');
        short
    }
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub(crate) fn print_jobs(page: &JobPage) {
    if page.jobs.is_empty() {
        println!("No jobs match.");
        return;
    }
    let mut t = table(&[
        "ID",
        "KIND",
        "QUEUE",
        "STATE",
        "ATTEMPT",
        "CREATED",
        "LAST ERROR",
    ]);
    for job in &page.jobs {
        t.add_row(vec![
            Cell::new(job.id).set_alignment(CellAlignment::Right),
            Cell::new(&job.kind),
            Cell::new(&job.queue),
            Cell::new(job.state),
            Cell::new(format!("{}/{}", job.attempt, job.max_attempts)),
            Cell::new(job.created_at.format("%Y-%m-%d %H:%M:%S")),
            Cell::new(ellipsize(job.last_error.as_deref().unwrap_or(""), 60)),
        ]);
    }
    println!("{t}");
    if let Some(before) = page.next_before {
        eprintln!("More jobs: add --before {before}");
    }
}

pub(crate) fn print_job(job: &JobRecord) -> anyhow::Result<()> {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".to_owned())
    };
    let mut t = table(&["FIELD", "VALUE"]);
    t.add_row(vec!["id".to_owned(), job.id.to_string()]);
    t.add_row(vec!["kind".to_owned(), job.kind.clone()]);
    t.add_row(vec!["queue".to_owned(), job.queue.clone()]);
    t.add_row(vec!["state".to_owned(), job.state.to_string()]);
    t.add_row(vec![
        "attempt".to_owned(),
        format!("{} of {}", job.attempt, job.max_attempts),
    ]);
    t.add_row(vec!["priority".to_owned(), job.priority.to_string()]);
    t.add_row(vec!["tags".to_owned(), job.tags.join(", ")]);
    t.add_row(vec!["created".to_owned(), job.created_at.to_rfc3339()]);
    t.add_row(vec!["run at".to_owned(), job.run_at.to_rfc3339()]);
    t.add_row(vec!["attempted".to_owned(), time(job.attempted_at)]);
    t.add_row(vec!["finalized".to_owned(), time(job.finalized_at)]);
    t.add_row(vec![
        "worker".to_owned(),
        job.worker_id.clone().unwrap_or_else(|| "-".to_owned()),
    ]);
    println!("{t}");
    println!("args:\n{}", serde_json::to_string_pretty(&job.args)?);
    if job.errors.is_empty() {
        println!("errors: none");
    } else {
        let mut errors = table(&["ATTEMPT", "AT", "ERROR"]);
        for e in &job.errors {
            errors.add_row(vec![
                e.attempt.to_string(),
                e.at.to_rfc3339(),
                e.error.clone(),
            ]);
        }
        println!("errors:\n{errors}");
    }
    Ok(())
}

pub(crate) fn print_queues(queues: &[QueueSummary]) {
    if queues.is_empty() {
        println!("No queues yet.");
        return;
    }
    let mut header = vec!["QUEUE", "PAUSED"];
    header.extend(JobState::ALL.iter().map(|s| s.as_str()));
    header.extend([
        "OLDEST WAITING",
        "DONE/MIN",
        "RUNNING LIMIT",
        "RATE LIMIT",
        "PARTITION",
        "HELD BY LIMIT",
    ]);
    let mut t = table(&header);
    for q in queues {
        let mut row = vec![
            Cell::new(&q.name),
            Cell::new(if q.paused { "yes" } else { "no" }),
        ];
        row.extend(
            JobState::ALL
                .iter()
                .map(|s| Cell::new(q.counts.get(*s)).set_alignment(CellAlignment::Right)),
        );
        row.push(Cell::new(
            q.oldest_available_secs
                .map(|s| format!("{s:.0} s"))
                .unwrap_or_else(|| "-".to_owned()),
        ));
        row.push(
            Cell::new(format!("{:.1}", q.completed_per_minute)).set_alignment(CellAlignment::Right),
        );
        row.push(Cell::new(q.global_limit.map_or_else(
            || "-".to_owned(),
            |limit| format!("{}/{limit}", q.counts.get(JobState::Running)),
        )));
        row.push(Cell::new(q.rate_limit.map_or_else(
            || "-".to_owned(),
            |rate| format!("{}/{} per {} ms", rate.started, rate.limit, rate.period_ms),
        )));
        row.push(Cell::new(q.partition.map_or_else(
            || "-".to_owned(),
            |partition| partition.describe(),
        )));
        row.push(Cell::new(q.waiting_on_limit).set_alignment(CellAlignment::Right));
        t.add_row(row);
    }
    println!("{t}");
}
