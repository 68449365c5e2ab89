//! Per-source limits and connection caps end to end on loopback
//! (docs/security.md, "Per-source limits" and "Connections"): an INVITE
//! flood from 127.0.0.2 while callers from 127.0.0.1 get in and hear each
//! other; an OPTIONS flood that does not lock anyone else out; a denied
//! address that gets no answer; idle SIP-over-TCP and API connections closed
//! after their timeout; a per-IP connection cap that leaves room for
//! another address.

mod common;

use common::api::{Api, SECRET, TOKEN, USER};
use common::room::{assert_each_hears_the_others_and_not_itself, sine, stream_together};
use common::tempdir::TempDir;
use common::{free_port, Daemon};
use sipconf::media::Codec;
use sipconf_testkit::testphone::{Phone, PhoneOptions};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::time::{timeout, Instant};

const ROOM: &str = "[[room]]\nnumber = \"1000\"\n";
const FLOODER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

/// An INVITE to room 1000 from `from` with a PCMU offer; `n` makes it a new call.
fn invite(from: SocketAddr, bridge: SocketAddr, n: u32) -> String {
    let sdp = format!(
        "v=0\r\no=- {n} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n",
        ip = from.ip(),
        port = 40_000 + n % 1000 * 2,
    );
    format!(
        "INVITE sip:1000@{bridge} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKflood{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:flood@{from}>;tag=f{n}\r\nTo: <sip:1000@{bridge}>\r\n\
         Call-ID: flood-{n}@{ip}\r\nCSeq: 1 INVITE\r\nContact: <sip:flood@{from}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len(),
        ip = from.ip(),
    )
}

fn options(from: SocketAddr, bridge: SocketAddr, transport: &str, n: u32) -> String {
    format!(
        "OPTIONS sip:1000@{bridge} SIP/2.0\r\nVia: SIP/2.0/{transport} {from};branch=z9hG4bKopt{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{from}>;tag=o{n}\r\nTo: <sip:1000@{bridge}>\r\n\
         Call-ID: options-{n}@{ip}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        ip = from.ip(),
    )
}

/// Sends `count` requests made by `request` from a socket on 127.0.0.2 at
/// about `per_s`, never ACKing anything; returns the answers received, each
/// as its status line and Call-ID (a 200 is retransmitted until its ACK).
async fn flood(
    bridge: SocketAddr,
    count: u32,
    per_s: u32,
    request: fn(SocketAddr, SocketAddr, u32) -> String,
) -> Vec<(String, String)> {
    let socket = UdpSocket::bind((FLOODER, 0)).await.expect("bind 127.0.0.2");
    let from = socket.local_addr().expect("addr");
    let start = Instant::now();
    let mut statuses = Vec::new();
    let mut buffer = vec![0u8; 4096];
    let mut drain = |socket: &UdpSocket, statuses: &mut Vec<(String, String)>| {
        while let Ok(len) = socket.try_recv(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..len]);
            if text.starts_with("SIP/2.0 ") {
                let status = text.lines().next().unwrap_or_default().to_owned();
                let call_id = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Call-ID: "))
                    .unwrap_or_default()
                    .to_owned();
                statuses.push((status, call_id));
            }
        }
    };
    socket.connect(bridge).await.expect("connect");
    for n in 0..count {
        let _ = socket.send(request(from, bridge, n).as_bytes()).await;
        drain(&socket, &mut statuses);
        if n % 10 == 9 {
            let due = start + Duration::from_secs_f64(f64::from(n + 1) / f64::from(per_s));
            tokio::time::sleep_until(due).await;
        }
    }
    // Answers still on their way.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drain(&socket, &mut statuses);
    statuses
}

fn caller(daemon: &Daemon) -> PhoneOptions {
    PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu)
}

/// Sends `request` from a fresh UDP socket on `ip` and waits up to `within`
/// for a status line.
async fn ask(ip: IpAddr, bridge: SocketAddr, within: Duration, n: u32) -> Option<String> {
    let socket = UdpSocket::bind((ip, 0)).await.expect("bind");
    let from = socket.local_addr().expect("addr");
    socket
        .send_to(options(from, bridge, "UDP", n).as_bytes(), bridge)
        .await
        .expect("send");
    let mut buffer = vec![0u8; 4096];
    let (len, _) = timeout(within, socket.recv_from(&mut buffer))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buffer[..len]).into_owned();
    Some(text.lines().next().unwrap_or_default().to_owned())
}

