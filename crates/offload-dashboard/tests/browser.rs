//! A real headless Chromium, driven through chromedriver: the overview,
//! filtering to discarded jobs, retrying one and watching it run, and args
//! holding `<script>` shown as text. Saves screenshots (see `docs_dir`).
//!
//! Needs Debian's `chromium` and `chromium-driver`; without them this test
//! fails with a message saying so.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use offload::{
    Backend, Client, Job, JobContext, JobError, JobState, NewJob, Registry, Worker, WorkerConfig,
};
use offload_dashboard::DashboardConfig;
use offload_test_fixture::eventually;
use serde::{Deserialize, Serialize};
use support::*;

/// Fails on its first attempt, succeeds on any later one.
#[derive(Debug, Serialize, Deserialize)]
struct SyncInvoice {
    invoice: u32,
}

impl<DB: Backend> Job<DB> for SyncInvoice {
    const KIND: &'static str = "sync_invoice";
    const MAX_ATTEMPTS: i32 = 1;

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        if ctx.attempt() == 1 {
            Err(JobError::failed(format!(
                "billing API answered 503 Service Unavailable for invoice {}",
                self.invoice
            )))
        } else {
            Ok(())
        }
    }
}

/// Always succeeds.
#[derive(Debug, Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

impl<DB: Backend> Job<DB> for SendEmail {
    const KIND: &'static str = "send_email";
    const QUEUE: &'static str = "mail";

