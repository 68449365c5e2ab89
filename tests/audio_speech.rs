//! Text to speech through espeak-ng: a sentence is heard by the phones for
//! about as long as it takes to say, every documented voice and locale makes
//! audio, and without espeak-ng the API answers 503 and the bridge carries on.

mod audio_common;
mod common;

use audio_common::*;
use common::api::CallbackServer;
use common::tempdir::TempDir;
use serde_json::json;
use sipconf::audio::voices::{LOCALES, VOICES};
use sipconf::audio::{espeak_voice, Speaker};
use std::path::PathBuf;
use std::time::Duration;

const EVENT_WAIT: Duration = Duration::from_secs(5);
const SENTENCE: &str = "Welcome to the conference. The meeting will begin shortly.";

fn espeak_present(test: &str) -> bool {
    common::require_tool("espeak-ng", test)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentence_is_heard_for_about_as_long_as_it_takes_to_say() {
    if !espeak_present("a_sentence_is_heard_for_about_as_long_as_it_takes_to_say") {
        return;
    }
    // How long espeak-ng takes to say it, measured the way the bridge makes it.
    let speaker = Speaker::new(PathBuf::from("espeak-ng"), Duration::from_secs(10), 4);
    let voice = espeak_voice(None, None, Some("Kate")).expect("voice");
    let spoken_s = speaker.speak(SENTENCE, &voice).await.expect("speech").len() as f64 / 8000.0;

    let dir = TempDir::new("speech-heard");
    let (daemon, api) = daemon(&dir, "");
    let callbacks = CallbackServer::start().await;
    let a = join(&daemon, &api).await;
    let b = join(&daemon, &api).await;
    let conference = conference_id(&api).await;
    watch_conference(&api, &conference, &callbacks).await;
    let listen_for = Duration::from_secs_f64(spoken_s + 1.5);
    let listening = tokio::spawn(listen_all(vec![a.phone, b.phone], listen_for));
    let answer = api
        .post(
            &format!("/conferences/{conference}/audio"),
            json!({"sentence": SENTENCE, "voice": "Kate", "tag": "welcome"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let heard = listening.await.expect("listen");
    for (who, (_, recording)) in heard.iter().enumerate() {
        let samples = &recording.samples;
        let start = onset(samples, 300).unwrap_or_else(|| panic!("phone {who} heard nothing"));
        let end = samples.len()
            - samples
                .iter()
                .rev()
                .position(|s| s.abs() > 300)
                .unwrap_or(0);
        let heard_s = (end - start) as f64 / 8000.0;
        assert!(
            (heard_s - spoken_s).abs() < 0.25 * spoken_s,
            "phone {who}: speech for {heard_s:.2} s, espeak-ng says {spoken_s:.2} s"
        );
        // Speech, not a tone or noise: loud frames and pauses between words.
        let frames = (end - start) / 160;
        let loud = loud_frames(&samples[start..end], 300.0);
        assert!(
            loud * 2 > frames && loud < frames,
            "phone {who}: {loud} of {frames} frames loud"
        );
    }
    let events = wait_events(&callbacks, "/conference", "conference-speak", 2, EVENT_WAIT).await;
    let statuses: Vec<&str> = events.iter().filter_map(|e| e["status"].as_str()).collect();
    assert_eq!(statuses, ["started", "done"]);
    assert!(events.iter().all(|e| e["tag"] == "welcome"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_voice_and_locale_speaks() {
    if !espeak_present("every_documented_voice_and_locale_speaks") {
        return;
    }
    let speaker = Speaker::new(PathBuf::from("espeak-ng"), Duration::from_secs(10), 64);
    let mut voices = Vec::new();
    for named in VOICES {
        voices.push((
            named.name.to_string(),
            espeak_voice(None, None, Some(named.name)),
        ));
    }
    for (locale, _) in LOCALES {
        for gender in ["female", "male"] {
            voices.push((
                format!("{locale} {gender}"),
                espeak_voice(Some(gender), Some(locale), None),
            ));
        }
    }
    for (name, voice) in voices {
        let voice = voice.unwrap_or_else(|e| panic!("{name}: {e}"));
        let clip = speaker
            .speak("One two three.", &voice)
            .await
            .unwrap_or_else(|e| panic!("{name} ({}): {e}", voice.0));
        let seconds = clip.len() as f64 / 8000.0;
        assert!(seconds > 0.4, "{name}: {seconds} s");
        assert!(
            loud_frames(&clip, 300.0) >= 10,
            "{name} ({}): too quiet",
            voice.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_espeak_ng_the_api_answers_503_and_the_bridge_carries_on() {
    let dir = TempDir::new("speech-missing");
    let (mut daemon, api) = daemon(&dir, "espeak = \"/nonexistent/espeak-ng\"");
    let callbacks = CallbackServer::start().await;
    let files = FileServer::start().await;
    let a = join(&daemon, &api).await;
    let conference = conference_id(&api).await;
    watch_conference(&api, &conference, &callbacks).await;
    let answer = api
        .post(
            &format!("/conferences/{conference}/audio"),
            json!({"sentence": "Hello there.", "tag": "no-voice"}),
        )
        .await;
    assert_eq!(answer.status, 503, "{}", answer.text);
    assert_eq!(answer.code(), "text-to-speech-unavailable");
    assert_eq!(answer.json()["category"], "unavailable");
    assert!(daemon.logged("/nonexistent/espeak-ng was not found"));
    let events = wait_events(&callbacks, "/conference", "conference-speak", 1, EVENT_WAIT).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["status"], "done");

    let bad_voice = api
        .post(
            &format!("/conferences/{conference}/audio"),
            json!({"sentence": "Hello.", "voice": "Hal"}),
        )
        .await;
    assert_eq!(bad_voice.status, 400);
    assert_eq!(bad_voice.code(), "validation-error");

    // Files still play.
    let source = pcm16(&signal(RATE, 0.5));
    files.put_body("/still.wav", wav_pcm16(&source, 1, RATE));
    let answer = api
        .post(
            &format!("/conferences/{conference}/audio"),
            json!({"fileUrl": files.url("/still.wav")}),
        )
        .await;
    assert_eq!(answer.status, 200);
    let heard = listen_all(vec![a.phone], Duration::from_millis(1000)).await;
    assert!(onset(&heard[0].1.samples, 300).is_some(), "the file played");
    assert!(daemon.alive());
}