/// 127.0.0.2 sends 2000 INVITEs at 1000 a second and ACKs none: without a
/// cap they would hold every one of the 50 RTP port pairs until their ACK
/// timeout. It gets 8 calls at most; two callers from 127.0.0.1 get in
/// meanwhile and hear each other.
#[tokio::test]
async fn an_invite_flood_leaves_room_for_callers_from_another_address() {
    let sip = "max_pending_invites_per_ip = 8\nmax_pending_invites = 20\n";
    let daemon = Daemon::start_with_sip(sip, "", ROOM);
    let flooding = tokio::spawn(flood(daemon.sip, 2000, 1000, invite));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = Phone::call(caller(&daemon)).await.expect("first caller in");
    let second = Phone::call(caller(&daemon))
        .await
        .expect("second caller in");
    let results = stream_together(
        vec![first, second],
        &[sine(500.0), sine(1300.0)],
        Duration::from_secs(2),
    )
    .await;
    assert_each_hears_the_others_and_not_itself(&results, &[500.0, 1300.0]);
    let statuses = flooding.await.expect("flood");
    let answered: std::collections::HashSet<_> = statuses
        .iter()
        .filter(|(status, _)| status == "SIP/2.0 200 OK")
        .map(|(_, call_id)| call_id)
        .collect();
    let answered = answered.len();
    let refused = statuses
        .iter()
        .filter(|(status, _)| status == "SIP/2.0 503 Service Unavailable")
        .count();
    eprintln!("flood: {answered} answered (200), {refused} refused (503)");
    assert!(
        answered <= 8,
        "{answered} of the flood's calls were answered"
    );
    assert!(refused > 0, "the flood was never told 503: {statuses:?}");
}

/// 127.0.0.2 sends OPTIONS at 1000 a second: it gets answers until it holds
/// its share of the transaction table (32 here), then silence, each request
/// counted in `/metrics` as over its rate or its share; the table is not
/// full, so 127.0.0.1 is answered and calls in.
#[tokio::test]
async fn an_options_flood_does_not_lock_others_out() {
    let dir = TempDir::new("limits-options");
    let api_port = free_port();
    let daemon = daemon_with_api(&dir, api_port, "max_transactions_per_ip = 32\n", "");
    let statuses = flood(daemon.sip, 1000, 1000, |from, bridge, n| {
        options(from, bridge, "UDP", n)
    })
    .await;
    assert_eq!(statuses.len(), 32, "answers to the flood: {statuses:?}");
    assert!(statuses
        .iter()
        .all(|(status, _)| status == "SIP/2.0 200 OK"));
    let answer = ask(LOCAL, daemon.sip, Duration::from_secs(5), 7).await;
    assert_eq!(answer.as_deref(), Some("SIP/2.0 200 OK"));
    Phone::call(caller(&daemon))
        .await
        .expect("a caller gets in");
    let metrics = get_url(api_port, "/metrics").await.text;
    let counter = |reason: &str| -> u64 {
        let sample = format!("sipconf_sip_requests_refused_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&sample)?.parse().ok())
            .unwrap_or_else(|| panic!("no {sample} in\n{metrics}"))
    };
    assert!(counter("transactions") > 0, "{metrics}");
    assert_eq!(
        counter("rate") + counter("transactions"),
        1000 - 32,
        "every OPTIONS not answered is counted once"
    );
}

/// `deny` wins over `allow`: 127.0.0.2 gets no answer at all, to OPTIONS or
/// to an INVITE, while 127.0.0.1 calls in.
#[tokio::test]
async fn a_denied_address_gets_silence_and_others_call_in() {
    let sip = "allow = [\"127.0.0.0/8\"]\ndeny = [\"127.0.0.2/32\"]\n";
    let daemon = Daemon::start_with_sip(sip, "", ROOM);
    assert_eq!(
        ask(FLOODER, daemon.sip, Duration::from_secs(1), 1).await,
        None
    );
    let statuses = flood(daemon.sip, 5, 100, invite).await;
    assert!(
        statuses.is_empty(),
        "a denied address was answered: {statuses:?}"
    );
    Phone::call(caller(&daemon))
        .await
        .expect("127.0.0.1 gets in");
}

/// A TCP connection from `ip` to `to`.
async fn connect_from(ip: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(ip, 0)).expect("bind");
    socket.connect(to).await.expect("connect")
}

