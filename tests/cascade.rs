//! One room across two bridges, joined by a SIP call between them: kept up
//! by the bridge itself from `[[room]] cascade`, or placed through the API
//! (`POST /calls` with the room's `conferenceId`). The link is a member on
//! each side, and each side sends it the mix of everyone but the link, so
//! callers on either bridge hear those on the other at the level sent and
//! never hear themselves come back. A cascade link has no keypad (a mix of
//! two voices that looks like a key crosses it whole), comes back when it
//! is cut, and two bridges that cascade to each other keep one link.

mod common;

use common::api::{start_with_api, Api};
use common::{free_port, tempdir::TempDir, Daemon};
use serde_json::json;
use sipconf::media::Codec;
use sipconf_testkit::audio::onset;
use sipconf_testkit::meter::{db_ratio, tone_amplitude};
use sipconf_testkit::room::{
    assert_each_hears_the_others_and_not_itself, sine, steady, stream_together, AMPLITUDE,
};
use sipconf_testkit::testphone::{Phone, PhoneOptions, Signal};
use std::time::{Duration, Instant};

/// One tone per caller: two on bridge A, two on bridge B. No two of them
/// make a DTMF pair: the link carries mixes, and a keypad on it would take
/// 852 + 1209 Hz for a key.
const TONES_HZ: [f64; 4] = [350.0, 500.0, 1800.0, 2500.0];

async fn call(bridge: &Daemon, room: &str) -> Phone {
    Phone::call(PhoneOptions::new(bridge.sip, room, Codec::Pcmu))
        .await
        .expect("a caller of the room")
}

/// Bridges A (with the API) and B, both with room 1000, and the phones.
struct TwoBridges {
    a: Daemon,
    b: Daemon,
    api: Api,
    _dir: TempDir,
}

impl TwoBridges {
    fn start() -> TwoBridges {
        let dir = TempDir::new("sipconf-cascade");
        let room = "[[room]]\nnumber = \"1000\"\n";
        let (a, api) = start_with_api(&dir.path().join("a.db"), room);
        // The link placed through the API is a plain outbound call, which
        // takes the best of `media.codecs`; B answering it with G.711, as a
        // configured link is, keeps the check of four tones at once above
        // G.722's distortion products (38 dB under the tones, a codec's and
        // not an echo; the one-talker echo check below measures echo).
        let b = Daemon::start("codecs = [\"pcmu\", \"pcma\"]\n", room);
        TwoBridges {
            a,
            b,
            api,
            _dir: dir,
        }
    }

    /// Bridge A calls room 1000 on B into its own room 1000's conference
    /// (which a caller must have started).
    async fn link(&self) {
        link_rooms(&self.api, &self.b).await;
    }
}

