//! The HTML pages and their form actions.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Extension, Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use minijinja::{context, Value};
use offload::{
    admin::{AdminError, BulkTarget, FilterParams, JobAction, JobFilter},
    Backend, JobState,
};
use serde::Deserialize;

use crate::api::{parse_action, parse_id, parse_pause, ApiError};
use crate::chart::throughput_svg;
use crate::security::{csrf_matches, home_path, urlencode, BasePath, CsrfToken};
use crate::state::AppState;

mod login;
pub(crate) use login::{login, login_form};

/// What every page's layout needs.
struct Page<'a, DB: Backend> {
    state: &'a AppState<DB>,
    base: &'a str,
    csrf: &'a str,
}

impl<DB: Backend> Page<'_, DB> {
    fn render(&self, status: StatusCode, template: &str, page: Value) -> Response {
        let config = &self.state.config;
        let layout = context! {
            base => self.base,
            home => home_path(self.base),
            csrf => self.csrf,
            title => config.title,
            database => config.database,
            refresh_ms => config.refresh.as_millis() as u64,
            has_token => config.token.is_some(),
        };
        let context = context! { ..page, ..layout };
        match self.state.templates.render(template, context) {
            Ok(html) => (status, Html(html)).into_response(),
            Err(error) => {
                tracing::error!(%error, template, "dashboard page failed to render");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page failed to render",
                )
                    .into_response()
            }
        }
    }

    fn error(&self, error: ApiError) -> Response {
        let retry_after = error.retry_after;
        let mut response = self.render(
            error.status,
            "error.html",
            context! { status => error.status.as_u16(), heading => error.title, detail => error.detail },
        );
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        response
    }
}

/// Messages after an action, chosen from a fixed list so the URL cannot
/// put text on the page.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct NoticeQuery {
    notice: Option<String>,
    n: Option<u64>,
}

impl NoticeQuery {
    fn message(&self) -> Option<String> {
        let n = self.n.unwrap_or(0);
        let plural = if n == 1 { "job" } else { "jobs" };
        Some(match self.notice.as_deref()? {
            "retry" => "Job queued to run again.".to_owned(),
            "cancel" => "Job cancelled.".to_owned(),
            "delete" => "Job deleted.".to_owned(),
            "not_applicable" => {
                "That action does not apply to the job in its current state.".to_owned()
            }
            "pause" => "Queue paused: workers stop claiming its jobs.".to_owned(),
            "resume" => "Queue resumed.".to_owned(),
            "limits" => "Queue limits set: workers pick them up within seconds.".to_owned(),
            "bulk_retry" => format!("{n} {plural} queued to run again."),
            "bulk_cancel" => format!("{n} {plural} cancelled."),
            "bulk_delete" => format!("{n} {plural} deleted."),
            _ => return None,
        })
    }
}

fn window(state_minutes: u32) -> Duration {
    Duration::from_secs(u64::from(state_minutes) * 60)
}

pub(crate) async fn overview<DB: Backend>(
    State(state): State<AppState<DB>>,
    Extension(BasePath(base)): Extension<BasePath>,
    Extension(CsrfToken(csrf)): Extension<CsrfToken>,
    notice: Result<Query<NoticeQuery>, QueryRejection>,
) -> Response {
    let page = Page {
        state: &state,
        base: &base,
        csrf: &csrf,
    };
    let minutes = state.config.throughput_minutes;
    let overview = match state.admin.overview(window(minutes)).await {
        Ok(overview) => overview,
        Err(error) => return page.error(error.into()),
    };
    let points = match state.admin.throughput(minutes, None).await {
        Ok(points) => points,
        Err(error) => return page.error(error.into()),
    };
    let totals: Vec<Value> = JobState::ALL
        .iter()
        .map(|s| context! { name => s.as_str(), count => overview.totals.get(*s) })
        .collect();
    let completed: i64 = points.iter().map(|p| p.completed).sum();
    let discarded: i64 = points.iter().map(|p| p.discarded).sum();
    // The CLI's wording, one place for both.
    let partitions: BTreeMap<&str, String> = overview
        .queues
        .iter()
        .filter_map(|q| Some((q.name.as_str(), q.partition.as_ref()?.describe())))
        .collect();
    page.render(
        StatusCode::OK,
        "overview.html",
        context! {
            nav => "overview",
            notice => notice.ok().and_then(|Query(n)| n.message()),
            totals,
            total => overview.totals.total(),
            partitions,
            queues => overview.queues,
            states => JobState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            chart => Value::from_safe_string(throughput_svg(&points)),
            chart_minutes => minutes,
            chart_completed => completed,
            chart_discarded => discarded,
        },
    )
}

