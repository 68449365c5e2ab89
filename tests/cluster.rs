//! Many bridges, one number plan: the Kamailio front door shipped in
//! deploy/kamailio (the file itself, with this network's addresses given as
//! `-A` defines) in front of three bridges, each host in its own network
//! namespace on one Ethernet segment built by the test, and the phones in a
//! fifth. The dispatcher hashes the room number, so every caller of a room
//! lands on the same bridge and the rooms spread over the bridges; each
//! caller hears the others of its room. When a bridge stops, the OPTIONS
//! probes take it out and its room's next callers land together on another.

mod common;

use common::kamailio::Kamailio;
use common::netns::{self, Lab};
use common::{require_tool, tempdir::TempDir, Addresses, Daemon};
use sipconf::media::Codec;
use sipconf_testkit::room::{assert_each_hears_the_others_and_not_itself, sine, stream_together};
use sipconf_testkit::testphone::{Phone, PhoneOptions};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

const ROOMS: [&str; 3] = ["1000", "1001", "1002"];
const BRIDGES: [&str; 3] = ["bridge1", "bridge2", "bridge3"];
/// The front door probes each bridge this often (the shipped default is 5 s).
const PROBE_INTERVAL_S: u64 = 1;
/// Two tones, one per caller of a room.
const TONES_HZ: [f64; 2] = [500.0, 900.0];

/// The shipped front door on port 5060 of the `frontdoor` host, in front of `bridges`.
fn start_front_door(lab: &Lab, dir: &TempDir, bridges: &[SocketAddr]) -> Kamailio {
    let list = dir.path().join("dispatcher.list");
    let lines: String = bridges
        .iter()
        .map(|bridge| format!("1 sip:{bridge} 8\n"))
        .collect();
    std::fs::write(&list, lines).expect("write dispatcher.list");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kamailio/kamailio.cfg");
    let addr = SocketAddr::new(lab.addr("frontdoor"), 5060);
    let defines = [
        format!("LISTEN=udp:{addr}"),
        format!("DISPATCHER_LIST=\"{}\"", list.display()),
        format!("PROBE_INTERVAL_S={PROBE_INTERVAL_S}"),
    ];
    Kamailio::start(dir, &config, &defines, Some(&lab.netns("frontdoor")), addr)
}

/// Waits (at most 10 s) until the front door answers an OPTIONS to itself.
async fn wait_until_answering(front_door: &Kamailio, local_ip: IpAddr) {
    let probe = tokio::net::UdpSocket::bind((local_ip, 0))
        .await
        .expect("bind");
    let local = probe.local_addr().expect("addr");
    let target = front_door.addr;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 4096];
    for attempt in 0.. {
        assert!(
            Instant::now() < deadline,
            "the front door never answered; its log:\n{}",
            front_door.log()
        );
        let options = format!(
            "OPTIONS sip:{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKfd{attempt}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=p{attempt}\r\nTo: <sip:{target}>\r\n\
             Call-ID: fd{attempt}@{local}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        let _ = probe.send_to(options.as_bytes(), target).await;
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(300), probe.recv_from(&mut buf)).await
        {
            if buf[..n].starts_with(b"SIP/2.0 200") {
                return;
            }
        }
    }
}

/// A caller of `room` through the front door; the bridge it reached is the
/// address its media goes to.
async fn call(lab: &Lab, front_door: &Kamailio, room: &str) -> (Phone, IpAddr) {
    let mut options = PhoneOptions::new(front_door.addr, room, Codec::Pcmu);
    options.local_ip = lab.addr("phones");
    let phone = Phone::call(options).await.unwrap_or_else(|e| {
        panic!(
            "call to room {room} through the front door: {e}; its log:\n{}",
            front_door.log()
        )
    });
    let bridge = phone.remote_rtp.ip();
    (phone, bridge)
}

/// The two callers of one room talk at once: each hears the other at the
/// level sent and not itself.
async fn assert_they_hear_each_other(phones: Vec<Phone>) -> Vec<Phone> {
    let signals: Vec<_> = TONES_HZ.iter().map(|&f| sine(f)).collect();
    let results = stream_together(phones, &signals, Duration::from_secs(2)).await;
    assert_each_hears_the_others_and_not_itself(&results, &TONES_HZ);
    results.into_iter().map(|(phone, _)| phone).collect()
}

