//! Helpers for the application's own tests (feature `testing`), on a real
//! database: run one job through the worker's own code and get its
//! outcome ([`TestKit::work`]), see what was enqueued
//! ([`TestKit::enqueued`], [`TestKit::assert_enqueued`]), run a queue dry
//! ([`TestKit::drain`]), or run jobs as the code under test enqueues them
//! ([`TestKit::inline`]). As River's `rivertest` or Oban's `Oban.Testing`.
//!
//! ```toml
//! [dev-dependencies]
//! offload = { version = "0.1", features = ["testing"] }
//! ```
//!
//! Every call runs the real path: the job is a row, claimed like a
//! worker claims it, run in its own transaction with the registry's
//! state and hooks, its completion guarded by its attempt, its failure
//! recorded with back-off. Nothing is mocked, so a test sees what
//! production would.

mod drain;
mod enqueued;
mod inline;
mod kit;
mod runner;

pub use drain::DrainOptions;
pub use enqueued::EnqueuedJob;
pub use inline::Inline;
pub use kit::TestKit;
pub use runner::Worked;