/// The query string selecting `filter`, for links.
fn filter_query(filter: &JobFilter) -> String {
    let params = FilterParams::from_filter(filter);
    [
        ("state", params.state),
        ("queue", params.queue),
        ("kind", params.kind),
        ("tag", params.tag),
        ("since", params.since),
        ("until", params.until),
        ("q", params.q),
    ]
    .into_iter()
    .filter_map(|(key, value)| value.map(|v| format!("{key}={}", urlencode(&v))))
    .collect::<Vec<_>>()
    .join("&")
}

pub(crate) async fn job_list<DB: Backend>(
    State(state): State<AppState<DB>>,
    Extension(BasePath(base)): Extension<BasePath>,
    Extension(CsrfToken(csrf)): Extension<CsrfToken>,
    query: Result<Query<FilterParams>, QueryRejection>,
    notice: Result<Query<NoticeQuery>, QueryRejection>,
) -> Response {
    let page = Page {
        state: &state,
        base: &base,
        csrf: &csrf,
    };
    let raw = query.map(|Query(q)| q).unwrap_or_default();
    let notice = notice.ok().and_then(|Query(n)| n.message());
    // The select holds one value: a state's name, or the whole list as typed.
    let form = context! {
        state => raw.state.as_deref().map(str::trim),
        queue => raw.queue,
        kind => raw.kind,
        tag => raw.tag,
        since => raw.since,
        until => raw.until,
        q => raw.q,
        limit => raw.limit,
    };
    let states: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
    let (filter, page_request) = match raw.parse() {
        Ok(parsed) => parsed,
        Err(error) => {
            return page.render(
                StatusCode::BAD_REQUEST,
                "jobs.html",
                context! { nav => "jobs", form, states, filter_error => error.to_string() },
            )
        }
    };
    let result = match state.admin.list(&filter, page_request).await {
        Ok(result) => result,
        Err(error) => return page.error(error.into()),
    };
    let query = filter_query(&filter);
    let limit = raw
        .limit
        .as_deref()
        .map(|l| format!("&limit={}", urlencode(l.trim())))
        .unwrap_or_default();
    let next = result
        .next_before
        .map(|before| format!("{base}/jobs?{query}{limit}&before={before}"));
    let first = page_request
        .before
        .map(|_| format!("{base}/jobs?{query}{limit}"));
    page.render(
        StatusCode::OK,
        "jobs.html",
        context! {
            nav => "jobs",
            notice,
            form,
            states,
            jobs => result.jobs,
            next,
            first,
            filtered => !filter.is_empty(),
            filter_fields => FilterParams::from_filter(&filter),
        },
    )
}

pub(crate) async fn job_detail<DB: Backend>(
    State(state): State<AppState<DB>>,
    Extension(BasePath(base)): Extension<BasePath>,
    Extension(CsrfToken(csrf)): Extension<CsrfToken>,
    Path(raw_id): Path<String>,
    notice: Result<Query<NoticeQuery>, QueryRejection>,
) -> Response {
    let page = Page {
        state: &state,
        base: &base,
        csrf: &csrf,
    };
    let id = match parse_id(&raw_id) {
        Ok(id) => id,
        Err(error) => return page.error(error),
    };
    let job = match state.admin.job(id).await {
        Ok(job) => job,
        Err(error) => return page.error(error.into()),
    };
    let args = serde_json::to_string_pretty(&job.args).unwrap_or_else(|_| job.args.to_string());
    let actions: Vec<&str> = [JobAction::Retry, JobAction::Cancel, JobAction::Delete]
        .into_iter()
        .filter(|a| a.applies_to(job.state))
        .map(JobAction::as_str)
        .collect();
    page.render(
        StatusCode::OK,
        "job.html",
        context! {
            nav => "jobs",
            notice => notice.ok().and_then(|Query(n)| n.message()),
            args,
            actions,
            job,
        },
    )
}

/// A queue's limits: an empty field removes that limit.
#[derive(Debug, Deserialize)]
pub(crate) struct LimitsForm {
    csrf: String,
    #[serde(default)]
    global: String,
    #[serde(default)]
    rate: String,
    #[serde(default)]
    partition: String,
}

