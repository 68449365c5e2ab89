//! `sipconf loadtest` against the real daemon with a small crowd: every call is
//! set up, nothing is lost, every listener hears the talkers, and the delay
//! figures are there and plausible. The large figures are benchmarks in docs/performance.md,
//! not timed tests.

mod common;

use common::{Addresses, Daemon};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn number(value: &serde_json::Value, path: &[&str]) -> f64 {
    let mut v = value;
    for key in path {
        v = &v[*key];
    }
    v.as_f64()
        .unwrap_or_else(|| panic!("report has no number at {}: {value:#}", path.join(".")))
}

#[test]
fn twenty_members_three_talkers_all_hear_with_no_loss_and_plausible_delay() {
    twenty_members_three_talkers("max_members = 64");
}

#[test]
fn the_same_crowd_on_one_shared_port_all_hear_with_no_loss_and_plausible_delay() {
    twenty_members_three_talkers("max_members = 64\nshared_port = true");
}

#[test]
fn the_same_crowd_over_ipv6_all_hear_with_no_loss_and_plausible_delay() {
    let daemon = Daemon::start_with_addresses(Addresses::ipv6_loopback(), "max_members = 64", ROOM);
    crowd_against(daemon, &["--local-ip", "::1"]);
}

/// IPv4 phones calling a bridge whose SIP and RTP sockets are dual-stack
/// (bound to `::` in real life), the SDP address found per caller.
#[test]
fn the_same_crowd_over_ipv4_to_dual_stack_sockets_all_hear_with_no_loss() {
    for media_extra in ["max_members = 64", "max_members = 64\nshared_port = true"] {
        let daemon =
            Daemon::start_with_addresses(Addresses::dual_stack_loopback(), media_extra, ROOM);
        crowd_against(daemon, &[]);
    }
}

/// G.722 phones: the bridge answers G.722 and mixes the room at 16 kHz; the
/// phones decode it with their own decoders and time the 2 kHz pip in it.
#[test]
fn the_same_crowd_in_g722_all_hear_with_no_loss_and_plausible_delay() {
    crowd_against(
        Daemon::start("max_members = 64", ROOM),
        &["--codec", "g722"],
    );
}

const ROOM: &str = "[[room]]\nnumber = \"1000\"\nmax_members = 40\n";

/// Runs the crowd against a daemon with `media_extra` and checks the report.
fn twenty_members_three_talkers(media_extra: &str) {
    crowd_against(Daemon::start(media_extra, ROOM), &[]);
}

/// Runs `sipconf loadtest` with `args` and `--json`, killing it if it takes
/// longer than `limit`; checks that it succeeded and returns its stdout,
/// stderr and JSON report.
fn run_loadtest(args: &[String], limit: Duration) -> (String, String, String) {
    let dir = common::tempdir::TempDir::new("sipconf-loadtest");
    let json_path = dir.path().join("report.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipconf"))
        .arg("loadtest")
        .args(args)
        .arg("--json")
        .arg(&json_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sipconf loadtest");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sipconf loadtest {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("loadtest output");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        output.status.success(),
        "loadtest failed:\n{stdout}\n{stderr}"
    );
    let text = std::fs::read_to_string(&json_path).expect("JSON report written");
    (stdout, stderr, text)
}