async fn spread_and_fail_over(lab: &Lab) {
    let rooms: String = ROOMS
        .iter()
        .map(|room| format!("[[room]]\nnumber = \"{room}\"\n\n"))
        .collect();
    let mut bridges: Vec<Daemon> = BRIDGES
        .iter()
        .map(|host| {
            Daemon::start_in_netns(&lab.netns(host), Addresses::on(lab.addr(host)), "", &rooms)
        })
        .collect();
    let dir = TempDir::new("sipconf-cluster");
    let sip: Vec<SocketAddr> = bridges.iter().map(|bridge| bridge.sip).collect();
    let front_door = start_front_door(lab, &dir, &sip);
    wait_until_answering(&front_door, lab.addr("phones")).await;

    // Two callers per room: both land on the room's bridge.
    let mut landed = Vec::new();
    let mut callers = Vec::new();
    for room in ROOMS {
        let (first, first_bridge) = call(lab, &front_door, room).await;
        let (second, second_bridge) = call(lab, &front_door, room).await;
        assert_eq!(
            first_bridge, second_bridge,
            "the callers of room {room} landed on two bridges"
        );
        eprintln!("room {room} is on {first_bridge}");
        landed.push(first_bridge);
        callers.push(vec![first, second]);
    }
    let mut distinct = landed.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() > 1,
        "every room landed on {distinct:?}: the dispatcher did not spread them"
    );
    for phones in callers.iter_mut() {
        *phones = assert_they_hear_each_other(std::mem::take(phones)).await;
    }

    // The first room's bridge stops; its room's callers hear nothing more.
    let room = ROOMS[0];
    let gone = landed[0];
    let index = sip
        .iter()
        .position(|addr| addr.ip() == gone)
        .expect("a bridge of this lab");
    bridges[index].stop();
    drop(callers.remove(0));

    // With no call to notice it, the probes take the stopped bridge out
    // within a few probe intervals...
    let down = format!("BRIDGE DOWN sip:{}", sip[index]);
    assert!(
        front_door.wait_for_log(&down, Duration::from_secs(30)),
        "the probes never took the stopped bridge out; its log:\n{}",
        front_door.log()
    );
    // ...and the room's next callers go straight to another bridge, together.
    let (early, early_bridge) = call(lab, &front_door, room).await;
    let (late, late_bridge) = call(lab, &front_door, room).await;
    assert_ne!(early_bridge, gone, "a caller reached the stopped bridge");
    assert_eq!(
        late_bridge, early_bridge,
        "the next callers of room {room} landed on two bridges"
    );
    assert!(
        !front_door.log().contains("NO ANSWER"),
        "a call was sent to the bridge the probes took out; the front door's log:\n{}",
        front_door.log()
    );
    let mut phones = assert_they_hear_each_other(vec![early, late]).await;

    // The front door record-routed the calls: the BYE goes through it.
    for phone in phones.iter_mut() {
        let route = phone.route_set().to_vec();
        assert_eq!(
            route.len(),
            1,
            "the bridge's 200 carries the front door's Record-Route: {route:?}"
        );
        // Port 5060 is the default, so the front door leaves it out.
        assert!(
            route[0].starts_with(&format!("<sip:{};lr", front_door.addr.ip())),
            "{route:?}"
        );
        let status = phone.hangup().await.unwrap_or_else(|e| {
            panic!(
                "BYE through the front door: {e}; its log:\n{}",
                front_door.log()
            )
        });
        assert_eq!(status, 200, "the bridge answers the BYE routed to it");
    }

    // The other rooms stayed where they were.
    for (i, room) in ROOMS.iter().enumerate().skip(1) {
        if landed[i] != gone {
            let (_phone, bridge) = call(lab, &front_door, room).await;
            assert_eq!(bridge, landed[i], "room {room} moved");
        }
    }

    // A bridge that hangs (frozen, as a wedged box) takes the probes a
    // while to notice, unanswered OPTIONS time out first; a caller meanwhile
    // is sent to the next bridge once its INVITE goes unanswered.
    let (room, hung) = ROOMS
        .iter()
        .zip(&landed)
        .find(|(_, bridge)| **bridge != gone)
        .map(|(room, bridge)| (*room, *bridge))
        .expect("a room on a bridge still up");
    let hung_index = sip
        .iter()
        .position(|addr| addr.ip() == hung)
        .expect("a bridge of this lab");
    signal(&bridges[hung_index], "STOP");
    let (moved, moved_to) = call(lab, &front_door, room).await;
    signal(&bridges[hung_index], "CONT");
    assert_ne!(moved_to, hung, "a caller reached the hung bridge");
    assert!(
        front_door.log().contains(&format!(
            "NO ANSWER room={room} from=sip:{}",
            sip[hung_index]
        )),
        "the caller was not moved by the no-answer failover; the front door's log:\n{}",
        front_door.log()
    );
    drop(moved);
}

/// Sends `signal` (STOP, CONT) to a bridge.
fn signal(bridge: &Daemon, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(bridge.pid().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} the bridge");
}

#[test]
fn rooms_spread_over_bridges_by_number_and_move_when_their_bridge_stops() {
    const NAME: &str = "rooms_spread_over_bridges_by_number_and_move_when_their_bridge_stops";
    if !require_tool("kamailio", NAME) || !netns::can_build(NAME) {
        return;
    }
    let lab = Lab::new(&["frontdoor", "bridge1", "bridge2", "bridge3", "phones"]);
    // The test runs on a thread of its own in the phones' namespace: the
    // phones' sockets are opened there.
    let outcome = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                lab.enter("phones");
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(spread_and_fail_over(&lab));
            })
            .join()
    });
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
