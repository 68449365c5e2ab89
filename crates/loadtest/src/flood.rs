//! `--flood RATE`: while the load test's phones call in, a thread sends
//! INVITEs to the room from another address (`--flood-from`, 127.0.0.2 by
//! default) at RATE a second, each a new call with an SDP offer, and never
//! ACKs an answer: the attack of docs/security.md ("Measured"). It counts
//! what the bridge answered; the phones' report says whether real callers
//! still got in and were heard.

use serde::Serialize;
use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the flood sent and what came back.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FloodReport {
    pub from: String,
    /// INVITEs a second asked for, and sent over the flood's length.
    pub rate_per_s: f64,
    pub sent: u64,
    pub seconds: f64,
    /// Distinct calls answered 200 (each holds an RTP port until its ACK timeout).
    pub answered: u64,
    /// 503s received (the pending-INVITE cap, the transaction share).
    pub refused_503: u64,
    /// Other final answers (404, 480, ...).
    pub other_final: u64,
}

impl FloodReport {
    pub fn to_text(&self) -> String {
        format!(
            "flood       {} INVITEs from {} in {:.1} s ({:.0}/s asked): {} calls answered, {} refused 503, {} other final answers, the rest unanswered\n",
            self.sent,
            self.from,
            self.seconds,
            self.rate_per_s,
            self.answered,
            self.refused_503,
            self.other_final
        )
    }
}

/// A running flood; [`Flood::stop`] ends it and returns its report.
pub struct Flood {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<FloodReport>>,
}

impl Flood {
    pub fn start(
        target: SocketAddr,
        room: &str,
        from: IpAddr,
        rate_per_s: f64,
    ) -> io::Result<Flood> {
        let socket = UdpSocket::bind((from, 0))?;
        socket.connect(target)?;
        socket.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let room = room.to_owned();
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("flood".to_owned())
            .spawn(move || run(&socket, target, &room, rate_per_s, &stopping))?;
        Ok(Flood { stop, thread })
    }

    pub fn stop(self) -> io::Result<FloodReport> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the flood thread panicked")))
    }
}

fn invite(from: SocketAddr, target: SocketAddr, room: &str, n: u64) -> String {
    let ip = from.ip();
    let sdp = format!(
        "v=0\r\no=- {n} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\n",
        40_000 + (n % 10_000) * 2
    );
    format!(
        "INVITE sip:{room}@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKfl{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:flood@{from}>;tag=fl{n}\r\nTo: <sip:{room}@{target}>\r\n\
         Call-ID: flood-{n}@{ip}\r\nCSeq: 1 INVITE\r\nContact: <sip:flood@{from}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

fn run(
    socket: &UdpSocket,
    target: SocketAddr,
    room: &str,
    rate_per_s: f64,
    stop: &AtomicBool,
) -> io::Result<FloodReport> {
    let from = socket.local_addr()?;
    let start = Instant::now();
    let mut report = FloodReport {
        from: from.ip().to_string(),
        rate_per_s,
        ..FloodReport::default()
    };
    let mut answered = HashSet::new();
    let mut buffer = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * rate_per_s) as u64;
        while report.sent < due {
            // A full socket buffer drops the INVITE as a congested network would.
            let _ = socket.send(invite(from, target, room, report.sent).as_bytes());
            report.sent += 1;
        }
        while let Ok(len) = socket.recv(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..len]);
            let Some(code) = text
                .strip_prefix("SIP/2.0 ")
                .and_then(|rest| rest.get(..3))
                .and_then(|code| code.parse::<u16>().ok())
            else {
                continue;
            };
            match code {
                200 => {
                    if let Some(call_id) = text.lines().find_map(|l| l.strip_prefix("Call-ID: ")) {
                        answered.insert(call_id.to_owned());
                    }
                }
                503 => report.refused_503 += 1,
                100..=199 => {}
                _ => report.other_final += 1,
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.answered = answered.len() as u64;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in bridge answers the first INVITE 200 twice (a retransmitted
    /// 200 is one call) and every other 503: the report counts one call
    /// answered and the 503s, and the flood sent what its rate asked for.
    #[test]
    fn the_flood_counts_calls_answered_once_and_refusals() {
        let bridge = UdpSocket::bind("127.0.0.1:0").expect("bind");
        bridge
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let target = bridge.local_addr().expect("addr");
        let flood = Flood::start(target, "1000", IpAddr::from([127, 0, 0, 2]), 100.0)
            .expect("flood starts");
        let mut buffer = vec![0u8; 4096];
        let mut invites = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while invites < 10 && Instant::now() < deadline {
            let Ok((len, from)) = bridge.recv_from(&mut buffer) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buffer[..len]).into_owned();
            assert!(text.starts_with("INVITE sip:1000@"), "{text}");
            assert_eq!(from.ip(), IpAddr::from([127, 0, 0, 2]));
            let call_id = text
                .lines()
                .find(|l| l.starts_with("Call-ID: "))
                .expect("Call-ID");
            let answers: &[&str] = if invites == 0 {
                &["200 OK", "200 OK"]
            } else {
                &["503 Service Unavailable"]
            };
            for status in answers {
                let answer = format!("SIP/2.0 {status}\r\n{call_id}\r\nContent-Length: 0\r\n\r\n");
                bridge.send_to(answer.as_bytes(), from).expect("answer");
            }
            invites += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
        let report = flood.stop().expect("report");
        assert_eq!(invites, 10, "the flood reached the bridge");
        assert!(report.sent >= 10, "{report:?}");
        assert_eq!(report.answered, 1, "{report:?}");
        assert_eq!(report.refused_503, 9, "{report:?}");
    }
}
