//! The room's sound card (`[soundcard]`, cargo feature `soundcard`) end to
//! end, through ALSA itself with no sound hardware: the daemon's HOME holds
//! an `.asoundrc` whose two PCMs are ALSA's `file` plugin over `null`, the
//! microphone reading its samples from a named pipe (`infile`) and the
//! loudspeaker writing to another. The test is the device: it writes the
//! microphone's 48 kHz samples and reads the loudspeaker's at real-time
//! pace, so the pipes are the device's clock. Phones from the test kit call
//! the room.
//!
//! Run with `cargo test --features soundcard --test soundcard` (CI does);
//! without the feature this file only says so.

/// Without the feature there is no sound card, and the command says why.
#[cfg(not(feature = "soundcard"))]
#[test]
fn without_the_feature_the_device_list_says_the_build_lacks_it() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sipconf"))
        .args(["soundcard", "--list"])
        .output()
        .expect("run sipconf");
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("without the `soundcard` feature"),
        "sipconf said: {said}"
    );
    eprintln!(
        "the sound card's own tests run with `cargo test --features soundcard --test soundcard`"
    );
}

#[cfg(feature = "soundcard")]
mod common;

#[cfg(feature = "soundcard")]
mod card {
    use super::common::room::{
        assert_each_hears_the_others_and_not_itself, sine, steady, stream_together, AMPLITUDE,
    };
    use super::common::tempdir::TempDir;
    use super::common::{free_port, Daemon};
    use sipconf::media::Codec;
    use sipconf_testkit::api::{api_sections, Api, SECRET, TOKEN};
    use sipconf_testkit::meter::db_ratio;
    use sipconf_testkit::testphone::{Phone, PhoneOptions};
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    /// The fake device's rate: what the daemon asks for first.
    const DEVICE_HZ: usize = 48_000;
    /// 20 ms at the device's rate.
    const CHUNK: usize = DEVICE_HZ / 50;
    /// What the room's microphone picks up.
    const MICROPHONE_HZ: f64 = 1000.0;
    /// No pipe is kept open longer than this, whatever happens.
    const LONGEST: Duration = Duration::from_secs(60);

    const ROOM: &str = "[[room]]\nnumber = \"1000\"\n\n[soundcard]\nroom = \"1000\"\n\
                        capture = \"sipconf_mic\"\nplayback = \"sipconf_speaker\"\n";

    /// The daemon's HOME, with its `.asoundrc` and the two pipes.
    struct AlsaHome {
        dir: TempDir,
    }

    impl AlsaHome {
        fn new() -> AlsaHome {
            let dir = TempDir::new("sipconf-alsa");
            for pipe in ["mic.fifo", "speaker.fifo"] {
                let made = std::process::Command::new("mkfifo")
                    .arg(dir.path().join(pipe))
                    .status()
                    .expect("run mkfifo");
                assert!(made.success(), "mkfifo {pipe}");
            }
            let asoundrc = format!(
                "pcm.sipconf_mic {{\n  type file\n  slave.pcm \"null\"\n  file \"/dev/null\"\n  \
                 infile \"{mic}\"\n  format \"raw\"\n  hint {{ show on description \"test microphone\" }}\n}}\n\
                 pcm.sipconf_speaker {{\n  type file\n  slave.pcm \"null\"\n  file \"{speaker}\"\n  \
                 format \"raw\"\n  hint {{ show on description \"test loudspeaker\" }}\n}}\n",
                mic = dir.path().join("mic.fifo").display(),
                speaker = dir.path().join("speaker.fifo").display(),
            );
            std::fs::write(dir.path().join(".asoundrc"), asoundrc).expect("write .asoundrc");
            AlsaHome { dir }
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }

        fn pipe(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
    }

    /// The test's side of the device: a thread writing the microphone's
    /// tone and one reading the loudspeaker, each at real-time pace, each
    /// opening its pipe again when the daemon closed it, until `unplug`.
    struct Device {
        pipes: (PathBuf, PathBuf),
        unplugged: Arc<AtomicBool>,
        speaker: Arc<Mutex<Vec<i16>>>,
        threads: Vec<JoinHandle<()>>,
    }

