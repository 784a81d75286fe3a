//! Which jobs a list, count or bulk action selects, as storage takes it.
//! [`FilterParams`](crate::admin::FilterParams) builds one from user input.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::state::JobState;

/// Most jobs one page may hold.
pub const MAX_PAGE_SIZE: u32 = 500;
/// Jobs per page unless asked otherwise.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// Which jobs to show or act on. All conditions must hold. Build one from
/// user input with [`FilterParams::parse`](crate::admin::FilterParams::parse).
///
/// ```
/// use offload::{admin::JobFilter, JobState};
/// let failed_mail = JobFilter {
///     states: vec![JobState::Discarded],
///     queue: Some("mail".into()),
///     ..JobFilter::default()
/// };
/// assert!(!failed_mail.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobFilter {
    /// Any of these states; empty means every state.
    pub states: Vec<JobState>,
    /// Exactly this queue.
    pub queue: Option<String>,
    /// Exactly this kind.
    pub kind: Option<String>,
    /// Jobs carrying this tag.
    pub tag: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    /// Case-insensitive text found in the args or errors.
    pub text: Option<String>,
    /// Last claimed by this worker (for `running` jobs: held by it).
    pub worker_id: Option<String>,
}

impl JobFilter {
    /// `text` as a `LIKE` pattern: `%text%` with `%`, `_` and `\` escaped
    /// (use with `ESCAPE '\'`).
    pub fn like_pattern(&self) -> Option<String> {
        self.text.as_ref().map(|text| {
            let mut pattern = String::with_capacity(text.len() + 2);
            pattern.push('%');
            for c in text.chars() {
                if matches!(c, '%' | '_' | '\\') {
                    pattern.push('\\');
                }
                pattern.push(c);
            }
            pattern.push('%');
            pattern
        })
    }

    /// `states` without repeats, in their order: one page branch per state,
    /// so a state given twice would list its jobs twice.
    pub(crate) fn distinct_states(&self) -> Vec<JobState> {
        let mut states = Vec::with_capacity(self.states.len());
        for state in &self.states {
            if !states.contains(state) {
                states.push(*state);
            }
        }
        states
    }

    /// Whether the filter selects every job.
    pub fn is_empty(&self) -> bool {
        self == &JobFilter::default()
    }
}

/// Where a page starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Page {
    /// Only jobs with a smaller id (the previous page's `next_before`).
    pub before: Option<i64>,
    /// Most jobs on the page.
    pub limit: u32,
}

impl Default for Page {
    fn default() -> Self {
        Self {
            before: None,
            limit: DEFAULT_PAGE_SIZE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_pattern_escapes_wildcards() {
        let filter = JobFilter {
            text: Some(r"50%_a\b".into()),
            ..JobFilter::default()
        };
        assert_eq!(filter.like_pattern().unwrap(), r"%50\%\_a\\b%");
    }
}