async fn link_rooms(api: &Api, bridge_b: &Daemon) {
    let conferences = api.get("/conferences").await.json();
    let conference = conferences[0]["id"]
        .as_str()
        .expect("room 1000's conference")
        .to_string();
    let placed = api
        .post(
            "/calls",
            json!({
                "from": "+1000",
                "to": format!("sip:1000@{}", bridge_b.sip),
                "conferenceId": conference,
            }),
        )
        .await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = api.get(&format!("/conferences/{conference}")).await.json();
        // A's two callers and the link.
        if c["activeMembers"] == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the link never joined: {c}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_on_two_bridges_joined_by_a_link_hear_each_other_and_never_themselves() {
    let bridges = TwoBridges::start();
    let a1 = call(&bridges.a, "1000").await;
    let a2 = call(&bridges.a, "1000").await;
    let b1 = call(&bridges.b, "1000").await;
    let b2 = call(&bridges.b, "1000").await;
    bridges.link().await;

    let signals: Vec<_> = TONES_HZ.iter().map(|&f| sine(f)).collect();
    let results = stream_together(vec![a1, a2, b1, b2], &signals, Duration::from_secs(2)).await;
    assert_each_hears_the_others_and_not_itself(&results, &TONES_HZ);

    // Echo: one caller on each bridge talks alone. What comes back to it at
    // its own frequency is what the link returned (the G.711 floor of the
    // check above is out of the way when no other tone plays).
    let mut phones: Vec<Phone> = results.into_iter().map(|(phone, _)| phone).collect();
    for talker in [0, 2] {
        let signals: Vec<Signal> = (0..phones.len())
            .map(|i| {
                if i == talker {
                    sine(TONES_HZ[i])
                } else {
                    Signal::Silence
                }
            })
            .collect();
        let results = stream_together(phones, &signals, Duration::from_secs(2)).await;
        let own = tone_amplitude(steady(&results[talker].1.samples), TONES_HZ[talker]);
        let echo_db = db_ratio(own, AMPLITUDE);
        let other = if talker == 0 { 2 } else { 0 };
        let across_db = db_ratio(
            tone_amplitude(steady(&results[other].1.samples), TONES_HZ[talker]),
            AMPLITUDE,
        );
        eprintln!("phone {talker} alone: heard across the link at {across_db:+.2} dB, its echo at {echo_db:.1} dB");
        assert!(
            across_db.abs() <= 1.0,
            "phone {other} hears phone {talker} across the link at {across_db:.2} dB"
        );
        assert!(
            echo_db < -40.0,
            "phone {talker} hears itself come back at {echo_db:.1} dB"
        );
        phones = results.into_iter().map(|(phone, _)| phone).collect();
    }
}

/// Not a check: the delay one link adds, measured by hand
/// (`cargo test --test cascade -- --ignored --nocapture`; docs/scaling.md).
/// A caller on A starts a tone after silence; a second caller on A and one
/// on B record. The link's delay is how much later the tone starts in B's
/// recording than in A's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_the_delay_a_link_adds() {
    let bridges = TwoBridges::start();
    let mut talker = call(&bridges.a, "1000").await;
    let mut near = call(&bridges.a, "1000").await;
    let mut far = call(&bridges.b, "1000").await;
    bridges.link().await;
    // Ten 2 s windows: 0.5 s of silence, 0.5 s of tone, 1 s of silence.
    const WINDOW: usize = 16_000;
    const RUNS: usize = 10;
    let bursts: Vec<i16> = (0..WINDOW * RUNS)
        .map(|n| {
            if (4_000..8_000).contains(&(n % WINDOW)) {
                let phase = 2.0 * std::f64::consts::PI * 1800.0 * n as f64 / 8000.0;
                (8000.0 * phase.sin()) as i16
            } else {
                0
            }
        })
        .collect();
    let bursts = Signal::Samples(bursts.into());
    let length = Duration::from_secs(2 * RUNS as u64);
    let (sent, heard_near, heard_far) = tokio::join!(
        talker.stream(&bursts, length),
        near.stream(&Signal::Silence, length),
        far.stream(&Signal::Silence, length),
    );
    sent.expect("talker");
    let heard_near = heard_near.expect("near").samples;
    let heard_far = heard_far.expect("far").samples;
    let mut delays_ms = Vec::new();
    for run in 0..RUNS {
        let window = |samples: &[i16]| -> Option<usize> {
            let end = ((run + 1) * WINDOW).min(samples.len());
            onset(samples.get(run * WINDOW..end)?, 2000)
        };
        let (Some(near_at), Some(far_at)) = (window(&heard_near), window(&heard_far)) else {
            panic!("burst {run} was not heard on both bridges");
        };
        delays_ms.push((far_at as f64 - near_at as f64) / 8.0);
    }
    delays_ms.sort_by(f64::total_cmp);
    eprintln!(
        "delay added by one link: median {:.1} ms, min {:.1}, max {:.1} ({} runs)",
        delays_ms[delays_ms.len() / 2],
        delays_ms[0],
        delays_ms[delays_ms.len() - 1],
        delays_ms.len()
    );
}

