//! `--help` never prints secrets taken from the environment.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_offload-records");

#[test]
fn help_hides_secrets_from_the_environment() {
    let output = Command::new(BIN)
        .arg("--help")
        .env(
            "DATABASE_URL",
            "postgres://app:hunter2-db-secret@db:5432/app",
        )
        .env("OFFLOAD_DASHBOARD_TOKEN", "hunter2-dashboard-token")
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "https://user:hunter2-otlp@collector:4317",
        )
        .output()
        .expect("offload-records runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--database-url"), "{help}");
    assert!(!help.contains("hunter2"), "{help}");
}