    impl Device {
        fn plug(home: &AlsaHome) -> Device {
            let unplugged = Arc::new(AtomicBool::new(false));
            let speaker = Arc::new(Mutex::new(Vec::new()));
            let mic_path = home.pipe("mic.fifo");
            let stop = Arc::clone(&unplugged);
            let microphone = std::thread::spawn(move || {
                let started = Instant::now();
                let mut written = 0usize;
                while !stop.load(Ordering::Relaxed) && started.elapsed() < LONGEST {
                    // Blocks until the daemon opens the microphone.
                    let Ok(mut pipe) = std::fs::OpenOptions::new().write(true).open(&mic_path)
                    else {
                        return;
                    };
                    let mut chunk = [0u8; 2 * CHUNK];
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < LONGEST {
                        for (i, bytes) in chunk.chunks_exact_mut(2).enumerate() {
                            let t = (written + i) as f64 / DEVICE_HZ as f64;
                            let phase = 2.0 * std::f64::consts::PI * MICROPHONE_HZ * t;
                            let sample = (AMPLITUDE * phase.sin()) as i16;
                            bytes.copy_from_slice(&sample.to_le_bytes());
                        }
                        if pipe.write_all(&chunk).is_err() {
                            break;
                        }
                        written += CHUNK;
                        pace(started, written);
                    }
                }
            });
            let speaker_path = home.pipe("speaker.fifo");
            let (stop, heard) = (Arc::clone(&unplugged), Arc::clone(&speaker));
            let loudspeaker = std::thread::spawn(move || {
                let started = Instant::now();
                let mut read = 0usize;
                while !stop.load(Ordering::Relaxed) && started.elapsed() < LONGEST {
                    // Blocks until the daemon opens the loudspeaker.
                    let Ok(mut pipe) = std::fs::File::open(&speaker_path) else {
                        return;
                    };
                    let mut chunk = [0u8; 2 * CHUNK];
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < LONGEST {
                        if pipe.read_exact(&mut chunk).is_err() {
                            break;
                        }
                        let samples = chunk
                            .chunks_exact(2)
                            .map(|b| i16::from_le_bytes([b[0], b[1]]));
                        heard.lock().expect("speaker").extend(samples);
                        read += CHUNK;
                        pace(started, read);
                    }
                }
            });
            Device {
                pipes: (home.pipe("mic.fifo"), home.pipe("speaker.fifo")),
                unplugged,
                speaker,
                threads: vec![microphone, loudspeaker],
            }
        }

        /// What the loudspeaker played so far, at 48 kHz.
        fn played(&self) -> Vec<i16> {
            self.speaker.lock().expect("speaker").clone()
        }

        /// The device goes away: both pipes are closed by the test's side.
        fn unplug(self) {
            self.unplugged.store(true, Ordering::Relaxed);
            // A thread still waiting in `open` for the daemon is let go by
            // opening the other end without waiting.
            let (mic, speaker) = &self.pipes;
            let _mic = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(mic);
            let _speaker = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(speaker);
            for thread in self.threads {
                thread.join().expect("device thread");
            }
        }
    }

