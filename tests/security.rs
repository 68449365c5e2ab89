//! The bridge on a hostile or broken network, end to end on loopback
//! (docs/security.md): a stranger on 127.0.0.2 sending RTP to a caller's
//! port is never heard and never sent audio; a phone whose NAT rewrote its
//! port is heard within half a second; PIN guessing from one address is
//! slowed and locked out while a colleague gets in; after a kill -9 the old
//! calls say why they ended, their callers get a BYE, and their streams do
//! not reach the new callers on the same ports; a full disk (a small tmpfs,
//! mounted by the test as root) answers 503, loses nothing, and recovers.

mod common;

use common::api::{api_sections, Api, SECRET, TOKEN};
use common::room::{assert_each_hears_the_others_and_not_itself, sine, AMPLITUDE};
use common::tempdir::TempDir;
use common::{free_port, Daemon};
use sipconf::media::rtp::{write_rtp, RtpHeader};
use sipconf::media::Codec;
use sipconf_testkit::meter::{db_ratio, tone_amplitude};
use sipconf_testkit::testphone::{CallError, KeyMode, KeyPress, Phone, PhoneOptions, Signal};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;

const ROOM: &str = "[[room]]\nnumber = \"1000\"\n";
const STRANGER: [u8; 4] = [127, 0, 0, 2];
/// The stranger's tone, and the callers'.
const STRANGER_HZ: f64 = 2000.0;
const CALLER_HZ: f64 = 700.0;

/// A daemon with the API on, `media_extra` in `[media]`, `extra` appended.
fn daemon_with_api(dir: &TempDir, media_extra: &str, extra: &str) -> (Daemon, Api) {
    let port = free_port();
    let store = dir.path().join("sipconf.db");
    let daemon = Daemon::start(media_extra, &api_sections(port, &store, extra));
    (daemon, Api::new(port))
}

async fn call(daemon: &Daemon, number: &str, local_ip: [u8; 4]) -> Result<Phone, CallError> {
    let mut options = PhoneOptions::new(daemon.sip, number, Codec::Pcmu);
    options.local_ip = IpAddr::from(local_ip);
    Phone::call(options).await
}

/// One counter of `/metrics`, with its labels (`name{labels}`).
async fn metric(api: &Api, sample: &str) -> f64 {
    let request = api
        .client
        .get(format!("{}/metrics", api.base))
        .basic_auth(TOKEN, Some(SECRET));
    let text = api.send(request).await.text;
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in /metrics:\n{text}"))
}

/// Sends `frames` 20 ms frames of a valid PCMU stream (one SSRC, sequence
/// numbers in order) of `freq_hz` from 127.0.0.2 to `target`, at real pace;
/// returns how many RTP packets reached the stranger meanwhile.
async fn stranger_streams(target: SocketAddr, frames: u32, freq_hz: f64) -> usize {
    let socket = UdpSocket::bind((IpAddr::from(STRANGER), 0))
        .await
        .expect("bind 127.0.0.2");
    let mut received = 0;
    let mut datagram = [0u8; 200];
    let mut incoming = [0u8; 2048];
    let start = tokio::time::Instant::now();
    for frame in 0..frames {
        let pcm: Vec<i16> = (0..160)
            .map(|n| {
                let t = f64::from(frame * 160 + n) / 8000.0;
                (AMPLITUDE * (2.0 * std::f64::consts::PI * freq_hz * t).sin()) as i16
            })
            .collect();
        let mut payload = [0u8; 160];
        Codec::Pcmu.encode(&pcm, &mut payload);
        let header = RtpHeader {
            payload_type: 0,
            marker: frame == 0,
            sequence: frame as u16,
            timestamp: frame * 160,
            ssrc: 0x5742_4e47,
        };
        let len = write_rtp(&header, &payload, &mut datagram).expect("fits");
        socket
            .send_to(&datagram[..len], target)
            .await
            .expect("send");
        while socket.try_recv_from(&mut incoming).is_ok() {
            received += 1;
        }
        tokio::time::sleep_until(start + Duration::from_millis(20 * u64::from(frame + 1))).await;
    }
    received
}

