//! Room PINs with phones on loopback: the caller hears the spoken prompt,
//! the right PIN (RFC 4733 or in-band) joins the room and the count is
//! announced, three wrong PINs end in a hang-up.

mod audio_common;
mod common;

use audio_common::{loud_frames, onset};
use common::api::{start_with_api, Api};
use common::tempdir::TempDir;
use common::Daemon;
use sipconf::media::Codec;
use sipconf_testkit::testphone::{Phone, PhoneOptions, Signal};
use std::sync::Arc;
use std::time::Duration;

fn pin_room(dir: &TempDir) -> (Daemon, Api) {
    start_with_api(
        &dir.path().join("sipconf.db"),
        "[[room]]\nnumber = \"1000\"\npin = \"4321\"\npin_prompt = \"Enter the PIN.\"\nannounce_count = true\n\n[pin]\ndelay_ms = 200\n",
    )
}

/// Members of room 1000's active conference (0 when there is none).
async fn members_in_room(api: &Api) -> u64 {
    let list = api.get("/conferences").await.json();
    list.as_array()
        .and_then(|all| {
            all.iter()
                .find(|c| c["from"] == "1000" && c["state"] != "completed")
        })
        .and_then(|c| c["activeMembers"].as_u64())
        .unwrap_or(0)
}

/// Sends `keys` as RFC 4733 events (RFC 4733 §2.5: a start, updates, three ends).
async fn send_rfc4733(phone: &Phone, keys: &str, payload_type: u8) {
    let mut sequence: u16 = 1000;
    let mut timestamp: u32 = 80_000;
    for key in keys.chars() {
        let event = match key {
            '0'..='9' => key as u8 - b'0',
            '*' => 10,
            '#' => 11,
            _ => panic!("not a key: {key}"),
        };
        for packet in 0..8u16 {
            let end = packet >= 5;
            let duration = 160 * (packet.min(5) + 1);
            let mut bytes = vec![0x80, payload_type | if packet == 0 { 0x80 } else { 0 }];
            bytes.extend_from_slice(&sequence.to_be_bytes());
            bytes.extend_from_slice(&timestamp.to_be_bytes());
            bytes.extend_from_slice(&0x4d4d_0001u32.to_be_bytes());
            bytes.push(event);
            bytes.push(if end { 0x80 | 10 } else { 10 });
            bytes.extend_from_slice(&duration.to_be_bytes());
            phone.send_rtp_raw(&bytes).await.expect("send event");
            sequence = sequence.wrapping_add(1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        timestamp = timestamp.wrapping_add(2000);
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
}

/// `keys` as in-band DTMF: 100 ms of each key's two tones, 100 ms of silence.
fn inband(keys: &str) -> Arc<[i16]> {
    let mut samples = vec![0i16; 800];
    for key in keys.chars() {
        let (row, column) = match key {
            '1' => (697.0, 1209.0),
            '2' => (697.0, 1336.0),
            '3' => (697.0, 1477.0),
            '4' => (770.0, 1209.0),
            '5' => (770.0, 1336.0),
            '6' => (770.0, 1477.0),
            '7' => (852.0, 1209.0),
            '8' => (852.0, 1336.0),
            '9' => (852.0, 1477.0),
            '*' => (941.0, 1209.0),
            '0' => (941.0, 1336.0),
            '#' => (941.0, 1477.0),
            _ => panic!("not a key: {key}"),
        };
        for n in 0..800 {
            let t = n as f64 / 8000.0;
            let value = 6000.0 * (2.0 * std::f64::consts::PI * row * t).sin()
                + 6000.0 * (2.0 * std::f64::consts::PI * column * t).sin();
            samples.push(value as i16);
        }
        samples.extend(std::iter::repeat_n(0, 800));
    }
    samples.into()
}

async fn call_room(daemon: &Daemon, telephone_event: Option<u8>) -> Phone {
    let mut options = PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu);
    options.telephone_event = telephone_event;
    Phone::call(options).await.expect("answered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_pin_by_rfc_4733_joins_after_the_prompt_and_the_count_is_announced() {
    if !common::require_tool("espeak-ng", "the_right_pin_by_rfc_4733_joins") {
        return;
    }
    let dir = TempDir::new("pin-rfc4733");
    let (daemon, api) = pin_room(&dir);
    let mut phone = call_room(&daemon, Some(101)).await;
    let prompt = phone
        .stream(&Signal::Silence, Duration::from_millis(2000))
        .await
        .expect("media");
    assert!(
        loud_frames(&prompt.samples, 300.0) >= 15,
        "the prompt is spoken"
    );
    assert_eq!(
        members_in_room(&api).await,
        0,
        "not in the room before the PIN"
    );

    send_rfc4733(&phone, "4321#", 101).await;
    let mut joined = false;
    for _ in 0..50 {
        if members_in_room(&api).await == 1 {
            joined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(joined, "the right PIN joins the room");
    let announcement = phone
        .stream(&Signal::Silence, Duration::from_millis(2500))
        .await
        .expect("media");
    assert!(
        onset(&announcement.samples, 300).is_some(),
        "the count is announced"
    );
    assert!(daemon.logged("right PIN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_pin_in_band_joins() {
    let dir = TempDir::new("pin-inband");
    let (daemon, api) = pin_room(&dir);
    let mut phone = call_room(&daemon, None).await;
    let keys = inband("4321#");
    let seconds = keys.len() as f64 / 8000.0 + 0.5;
    phone
        .stream(&Signal::Samples(keys), Duration::from_secs_f64(seconds))
        .await
        .expect("media");
    let mut joined = false;
    for _ in 0..40 {
        if members_in_room(&api).await == 1 {
            joined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(joined, "the right PIN (in-band) joins the room");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_wrong_pins_hang_up() {
    let dir = TempDir::new("pin-wrong");
    let (daemon, api) = pin_room(&dir);
    let mut phone = call_room(&daemon, Some(101)).await;
    // Each wrong PIN makes the next try wait (0.2 s, then 0.4 s here).
    send_rfc4733(&phone, "1111#", 101).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_rfc4733(&phone, "4321*9#", 101).await;
    assert!(!phone.wait_for_bye(Duration::from_millis(500)).await);
    send_rfc4733(&phone, "12#", 101).await;
    assert!(
        phone.wait_for_bye(Duration::from_secs(10)).await,
        "no BYE after three wrong PINs"
    );
    assert_eq!(members_in_room(&api).await, 0);
    assert!(daemon.logged("wrong PIN"));
}