/// Runs the crowd against `daemon`, with `extra` loadtest arguments, and
/// checks the report.
fn crowd_against(mut daemon: Daemon, extra: &[&str]) {
    // IPv4 phones dial a dual-stack bridge at its IPv4 address.
    let target = std::net::SocketAddr::new(daemon.sip.ip().to_canonical(), daemon.sip.port());
    let mut args = vec!["--target".to_string(), target.to_string()];
    let codec: &[&str] = if extra.contains(&"--codec") {
        &[]
    } else {
        &["--codec", "pcma"]
    };
    args.extend(
        ["--room", "1000", "--members", "20", "--talkers", "3"]
            .iter()
            .chain(&["--duration", "5", "--ramp", "50"])
            .chain(codec)
            .chain(extra)
            .map(|arg| arg.to_string()),
    );
    // 0.4 s ramp + 1 s settle + 5 s + hang-up: well inside 40 s unless stuck.
    let (stdout, stderr, text) = run_loadtest(&args, Duration::from_secs(40));
    assert!(
        stderr.contains("measuring"),
        "a progress line while it runs:\n{stderr}"
    );
    eprintln!("{stdout}");
    let report: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let codec = extra
        .iter()
        .position(|a| *a == "--codec")
        .map_or(
            "PCMA",
            |i| if extra[i + 1] == "g722" { "G722" } else { "?" },
        );
    assert_eq!(report["codec"], codec, "{text}");

    assert_eq!(number(&report, &["calls", "set_up"]), 20.0, "{text}");
    assert_eq!(number(&report, &["calls", "failed"]), 0.0, "{text}");
    assert_eq!(number(&report, &["calls", "hangups_failed"]), 0.0, "{text}");
    assert!(number(&report, &["calls", "setup_ms_max"]) > 0.0);
    // Every BYE was answered, so the hang-up figures cover all 20.
    let hangup_p50 = number(&report, &["calls", "hangup_ms_p50"]);
    let hangup_max = number(&report, &["calls", "hangup_ms_max"]);
    assert!(hangup_p50 > 0.0 && hangup_p50 <= hangup_max, "{text}");

    assert_eq!(number(&report, &["rtp", "lost_total"]), 0.0, "{text}");
    assert_eq!(number(&report, &["rtp", "stray_packets"]), 0.0, "{text}");
    // Every member was sent a packet every tick of the window (its edges may
    // count one packet more or less per member).
    let delivered = number(&report, &["rtp", "member_ticks_delivered_percent"]);
    assert!((95.0..=101.0).contains(&delivered), "{text}");
    assert_eq!(number(&report, &["rtp", "lost_per_member", "max"]), 0.0);
    // 6 s or more of 20 ms frames each way.
    assert!(
        number(&report, &["rtp", "sent_per_member", "min"]) >= 290.0,
        "{text}"
    );
    assert!(
        number(&report, &["rtp", "received_per_member", "min"]) >= 290.0,
        "{text}"
    );
    assert!(
        number(&report, &["rtp", "jitter_ms", "max"]) < 20.0,
        "{text}"
    );

    assert_eq!(number(&report, &["listeners", "count"]), 17.0, "{text}");
    assert_eq!(number(&report, &["listeners", "silent"]), 0.0, "{text}");
    let quietest = number(&report, &["listeners", "level_dbfs", "min"]);
    assert!(
        quietest > -45.0,
        "every listener hears the talkers; the quietest at {quietest:.1} dBFS"
    );

    let min = number(&report, &["delay_ms", "min_ms"]);
    let p50 = number(&report, &["delay_ms", "p50_ms"]);
    let p99 = number(&report, &["delay_ms", "p99_ms"]);
    assert!(0.0 < min && min <= p50, "delay min {min} ms, p50 {p50} ms");
    assert!(p50 < 200.0, "delay p50 {p50} ms");
    assert!(p50 <= p99 && p99 < 500.0, "delay p99 {p99} ms");
    let heard = number(&report, &["delay_ms", "samples"]);
    let expected = number(&report, &["delay_ms", "expected"]);
    assert!(
        expected >= 19.0 * 4.0 && heard >= 0.9 * expected,
        "pips heard {heard} of {expected}"
    );

    assert!(daemon.stop().is_some_and(|s| s.success()));
}

/// `--find-limit` against a room that takes 10 members: the runs with more
/// are refused calls (486), so the search must end at exactly 10 held and
/// 11 broken, having doubled from 4 and then halved the gap.
#[test]
fn find_limit_finds_how_many_members_a_room_takes() {
    let mut daemon = Daemon::start(
        "max_members = 64",
        "[[room]]\nnumber = \"1000\"\nmax_members = 10\n",
    );
    let sip = daemon.sip;
    // 16 calls at most leave the bridge's SIP tables far from full: 1 s pauses.
    let args: Vec<String> = format!(
        "--target {sip} --room 1000 --members 4 --talkers 2 --duration 1 --ramp 50 \
         --find-limit --limit-max 64 --limit-pause 1"
    )
    .split_whitespace()
    .map(String::from)
    .collect();
    // Six runs of about 3 s each and the pauses between them (1 s, 2 s after
    // a run that did not hold).
    let (stdout, _, text) = run_loadtest(&args, Duration::from_secs(90));
    assert!(
        stdout.contains("carries 10 members with unbroken audio; 11 broke"),
        "{stdout}"
    );
    let report: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(number(&report, &["members_held"]), 10.0, "{text}");
    assert_eq!(number(&report, &["members_broke"]), 11.0, "{text}");
    assert_eq!(report["ended"], "found", "{text}");
    let steps = report["steps"].as_array().expect("steps");
    let tried: Vec<f64> = steps.iter().map(|s| number(s, &["members"])).collect();
    assert_eq!(tried, [4.0, 8.0, 16.0, 12.0, 10.0, 11.0], "{text}");
    for step in steps {
        let members = number(step, &["members"]);
        let why = step["why"].to_string();
        if members <= 10.0 {
            assert_eq!(step["outcome"], "held", "{text}");
            assert_eq!(number(step, &["frames_lost"]), 0.0, "{text}");
        } else {
            // The calls over the room's 10 were refused, and only they.
            assert_eq!(step["outcome"], "broke", "{text}");
            assert_eq!(number(step, &["calls_failed"]), members - 10.0, "{text}");
            assert!(why.contains("486"), "{text}");
        }
    }
    assert!(daemon.stop().is_some_and(|s| s.success()));
}