    /// Sleeps until `samples` at the device's rate have had their time.
    fn pace(started: Instant, samples: usize) {
        let due = started + Duration::from_secs_f64(samples as f64 / DEVICE_HZ as f64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }

    /// The daemon with the API on (its records beside the `.asoundrc`).
    fn daemon(home: &AlsaHome) -> (Daemon, Api) {
        let port = free_port();
        let sections = api_sections(port, &home.path().join("sipconf.db"), ROOM);
        let home = home.path().to_str().expect("a UTF-8 temp path");
        let daemon = Daemon::start_with_env("", &sections, &[("HOME", home)]);
        assert!(
            daemon.wait_for_log("sound card open", Duration::from_secs(10)),
            "the sound card did not open; log:\n{}",
            daemon.log.lock().expect("log").join("\n")
        );
        (daemon, Api::new(port))
    }

    /// `freq_hz`'s amplitude in each 100 ms window of `samples` at `rate_hz`:
    /// the drift correction moves a tone by up to 2 Hz (2000 ppm), which a
    /// measurement over a second would count as a loss.
    fn levels(samples: &[i16], freq_hz: f64, rate_hz: usize) -> Vec<f64> {
        samples
            .chunks_exact(rate_hz / 10)
            .map(|window| tone_amplitude_at(window, freq_hz, rate_hz as f64))
            .collect()
    }

    fn median(mut levels: Vec<f64>) -> f64 {
        levels.sort_by(f64::total_cmp);
        levels.get(levels.len() / 2).copied().unwrap_or(0.0)
    }

    fn loudest(levels: Vec<f64>) -> f64 {
        levels.into_iter().fold(0.0, f64::max)
    }

    /// A tone's amplitude in `samples` at `rate_hz` (the kit's meter is 8 kHz).
    fn tone_amplitude_at(samples: &[i16], freq_hz: f64, rate_hz: f64) -> f64 {
        let coefficient = 2.0 * (2.0 * std::f64::consts::PI * freq_hz / rate_hz).cos();
        let (mut last, mut before_last) = (0.0f64, 0.0f64);
        for &sample in samples {
            let next = f64::from(sample) + coefficient * last - before_last;
            before_last = last;
            last = next;
        }
        let power = last * last + before_last * before_last - coefficient * last * before_last;
        2.0 * power.max(0.0).sqrt() / samples.len() as f64
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_rooms_microphone_is_heard_by_a_phone_and_the_phone_in_the_rooms_loudspeaker() {
        let home = AlsaHome::new();
        let device = Device::plug(&home);
        let (daemon, api) = daemon(&home);
        let mut phone = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
            .await
            .expect("the room answers");
        let recording = phone
            .stream(&sine(400.0), Duration::from_secs(3))
            .await
            .expect("phone media");
        // The sound card is a member of the room's conference, in the API.
        let conferences = api.get("/conferences").await.json();
        let id = conferences[0]["id"]
            .as_str()
            .expect("the room's conference");
        let members = api.get(&format!("/conferences/{id}/members")).await.json();
        let active = members
            .as_array()
            .expect("a list")
            .iter()
            .filter(|m| m["state"] == "active")
            .count();
        assert_eq!(active, 2, "the phone and the sound card: {members}");
        let metrics = api
            .send(
                api.client
                    .get(format!("{}/metrics", api.base))
                    .basic_auth(TOKEN, Some(SECRET)),
            )
            .await
            .text;
        assert!(metrics.contains("sipconf_soundcard_up 1"), "{metrics}");
        assert!(metrics.contains("sipconf_soundcard_drift_correction_ppm{direction=\"capture\"}"));
        // The loudspeaker's pipe holds up to 0.7 s: let it drain.
        std::thread::sleep(Duration::from_millis(1500));
        let played = device.played();
        device.unplug();

        let heard = steady(&recording.samples);
        let microphone = median(levels(heard, MICROPHONE_HZ, 8000));
        let level_db = db_ratio(microphone, AMPLITUDE);
        assert!(
            level_db.abs() < 1.5,
            "the phone hears the room's microphone at {level_db:.2} dB ({microphone:.0})"
        );
        let own = median(levels(heard, 400.0, 8000));
        eprintln!("the phone hears the room's microphone at {level_db:.2} dB");
        assert!(
            db_ratio(own, microphone) < -40.0,
            "the phone hears itself: {own:.0}"
        );

        assert!(
            played.len() > 3 * DEVICE_HZ,
            "the loudspeaker played {} samples",
            played.len()
        );
        let phone_in_room = loudest(levels(&played, 400.0, DEVICE_HZ));
        let level_db = db_ratio(phone_in_room, AMPLITUDE);
        eprintln!("the room's loudspeaker plays the phone at {level_db:.2} dB");
        assert!(
            level_db.abs() < 1.5,
            "the room hears the phone at {level_db:.2} dB ({phone_in_room:.0})"
        );
        // The mix minus itself: the room's own microphone is not played back.
        let echo = loudest(levels(&played, MICROPHONE_HZ, DEVICE_HZ));
        assert!(
            db_ratio(echo, phone_in_room) < -40.0,
            "the room hears its own microphone: {echo:.0}"
        );
        assert_eq!(phone.hangup().await.expect("bye"), 200);
    }

    #[test]
    fn the_device_list_names_the_alsa_devices_the_configuration_takes() {
        let home = AlsaHome::new();
        let out = std::process::Command::new(super::common::program())
            .args(["soundcard", "--list"])
            .env("HOME", home.path())
            .output()
            .expect("run sipconf");
        assert!(out.status.success());
        let listed = String::from_utf8_lossy(&out.stdout);
        for name in ["sipconf_mic", "sipconf_speaker"] {
            assert!(
                listed
                    .lines()
                    .any(|line| line.starts_with(&format!("{name}\t"))),
                "{name} is not listed:\n{listed}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_sound_card_is_logged_and_the_phones_talk() {
        let room = ROOM.replace("sipconf_mic", "no_such_microphone");
        let daemon = Daemon::start_with_env("", &room, &[("HOME", "/nonexistent")]);
        assert!(
            daemon.wait_for_log("cannot open the sound card", Duration::from_secs(5)),
            "the missing device was not logged; log:\n{}",
            daemon.log.lock().expect("log").join("\n")
        );
        assert!(daemon.logged("no_such_microphone"));
        let mut phones = Vec::new();
        for _ in 0..2 {
            let options = PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu);
            phones.push(Phone::call(options).await.expect("the room answers"));
        }
        let freqs = [500.0, 1300.0];
        let signals: Vec<_> = freqs.iter().map(|&f| sine(f)).collect();
        let results = stream_together(phones, &signals, Duration::from_secs(2)).await;
        assert_each_hears_the_others_and_not_itself(&results, &freqs);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sound_card_that_goes_away_is_logged_and_retried_and_the_phones_keep_talking() {
        let home = AlsaHome::new();
        let device = Device::plug(&home);
        let (daemon, _api) = daemon(&home);
        let mut phones = Vec::new();
        for _ in 0..2 {
            let options = PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu);
            phones.push(Phone::call(options).await.expect("the room answers"));
        }
        device.unplug();
        assert!(
            daemon.wait_for_log("sound card lost", Duration::from_secs(5)),
            "the lost device was not logged; log:\n{}",
            daemon.log.lock().expect("log").join("\n")
        );
        // The phones talk on while the room is gone.
        let freqs = [500.0, 1300.0];
        let signals: Vec<_> = freqs.iter().map(|&f| sine(f)).collect();
        let results = stream_together(phones, &signals, Duration::from_secs(2)).await;
        assert_each_hears_the_others_and_not_itself(&results, &freqs);

        // Plugged back in, it is found again within the retry period.
        let device = Device::plug(&home);
        let opened_twice = || {
            daemon
                .log
                .lock()
                .expect("log")
                .iter()
                .filter(|line| line.contains("sound card open"))
                .count()
                >= 2
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !opened_twice() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(opened_twice(), "the sound card was not opened again");
        device.unplug();
        for (mut phone, _) in results {
            assert_eq!(phone.hangup().await.expect("bye"), 200);
        }
    }
}