/// Whether the far end closes `stream` within `within` (reading nothing).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Sends OPTIONS over `stream` and returns the answer's status line.
async fn options_over_tcp(stream: &mut TcpStream, bridge: SocketAddr, n: u32) -> String {
    let from = stream.local_addr().expect("addr");
    stream
        .write_all(options(from, bridge, "TCP", n).as_bytes())
        .await
        .expect("write");
    let mut buffer = vec![0u8; 4096];
    let len = timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buffer[..len]).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

async fn get_url(api_port: u16, path: &str) -> common::api::Answer {
    let api = Api::new(api_port);
    api.get_url(&format!("{}{path}", api.base)).await
}

/// A daemon with the API on `api_port`, `api_extra` in `[api]`, `sip_extra` in `[sip]`.
fn daemon_with_api(dir: &TempDir, api_port: u16, sip_extra: &str, api_extra: &str) -> Daemon {
    let store = dir.path().join("sipconf.db");
    let sections = format!(
        "[api]\nlisten = \"127.0.0.1:{api_port}\"\nuser_id = \"{USER}\"\ntoken = \"{TOKEN}\"\n\
         secret = \"{SECRET}\"\n{api_extra}\n[store]\npath = \"{}\"\n\n{ROOM}",
        store.display()
    );
    Daemon::start_with_sip(sip_extra, "", &sections)
}

/// With 1 s idle timeouts, a SIP-over-TCP connection that sent one OPTIONS
/// and an API connection that sent nothing are both closed within the
/// timeout and a margin.
#[tokio::test]
async fn idle_tcp_and_api_connections_are_closed_after_the_timeout() {
    let dir = TempDir::new("limits-idle");
    let api_port = free_port();
    let daemon = daemon_with_api(
        &dir,
        api_port,
        "tcp_idle_timeout_s = 1\n",
        "idle_timeout_s = 1\n",
    );
    let api_addr = SocketAddr::new(LOCAL, api_port);
    let mut sip = connect_from(LOCAL, daemon.sip).await;
    assert_eq!(
        options_over_tcp(&mut sip, daemon.sip, 1).await,
        "SIP/2.0 200 OK"
    );
    let mut api = connect_from(LOCAL, api_addr).await;
    assert!(
        closed_within(&mut sip, Duration::from_secs(4)).await,
        "SIP connection kept"
    );
    assert!(
        closed_within(&mut api, Duration::from_secs(4)).await,
        "API connection kept"
    );
    let metrics = get_url(api_port, "/metrics").await;
    for sample in [
        "sipconf_connections_closed_idle_total{listener=\"sip\"} 1",
        "sipconf_connections_closed_idle_total{listener=\"api\"} 1",
    ] {
        assert!(
            metrics.text.contains(sample),
            "no `{sample}` in\n{}",
            metrics.text
        );
    }
}

/// Three connections per address: 127.0.0.2's fourth, to SIP or to the API,
/// is closed at once while its first three still work and 127.0.0.1
/// connects to both.
#[tokio::test]
async fn the_per_address_connection_cap_leaves_room_for_another_address() {
    let dir = TempDir::new("limits-cap");
    let api_port = free_port();
    let daemon = daemon_with_api(
        &dir,
        api_port,
        "tcp_max_connections_per_ip = 3\n",
        "max_connections_per_ip = 3\n",
    );
    let api_addr = SocketAddr::new(LOCAL, api_port);
    for target in [daemon.sip, api_addr] {
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(connect_from(FLOODER, target).await);
        }
        let mut fourth = connect_from(FLOODER, target).await;
        assert!(
            closed_within(&mut fourth, Duration::from_secs(5)).await,
            "a fourth connection from 127.0.0.2 to {target} was kept"
        );
        if target == daemon.sip {
            assert_eq!(
                options_over_tcp(&mut held[0], target, 2).await,
                "SIP/2.0 200 OK"
            );
            let mut local = connect_from(LOCAL, target).await;
            assert_eq!(
                options_over_tcp(&mut local, target, 3).await,
                "SIP/2.0 200 OK"
            );
        } else {
            let health = get_url(api_port, "/health").await;
            assert_eq!(health.status, 200, "127.0.0.1 reaches the API");
        }
    }
    let metrics = get_url(api_port, "/metrics").await;
    for sample in [
        "sipconf_connections_refused_total{listener=\"sip\",reason=\"per_ip\"} 1",
        "sipconf_connections_refused_total{listener=\"api\",reason=\"per_ip\"} 1",
    ] {
        assert!(
            metrics.text.contains(sample),
            "no `{sample}` in\n{}",
            metrics.text
        );
    }
}
