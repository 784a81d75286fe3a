//! `--help` never prints secrets taken from the environment.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_offload-bench");

#[test]
fn help_hides_secrets_from_the_environment() {
    let output = Command::new(BIN)
        .arg("--help")
        .env(
            "DATABASE_URL",
            "postgres://app:hunter2-db-secret@db:5432/app",
        )
        .output()
        .expect("offload-bench runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--database-url"), "{help}");
    assert!(!help.contains("hunter2"), "{help}");
}
