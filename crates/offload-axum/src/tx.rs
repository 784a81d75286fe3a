//! The per-request transaction: [`TxLayer`] opens a slot for each request,
//! [`Tx`] begins the transaction in it on first use, and the layer commits
//! or rolls it back once the handler's response is known.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use offload::Backend;
use sqlx::{Pool, Transaction};
use tower::{Layer, Service};

use crate::rejection::TxRejection;
use crate::Problem;

/// The request's own database transaction, on backend `DB`.
///
/// It begins when the handler extracts it and ends when the response is
/// known: a 2xx or 3xx response commits it; any other status, a rejection,
/// or a panic rolls it back. If the commit itself fails, the client gets a
/// 503 problem instead of the handler's success response, so a success is
/// never reported for writes that did not persist.
///
/// `Tx<DB>` dereferences to `DB::Connection`, so queries run on `&mut *tx`
/// and jobs are enqueued in it with
/// [`Client::enqueue_tx`](offload::Client::enqueue_tx): they exist if and
/// only if the request commits.
///
/// **It cannot reach a job.** A job is `'static + Serialize + DeserializeOwned`
/// (its args are stored as JSON); `Tx` is neither serializable nor
/// deserializable, so a job type holding one does not compile. Jobs get their
/// own transaction from [`JobContext::tx`](offload::JobContext::tx).
///
/// ```
/// use axum::{routing::post, Router};
/// use axum::http::StatusCode;
/// use offload::{Client, Job, JobContext, JobError};
/// use offload_axum::{Problem, Tx, TxLayer};
/// use serde::{Deserialize, Serialize};
/// use sqlx::Sqlite;
///
/// #[derive(Serialize, Deserialize)]
/// struct Welcome { user_id: i64 }
///
/// impl Job<Sqlite> for Welcome {
///     const KIND: &'static str = "welcome";
///     async fn run(self, _ctx: &mut JobContext<Sqlite>) -> Result<(), JobError> { Ok(()) }
/// }
///
/// async fn sign_up(
///     axum::extract::State(client): axum::extract::State<Client<Sqlite>>,
///     mut tx: Tx<Sqlite>,
/// ) -> Result<StatusCode, Problem> {
///     let user_id: i64 = sqlx::query_scalar("INSERT INTO users DEFAULT VALUES RETURNING id")
///         .fetch_one(&mut *tx)
///         .await
///         .map_err(|_| Problem::internal())?;
///     // Committed with the user row, or not at all. An offload error is a
///     // `Problem` already (503 while the database is unavailable, else 500).
///     client.enqueue_tx(&mut *tx, Welcome { user_id }).await?;
///     Ok(StatusCode::CREATED)
/// }
///
/// fn app(pool: sqlx::SqlitePool) -> Router {
///     Router::new()
///         .route("/users", post(sign_up))
///         .with_state(Client::new(pool.clone()))
///         .layer(TxLayer::new(pool))
/// }
/// ```
///
/// A job that tries to carry the request's transaction is rejected by the
/// compiler:
///
/// ```compile_fail
/// use offload::{Job, JobContext, JobError};
/// use offload_axum::Tx;
/// use serde::{Deserialize, Serialize};
/// use sqlx::Sqlite;
///
/// #[derive(Serialize, Deserialize)]
/// struct Leaky { tx: Tx<Sqlite> } // Tx is not Serialize/Deserialize
///
/// impl Job<Sqlite> for Leaky {
///     const KIND: &'static str = "leaky";
///     async fn run(self, _ctx: &mut JobContext<Sqlite>) -> Result<(), JobError> { Ok(()) }
/// }
/// ```
pub struct Tx<DB: Backend> {
    tx: Option<Transaction<'static, DB>>,
    slot: Arc<Slot<DB>>,
}

impl<DB: Backend> Tx<DB> {
    fn connection(&self) -> &Transaction<'static, DB> {
        // Present from extraction until drop.
        self.tx
            .as_ref()
            .unwrap_or_else(|| unreachable!("Tx holds its transaction until dropped"))
    }
}

impl<DB: Backend> fmt::Debug for Tx<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tx").field("backend", &DB::NAME).finish()
    }
}

impl<DB: Backend> Deref for Tx<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &Self::Target {
        self.connection()
    }
}

impl<DB: Backend> DerefMut for Tx<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self.tx.as_mut() {
            Some(tx) => tx,
            None => unreachable!("Tx holds its transaction until dropped"),
        }
    }
}

impl<DB: Backend> Drop for Tx<DB> {
    fn drop(&mut self) {
        // Hand the transaction back so the layer can commit or roll it back.
        if let Some(tx) = self.tx.take() {
            *self.slot.lock() = SlotState::Returned(tx);
        }
    }
}

impl<DB: Backend, S: Send + Sync> FromRequestParts<S> for Tx<DB> {
    type Rejection = TxRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        BeginTx::<DB>::from_request_parts(parts, state)
            .await?
            .begin()
            .await
    }
}