/// A caller and a listener in room 1000; a stranger on 127.0.0.2 streams to
/// the caller's port before the caller's first packet, while it talks,
/// through a 1.5 s pause, and after: the listener hears the caller and never
/// the stranger, and the stranger is sent nothing.
async fn a_stranger_is_never_heard_nor_answered(media_extra: &str) {
    let dir = TempDir::new("sec-stranger");
    let (daemon, api) = daemon_with_api(&dir, media_extra, ROOM);
    let mut caller = call(&daemon, "1000", [127, 0, 0, 1]).await.expect("caller");
    let mut listener = call(&daemon, "1000", [127, 0, 0, 1])
        .await
        .expect("listener");
    let target = caller.remote_rtp;
    // 0-0.5 s the stranger alone; 0.5-1.5 s the caller talks; 1.5-3 s it is
    // silent; 3-4 s it talks again. The stranger sends all along.
    let stranger = tokio::spawn(stranger_streams(target, 200, STRANGER_HZ));
    let listening = tokio::spawn(async move {
        let recording = listener
            .stream(&Signal::Silence, Duration::from_secs(4))
            .await;
        (listener, recording.expect("listener media"))
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    caller
        .stream(&sine(CALLER_HZ), Duration::from_secs(1))
        .await
        .expect("caller media");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    caller
        .stream(&sine(CALLER_HZ), Duration::from_secs(1))
        .await
        .expect("caller media");
    let sent_to_stranger = stranger.await.expect("stranger");
    let (mut listener, heard) = listening.await.expect("listener");

    assert_eq!(sent_to_stranger, 0, "the stranger was sent RTP");
    // The caller talks from about 0.5 s to 1.5 s and 3 s to 4 s (8000 samples a second).
    let talking = |from_ms: usize| &heard.samples[8 * from_ms..8 * (from_ms + 400)];
    assert!(
        heard.samples.len() >= 8 * 3900,
        "only {} samples",
        heard.samples.len()
    );
    for window in [talking(800), talking(3300)] {
        let level = db_ratio(tone_amplitude(window, CALLER_HZ), AMPLITUDE);
        assert!(level.abs() < 2.0, "the caller is heard at {level:.1} dB");
    }
    let stranger_level = db_ratio(tone_amplitude(&heard.samples, STRANGER_HZ), AMPLITUDE);
    eprintln!("the listener hears the stranger at {stranger_level:+.1} dB");
    assert!(
        stranger_level < -50.0,
        "the stranger is heard at {stranger_level:.1} dB"
    );
    let dropped = metric(
        &api,
        "sipconf_rtp_datagrams_dropped_total{reason=\"foreign\"}",
    )
    .await;
    assert!(dropped > 0.0, "no foreign datagram counted");
    caller.hangup().await.expect("bye");
    listener.hangup().await.expect("bye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_on_another_address_is_never_heard_nor_sent_audio_on_a_per_call_port() {
    a_stranger_is_never_heard_nor_answered("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_on_another_address_is_never_heard_nor_sent_audio_on_the_shared_port() {
    a_stranger_is_never_heard_nor_answered("shared_port = true").await;
}

/// The first 20 ms frame from which `samples` carry `freq_hz` at no less
/// than 10 dB under `AMPLITUDE`.
fn onset_frame(samples: &[i16], freq_hz: f64) -> Option<usize> {
    samples
        .chunks_exact(160)
        .position(|frame| db_ratio(tone_amplitude(frame, freq_hz), AMPLITUDE) > -10.0)
}

/// The phone's SDP names a port it does not send from (a NAT rewrote it):
/// on its own port, and on the shared one, it is heard within half a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_whose_nat_rewrites_its_port_is_heard_within_half_a_second() {
    for media_extra in ["", "shared_port = true"] {
        let dir = TempDir::new("sec-nat");
        let (daemon, _api) = daemon_with_api(&dir, media_extra, ROOM);
        let outside = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut options = PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu);
        options.advertised_rtp_port = Some(outside.local_addr().expect("bound").port());
        let behind_nat = Phone::call(options).await.expect("answered");
        let listener = call(&daemon, "1000", [127, 0, 0, 1])
            .await
            .expect("listener");
        let signals = [sine(CALLER_HZ), Signal::Silence];
        let results = common::room::stream_together(
            vec![behind_nat, listener],
            &signals,
            Duration::from_secs(2),
        )
        .await;
        let heard = &results[1].1.samples;
        let onset = onset_frame(heard, CALLER_HZ).expect("the phone behind the NAT is heard");
        eprintln!("{media_extra:?}: heard from frame {onset} (20 ms each)");
        assert!(onset * 20 <= 500, "heard only after {} ms", onset * 20);
        for (mut phone, _) in results {
            phone.hangup().await.expect("bye");
        }
    }
}

/// Keys pressed as RFC 4733 events, one every 200 ms from 100 ms on.
fn keys(entry: &str) -> Vec<KeyPress> {
    entry
        .chars()
        .enumerate()
        .map(|(i, digit)| KeyPress::new(100 + 200 * i as u64, digit, KeyMode::Rfc4733))
        .collect()
}

/// A guesser on 127.0.0.2 enters wrong PINs: each makes it wait, the third
/// locks its address out (it is told and hung up, and its next call is
/// refused with 403), while a colleague on 127.0.0.1 gets in with the PIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_guessing_is_slowed_then_locked_out_for_its_address_alone() {
    let dir = TempDir::new("sec-pin");
    let rooms = "[[room]]\nnumber = \"1000\"\npin = \"4321\"\npin_prompt = \"PIN.\"\n\n\
                 [pin]\ndelay_ms = 800\nmax_failures = 3\nlockout_s = 60\n";
    let (daemon, api) = daemon_with_api(&dir, "", rooms);
    let mut guesser = call(&daemon, "1000", STRANGER).await.expect("answered");
    // A wrong PIN, then one entered during the 0.8 s wait (dropped), then
    // two more after the waits (0.8 s, 1.6 s): the third counted locks the
    // address out.
    let entries = "1111#9#";
    guesser
        .stream_with_keys(
            &Signal::Silence,
            Duration::from_millis(1600),
            &keys(entries),
        )
        .await
        .expect("media");
    assert!(
        !guesser.wait_for_bye(Duration::from_millis(100)).await,
        "hung up after one counted wrong PIN"
    );
    assert_eq!(metric(&api, "sipconf_pin_failures_total").await, 1.0);
    for entry in ["2222#", "3333#"] {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        guesser
            .stream_with_keys(&Signal::Silence, Duration::from_millis(1200), &keys(entry))
            .await
            .expect("media");
    }
    assert!(
        guesser.wait_for_bye(Duration::from_secs(10)).await,
        "no BYE after the address was locked out"
    );
    assert!(daemon.wait_for_log("address locked out", Duration::from_secs(1)));
    assert_eq!(metric(&api, "sipconf_pin_failures_total").await, 3.0);
    assert_eq!(metric(&api, "sipconf_pin_lockouts_total").await, 1.0);
    assert_eq!(metric(&api, "sipconf_pin_sources_locked").await, 1.0);

    // The address is refused before it is answered.
    match call(&daemon, "1000", STRANGER).await {
        Err(CallError::Rejected(403, _)) => {}
        Err(other) => panic!("expected 403, got {other}"),
        Ok(_) => panic!("a locked-out address was answered"),
    }
    // A colleague on another address gets in with the right PIN at once.
    let mut colleague = call(&daemon, "1000", [127, 0, 0, 1])
        .await
        .expect("answered");
    colleague
        .stream_with_keys(
            &Signal::Silence,
            Duration::from_millis(1200),
            &keys("4321#"),
        )
        .await
        .expect("media");
    assert!(daemon.wait_for_log("member joined", Duration::from_secs(3)));
    colleague.hangup().await.expect("bye");
}

/// `len` consecutive ports free on 127.0.0.1 from an even one, in 47000-49999.
fn free_rtp_block(len: u16) -> u16 {
    let start = 47_000 + 2 * (std::process::id() % 700) as u16;
    (0..100u16)
        .map(|n| 47_000 + (start - 47_000 + 30 * n) % 2_900)
        .find(|&base| {
            let held: Vec<_> = (base..base + len)
                .map_while(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).ok())
                .collect();
            held.len() == usize::from(len)
        })
        .expect("a free block of RTP ports")
}

