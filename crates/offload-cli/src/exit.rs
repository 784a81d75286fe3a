//! Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 not applicable.

use std::fmt;

/// An error that ends the program with a specific exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: u8,
    pub message: String,
}

pub(crate) const USAGE: u8 = 2;
pub(crate) const NOT_FOUND: u8 = 3;
pub(crate) const NOT_APPLICABLE: u8 = 4;

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The exit code for any error: its `Failure` code, else 1.
    pub fn code_of(error: &anyhow::Error) -> u8 {
        error
            .chain()
            .find_map(|e| e.downcast_ref::<Failure>())
            .map(|f| f.code)
            .or_else(|| {
                error
                    .chain()
                    .find_map(|e| e.downcast_ref::<offload::admin::AdminError>())
                    .and_then(|e| match e {
                        offload::admin::AdminError::Filter(_)
                        | offload::admin::AdminError::BadQueueName(_)
                        | offload::admin::AdminError::BadLimit(_)
                        | offload::admin::AdminError::BulkNeedsFilter(_) => Some(USAGE),
                        offload::admin::AdminError::JobNotFound(_) => Some(NOT_FOUND),
                        _ => None,
                    })
            })
            .unwrap_or(1)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}
