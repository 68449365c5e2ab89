//! systemd integration: the daemon speaks the sd_notify protocol on a real
//! `NOTIFY_SOCKET`: READY=1 once its sockets are bound, WATCHDOG=1 pings while
//! the media clock runs, STOPPING=1 on SIGTERM.

mod common;

use common::{tempdir::TempDir, Daemon};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// Collects notify messages until `until` returns true or `within` passes.
fn collect(
    socket: &UnixDatagram,
    messages: &mut Vec<String>,
    within: Duration,
    until: impl Fn(&[String]) -> bool,
) {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !until(messages) {
        if let Ok(n) = socket.recv(&mut buf) {
            messages.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_string),
            );
        }
    }
}

#[test]
fn notifies_ready_pings_the_watchdog_and_notifies_stopping() {
    let dir = TempDir::new("sipconf-notify");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let path_text = path.display().to_string();
    let mut daemon = Daemon::start_with_env(
        "",
        "[[room]]\nnumber = \"1000\"\n",
        &[
            ("NOTIFY_SOCKET", path_text.as_str()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut messages = Vec::new();
    let pings = |m: &[String]| m.iter().filter(|l| l.as_str() == "WATCHDOG=1").count();
    collect(&socket, &mut messages, Duration::from_secs(5), |m| {
        pings(m) >= 3
    });
    assert!(
        messages.iter().any(|l| l == "READY=1"),
        "READY=1 sent: {messages:?}"
    );
    assert!(
        pings(&messages) >= 3,
        "watchdog pinged at least 3 times in 5 s: {messages:?}"
    );
    let ready_at = messages.iter().position(|l| l == "READY=1");
    let first_ping = messages.iter().position(|l| l == "WATCHDOG=1");
    assert!(
        ready_at < first_ping,
        "READY comes before the first ping: {messages:?}"
    );

    let status = daemon.stop();
    collect(&socket, &mut messages, Duration::from_secs(2), |m| {
        m.iter().any(|l| l == "STOPPING=1")
    });
    assert!(
        messages.iter().any(|l| l == "STOPPING=1"),
        "STOPPING=1 sent: {messages:?}"
    );
    assert!(status.expect("exited").success());
}