/// The call ids of room 1000's members, through the API.
async fn room_call_ids(api: &Api) -> Vec<String> {
    let list = api.get("/conferences").await.json();
    let conference = list
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|c| c["from"] == "1000" && c["state"] == "active")
        })
        .and_then(|c| c["id"].as_str().map(str::to_string))
        .expect("room 1000 is active");
    let members = api
        .get(&format!("/conferences/{conference}/members"))
        .await
        .json();
    members
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["call"].as_str())
        .map(|url| url.rsplit('/').next().unwrap_or_default().to_string())
        .collect()
}

/// Three callers, kill -9, restart on the same three RTP port pairs: the
/// calls say they ended in a crash, each caller gets a BYE, and two new
/// callers on the very ports the old phones still stream to hear each
/// other and nothing of the old streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_the_calls_say_crash_callers_get_a_bye_and_stale_streams_disturb_nobody() {
    let dir = TempDir::new("sec-crash");
    let base = free_rtp_block(6);
    let media = format!("rtp_ports = \"{base}-{}\"", base + 5);
    let store = dir.path().join("sipconf.db");
    let api_port = free_port();
    let daemon = Daemon::start(&media, &api_sections(api_port, &store, ROOM));
    let api = Api::new(api_port);
    let mut old = Vec::new();
    for _ in 0..3 {
        old.push(
            call(&daemon, "1000", [127, 0, 0, 1])
                .await
                .expect("answered"),
        );
    }
    let old_ids = room_call_ids(&api).await;
    assert_eq!(old_ids.len(), 3);
    drop(daemon); // SIGKILL: nothing is hung up on the way out

    // The old phones never hang up: they stream on, each its own tone, to
    // the ports the new bridge hands out again.
    let stale_hz = [500.0, 900.0, 1300.0];
    let stale: Vec<_> = old
        .into_iter()
        .zip(stale_hz)
        .map(|(mut phone, hz)| {
            tokio::spawn(async move {
                phone
                    .stream(&sine(hz), Duration::from_secs(5))
                    .await
                    .expect("stale media");
                phone
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let api_port = free_port();
    let daemon = Daemon::start(&media, &api_sections(api_port, &store, ROOM));
    let api = Api::new(api_port);
    api.wait_healthy().await;
    for id in &old_ids {
        let record = api.get(&format!("/calls/{id}")).await.json();
        assert_eq!(record["state"], "completed", "{record}");
        assert_eq!(record["cause"], "CRASH", "{record}");
    }
    let mut new = Vec::new();
    for _ in 0..2 {
        new.push(
            call(&daemon, "1000", [127, 0, 0, 1])
                .await
                .expect("answered"),
        );
    }
    let ports: Vec<u16> = new.iter().map(|p| p.remote_rtp.port()).collect();
    assert!(
        ports.iter().all(|port| (base..base + 6).contains(port)),
        "{ports:?} outside the range"
    );
    let freqs = [700.0, 1100.0];
    let signals: Vec<Signal> = freqs.iter().map(|&hz| sine(hz)).collect();
    let results = common::room::stream_together(new, &signals, Duration::from_secs(2)).await;
    assert_each_hears_the_others_and_not_itself(&results, &freqs);
    for (_, recording) in &results {
        let audio = common::room::steady(&recording.samples);
        for hz in stale_hz {
            let level = db_ratio(tone_amplitude(audio, hz), AMPLITUDE);
            assert!(
                level < -40.0,
                "a stale stream at {hz} Hz is heard at {level:.1} dB"
            );
        }
    }
    for task in stale {
        let mut phone = task.await.expect("stale phone");
        assert!(
            phone.wait_for_bye(Duration::from_secs(2)).await,
            "an old caller got no BYE"
        );
    }
    for (mut phone, _) in results {
        phone.hangup().await.expect("bye");
    }
    assert!(daemon.logged("sent BYE to callers the previous run left up"));
}

/// A tmpfs of `size` mounted on `path` for one test, unmounted when dropped.
struct Tmpfs {
    path: std::path::PathBuf,
}

impl Tmpfs {
    /// None (and why, on stderr) where it cannot be mounted: not root, or
    /// no `mount`. With `CI` set that is a failure.
    fn mount(path: std::path::PathBuf, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(&path).expect("mount point");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "sipconf-test"])
            .arg(&path)
            .status()
            .is_ok_and(|status| status.success());
        if mounted {
            return Some(Tmpfs { path });
        }
        let why = "cannot mount a tmpfs (needs root and `mount`)";
        if std::env::var_os("CI").is_some() {
            panic!("a_full_disk_...: {why}; CI runs as root");
        }
        eprintln!("SKIPPED a_full_disk_refuses_new_records_with_503_and_loses_nothing: {why}");
        None
    }

    /// Fills the file system up with one file; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 16 * 1024];
        // At most 64 MiB, far more than the tmpfs holds.
        for _ in 0..4096 {
            if file.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = file.sync_all();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

async fn health(api: &Api) -> serde_json::Value {
    let request = api.client.get(format!("{}/health", api.base));
    api.send(request).await.json()
}

/// The store on a small tmpfs that fills up: the API answers 503 with a
/// Catapult error and makes nothing, the store is logged once and reported
/// degraded, a call that was up goes on and a new room caller gets in and
/// hears it; when space returns the bridge recovers without a restart, and
/// after one every conference answered 201 is there, and no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_records_with_503_and_loses_nothing() {
    let dir = TempDir::new("sec-full");
    let Some(tmpfs) = Tmpfs::mount(dir.path().join("mnt"), "2m") else {
        return;
    };
    let store = tmpfs.path.join("sipconf.db");
    let api_port = free_port();
    let mut daemon = Daemon::start("", &api_sections(api_port, &store, ROOM));
    let api = Api::new(api_port);
    let mut created = Vec::new();
    for n in 0..3 {
        created.push(
            api.create_conference(serde_json::json!({"from": format!("+1555{n}")}))
                .await,
        );
    }
    let up = call(&daemon, "1000", [127, 0, 0, 1])
        .await
        .expect("answered");

    let filler = tmpfs.fill();
    for n in 0..5 {
        let answer = api
            .post(
                "/conferences",
                serde_json::json!({"from": format!("+1666{n}")}),
            )
            .await;
        assert_eq!(answer.status, 503, "{}", answer.text);
        let error = answer.json();
        assert_eq!(error["category"], "unavailable");
        assert_eq!(error["code"], "store-unavailable");
    }
    let listed = api.get("/conferences").await.json();
    let made_by_the_api = |listed: &serde_json::Value| {
        listed
            .as_array()
            .expect("a list")
            .iter()
            .filter(|c| c["from"].as_str().is_some_and(|from| from.starts_with('+')))
            .count()
    };
    assert_eq!(made_by_the_api(&listed), 3, "nothing made: {listed}");
    let status = health(&api).await;
    assert_eq!(status["status"], "degraded", "{status}");
    assert_eq!(status["store"], "degraded: disk full", "{status}");
    // Calls go on, and a new room caller gets in and hears the one up.
    let newcomer = call(&daemon, "1000", [127, 0, 0, 1])
        .await
        .expect("answered");
    let freqs = [700.0, 1100.0];
    let signals: Vec<Signal> = freqs.iter().map(|&hz| sine(hz)).collect();
    let results =
        common::room::stream_together(vec![up, newcomer], &signals, Duration::from_secs(2)).await;
    assert_each_hears_the_others_and_not_itself(&results, &freqs);
    let logged = daemon
        .log
        .lock()
        .expect("log")
        .iter()
        .filter(|line| line.contains("cannot write the store"))
        .count();
    assert_eq!(logged, 1, "logged once for the kind");
    assert_eq!(health(&api).await["status"], "degraded", "still full");
    assert!(metric(&api, "sipconf_records_unsaved").await > 0.0);

    // Space returns: healthy again without a restart, and the API creates.
    std::fs::remove_file(filler).expect("remove the filler");
    let mut recovered = false;
    for _ in 0..100 {
        if health(&api).await["status"] == "ok" {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "still degraded after space returned");
    assert!(daemon.logged("the store is writable again"));
    created.push(
        api.create_conference(serde_json::json!({"from": "+15559"}))
            .await,
    );
    for (mut phone, _) in results {
        phone.hangup().await.expect("bye");
    }
    assert!(daemon.stop().is_some_and(|status| status.success()));

    let _daemon = Daemon::start("", &api_sections(api_port, &store, ROOM));
    api.wait_healthy().await;
    let after_restart = api.get("/conferences").await.json();
    assert_eq!(
        made_by_the_api(&after_restart),
        created.len(),
        "only what was answered 201"
    );
    let listed: Vec<&serde_json::Value> =
        after_restart.as_array().expect("a list").iter().collect();
    for id in &created {
        assert!(listed.iter().any(|c| c["id"] == id.as_str()), "{id} lost");
    }
    // The room call made while the disk was full was written when it could be.
    let room = listed
        .iter()
        .find(|c| c["from"] == "1000")
        .and_then(|c| c["id"].as_str())
        .expect("the room's conference");
    let members = api
        .get(&format!("/conferences/{room}/members"))
        .await
        .json();
    assert_eq!(members.as_array().map(Vec::len), Some(2), "{members}");
}
