//! What every handler shares.

use std::sync::Arc;

use offload::{admin::Admin, Backend};
use sha2::{Digest, Sha256};
use sqlx::Pool;

use crate::config::DashboardConfig;
use crate::templates::Templates;
use crate::throttle::LoginThrottle;

pub(crate) struct AppState<DB: Backend> {
    pub admin: Admin<DB>,
    pub config: Arc<DashboardConfig>,
    pub templates: Arc<Templates>,
    /// What the login cookie holds: a digest of the token, never the token.
    pub session: Option<Arc<str>>,
    /// Wrong tokens per client, shared by the login form and the guard.
    pub throttle: Arc<LoginThrottle>,
}

impl<DB: Backend> Clone for AppState<DB> {
    fn clone(&self) -> Self {
        Self {
            admin: self.admin.clone(),
            config: self.config.clone(),
            templates: self.templates.clone(),
            session: self.session.clone(),
            throttle: self.throttle.clone(),
        }
    }
}

impl<DB: Backend> AppState<DB> {
    pub fn new(pool: Pool<DB>, config: DashboardConfig) -> Self {
        let session = config.token.as_deref().map(session_value);
        Self {
            admin: Admin::new(pool),
            config: Arc::new(config),
            templates: Arc::new(Templates::new()),
            session,
            throttle: Arc::new(LoginThrottle::new()),
        }
    }
}

/// The login cookie's value for `token`.
pub(crate) fn session_value(token: &str) -> Arc<str> {
    let digest = Sha256::digest(format!("offload-dashboard-session:{token}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex.into()
}
