//! Filters as they arrive from a query string or the command line: text,
//! checked into a [`JobFilter`] and a [`Page`], with errors safe to show.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::state::JobState;
use crate::storage::{JobFilter, Page, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

/// Longest text search accepted, in characters.
pub const MAX_TEXT_LEN: usize = 200;
/// Longest queue, kind or tag name accepted in a filter, in characters.
pub const MAX_NAME_LEN: usize = 200;

/// A filter input that cannot be used. The message is safe to show to the
/// user; it never contains SQL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A state name that does not exist.
    #[error("unknown state `{0}`: expected scheduled, available, running, retryable, completed, discarded or cancelled")]
    UnknownState(String),
    /// A time that is neither RFC 3339 nor a relative age like `15m`.
    #[error("invalid time `{value}` for `{field}`: use RFC 3339 (2024-05-01T12:00:00Z) or an age like 30s, 15m, 2h, 7d")]
    BadTime {
        /// The parameter.
        field: &'static str,
        /// What was given.
        value: String,
    },
    /// `since` is not before `until`.
    #[error("`since` must be before `until`")]
    EmptyTimeRange,
    /// A page size outside 1..=[`MAX_PAGE_SIZE`].
    #[error("`limit` must be a whole number from 1 to {max}, got `{0}`", max = MAX_PAGE_SIZE)]
    BadLimit(String),
    /// A cursor that is not a positive job id.
    #[error("`before` must be a positive job id, got `{0}`")]
    BadCursor(String),
    /// A value longer than allowed.
    #[error("`{field}` is longer than {max} characters")]
    TooLong {
        /// The parameter.
        field: &'static str,
        /// Its longest allowed length.
        max: usize,
    },
    /// A value holding characters a filter cannot match (NUL, controls).
    #[error("`{0}` contains control characters")]
    ControlCharacters(&'static str),
}

/// Filter and page parameters as they arrive from a query string or the
/// command line: all text, checked by [`parse`](Self::parse).
///
/// ```
/// use offload::{admin::FilterParams, JobState};
/// let params = FilterParams {
///     state: Some("discarded,retryable".into()),
///     since: Some("2h".into()),
///     limit: Some("20".into()),
///     ..FilterParams::default()
/// };
/// let (filter, page) = params.parse().unwrap();
/// assert_eq!(filter.states, [JobState::Discarded, JobState::Retryable]);
/// assert_eq!(page.limit, 20);
///
/// let bad = FilterParams { state: Some("exploded".into()), ..FilterParams::default() };
/// assert!(bad.parse().unwrap_err().to_string().contains("unknown state"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams, utoipa::ToSchema))]
// The doc above holds a doctest; OpenAPI readers get this instead.
#[cfg_attr(
    feature = "openapi",
    into_params(parameter_in = Query),
    schema(description = "Which jobs to list. Every parameter is optional; all given must hold.")
)]
#[serde(default)]
pub struct FilterParams {
    /// Comma-separated states, e.g. `discarded,retryable`.
    pub state: Option<String>,
    /// Exact queue name.
    pub queue: Option<String>,
    /// Exact job kind.
    pub kind: Option<String>,
    /// A tag the job carries.
    pub tag: Option<String>,
    /// Created at or after: RFC 3339, a date, or an age like `15m`, `2h`, `7d`.
    pub since: Option<String>,
    /// Created before: same forms as `since`.
    pub until: Option<String>,
    /// Case-insensitive text in the args or errors.
    pub q: Option<String>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<String>,
    /// Keyset cursor: only jobs with a smaller id, i.e. the previous page's
    /// `next_before`.
    pub before: Option<String>,
}

// The `limit` doc above names these numbers; it is also the API's doc.
const _: () = assert!(MAX_PAGE_SIZE == 500 && DEFAULT_PAGE_SIZE == 50);

impl FilterParams {
    /// Checks every parameter. Empty values count as absent.
    pub fn parse(&self) -> Result<(JobFilter, Page), FilterError> {
        let now = Utc::now();
        let mut states = Vec::new();
        if let Some(raw) = present(&self.state) {
            for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let state: JobState = name
                    .parse()
                    .map_err(|_| FilterError::UnknownState(shorten(name)))?;
                if !states.contains(&state) {
                    states.push(state);
                }
            }
        }
        let since = present(&self.since)
            .map(|raw| parse_time("since", raw, now))
            .transpose()?;
        let until = present(&self.until)
            .map(|raw| parse_time("until", raw, now))
            .transpose()?;
        if let (Some(since), Some(until)) = (since, until) {
            if since >= until {
                return Err(FilterError::EmptyTimeRange);
            }
        }
        let filter = JobFilter {
            states,
            queue: name_param("queue", self.queue.as_deref())?,
            kind: name_param("kind", self.kind.as_deref())?,
            tag: name_param("tag", self.tag.as_deref())?,
            since,
            until,
            text: checked_text("q", self.q.as_deref(), MAX_TEXT_LEN)?,
            // Workers find their own jobs with it; the API has no such filter.
            worker_id: None,
        };
        let limit = match present(&self.limit) {
            None => DEFAULT_PAGE_SIZE,
            Some(raw) => raw
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                .ok_or_else(|| FilterError::BadLimit(shorten(raw)))?,
        };
        let before = present(&self.before)
            .map(|raw| {
                raw.parse::<i64>()
                    .ok()
                    .filter(|id| *id > 0)
                    .ok_or_else(|| FilterError::BadCursor(shorten(raw)))
            })
            .transpose()?;
        Ok((filter, Page { before, limit }))
    }

    /// The parameters that select `filter` (without page), for links.
    pub fn from_filter(filter: &JobFilter) -> Self {
        let states: Vec<&str> = filter.states.iter().map(|s| s.as_str()).collect();
        Self {
            state: (!states.is_empty()).then(|| states.join(",")),
            queue: filter.queue.clone(),
            kind: filter.kind.clone(),
            tag: filter.tag.clone(),
            since: filter.since.map(|t| t.to_rfc3339()),
            until: filter.until.map(|t| t.to_rfc3339()),
            q: filter.text.clone(),
            limit: None,
            before: None,
        }
    }
}

fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// At most 60 characters of user input, for error messages.
pub(super) fn shorten(value: &str) -> String {
    let mut short: String = value.chars().take(60).collect();
    if short.len() < value.len() {
        short.push('…');
    }
    short
}

/// The one rule for every text a filter matches: trimmed, empty as absent,
/// at most `max` characters, and no control characters (PostgreSQL cannot
/// even compare a NUL).
fn checked_text(
    field: &'static str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, FilterError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.chars().count() > max {
        return Err(FilterError::TooLong { field, max });
    }
    if value.chars().any(char::is_control) {
        return Err(FilterError::ControlCharacters(field));
    }
    Ok(Some(value.to_owned()))
}

/// A queue, kind or tag name to match exactly.
pub(super) fn name_param(
    field: &'static str,
    value: Option<&str>,
) -> Result<Option<String>, FilterError> {
    checked_text(field, value, MAX_NAME_LEN)
}

/// Reads RFC 3339, a bare date (`2024-05-01`, midnight UTC) or an age
/// before `now` (`90s`, `15m`, `2h`, `7d`, `1w`).
pub fn parse_time(
    field: &'static str,
    raw: &str,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, FilterError> {
    let bad = || FilterError::BadTime {
        field,
        value: shorten(raw),
    };
    if let Ok(at) = DateTime::parse_from_rfc3339(raw) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(day) = chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return day
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .ok_or_else(bad);
    }
    let split = raw.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = raw.split_at(split);
    let number: i64 = number.parse().map_err(|_| bad())?;
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    number
        .checked_mul(seconds_per_unit)
        .and_then(chrono::Duration::try_seconds)
        .and_then(|age| now.checked_sub_signed(age))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(f: impl FnOnce(&mut FilterParams)) -> FilterParams {
        let mut p = FilterParams::default();
        f(&mut p);
        p
    }

    #[test]
    fn unknown_state_is_a_filter_error() {
        let err = params(|p| p.state = Some("available,bogus".into()))
            .parse()
            .unwrap_err();
        assert_eq!(err, FilterError::UnknownState("bogus".into()));
    }

    #[test]
    fn relative_and_absolute_times_parse() {
        let now = Utc::now();
        let two_hours = parse_time("since", "2h", now).unwrap();
        assert_eq!(now - two_hours, chrono::Duration::hours(2));
        let at = parse_time("since", "2024-05-01T12:00:00Z", now).unwrap();
        assert_eq!(at.to_rfc3339(), "2024-05-01T12:00:00+00:00");
        assert!(parse_time("since", "yesterday", now).is_err());
        assert!(parse_time("since", "99999999999999999d", now).is_err());
    }

    #[test]
    fn reversed_time_range_is_rejected() {
        let err = params(|p| {
            p.since = Some("1h".into());
            p.until = Some("2h".into());
        })
        .parse()
        .unwrap_err();
        assert_eq!(err, FilterError::EmptyTimeRange);
    }

    #[test]
    fn limit_and_cursor_are_checked() {
        assert!(matches!(
            params(|p| p.limit = Some("0".into())).parse(),
            Err(FilterError::BadLimit(_))
        ));
        assert!(matches!(
            params(|p| p.limit = Some("501".into())).parse(),
            Err(FilterError::BadLimit(_))
        ));
        assert!(matches!(
            params(|p| p.before = Some("-3".into())).parse(),
            Err(FilterError::BadCursor(_))
        ));
    }

    #[test]
    fn control_characters_are_rejected() {
        assert_eq!(
            params(|p| p.q = Some("a\0b".into())).parse().unwrap_err(),
            FilterError::ControlCharacters("q")
        );
        for field in ["queue", "kind", "tag"] {
            let set = |p: &mut FilterParams| match field {
                "queue" => p.queue = Some("\0".into()),
                "kind" => p.kind = Some("\0".into()),
                _ => p.tag = Some("\0".into()),
            };
            assert_eq!(
                params(set).parse().unwrap_err(),
                FilterError::ControlCharacters(field)
            );
        }
        assert_eq!(
            name_param("queue", Some("mail\0")).unwrap_err(),
            FilterError::ControlCharacters("queue")
        );
    }
}
