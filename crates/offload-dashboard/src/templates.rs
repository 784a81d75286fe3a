//! The HTML templates, embedded in the binary. `.html` templates escape
//! every value unless marked safe, and only server-built SVG is.

use chrono::{DateTime, Utc};
use minijinja::{Environment, Value};

pub(crate) struct Templates {
    env: Environment<'static>,
}

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("macros.html", include_str!("../templates/macros.html")),
    ("overview.html", include_str!("../templates/overview.html")),
    ("jobs.html", include_str!("../templates/jobs.html")),
    ("job.html", include_str!("../templates/job.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("error.html", include_str!("../templates/error.html")),
];

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            // The templates ship with the crate; a broken one is a bug the
            // tests catch.
            if let Err(error) = env.add_template(name, source) {
                tracing::error!(template = name, %error, "dashboard template does not compile");
            }
        }
        env.add_filter("ago", ago);
        env.add_filter("duration", duration);
        env.add_filter("truncate", truncate);
        env.add_filter("datetime", datetime);
        Self { env }
    }

    /// Renders `name`; a failure renders a plain error instead of a panic.
    pub fn render(&self, name: &str, context: Value) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(context)
    }
}

/// "3 min ago" for an RFC 3339 time; the input itself if it is not one.
fn ago(value: String) -> String {
    match DateTime::parse_from_rfc3339(&value) {
        Ok(at) => {
            let secs = (Utc::now() - at.with_timezone(&Utc)).num_seconds();
            if secs < 0 {
                format!("in {}", human_secs(-secs))
            } else if secs < 2 {
                "just now".to_owned()
            } else {
                format!("{} ago", human_secs(secs))
            }
        }
        Err(_) => value,
    }
}

/// "2024-05-01 12:00:03 UTC" for an RFC 3339 time.
fn datetime(value: String) -> String {
    match DateTime::parse_from_rfc3339(&value) {
        Ok(at) => at
            .with_timezone(&Utc)
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string(),
        Err(_) => value,
    }
}

/// At most `max` characters, with an ellipsis when cut.
fn truncate(value: String, max: usize) -> String {
    if value.chars().count() <= max {
        return value;
    }
    let mut short: String = value.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// "1 h 5 min" for a number of seconds.
fn duration(secs: f64) -> String {
    human_secs(secs.max(0.0) as i64)
}

fn human_secs(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        s => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}
