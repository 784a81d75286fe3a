//! The built `offload` binary against real databases.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use offload::{Backend, Client, JobState, NewJob};
use offload_test_fixture::FreshDatabase;
use sqlx::{PgPool, Postgres, Sqlite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_offload");

fn offload(url: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", url)
        .env_remove("OFFLOAD_DASHBOARD_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("offload runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The URL of the per-test database `db`, with a password the trust-auth
/// server ignores (to check it is never printed).
fn pg_url(db: &FreshDatabase) -> String {
    format!("postgres://postgres:s3cr3t-pw@127.0.0.1:5432/{}", db.name())
}

/// A fresh PostgreSQL database and a pool on it.
async fn postgres() -> (FreshDatabase, PgPool) {
    let db = FreshDatabase::postgres().await;
    let pool = <Postgres as Backend>::connect(db.url(), 5)
        .await
        .expect("connect");
    (db, pool)
}

fn job(queue: &str, kind: &str) -> NewJob {
    let mut job = NewJob::new(kind, r#"{"n":1}"#);
    job.queue = queue.to_owned();
    job
}

#[tokio::test]
async fn migrate_then_list_jobs_as_table_and_json() {
    let db = FreshDatabase::sqlite();
    let url = db.url().to_owned();
    let migrated = offload(&url, &["migrate"]);
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    let pool = <Sqlite as Backend>::connect(&url, 2).await.unwrap();
    let ids = Client::new(pool)
        .insert(&[
            job("mail", "send_email"),
            job("mail", "send_email"),
            job("reports", "build_report"),
        ])
        .await
        .unwrap();

    let table = offload(&url, &["jobs", "list", "--queue", "mail"]);
    assert_eq!(table.status.code(), Some(0), "{}", stderr(&table));
    let text = stdout(&table);
    assert!(
        text.contains("send_email") && !text.contains("build_report"),
        "{text}"
    );

    let json = offload(&url, &["jobs", "list", "--json", "--limit", "2"]);
    let page: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let listed: Vec<i64> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, vec![ids[2].id, ids[1].id]);
    assert_eq!(page["next_before"], ids[1].id);

    let show = offload(&url, &["jobs", "show", &ids[2].id.to_string(), "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["kind"], "build_report");
    assert_eq!(shown["args"], serde_json::json!({"n": 1}));
}

#[tokio::test]
async fn exit_codes_say_what_went_wrong() {
    let db = FreshDatabase::sqlite();
    let url = db.url().to_owned();
    assert!(offload(&url, &["migrate"]).status.success());
    let pool = <Sqlite as Backend>::connect(&url, 2).await.unwrap();
    let id = Client::new(pool)
        .insert(&[job("default", "k")])
        .await
        .unwrap()[0]
        .id;

    let bad_filter = offload(&url, &["jobs", "list", "--state", "exploded"]);
    assert_eq!(bad_filter.status.code(), Some(2));
    assert!(stderr(&bad_filter).contains("unknown state `exploded`"));
    let bad_time = offload(&url, &["jobs", "list", "--since", "last tuesday"]);
    assert_eq!(bad_time.status.code(), Some(2));
    let usage = offload(&url, &["jobs", "frobnicate"]);
    assert_eq!(usage.status.code(), Some(2));
    let missing = offload(&url, &["jobs", "show", "999999"]);
    assert_eq!(missing.status.code(), Some(3));
    assert!(stderr(&missing).contains("job 999999 not found"));
    let cancelled = offload(&url, &["jobs", "cancel", &id.to_string()]);
    assert_eq!(cancelled.status.code(), Some(0), "{}", stderr(&cancelled));
    let not_applicable = offload(&url, &["jobs", "cancel", &id.to_string()]);
    assert_eq!(
        not_applicable.status.code(),
        Some(4),
        "{}",
        stderr(&not_applicable)
    );
    assert!(stderr(&not_applicable).contains("is cancelled"));
    // Any job that is not running can be retried, a cancelled one too.
    let retried = offload(&url, &["jobs", "retry", &id.to_string()]);
    assert_eq!(retried.status.code(), Some(0), "{}", stderr(&retried));
    assert!(stdout(&retried).contains(&format!("job {id} retried")));
    // A bulk action without a filter needs --all.
    let everything = offload(&url, &["jobs", "delete", "--yes"]);
    assert_eq!(everything.status.code(), Some(2));
    assert!(
        stderr(&everything).contains("--all"),
        "{}",
        stderr(&everything)
    );
    assert!(
        Client::new(<Sqlite as Backend>::connect(&url, 1).await.unwrap())
            .job(id)
            .await
            .unwrap()
            .is_some()
    );
    let unconfirmed = offload(&url, &["jobs", "delete", "--state", "available"]);
    assert_eq!(
        unconfirmed.status.code(),
        Some(2),
        "bulk without --yes off a terminal"
    );
    assert!(stderr(&unconfirmed).contains("--yes"));
    let all = offload(&url, &["jobs", "delete", "--all", "--yes", "--json"]);
    assert_eq!(all.status.code(), Some(0), "{}", stderr(&all));
    let outcome: serde_json::Value = serde_json::from_slice(&all.stdout).unwrap();
    assert_eq!(outcome["changed"], 1);
    let bad_url = offload("mysql://root:pw@db/x", &["jobs", "list"]);
    assert_eq!(bad_url.status.code(), Some(2));
    assert!(!stderr(&bad_url).contains("pw@"));
}

#[tokio::test]
async fn bulk_cancel_and_retry_by_filter_on_postgres() {
    let (db, pool) = postgres().await;
    let url = pg_url(&db);
    let migrated = offload(&url, &["migrate"]);
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    assert!(!stdout(&migrated).contains("s3cr3t-pw"));
    let client = Client::new(pool.clone());
    let mut jobs: Vec<NewJob> = (0..1200).map(|_| job("mail", "send_email")).collect();
    jobs.push(job("other", "send_email"));
    let ids = client.insert(&jobs).await.unwrap();

    let cancelled = offload(
        &url,
        &["jobs", "cancel", "--queue", "mail", "--yes", "--json"],
    );
    assert_eq!(cancelled.status.code(), Some(0), "{}", stderr(&cancelled));
    let outcome: serde_json::Value = serde_json::from_slice(&cancelled.stdout).unwrap();
    assert_eq!(
        outcome,
        serde_json::json!({"action": "cancel", "matched": 1200, "changed": 1200})
    );
    let counts = client.count_by_state(None).await.unwrap();
    assert!(counts.contains(&(JobState::Cancelled, 1200)), "{counts:?}");
    assert!(counts.contains(&(JobState::Available, 1)), "{counts:?}");

    let retried = offload(&url, &["jobs", "retry", "--state", "cancelled", "--yes"]);
    assert_eq!(retried.status.code(), Some(0), "{}", stderr(&retried));
    assert!(
        stdout(&retried).contains("retried 1200 of 1200"),
        "{}",
        stdout(&retried)
    );

    let one = offload(
        &url,
        &[
            "jobs",
            "delete",
            &ids[0].id.to_string(),
            &ids[1].id.to_string(),
        ],
    );
    assert_eq!(one.status.code(), Some(0), "{}", stderr(&one));
    assert!(client.job(ids[0].id).await.unwrap().is_none());
    db.cleanup().await;
}

#[tokio::test]
async fn queues_pause_resume_and_list_on_postgres() {
    let (db, pool) = postgres().await;
    let url = pg_url(&db);
    assert!(offload(&url, &["migrate"]).status.success());
    Client::new(pool.clone())
        .insert(&[job("mail", "send_email")])
        .await
        .unwrap();
    let paused = offload(&url, &["queues", "pause", "mail"]);
    assert_eq!(paused.status.code(), Some(0), "{}", stderr(&paused));
    let list = offload(&url, &["queues", "list", "--json"]);
    let queues: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(queues[0]["name"], "mail");
    assert_eq!(queues[0]["paused"], true);
    assert_eq!(queues[0]["counts"]["available"], 1);
    assert!(offload(&url, &["queues", "resume", "mail"])
        .status
        .success());
    let table = stdout(&offload(&url, &["queues", "list"]));
    assert!(table.contains("mail") && table.contains("no"), "{table}");
    // With no subcommand, `queues` lists them too.
    let bare = offload(&url, &["queues"]);
    assert_eq!(bare.status.code(), Some(0), "{}", stderr(&bare));
    assert_eq!(stdout(&bare), table);
    let bare_json = offload(&url, &["queues", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&bare_json.stdout).unwrap();
    assert_eq!(listed[0]["name"], "mail");

    // Limits: set, listed with their use, refused when malformed, removed.
    let set = offload(
        &url,
        &[
            "queues",
            "limit",
            "mail",
            "--global",
            "2",
            "--rate",
            "50/s",
            "--partition",
            "3,10/s",
        ],
    );
    assert_eq!(set.status.code(), Some(0), "{}", stderr(&set));
    let list = offload(&url, &["queues", "list", "--json"]);
    let queues: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(queues[0]["global_limit"], 2);
    assert_eq!(queues[0]["rate_limit"]["limit"], 50);
    assert_eq!(queues[0]["rate_limit"]["period_ms"], 1000);
    assert_eq!(queues[0]["partition"]["per_key_limit"], 3);
    assert_eq!(queues[0]["partition"]["per_key_rate"]["limit"], 10);
    let table = stdout(&offload(&url, &["queues", "list"]));
    assert!(
        table.contains("0/2")
            && table.contains("0/50 per 1000 ms")
            && table.contains("3 per key, 10/1000ms per key"),
        "{table}"
    );
    for bad in [
        &["--rate", "50/day"][..],
        &["--global", "0"],
        &["--partition", "0"],
        &["--partition", "some"],
        &["--partition", "3,10"],
        &[],
    ] {
        let args = [&["queues", "limit", "mail"][..], bad].concat();
        let refused = offload(&url, &args);
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{bad:?}: {}",
            stderr(&refused)
        );
    }
    let off = offload(
        &url,
        &[
            "queues",
            "limit",
            "mail",
            "--global",
            "off",
            "--rate",
            "off",
            "--partition",
            "off",
        ],
    );
    assert_eq!(off.status.code(), Some(0), "{}", stderr(&off));
    let limits = Client::new(pool.clone()).limits("mail").await.unwrap();
    assert_eq!(
        (limits.global, limits.rate, limits.partition),
        (None, None, None)
    );
    db.cleanup().await;
}

async fn http_get(port: u16, path: &str) -> Option<String> {
    http_get_with(port, path, "").await
}

/// GET with `extra` header lines (each ending in `\r\n`).
async fn http_get_with(port: u16, path: &str, extra: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response)
}

/// Starts `offload dashboard` on a free port with `extra` arguments, and
/// returns it with the port and the first response to GET `path`.
async fn start_dashboard(
    url: &str,
    extra: &[&str],
    path: &str,
) -> (tokio::process::Child, u16, String) {
    let port = offload_test_fixture::free_port();
    let server = tokio::process::Command::new(BIN)
        .args(["dashboard", "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env("DATABASE_URL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(response) = http_get(port, path).await {
            return (server, port, response);
        }
        assert!(Instant::now() < deadline, "dashboard did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn dashboard_serves_pages_without_showing_the_password() {
    let db = FreshDatabase::postgres().await;
    let (mut server, port, page) = start_dashboard(&pg_url(&db), &[], "/").await;
    assert!(
        page.starts_with("HTTP/1.0 200") || page.starts_with("HTTP/1.1 200"),
        "{page}"
    );
    assert!(page.contains("Overview"));
    assert!(!page.contains("s3cr3t-pw"));
    let api = http_get(port, "/api/queues").await.unwrap();
    assert!(api.contains("200 OK"), "{api}");
    server.start_kill().unwrap();
    let output = server.wait_with_output().await.unwrap();
    let logs = format!("{}{}", stderr(&output), stdout(&output));
    assert!(
        logs.contains(&format!("http://127.0.0.1:{port}/")),
        "{logs}"
    );
    assert!(!logs.contains("s3cr3t-pw"), "{logs}");
    db.cleanup().await;
}

#[tokio::test]
async fn dashboard_metrics_need_the_token_when_one_is_set() {
    let db = FreshDatabase::postgres().await;
    let token = "scrape-token-0123456789";
    let (server, port, refused) =
        start_dashboard(&pg_url(&db), &["--token", token], "/metrics").await;
    assert!(refused.contains(" 401 "), "{refused}");
    assert!(!refused.contains("offload_queue_jobs"), "{refused}");
    let wrong = http_get_with(port, "/metrics", "Authorization: Bearer nope\r\n")
        .await
        .unwrap();
    assert!(wrong.contains(" 401 "), "{wrong}");
    let served = http_get_with(
        port,
        "/metrics",
        &format!("Authorization: Bearer {token}\r\n"),
    )
    .await
    .unwrap();
    assert!(served.contains(" 200 "), "{served}");
    drop(server);
    db.cleanup().await;
}

#[test]
fn dashboard_refuses_to_listen_publicly_without_a_token() {
    let db = FreshDatabase::sqlite();
    let output = offload(db.url(), &["dashboard", "--listen", "0.0.0.0:0"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("set a token"));
    let short = offload(
        db.url(),
        &["dashboard", "--listen", "0.0.0.0:0", "--token", "abc"],
    );
    assert_eq!(short.status.code(), Some(2));
}

#[test]
fn help_shows_examples_and_exit_codes() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    let help = stdout(&output);
    assert!(
        help.contains("offload jobs retry --state discarded"),
        "{help}"
    );
    assert!(help.contains("Exit codes"));
    for command in ["migrate", "jobs", "queues", "dashboard", "bench"] {
        assert!(help.contains(command), "{command} missing");
    }
    let bench = Command::new(BIN)
        .args(["bench", "--help"])
        .output()
        .unwrap();
    assert!(stdout(&bench).contains("--phases"));
}

#[test]
fn help_hides_secrets_from_the_environment() {
    let commands: [&[&str]; 6] = [
        &["--help"],
        &["jobs", "--help"],
        &["jobs", "list", "--help"],
        &["queues", "--help"],
        &["dashboard", "--help"],
        &["bench", "--help"],
    ];
    for args in commands {
        let output = Command::new(BIN)
            .args(args)
            .env(
                "DATABASE_URL",
                "postgres://app:hunter2-db-secret@db:5432/app",
            )
            .env("OFFLOAD_DASHBOARD_TOKEN", "hunter2-dashboard-token")
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        let help = stdout(&output);
        assert!(!help.contains("hunter2"), "{args:?} shows a secret: {help}");
    }
}