/// Room 1000's live conference on a bridge once it has `members` active
/// members; its id.
async fn conference_with(api: &Api, members: u64, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let conferences = api.get("/conferences").await.json();
        let live = conferences
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["state"] == "active" && c["activeMembers"] == members);
        if let Some(id) = live.and_then(|c| c["id"].as_str()) {
            return id.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "room 1000 never had {members} members: {conferences}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every phone sends its tone at once: each hears the others within 1 dB
/// and itself 40 dB below.
async fn all_hear_each_other(phones: Vec<Phone>) -> Vec<Phone> {
    let signals: Vec<_> = TONES_HZ.iter().map(|&f| sine(f)).collect();
    let results = stream_together(phones, &signals, Duration::from_secs(2)).await;
    assert_each_hears_the_others_and_not_itself(&results, &TONES_HZ);
    results.into_iter().map(|(phone, _)| phone).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascade_link_from_the_config_joins_two_bridges_and_comes_back_when_cut() {
    let dir = TempDir::new("sipconf-cascade");
    let (b, b_api) = start_with_api(&dir.path().join("b.db"), "[[room]]\nnumber = \"1000\"\n");
    let a = Daemon::start(
        "",
        &format!(
            "[[room]]\nnumber = \"1000\"\ncascade = [\"sip:1000@{}\"]\n",
            b.sip
        ),
    );
    // A dials B at start: B's room 1000 has the link before any caller.
    let conference = conference_with(&b_api, 1, Duration::from_secs(10)).await;
    let members = b_api
        .get(&format!("/conferences/{conference}/members"))
        .await
        .json();
    let link = members[0]["id"]
        .as_str()
        .expect("the link member")
        .to_string();

    let phones = vec![
        call(&a, "1000").await,
        call(&a, "1000").await,
        call(&b, "1000").await,
        call(&b, "1000").await,
    ];
    // The link is not counted as a person, but is a member on each side.
    conference_with(&b_api, 3, Duration::from_secs(5)).await;
    let phones = all_hear_each_other(phones).await;

    // A's two callers at 852 and 1209 Hz: across the link the mix is key 8's
    // pair, which a keypad on the link would hold back. B hears both whole.
    let signals = [sine(852.0), sine(1209.0), Signal::Silence, Signal::Silence];
    let results = stream_together(phones, &signals, Duration::from_secs(2)).await;
    for far in [2, 3] {
        let heard = steady(&results[far].1.samples);
        for freq in [852.0, 1209.0] {
            let level_db = db_ratio(tone_amplitude(heard, freq), AMPLITUDE);
            eprintln!("phone {far} on B hears {freq} Hz at {level_db:+.2} dB");
            assert!(
                level_db.abs() <= 1.0,
                "phone {far} hears the {freq} Hz of a key-like pair at {level_db:.2} dB"
            );
        }
    }
    let phones: Vec<Phone> = results.into_iter().map(|(phone, _)| phone).collect();

    // B's application removes the link: B hangs it up, A dials it again.
    let removed = b_api
        .post(
            &format!("/conferences/{conference}/members/{link}"),
            json!({"state": "completed"}),
        )
        .await;
    assert_eq!(removed.status, 200, "{}", removed.text);
    assert!(
        a.wait_for_log("cascade link down", Duration::from_secs(5)),
        "A never saw its link drop"
    );
    conference_with(&b_api, 3, Duration::from_secs(15)).await;
    all_hear_each_other(phones).await;
    let metrics = b_api
        .send(
            b_api
                .client
                .get(format!("{}/metrics", b_api.base))
                .basic_auth(common::api::TOKEN, Some(common::api::SECRET)),
        )
        .await;
    for line in [
        "sipconf_cascade_links 1\n",
        "sipconf_cascade_links_ended_total 1\n",
    ] {
        assert!(metrics.text.contains(line), "{line}: {}", metrics.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bridges_that_cascade_to_each_other_keep_one_link_and_refuse_the_other_with_482() {
    let (port_a, port_b) = (free_port(), free_port());
    let room =
        |to: u16| format!("[[room]]\nnumber = \"1000\"\ncascade = [\"sip:1000@127.0.0.1:{to}\"]\n");
    let a = Daemon::start_on(port_a, "", &room(port_b));
    let b = Daemon::start_on(port_b, "", &room(port_a));
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = |d: &Daemon| d.logged("482 Loop Detected");
    while !refused(&a) && !refused(&b) {
        assert!(
            Instant::now() < deadline,
            "neither bridge was refused with 482"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One link: a caller on each side hears the other once (two links
    // would double the level) and not itself (two links send it back).
    let phones = vec![call(&a, "1000").await, call(&b, "1000").await];
    let tones = [TONES_HZ[0], TONES_HZ[2]];
    let signals: Vec<_> = tones.iter().map(|&f| sine(f)).collect();
    let results = stream_together(phones, &signals, Duration::from_secs(2)).await;
    assert_each_hears_the_others_and_not_itself(&results, &tones);
}