impl HasCsrf for LimitsForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub(crate) async fn queue_limits<DB: Backend>(
    State(state): State<AppState<DB>>,
    Extension(BasePath(base)): Extension<BasePath>,
    Extension(csrf): Extension<CsrfToken>,
    Path(name): Path<String>,
    form: Result<Form<LimitsForm>, FormRejection>,
) -> Response {
    let page = Page {
        state: &state,
        base: &base,
        csrf: &csrf.0,
    };
    let result = async {
        let form = check_form(form, &csrf)?;
        let global = offload::admin::parse_global_limit(&form.global)?;
        let rate = offload::admin::parse_rate_limit(&form.rate)?;
        let partition = offload::admin::parse_partition(&form.partition)?;
        state.admin.set_global_limit(&name, global).await?;
        state.admin.set_rate_limit(&name, rate).await?;
        state.admin.set_partition(&name, partition).await?;
        Ok::<_, ApiError>(())
    }
    .await;
    match result {
        Ok(()) => see_other(&format!("{}?notice=limits", home_path(&base))),
        Err(error) => page.error(error),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct CsrfForm {
    csrf: String,
}

fn check_form<T: HasCsrf>(
    form: Result<Form<T>, FormRejection>,
    expected: &CsrfToken,
) -> Result<T, ApiError> {
    let Form(form) =
        form.map_err(|e| ApiError::bad_request(format!("invalid form: {}", e.body_text())))?;
    if !csrf_matches(expected, form.csrf()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Form expired",
            "the form's security token did not match; reload the page and try again",
        ));
    }
    Ok(form)
}

trait HasCsrf {
    fn csrf(&self) -> &str;
}

impl HasCsrf for CsrfForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

pub(crate) async fn job_action<DB: Backend>(
    State(state): State<AppState<DB>>,
    Extension(BasePath(base)): Extension<BasePath>,
    Extension(csrf): Extension<CsrfToken>,
    Path((raw_id, raw_action)): Path<(String, String)>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let page = Page {
        state: &state,
        base: &base,
        csrf: &csrf.0,
    };
    let result = async {
        check_form(form, &csrf)?;
        let id = parse_id(&raw_id)?;
        let action = parse_action(&raw_action)?;
        let changed = state.admin.act_on_job(action, id).await?;
        Ok::<_, ApiError>((id, action, changed))
    }
    .await;
    match result {
        Ok((_, JobAction::Delete, true)) => see_other(&format!("{base}/jobs?notice=delete")),
        Ok((id, action, true)) => {
            see_other(&format!("{base}/jobs/{id}?notice={}", action.as_str()))
        }
        Ok((id, _, false)) => see_other(&format!("{base}/jobs/{id}?notice=not_applicable")),
        Err(error) => page.error(error),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct BulkForm {
    csrf: String,
    action: String,
    #[serde(flatten)]
    filter: FilterParams,
}

impl HasCsrf for BulkForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub(crate) async fn bulk_action<DB: Backend>(
    State(state): State<AppState<DB>>,
    Extension(BasePath(base)): Extension<BasePath>,
    Extension(csrf): Extension<CsrfToken>,
    form: Result<Form<BulkForm>, FormRejection>,
) -> Response {
    let page = Page {
        state: &state,
        base: &base,
        csrf: &csrf.0,
    };
    let result = async {
        let form = check_form(form, &csrf)?;
        let action = parse_action(&form.action)?;
        let (filter, _) = form.filter.parse().map_err(AdminError::from)?;
        if filter.is_empty() {
            return Err(ApiError::bad_request(
                "bulk actions from the dashboard need a filter; use the API with \"all\": true to act on every job",
            ));
        }
        // The form has no "every job" choice: an empty filter is refused.
        let target = BulkTarget::Matching(&filter);
        let outcome = state.admin.bulk(action, target, |_| {}).await?;
        Ok::<_, ApiError>((filter, action, outcome))
    }
    .await;
    match result {
        Ok((filter, action, outcome)) => see_other(&format!(
            "{base}/jobs?{}&notice=bulk_{}&n={}",
            filter_query(&filter),
            action.as_str(),
            outcome.changed
        )),
        Err(error) => page.error(error),
    }
}

pub(crate) async fn queue_action<DB: Backend>(
    State(state): State<AppState<DB>>,
    Extension(BasePath(base)): Extension<BasePath>,
    Extension(csrf): Extension<CsrfToken>,
    Path((name, action)): Path<(String, String)>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let page = Page {
        state: &state,
        base: &base,
        csrf: &csrf.0,
    };
    let result = async {
        check_form(form, &csrf)?;
        let paused = parse_pause(&action)?;
        if paused {
            state.admin.pause_queue(&name).await?;
        } else {
            state.admin.resume_queue(&name).await?;
        }
        Ok::<_, ApiError>(paused)
    }
    .await;
    match result {
        Ok(true) => see_other(&format!("{}?notice=pause", home_path(&base))),
        Ok(false) => see_other(&format!("{}?notice=resume", home_path(&base))),
        Err(error) => page.error(error),
    }
}
