//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::OpenApi;

use crate::api::{records, stats};

/// The service's OpenAPI 3.1 document, served at `/openapi.json`.
///
/// ```
/// use utoipa::OpenApi;
/// let doc = offload_records::openapi::ApiDoc::openapi();
/// assert!(doc.paths.paths.contains_key("/records"));
/// ```
#[derive(OpenApi)]
#[openapi(
    info(
        title = "offload-records",
        description = "Records API: each write enqueues its processing job in the request's transaction."
    ),
    paths(
        records::create_record,
        records::get_record,
        records::list_records,
        stats::stats
    ),
    components(schemas(
        crate::store::Record,
        crate::store::RecordStatus,
        records::CreateRecord,
        records::RecordDetail,
        records::JobSummary,
        records::RecordPage,
        stats::Stats,
        offload_axum::Problem
    )),
    tags(
        (name = "records", description = "Create, read and list records"),
        (name = "stats", description = "Counts")
    )
)]
pub struct ApiDoc;
