//! The command line: `check-config` and `dtmf`, run as the real binary.

use sipconf::media::dtmf::key_tones_hz;
use sipconf_testkit::wav::wav_pcm16;
use std::process::Command;

fn sipconf(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sipconf"))
        .args(args)
        .output()
        .expect("run sipconf");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("sipconf-cli-{}-{name}", std::process::id()))
}

#[test]
fn check_config_accepts_the_shipped_file_and_names_key_and_line_of_an_error() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/sipconf.toml");
    let (code, out, _) = sipconf(&["check-config", "--config", shipped]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(": ok"), "{out}");

    let bad = temp_path("bad.toml");
    std::fs::write(
        &bad,
        "[sip]\nt1_ms = 500\n\n[media]\nmax_members = \"lots\"\n",
    )
    .unwrap();
    let (code, _, err) = sipconf(&["check-config", "--config", bad.to_str().unwrap()]);
    let _ = std::fs::remove_file(&bad);
    assert_eq!(code, 1);
    assert!(err.contains(":5"), "the line is named: {err}");
    assert!(err.contains("max_members"), "the key is named: {err}");
}

#[test]
fn dtmf_prints_each_digit_with_times_then_the_digit_string() {
    // "9*0#" at 16 kHz: 100 ms keys at -6 dBm0 per tone, one every 250 ms from 100 ms.
    let rate = 16_000.0;
    let mut samples = vec![0i16; (1.2 * rate) as usize];
    let amplitude = 22_930.0 * 10f64.powf(-6.0 / 20.0);
    for (i, digit) in "9*0#".chars().enumerate() {
        let (low, high) = key_tones_hz(digit).expect("a key");
        let start = ((0.1 + 0.25 * i as f64) * rate) as usize;
        for n in 0..(0.1 * rate) as usize {
            let phase = 2.0 * std::f64::consts::PI * n as f64 / rate;
            samples[start + n] = (amplitude * ((phase * low).sin() + (phase * high).sin())) as i16;
        }
    }
    let path = temp_path("keys.wav");
    std::fs::write(&path, wav_pcm16(&samples, 1, 16_000)).unwrap();
    let (code, out, err) = sipconf(&["dtmf", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.last().copied(), Some("digits: 9*0#"), "{out}");
    assert_eq!(lines.len(), 5, "{out}");
    for (i, line) in lines[..4].iter().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.len(), 3, "{line}");
        let start: f64 = fields[1].parse().unwrap();
        let end: f64 = fields[2].parse().unwrap();
        let expected_start = 100.0 + 250.0 * i as f64;
        assert!((start - expected_start).abs() <= 30.0, "{line}");
        assert!((end - (expected_start + 100.0)).abs() <= 30.0, "{line}");
    }
}

#[test]
fn dtmf_on_an_unreadable_file_exits_1_with_a_clear_message() {
    let path = temp_path("not-a.wav");
    std::fs::write(&path, b"this is not a wav file").unwrap();
    let (code, out, err) = sipconf(&["dtmf", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains("cannot read") && err.contains("not-a.wav"),
        "{err}"
    );
    let (code, _, err) = sipconf(&["dtmf", "/nonexistent/file.wav"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/file.wav"), "{err}");
}