/// The right to begin the request's [`Tx`] later, inside the handler.
///
/// Extractors run before the handler, the body extractor last, so a `Tx`
/// argument begins its transaction before the body is read and validated.
/// Take `BeginTx` instead when the body comes first: the transaction (on
/// SQLite, the database's write lock) is then held only while the handler
/// writes, never while a slow client uploads.
///
/// ```
/// use axum::http::StatusCode;
/// use offload_axum::{BeginTx, Json, Problem};
/// use serde::Deserialize;
/// use sqlx::Sqlite;
///
/// #[derive(Deserialize)]
/// struct NewNote { text: String }
///
/// async fn create(begin: BeginTx<Sqlite>, Json(note): Json<NewNote>) -> Result<StatusCode, Problem> {
///     if note.text.is_empty() {
///         return Err(Problem::invalid_field("text", "must not be empty"));
///     }
///     let mut tx = begin.begin().await.map_err(|_| Problem::unavailable())?;
///     sqlx::query("INSERT INTO notes (text) VALUES (?1)")
///         .bind(&note.text)
///         .execute(&mut *tx)
///         .await
///         .map_err(|_| Problem::internal())?;
///     Ok(StatusCode::CREATED)
/// }
/// ```
pub struct BeginTx<DB: Backend> {
    slot: Arc<Slot<DB>>,
}

impl<DB: Backend> fmt::Debug for BeginTx<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BeginTx")
            .field("backend", &DB::NAME)
            .finish()
    }
}

impl<DB: Backend> BeginTx<DB> {
    /// Begins the request's transaction (or takes back the one an earlier
    /// extractor began and released).
    pub async fn begin(self) -> Result<Tx<DB>, TxRejection> {
        let slot = self.slot;
        let existing = {
            let mut state = slot.lock();
            match std::mem::replace(&mut *state, SlotState::Lent) {
                SlotState::Idle => None,
                SlotState::Returned(tx) => Some(tx),
                SlotState::Lent => return Err(TxRejection::AlreadyExtracted),
            }
        };
        let tx = match existing {
            Some(tx) => tx,
            None => match DB::begin_write(&slot.pool).await {
                Ok(tx) => tx,
                Err(error) => {
                    *slot.lock() = SlotState::Idle;
                    return Err(TxRejection::Begin(error));
                }
            },
        };
        Ok(Tx { tx: Some(tx), slot })
    }
}

impl<DB: Backend, S: Send + Sync> FromRequestParts<S> for BeginTx<DB> {
    type Rejection = TxRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let slot = parts
            .extensions
            .get::<SlotHandle<DB>>()
            .map(|handle| handle.0.clone())
            .ok_or(TxRejection::MissingLayer)?;
        Ok(BeginTx { slot })
    }
}

enum SlotState<DB: Backend> {
    /// No transaction begun.
    Idle,
    /// A `Tx` holds it.
    Lent,
    /// The `Tx` was dropped; the transaction waits for the response.
    Returned(Transaction<'static, DB>),
}

struct Slot<DB: Backend> {
    pool: Pool<DB>,
    state: Mutex<SlotState<DB>>,
}

impl<DB: Backend> Slot<DB> {
    fn lock(&self) -> MutexGuard<'_, SlotState<DB>> {
        // The lock is never held across code that can panic mid-update.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct SlotHandle<DB: Backend>(Arc<Slot<DB>>);

impl<DB: Backend> Clone for SlotHandle<DB> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// Gives every request a slot for its [`Tx`], and commits or rolls back
/// what the handler left in it. Add it with `Router::layer`, after the
/// routes that extract `Tx<DB>`.
///
/// A request whose handler never extracts `Tx` never touches the database.
pub struct TxLayer<DB: Backend> {
    pool: Pool<DB>,
}

impl<DB: Backend> TxLayer<DB> {
    /// Request transactions begin on `pool`.
    pub fn new(pool: Pool<DB>) -> Self {
        Self { pool }
    }
}

impl<DB: Backend> Clone for TxLayer<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
        }
    }
}

impl<DB: Backend> fmt::Debug for TxLayer<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxLayer")
            .field("backend", &DB::NAME)
            .finish()
    }
}

impl<DB: Backend, S> Layer<S> for TxLayer<DB> {
    type Service = TxService<S, DB>;

    fn layer(&self, inner: S) -> Self::Service {
        TxService {
            inner,
            pool: self.pool.clone(),
        }
    }
}

/// The service [`TxLayer`] wraps around a router.
pub struct TxService<S, DB: Backend> {
    inner: S,
    pool: Pool<DB>,
}

impl<S: Clone, DB: Backend> Clone for TxService<S, DB> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            pool: self.pool.clone(),
        }
    }
}

impl<S, DB> Service<Request> for TxService<S, DB>
where
    DB: Backend,
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let slot = Arc::new(Slot {
            pool: self.pool.clone(),
            state: Mutex::new(SlotState::Idle),
        });
        request.extensions_mut().insert(SlotHandle(slot.clone()));
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(finish(&slot, response).await)
        })
    }
}

/// Commits or rolls back the request's transaction according to `response`.
async fn finish<DB: Backend>(slot: &Slot<DB>, response: Response) -> Response {
    let state = std::mem::replace(&mut *slot.lock(), SlotState::Idle);
    match state {
        SlotState::Idle => response,
        SlotState::Lent => {
            // The handler moved its Tx somewhere that outlives the request
            // (a spawned task): its writes must not be reported as done.
            tracing::error!("request transaction outlived its handler; reporting failure");
            Problem::internal().into_response()
        }
        SlotState::Returned(tx) => {
            let status = response.status();
            if status.is_success() || status.is_redirection() {
                match tx.commit().await {
                    Ok(()) => response,
                    Err(error) => {
                        tracing::error!(%error, "request transaction failed to commit");
                        // Nothing was written: 507 on a full disk, else 503.
                        match crate::problem::storage_full(&error) {
                            true => Problem::storage_full().into_response(),
                            false => Problem::unavailable().into_response(),
                        }
                    }
                }
            } else {
                if let Err(error) = tx.rollback().await {
                    // The connection is discarded by the pool; nothing was committed.
                    tracing::warn!(%error, "request transaction failed to roll back");
                }
                response
            }
        }
    }
}
