//! `[soundcard]`: the room's own speakerphone joins a room's conference as
//! a member (README "The room's speakerphone"; built with the cargo feature
//! `soundcard`). Only the file's rules live here; the device is
//! `audio/soundcard.rs`.

use super::{invalid, Invalid, Room};
use serde::Deserialize;
use toml::Spanned;

/// The sound-card member, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct SoundcardConfig {
    /// The ALSA device the room's microphone is read from ("default", or a
    /// name `sipconf soundcard --list` shows).
    pub capture: String,
    /// The ALSA device the room's loudspeaker is written to.
    pub playback: String,
    /// The number of the room it joins.
    pub room: String,
    /// Who it is in the records and the API (the member's call's `from`).
    pub name: String,
    /// Gain on what the microphone picks up, before the mix.
    pub talk_gain_db: f32,
    /// Gain on what the loudspeaker plays.
    pub listen_gain_db: f32,
}

/// The most gain either way: as the keypad's bound, twice.
const MAX_GAIN_DB: f64 = 24.0;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSoundcard {
    room: Spanned<String>,
    #[serde(default)]
    capture: Option<Spanned<String>>,
    #[serde(default)]
    playback: Option<Spanned<String>>,
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    talk_gain_db: Option<Spanned<f64>>,
    #[serde(default)]
    listen_gain_db: Option<Spanned<f64>>,
}

fn device(value: &Option<Spanned<String>>, key: &str) -> Result<String, Invalid> {
    match value {
        None => Ok("default".to_string()),
        Some(name) if name.get_ref().trim().is_empty() => Err(invalid(
            name,
            key,
            "must name an ALSA device (\"default\", or one `sipconf soundcard --list` shows)",
        )),
        Some(name) => Ok(name.get_ref().trim().to_string()),
    }
}

fn gain(value: &Option<Spanned<f64>>, key: &str) -> Result<f32, Invalid> {
    let Some(value) = value else {
        return Ok(0.0);
    };
    let db = *value.get_ref();
    if !(-MAX_GAIN_DB..=MAX_GAIN_DB).contains(&db) {
        return Err(invalid(
            value,
            key,
            format!("{db} dB is out of range: must be -{MAX_GAIN_DB}..={MAX_GAIN_DB}"),
        ));
    }
    Ok(db as f32)
}

/// The `[soundcard]` table, if the file has one; its room must be one of `rooms`.
pub(super) fn validate(
    raw: Option<RawSoundcard>,
    rooms: &[Room],
) -> Result<Option<SoundcardConfig>, Invalid> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let room = raw.room.get_ref().trim().to_string();
    if !rooms.iter().any(|r| r.number == room) {
        return Err(invalid(
            &raw.room,
            "soundcard.room",
            format!("`{room}` is not the number of a [[room]]"),
        ));
    }
    let name = match &raw.name {
        None => "Room speakerphone".to_string(),
        Some(name) if name.get_ref().trim().is_empty() => {
            return Err(invalid(name, "soundcard.name", "must not be empty"))
        }
        Some(name) => name.get_ref().trim().to_string(),
    };
    Ok(Some(SoundcardConfig {
        capture: device(&raw.capture, "soundcard.capture")?,
        playback: device(&raw.playback, "soundcard.playback")?,
        room,
        name,
        talk_gain_db: gain(&raw.talk_gain_db, "soundcard.talk_gain_db")?,
        listen_gain_db: gain(&raw.listen_gain_db, "soundcard.listen_gain_db")?,
    }))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn a_soundcard_is_off_unless_configured_and_defaults_to_the_default_device() {
        assert_eq!(Config::default_config().soundcard, None);
        let config = Config::parse("[soundcard]\nroom = \"1000\"\n", "x").expect("valid");
        let card = config.soundcard.expect("configured");
        assert_eq!(
            (card.capture.as_str(), card.playback.as_str()),
            ("default", "default")
        );
        assert_eq!(card.name, "Room speakerphone");
        assert_eq!((card.talk_gain_db, card.listen_gain_db), (0.0, 0.0));
    }

    #[test]
    fn soundcard_errors_name_key_and_line() {
        for (text, key, line) in [
            ("[soundcard]\nroom = \"2000\"\n", "soundcard.room", 2),
            (
                "[soundcard]\nroom = \"1000\"\ncapture = \" \"\n",
                "soundcard.capture",
                3,
            ),
            (
                "[soundcard]\nroom = \"1000\"\n\nlisten_gain_db = 30.0\n",
                "soundcard.listen_gain_db",
                4,
            ),
            (
                "[soundcard]\nroom = \"1000\"\nname = \"\"\n",
                "soundcard.name",
                3,
            ),
            (
                "[soundcard]\nroom = \"1000\"\nvolume = 3\n",
                "soundcard.volume",
                3,
            ),
        ] {
            let e = Config::parse(text, "x").expect_err(text);
            assert_eq!(
                (e.key.as_deref(), e.line),
                (Some(key), Some(line)),
                "{text}: {e}"
            );
        }
        let e = Config::parse("[soundcard]\ncapture = \"hw:1\"\n", "x").expect_err("no room");
        assert!(e.message.contains("room"), "{e}");
    }
}
