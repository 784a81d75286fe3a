//! The fault proxy against the real PostgreSQL server: each fault is seen
//! by a client as it would see the network failing.

use std::net::SocketAddr;
use std::time::Duration;

use offload_test_fixture::{admin_url, Cut, FaultProxy};
use sqlx::{Connection, PgConnection};

fn server() -> SocketAddr {
    let url = admin_url();
    let authority = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next());
    authority
        .and_then(|host_port| host_port.parse().ok())
        .unwrap_or_else(|| "127.0.0.1:5432".parse().expect("address"))
}

async fn proxied() -> (FaultProxy, PgConnection) {
    let proxy = FaultProxy::start(server()).await;
    let conn = PgConnection::connect(&proxy.route(&admin_url()))
        .await
        .expect("connect through the proxy");
    (proxy, conn)
}

async fn one(conn: &mut PgConnection) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT 1").fetch_one(conn).await
}

async fn backend_pids_on(port: u16) -> i64 {
    let mut admin = PgConnection::connect(&admin_url()).await.expect("admin");
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE client_port = $1")
        .bind(i32::from(port))
        .fetch_one(&mut admin)
        .await
        .expect("pg_stat_activity")
}

#[tokio::test]
async fn traffic_passes_and_the_server_sees_the_proxys_port() {
    let (proxy, mut conn) = proxied().await;
    assert_eq!(one(&mut conn).await.expect("select"), 1);
    assert_eq!(proxy.connections_opened(), 1);
    let ports = proxy.upstream_ports();
    assert_eq!(ports.len(), 1);
    assert_eq!(backend_pids_on(ports[0]).await, 1);
}

#[tokio::test]
async fn a_reset_fails_the_next_query_and_new_connections_pass() {
    let (proxy, mut conn) = proxied().await;
    let port = proxy.upstream_ports()[0];
    proxy.reset_all();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let error = one(&mut conn).await.expect_err("reset connection");
    assert!(matches!(error, sqlx::Error::Io(_)), "{error:?}");
    assert_eq!(backend_pids_on(port).await, 0, "the server side is closed");
    let mut again = PgConnection::connect(&proxy.route(&admin_url()))
        .await
        .expect("a new connection passes");
    assert_eq!(one(&mut again).await.expect("select"), 1);
}

#[tokio::test]
async fn a_refusal_refuses_until_healed() {
    let (proxy, mut conn) = proxied().await;
    proxy.refuse(true);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(one(&mut conn).await.is_err(), "open connections are reset");
    let refused = PgConnection::connect(&proxy.route(&admin_url())).await;
    let Err(sqlx::Error::Io(error)) = refused else {
        panic!("connect while refusing: {refused:?}");
    };
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
    proxy.heal();
    let mut again = PgConnection::connect(&proxy.route(&admin_url()))
        .await
        .expect("connect after healing");
    assert_eq!(one(&mut again).await.expect("select"), 1);
}

#[tokio::test]
async fn a_stall_holds_a_query_until_traffic_flows() {
    let (proxy, mut conn) = proxied().await;
    proxy.stall();
    let held = tokio::time::timeout(Duration::from_millis(300), one(&mut conn)).await;
    assert!(held.is_err(), "no answer while stalled");
    // The cancelled query left the connection mid-exchange; a new one shows
    // traffic flowing again.
    proxy.flow();
    let mut again = PgConnection::connect(&proxy.route(&admin_url()))
        .await
        .expect("connect after the stall");
    assert_eq!(one(&mut again).await.expect("select"), 1);
}

#[tokio::test]
async fn a_half_open_connection_is_silent_to_the_client_and_gone_on_the_server() {
    let (proxy, mut conn) = proxied().await;
    let port = proxy.upstream_ports()[0];
    proxy.cut(port, Cut::HalfOpen);
    let mut gone = false;
    for _ in 0..100 {
        if backend_pids_on(port).await == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the server's side closes");
    let silent = tokio::time::timeout(Duration::from_millis(500), one(&mut conn)).await;
    assert!(silent.is_err(), "the client hears nothing: {silent:?}");
}
