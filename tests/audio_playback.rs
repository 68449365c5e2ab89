//! Files by URL played into conferences and to single members, heard by test
//! phones in a room: level and shape of each WAV flavour after resampling,
//! member-only audio, loops, stop, replacement, events, failures, the ETag
//! cache, and the join and leaving tones.

mod audio_common;
mod common;

use audio_common::*;
use common::api::CallbackServer;
use common::tempdir::TempDir;
use serde_json::json;
use sipconf::media::Codec;
use sipconf_testkit::meter::{db_ratio, peak, tone_amplitude};
use sipconf_testkit::testphone::{Phone, PhoneOptions};
use std::time::Duration;

const EVENT_WAIT: Duration = Duration::from_secs(5);

/// Level (both tones within 1 dB) and shape (correlation with the source) of a played clip.
fn assert_heard_as_played(samples: &[i16], source: &[i16], what: &str) {
    let start = onset(samples, 300).unwrap_or_else(|| panic!("{what}: nothing heard"));
    let window = &samples[(start + 400).min(samples.len())..(start + 5200).min(samples.len())];
    assert!(
        window.len() >= 4000,
        "{what}: only {} samples",
        window.len()
    );
    for frequency in [LOW_HZ, HIGH_HZ] {
        let level = db_ratio(tone_amplitude(window, frequency), TONE_AMPLITUDE);
        assert!(
            level.abs() <= 1.0,
            "{what}: {frequency} Hz at {level:.2} dB"
        );
    }
    let correlation = best_correlation(samples, start, source, 40);
    assert!(correlation > 0.95, "{what}: correlation {correlation:.3}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_wav_flavour_reaches_every_member_at_its_level_and_shape() {
    let dir = TempDir::new("audio-flavours");
    let (daemon, api) = daemon(&dir, "");
    let files = FileServer::start().await;
    let callbacks = CallbackServer::start().await;
    let a = join(&daemon, &api).await;
    let b = join(&daemon, &api).await;
    let conference = conference_id(&api).await;
    watch_conference(&api, &conference, &callbacks).await;

    let source = pcm16(&signal(RATE, 1.0));
    let stereo_44k: Vec<i16> = pcm16(&signal(44_100, 1.0))
        .into_iter()
        .flat_map(|s| [s, s])
        .collect();
    files.put_body("/pcm.wav", wav_pcm16(&source, 1, RATE));
    files.put_body("/ulaw.wav", signal_wav_g711(Codec::Pcmu, 1.0));
    files.put_body("/alaw.wav", signal_wav_g711(Codec::Pcma, 1.0));
    files.put_body("/stereo-44k.wav", wav_pcm16(&stereo_44k, 2, 44_100));

    let mut phones = vec![a.phone, b.phone];
    let flavours = ["/pcm.wav", "/ulaw.wav", "/alaw.wav", "/stereo-44k.wav"];
    for (n, path) in flavours.iter().enumerate() {
        let answer = api
            .post(
                &format!("/conferences/{conference}/audio"),
                json!({"fileUrl": files.url(path), "tag": format!("file-{n}")}),
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        let heard = listen_all(phones, Duration::from_millis(1700)).await;
        for (who, (_, recording)) in heard.iter().enumerate() {
            assert_heard_as_played(&recording.samples, &source, &format!("{path} phone {who}"));
        }
        phones = heard.into_iter().map(|(phone, _)| phone).collect();
    }

    let events = wait_events(
        &callbacks,
        "/conference",
        "conference-playback",
        8,
        EVENT_WAIT,
    )
    .await;
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            assert_eq!(e["conferenceId"], conference.as_str());
            assert!(e["conferenceUri"]
                .as_str()
                .is_some_and(|u| u.ends_with(&conference)));
            assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')));
            (
                e["tag"].as_str().unwrap_or_default().to_string(),
                e["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = (0..4)
        .flat_map(|n| {
            [
                (format!("file-{n}"), "started".to_string()),
                (format!("file-{n}"), "done".to_string()),
            ]
        })
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_audio_reaches_only_that_member_with_the_calls_events() {
    let dir = TempDir::new("audio-member");
    let (daemon, api) = daemon(&dir, "");
    let files = FileServer::start().await;
    let callbacks = CallbackServer::start().await;
    let a = join(&daemon, &api).await;
    let b = join(&daemon, &api).await;
    let conference = conference_id(&api).await;
    watch_call(&api, &a.call_id, &callbacks, "/a").await;
    let source = pcm16(&signal(RATE, 1.0));
    files.put_body("/only-a.wav", wav_pcm16(&source, 1, RATE));

    let answer = api
        .post(
            &format!("/conferences/{conference}/members/{}/audio", a.member_id),
            json!({"fileUrl": files.url("/only-a.wav"), "tag": "for-a"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let heard = listen_all(vec![a.phone, b.phone], Duration::from_millis(1600)).await;
    assert_heard_as_played(&heard[0].1.samples, &source, "member a");
    assert!(
        peak(&heard[1].1.samples) < 100,
        "member b heard a's audio (peak {})",
        peak(&heard[1].1.samples)
    );

    let events = wait_events(&callbacks, "/a", "playback", 2, EVENT_WAIT).await;
    let statuses: Vec<&str> = events.iter().filter_map(|e| e["status"].as_str()).collect();
    assert_eq!(statuses, ["started", "done"]);
    for event in &events {
        assert_eq!(event["callId"], a.call_id.as_str());
        assert_eq!(event["tag"], "for-a");
    }

    let unknown = api
        .post(
            &format!("/conferences/{conference}/members/member-nope/audio"),
            json!({"fileUrl": files.url("/only-a.wav")}),
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.code(), "conference-member-not-found");
    let by_call = api
        .post(
            &format!("/calls/{}/audio", a.call_id),
            json!({"fileUrl": files.url("/only-a.wav"), "tag": "by-call"}),
        )
        .await;
    assert_eq!(by_call.status, 200, "{}", by_call.text);
    let events = wait_events(&callbacks, "/a", "playback", 4, EVENT_WAIT).await;
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[2]["tag"], "by-call");
    assert_eq!(events[3]["status"], "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looped_file_repeats_until_stopped_and_stop_acts_within_a_tick() {
    let dir = TempDir::new("audio-loop");
    let (daemon, api) = daemon(&dir, "");
    let files = FileServer::start().await;
    let callbacks = CallbackServer::start().await;
    let a = join(&daemon, &api).await;
    // Company, so that after the stop `a` is still sent every frame (a member
    // alone with nothing to hear gets one packet a second) and the silence
    // can be counted to the end.
    let _b = join(&daemon, &api).await;
    let conference = conference_id(&api).await;
    watch_conference(&api, &conference, &callbacks).await;
    // 0.3 s of tone: a second of listening holds three repeats or more.
    files.put_body("/short.wav", wav_pcm16(&pcm16(&signal(RATE, 0.3)), 1, RATE));

    let path = format!("/conferences/{conference}/audio");
    let listen_for = Duration::from_millis(2200);
    let listen_started = std::time::Instant::now();
    let listening = tokio::spawn(listen_all(vec![a.phone], listen_for));
    let answer = api
        .post(
            &path,
            json!({"fileUrl": files.url("/short.wav"), "loopEnabled": "true", "tag": "loop"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let stop = api.post(&path, json!({"fileUrl": ""})).await;
    let stopped_at = std::time::Instant::now();
    assert_eq!(stop.status, 200, "{}", stop.text);
    let mut heard = listening.await.expect("listen");
    let (phone, recording) = heard.remove(0);
    let samples = &recording.samples;

    // Counted from the end, so packets queued before the phone listened do not matter.
    let listen_ended = listen_started + listen_for + Duration::from_millis(20);
    let trailing_silence = samples.iter().rev().take_while(|&&s| s == 0).count();
    // One tick to act, and two more of slack for a busy machine.
    let must_be_silent = listen_ended
        .saturating_duration_since(stopped_at)
        .saturating_sub(Duration::from_millis(60));
    assert!(
        trailing_silence as f64 >= must_be_silent.as_secs_f64() * 8000.0,
        "audio went on after the stop: {trailing_silence} silent samples at the end, {must_be_silent:?} expected"
    );
    let start = onset(samples, 300).expect("the loop is heard");
    let looped = &samples[start..samples.len() - trailing_silence];
    let frames = looped.len() / 160;
    let loud = loud_frames(looped, 1000.0);
    assert!(frames >= 45, "only {frames} frames of loop");
    assert!(
        loud + 2 >= frames,
        "{loud} of {frames} frames loud: gaps in the loop"
    );

    let again = api.post(&path, json!({"sentence": ""})).await;
    assert_eq!(again.status, 200, "stopping nothing is 200: {}", again.text);
    let events = wait_events(
        &callbacks,
        "/conference",
        "conference-playback",
        2,
        EVENT_WAIT,
    )
    .await;
    let statuses: Vec<&str> = events.iter().filter_map(|e| e["status"].as_str()).collect();
    assert_eq!(statuses, ["started", "done"]);
    drop(phone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_request_replaces_the_one_playing_with_done_before_started() {
    let dir = TempDir::new("audio-replace");
    let (daemon, api) = daemon(&dir, "");
    let files = FileServer::start().await;
    let callbacks = CallbackServer::start().await;
    let a = join(&daemon, &api).await;
    let conference = conference_id(&api).await;
    watch_conference(&api, &conference, &callbacks).await;
    files.put_body("/first.wav", wav_pcm16(&pcm16(&signal(RATE, 0.5)), 1, RATE));
    files.put_body(
        "/second.wav",
        wav_pcm16(&pcm16(&signal(RATE, 0.2)), 1, RATE),
    );
    let path = format!("/conferences/{conference}/audio");
    let listening = tokio::spawn(listen_all(vec![a.phone], Duration::from_millis(1500)));
    let first = api
        .post(
            &path,
            json!({"fileUrl": files.url("/first.wav"), "loopEnabled": true, "tag": "first"}),
        )
        .await;
    assert_eq!(first.status, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = api
        .post(
            &path,
            json!({"fileUrl": files.url("/second.wav"), "tag": "second"}),
        )
        .await;
    assert_eq!(second.status, 200);
    let _ = listening.await;
    let events = wait_events(
        &callbacks,
        "/conference",
        "conference-playback",
        4,
        EVENT_WAIT,
    )
    .await;
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["tag"].as_str().unwrap_or_default(),
                e["status"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("first", "started"),
            ("first", "done"),
            ("second", "started"),
            ("second", "done")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_that_fails_gives_done_and_the_bridge_carries_on() {
    let dir = TempDir::new("audio-failures");
    let (mut daemon, api) = daemon(&dir, "");
    let files = FileServer::start().await;
    let callbacks = CallbackServer::start().await;
    let _a = join(&daemon, &api).await;
    let conference = conference_id(&api).await;
    watch_conference(&api, &conference, &callbacks).await;
    let garbage: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    files.put_body("/garbage.wav", garbage);
    files.put(
        "/slow.wav",
        Served {
            body: wav_pcm16(&pcm16(&signal(RATE, 0.5)), 1, RATE),
            delay: Duration::from_secs(3),
            ..Served::default()
        },
    );
    files.put(
        "/forbidden.wav",
        Served {
            status: 403,
            ..Served::default()
        },
    );
    let path = format!("/conferences/{conference}/audio");
    let started = std::time::Instant::now();
    for (n, file) in [
        "/missing.wav",
        "/garbage.wav",
        "/slow.wav",
        "/forbidden.wav",
    ]
    .iter()
    .enumerate()
    {
        let answer = api
            .post(
                &path,
                json!({"fileUrl": files.url(file), "tag": format!("bad-{n}")}),
            )
            .await;
        assert_eq!(answer.status, 200, "{file}: {}", answer.text);
        let events = wait_events(
            &callbacks,
            "/conference",
            "conference-playback",
            n + 1,
            EVENT_WAIT,
        )
        .await;
        assert_eq!(events.len(), n + 1, "{file}: no done event");
        assert_eq!(events[n]["status"], "done", "{file}");
        assert_eq!(events[n]["tag"], format!("bad-{n}").as_str());
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "failures took {:?}",
        started.elapsed()
    );
    assert!(daemon.logged("answered HTTP 404"));
    assert!(daemon.logged("not a supported audio file"));
    assert!(daemon.logged("did not answer within 700 ms"));
    let bad_url = api.post(&path, json!({"fileUrl": "ftp://x/y.wav"})).await;
    assert_eq!(bad_url.status, 400);
    assert_eq!(bad_url.code(), "validation-error");
    let both = api
        .post(
            &path,
            json!({"fileUrl": files.url("/a.wav"), "sentence": "hi"}),
        )
        .await;
    assert_eq!(both.status, 400);
    let neither = api.post(&path, json!({"tag": "x"})).await;
    assert_eq!(neither.status, 400);
    assert_eq!(neither.code(), "missing-property");
    let unknown = api
        .post(
            "/conferences/conf-nope/audio",
            json!({"fileUrl": files.url("/a.wav")}),
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert!(daemon.alive());
    let health = api
        .send(api.client.get(format!("{}/health", api.base)))
        .await;
    assert_eq!(health.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_file_is_revalidated_with_its_etag_and_served_from_the_cache() {
    let dir = TempDir::new("audio-etag");
    let (daemon, api) = daemon(&dir, "");
    let files = FileServer::start().await;
    let a = join(&daemon, &api).await;
    let conference = conference_id(&api).await;
    let source = pcm16(&signal(RATE, 1.0));
    files.put(
        "/cached.wav",
        Served {
            body: wav_pcm16(&source, 1, RATE),
            etag: Some("\"v1\"".into()),
            ..Served::default()
        },
    );
    let path = format!("/conferences/{conference}/audio");
    let mut phone = a.phone;
    for _ in 0..2 {
        let answer = api
            .post(&path, json!({"fileUrl": files.url("/cached.wav")}))
            .await;
        assert_eq!(answer.status, 200);
        let mut heard = listen_all(vec![phone], Duration::from_millis(1500)).await;
        let (back, recording) = heard.remove(0);
        assert_heard_as_played(&recording.samples, &source, "cached file");
        phone = back;
    }
    assert_eq!(
        files.requests(),
        [
            ("/cached.wav".to_string(), false),
            ("/cached.wav".to_string(), true)
        ]
    );
}

/// Serves `bytes` as `name`, plays it into a room with one phone, and checks
/// both test tones arrive within 1 dB, `skip` samples after the onset (an
/// encoder's start-up is not the file's level).
async fn a_file_is_heard_at_its_level(dir: &TempDir, name: &str, bytes: Vec<u8>, skip: usize) {
    let (daemon, api) = daemon(dir, "");
    let files = FileServer::start().await;
    let path = format!("/{name}");
    files.put_body(&path, bytes);
    let a = join(&daemon, &api).await;
    let conference = conference_id(&api).await;
    let answer = api
        .post(
            &format!("/conferences/{conference}/audio"),
            json!({"fileUrl": files.url(&path)}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let heard = listen_all(vec![a.phone], Duration::from_millis(1600)).await;
    let samples = &heard[0].1.samples;
    let start = onset(samples, 300).unwrap_or_else(|| panic!("{name}: nothing heard"));
    let window =
        &samples[(start + skip).min(samples.len())..(start + skip + 4800).min(samples.len())];
    for frequency in [LOW_HZ, HIGH_HZ] {
        let level = db_ratio(tone_amplitude(window, frequency), TONE_AMPLITUDE);
        assert!(
            level.abs() <= 1.0,
            "{name}: {frequency} Hz at {level:.2} dB"
        );
    }
}

/// Runs an encoder and insists it succeeds.
fn encode(program: &str, args: &[&std::ffi::OsStr]) {
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(status.success(), "{program} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ima_adpcm_wav_made_by_sox_is_played() {
    if !common::require_tool("sox", "ima_adpcm_wav_made_by_sox_is_played") {
        return;
    }
    let dir = TempDir::new("audio-adpcm");
    let source = pcm16(&signal(RATE, 1.0));
    let pcm_path = dir.path().join("in.wav");
    let adpcm_path = dir.path().join("adpcm.wav");
    std::fs::write(&pcm_path, wav_pcm16(&source, 1, RATE)).expect("write");
    encode(
        "sox",
        &[
            pcm_path.as_os_str(),
            "-e".as_ref(),
            "ima-adpcm".as_ref(),
            adpcm_path.as_os_str(),
        ],
    );
    let bytes = std::fs::read(&adpcm_path).expect("read");
    a_file_is_heard_at_its_level(&dir, "adpcm.wav", bytes, 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mp3_made_by_lame_is_played_at_its_level() {
    if !common::require_tool("lame", "an_mp3_made_by_lame_is_played_at_its_level") {
        return;
    }
    // MP3 at 44.1 kHz stereo, the way most prompt files come.
    let dir = TempDir::new("audio-mp3");
    let rate = 44_100;
    let mono = pcm16(&signal(rate, 1.0));
    let stereo: Vec<i16> = mono.iter().flat_map(|&s| [s, s]).collect();
    let wav_path = dir.path().join("in.wav");
    let mp3_path = dir.path().join("out.mp3");
    std::fs::write(&wav_path, wav_pcm16(&stereo, 2, rate)).expect("write");
    encode(
        "lame",
        &[
            "--quiet".as_ref(),
            "-b".as_ref(),
            "128".as_ref(),
            wav_path.as_os_str(),
            mp3_path.as_os_str(),
        ],
    );
    let bytes = std::fs::read(&mp3_path).expect("read");
    a_file_is_heard_at_its_level(&dir, "prompt.mp3", bytes, 800).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leaving_tones_are_heard_by_the_conference() {
    let dir = TempDir::new("audio-tones");
    let app = CallbackServer::start().await;
    let (daemon, api) = daemon(
        &dir,
        &format!(
            "[application]\nincoming_call_url = \"{}\"\n",
            app.url("/incoming")
        ),
    );
    let a = join(&daemon, &api).await;
    let conference = conference_id(&api).await;
    let ringing = tokio::spawn(Phone::call(PhoneOptions::new(
        daemon.sip,
        "5555",
        Codec::Pcmu,
    )));
    let incoming = app.wait_for("/incoming", 1, EVENT_WAIT).await;
    let call_id = incoming[0].event()["callId"]
        .as_str()
        .expect("callId")
        .to_string();
    let answer = api
        .post(&format!("/calls/{call_id}"), json!({"state": "active"}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let _b = ringing.await.expect("task").expect("answered");

    let listening = tokio::spawn(listen_all(vec![a.phone], Duration::from_millis(800)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let added = api
        .post(
            &format!("/conferences/{conference}/members"),
            json!({"callId": call_id, "joinTone": true, "leavingTone": true}),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.text);
    let member = common::api::last_segment(&added.location());
    let mut heard = listening.await.expect("listen");
    let (phone, joined) = heard.remove(0);
    let rising = |samples: &[i16], first: f64, second: f64| {
        let start = onset(samples, 300).expect("a tone");
        let a = &samples[start + 100..start + 800];
        let b = &samples[start + 1060..start + 1760];
        tone_amplitude(a, first) > 4.0 * tone_amplitude(a, second)
            && tone_amplitude(b, second) > 4.0 * tone_amplitude(b, first)
    };
    assert!(rising(&joined.samples, 660.0, 880.0), "join tone rises");

    let listening = tokio::spawn(listen_all(vec![phone], Duration::from_millis(800)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let removed = api
        .post(
            &format!("/conferences/{conference}/members/{member}"),
            json!({"state": "completed"}),
        )
        .await;
    assert_eq!(removed.status, 200);
    let mut heard = listening.await.expect("listen");
    let (_, left) = heard.remove(0);
    assert!(rising(&left.samples, 880.0, 660.0), "leaving tone falls");
}