    async fn run(self, _ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        Ok(())
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

async fn wait_for_port(port: u16) {
    let what = format!("chromedriver to start on port {port}");
    eventually(Duration::from_secs(20), &what, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
}

async fn start_browser(port: u16, profile: &Path, chromium: &Path) -> Browser {
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1160",
        "--force-device-scale-factor=1",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect::<Vec<_>>();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({ "args": args, "binary": chromium }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a chromedriver session")
}

/// Where screenshots go: `OFFLOAD_SCREENSHOTS` (`docs` refreshes the
/// README's), else the build's scratch directory, so a test run leaves the
/// work tree clean.
fn docs_dir() -> PathBuf {
    match std::env::var_os("OFFLOAD_SCREENSHOTS") {
        Some(dir) if dir == "docs" => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs"),
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
    }
}

/// Picks `state` in the jobs page's state filter, applies it, and waits
/// for the filtered page.
async fn filter_by_state(browser: &Browser, state: &str) {
    browser
        .wait()
        .for_element(Locator::Id("f-state"))
        .await
        .unwrap()
        .select_by_value(state)
        .await
        .unwrap();
    browser
        .find(Locator::Id("apply-filters"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let expected = format!("state={state}");
    eventually(
        Duration::from_secs(10),
        "the filter form to submit",
        || async {
            browser
                .current_url()
                .await
                .unwrap()
                .as_str()
                .contains(&expected)
        },
    )
    .await;
}

/// Fills and submits `queue`'s limits form on the overview.
async fn set_limits(browser: &Browser, queue: &str, per_key: &str, rate: &str) {
    // Live refresh off, as a user editing would have it: a refresh swaps
    // the form out from under the driver.
    let live = browser
        .find(Locator::Id("live-toggle"))
        .await
        .expect("the live toggle");
    if live.is_selected().await.unwrap() {
        live.click().await.unwrap();
    }
    let form = browser
        .find(Locator::Css(&format!(
            "form.limits-form[action$='/queues/{queue}/limits']"
        )))
        .await
        .expect("the queue's limits form");
    for (field, value) in [("partition", per_key), ("rate", rate)] {
        let input = form
            .find(Locator::Css(&format!("input[name={field}]")))
            .await
            .unwrap();
        input.clear().await.unwrap();
        input.send_keys(value).await.unwrap();
    }
    form.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn text_of(browser: &Browser, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} not found: {e}"))
        .text()
        .await
        .expect("element text")
}

#[tokio::test]
async fn browser_filters_retries_and_escapes() {
    let chromium = find_program("chromium").expect(
        "Chromium is not installed: run `apt-get install -y chromium chromium-driver` (the browser test needs it)",
    );
    let chromedriver = find_program("chromedriver").expect(
        "chromedriver is not installed: run `apt-get install -y chromium chromium-driver` (the browser test needs it)",
    );

    let (db, pool) = sqlite_pool().await;
    let client = Client::new(pool.clone());
    let mut jobs = Vec::new();
    for invoice in [1041, 1042, 1043] {
        let mut job = client
            .new_job(
                &SyncInvoice { invoice },
                offload::EnqueueOptions::new()
                    .queue("billing")
                    .tag("nightly"),
            )
            .unwrap();
        job.max_attempts = 1;
        jobs.push(job);
    }
    for n in 0..24 {
        jobs.push(
            client
                .new_job(
                    &SendEmail {
                        to: format!("user{n}@example.com"),
                    },
                    Default::default(),
                )
                .unwrap(),
        );
    }
    client.insert(&jobs).await.unwrap();

    let registry = Registry::new()
        .register::<SyncInvoice>()
        .register::<SendEmail>();
    let config = WorkerConfig::default()
        .poll_interval(Some(Duration::from_millis(100)))
        .queue("billing", 2)
        .queue("mail", 4);
    let worker = Worker::new(pool.clone(), registry, config)
        .start()
        .await
        .unwrap();
    wait_idle(&pool).await;

    // Waiting work in a queue no worker serves, and a hostile job.
    let mut later = NewJob::new("generate_report", r#"{"month":"2024-05"}"#);
    later.queue = "reports".to_owned();
    let mut hostile = NewJob::new(
        "render_page",
        r#"{"html":"<script>document.title='pwned'</script>","note":"<img src=x onerror=alert(1)>"}"#,
    );
    hostile.queue = "reports".to_owned();
    hostile.tags = vec!["<b>tag</b>".to_owned()];
    let ids = client
        .insert(&[later.clone(), later, hostile])
        .await
        .unwrap();
    let hostile_id = ids[2].id;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let config = DashboardConfig::new()
        .title("offload")
        .database(db.url())
        .refresh(Duration::from_secs(1));
    let app = offload_dashboard::router(pool.clone(), config);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{addr}");

    let driver_port = offload_test_fixture::free_port();
    let mut driver = tokio::process::Command::new(&chromedriver)
        .arg(format!("--port={driver_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    wait_for_port(driver_port).await;
    let profile = tempfile::tempdir().unwrap();
    let browser = start_browser(driver_port, profile.path(), &chromium).await;

    // Overview: counts per state and per queue, and the chart.
    browser.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(text_of(&browser, "#count-discarded .count").await, "3");
    assert_eq!(text_of(&browser, "#count-completed .count").await, "24");
    let queues = text_of(&browser, "#queues-heading + .table-wrap").await;
    for queue in ["billing", "mail", "reports"] {
        assert!(queues.contains(queue), "queue {queue} listed: {queues}");
    }
    browser
        .find(Locator::Css("svg.chart"))
        .await
        .expect("throughput chart");
    std::fs::create_dir_all(docs_dir()).unwrap();
    std::fs::write(
        docs_dir().join("dashboard-overview.png"),
        browser.screenshot().await.unwrap(),
    )
    .unwrap();

    // The limits form: a cap per key and a rate, then a refused cap.
    set_limits(&browser, "reports", "3", "10/s").await;
    eventually(
        Duration::from_secs(10),
        "the limits form to submit",
        || async {
            browser
                .current_url()
                .await
                .unwrap()
                .as_str()
                .contains("notice=limits")
        },
    )
    .await;
    let limits = client.limits("reports").await.unwrap();
    assert_eq!(
        limits.partition.and_then(|p| p.concurrency_limit()),
        Some(3)
    );
    assert_eq!(limits.rate.map(|r| r.limit()), Some(10));
    let queues = text_of(&browser, "#queues-heading + .table-wrap").await;
    assert!(
        queues.contains("3 per key; 0 keys running, 0 at the cap"),
        "the cap shown: {queues}"
    );
    set_limits(&browser, "reports", "many", "10/s").await;
    eventually(
        Duration::from_secs(10),
        "the refusal, naming the input",
        || async {
            match browser.find(Locator::Css("main")).await {
                Ok(main) => main
                    .text()
                    .await
                    .is_ok_and(|text| text.contains("\"many\"")),
                Err(_) => false,
            }
        },
    )
    .await;
    let unchanged = client.limits("reports").await.unwrap();
    assert_eq!(unchanged.partition, limits.partition);
    browser.goto(&format!("{base}/")).await.unwrap();

    // Jobs page, filtered to discarded with the form.
    browser
        .find(Locator::LinkText("Jobs"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    filter_by_state(&browser, "discarded").await;
    let states = browser
        .find_all(Locator::Css("table.jobs tbody .badge"))
        .await
        .unwrap();
    assert_eq!(states.len(), 3);
    for state in states {
        assert_eq!(state.text().await.unwrap(), "discarded");
    }

    // Open one, see its error, retry it, and watch it complete.
    browser
        .find(Locator::Css("table.jobs a.job-link"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let badge = browser
        .wait()
        .for_element(Locator::Id("job-state"))
        .await
        .unwrap();
    assert_eq!(badge.text().await.unwrap(), "discarded");
    assert!(text_of(&browser, ".errors")
        .await
        .contains("503 Service Unavailable"));
    let url = browser.current_url().await.unwrap();
    let job_id: i64 = url.path().rsplit('/').next().unwrap().parse().unwrap();
    std::fs::write(
        docs_dir().join("dashboard-job.png"),
        browser.screenshot().await.unwrap(),
    )
    .unwrap();
    browser
        .find(Locator::Id("action-retry"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let what = "the retried job to show as completed";
    eventually(Duration::from_secs(30), what, || async {
        // The page refreshes itself; no reload here.
        match browser.find(Locator::Id("job-state")).await {
            Ok(badge) => badge
                .text()
                .await
                .map(|t| t == "completed")
                .unwrap_or(false),
            Err(_) => false,
        }
    })
    .await;
    let job = client.job(job_id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.attempt, 2);
    assert!(text_of(&browser, "#job-attempt")
        .await
        .starts_with("2 of 2"));

    // Args holding markup are shown as text and never run.
    browser
        .goto(&format!("{base}/jobs/{hostile_id}"))
        .await
        .unwrap();
    let args = text_of(&browser, "#args").await;
    assert!(
        args.contains("<script>document.title='pwned'</script>"),
        "{args}"
    );
    assert!(args.contains("<img src=x onerror=alert(1)>"));
    let injected = browser
        .execute(
            "return document.querySelectorAll('main script, main img').length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(injected, serde_json::json!(0));
    let title = browser
        .execute("return document.title", vec![])
        .await
        .unwrap();
    assert_eq!(
        title,
        serde_json::json!(format!("Job #{hostile_id} · offload"))
    );
    assert!(browser.get_alert_text().await.is_err(), "no alert opened");
    assert!(text_of(&browser, ".meta").await.contains("<b>tag</b>"));

    browser.close().await.unwrap();
    driver.kill().await.ok();
    server.abort();
    worker.shutdown().await;
}

/// Mounted as the README shows (`nest("/admin", …)` with a token): logging
/// in lands on the overview, the nav's links work, and the state filter
/// shows the state chosen.
#[tokio::test]
async fn browser_logs_in_under_a_prefix_with_a_token() {
    let chromium = find_program("chromium").expect(
        "Chromium is not installed: run `apt-get install -y chromium chromium-driver` (the browser test needs it)",
    );
    let chromedriver = find_program("chromedriver").expect(
        "chromedriver is not installed: run `apt-get install -y chromium chromium-driver` (the browser test needs it)",
    );
    let (_db, pool) = sqlite_pool().await;
    insert(&pool, &[("default", false, &[]), ("default", false, &[])]).await;
    let worker = start_worker(&pool, &["default"]).await;
    wait_idle(&pool).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let token = "prefix-test-token-value";
    let dashboard = offload_dashboard::router(pool.clone(), DashboardConfig::new().token(token));
    let app = axum::Router::new().nest("/admin", dashboard);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{addr}/admin");

    let driver_port = offload_test_fixture::free_port();
    let mut driver = tokio::process::Command::new(&chromedriver)
        .arg(format!("--port={driver_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    wait_for_port(driver_port).await;
    let profile = tempfile::tempdir().unwrap();
    let browser = start_browser(driver_port, profile.path(), &chromium).await;

    // The mount point asks for the token, then lands on the overview.
    browser.goto(&base).await.unwrap();
    browser
        .wait()
        .for_element(Locator::Css("input[name=token]"))
        .await
        .expect("the login form")
        .send_keys(token)
        .await
        .unwrap();
    browser
        .find(Locator::Css("form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id("count-completed"))
        .await
        .expect("the overview after logging in");
    assert_eq!(text_of(&browser, "#count-completed .count").await, "2");

    // The nav's links lead to pages, not to 404s or the login page.
    browser
        .find(Locator::LinkText("Jobs"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .for_element(Locator::Id("f-state"))
        .await
        .expect("the jobs page");
    browser
        .find(Locator::LinkText("Overview"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id("count-completed"))
        .await
        .expect("the overview from the nav's Overview link");

    // Filtering by state keeps that state selected.
    browser.goto(&format!("{base}/jobs")).await.unwrap();
    filter_by_state(&browser, "completed").await;
    let selected = browser
        .execute(
            "const s = document.getElementById('f-state'); return s.options[s.selectedIndex].text",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(selected, serde_json::json!("completed"));

    browser.close().await.unwrap();
    driver.kill().await.ok();
    server.abort();
    worker.shutdown().await;
}
