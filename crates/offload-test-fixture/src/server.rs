//! A private PostgreSQL server for tests that stop, restart or kill one:
//! its own data directory and port, so the shared server and other tests'
//! databases are never touched.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Where Debian puts PostgreSQL's server programs (`initdb`, `pg_ctl`).
const SERVER_VERSIONS_DIR: &str = "/usr/lib/postgresql";
/// The system user that owns the cluster when the tests run as root
/// (`initdb` refuses to run as root).
const CLUSTER_OWNER: &str = "postgres";
/// How long `pg_ctl` may wait for the server to start or stop.
const PG_CTL_WAIT_SECS: &str = "30";

/// A PostgreSQL server of the test's own on 127.0.0.1, stopped and deleted
/// when dropped.
///
/// ```no_run
/// # async fn example() {
/// let server = offload_test_fixture::PrivatePostgres::start();
/// let url = server.url(); // postgres://postgres@127.0.0.1:<port>/postgres
/// server.restart_fast(); // every connection is cut, as in a deploy
/// # }
/// ```
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
}

impl PrivatePostgres {
    /// Creates a cluster in a temp directory and starts it on a free port.
    ///
    /// # Panics
    ///
    /// If PostgreSQL's server programs are missing or the server does not
    /// start (the panic carries its log).
    pub fn start() -> Self {
        let bin = server_bin();
        let dir = tempfile::Builder::new()
            .prefix("offload-pg-")
            .tempdir()
            .expect("temp dir for a private PostgreSQL");
        let port = free_port();
        let server = Self { bin, dir, port };
        server.own_dir();
        let data = server.data_dir();
        server.as_owner(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        );
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             max_connections = 100\nfsync = off\n",
            path_str(server.dir.path())
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut file| std::io::Write::write_all(&mut file, conf.as_bytes()))
            .expect("configure the private PostgreSQL");
        server.pg_ctl(&["start"]);
        server
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Restarts in fast mode: every session is told "terminating connection
    /// due to administrator command" and cut, as in a deploy or failover.
    pub fn restart_fast(&self) {
        self.pg_ctl(&["-m", "fast", "restart"]);
    }

    /// Stops in fast mode; [`start_again`](Self::start_again) brings it back.
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "stop"]);
    }

    /// Starts a stopped server again, with its data.
    pub fn start_again(&self) {
        self.pg_ctl(&["start"]);
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        let mut all = vec![
            "-D",
            path_str(&data),
            "-l",
            path_str(&log),
            "-w",
            "-t",
            PG_CTL_WAIT_SECS,
        ];
        all.extend_from_slice(args);
        self.as_owner("pg_ctl", &all);
    }

    /// Runs one of the server's programs, as the cluster's owner when
    /// running as root.
    fn as_owner(&self, program: &str, args: &[&str]) -> Output {
        let program = self.bin.join(program);
        let output = owner_command(&program)
            .args(args)
            .output()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()));
        if !output.status.success() {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            panic!(
                "{} {args:?} failed: {}{}\nserver log:\n{log}",
                program.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        output
    }

    /// Hands the temp dir to the cluster's owner when running as root.
    fn own_dir(&self) {
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", CLUSTER_OWNER])
                .arg(self.dir.path())
                .status()
                .expect("run chown");
            assert!(
                status.success(),
                "chown of the private PostgreSQL's dir failed"
            );
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // Immediate: a test that failed mid-way must not wait on clients.
        let data = self.data_dir();
        let program = self.bin.join("pg_ctl");
        let args = ["-D", path_str(&data), "-m", "immediate", "-w", "stop"];
        let _ = owner_command(&program).args(args).output();
    }
}

/// `program`, run as the cluster's owner when the tests run as root.
fn owner_command(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", CLUSTER_OWNER, "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// The newest installed server's `bin` directory, or `PG_BIN` if set.
fn server_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir(SERVER_VERSIONS_DIR)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
                .filter(|bin| bin.join("pg_ctl").exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .expect("no PostgreSQL server programs under /usr/lib/postgresql; set PG_BIN")
}

/// A port on 127.0.0.1 nothing listens on now (the OS picks it), for a
/// server a test starts as another process.
///
/// ```
/// let port = offload_test_fixture::free_port();
/// assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
/// ```
pub fn free_port() -> u16 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port());
        match port {
            Ok(port) => return port,
            Err(error) if Instant::now() > deadline => panic!("no free port: {error}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}
