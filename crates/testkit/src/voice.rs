//! The test phone's voice: the codecs it offers (G.711 and Opus, RFC 7587),
//! how it reads the bridge's answer, and the codec state it then sends and
//! decodes with. G.711 and Opus come from the bridge's library; the SDP
//! reading here is the kit's own, so the bridge is checked against a second
//! reading of RFC 3264 and RFC 7587.

use sipconf::media::codec::opus::{OpusDecoder, OpusEncoder, OpusError};
use sipconf::media::Codec;
use std::collections::HashMap;

/// The rate an Opus phone samples and plays at: wideband, as the bridge's mix.
pub const OPUS_AUDIO_RATE_HZ: u32 = 16_000;
/// Opus's RTP clock whatever the audio rate (RFC 7587 4.1).
pub const OPUS_RTP_CLOCK_HZ: u32 = 48_000;
/// The payload type phones commonly give Opus (linphone, baresip, WebRTC).
pub const OPUS_PAYLOAD_TYPE: u8 = 111;
/// What the phone's Opus encoder sends: 32 kbit/s at complexity 5.
const OPUS_BITRATE_BPS: u32 = 32_000;
const OPUS_COMPLEXITY: u8 = 5;

/// Opus in an offer: its dynamic payload type and its place among the
/// offered codecs (0: first, before any G.711).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpusOffer {
    pub payload_type: u8,
    pub position: usize,
}

impl OpusOffer {
    /// Opus with payload type 111, offered first.
    pub fn first() -> OpusOffer {
        OpusOffer {
            payload_type: OPUS_PAYLOAD_TYPE,
            position: 0,
        }
    }
}

/// The media part of an offer: the `m=` line's payload types and the
/// attribute lines describing them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedMedia {
    pub payload_types: Vec<u8>,
    pub attributes: Vec<String>,
}

/// The payload types and `a=rtpmap`/`a=fmtp` lines of an offer. With Opus,
/// telephone-event is offered at 48000 Hz with `telephone_event`, and (when
/// G.711 is offered too) at 8000 Hz with `telephone_event + 1`: RFC 4733
/// events run on the clock of the audio they go with.
pub fn offer_media(
    codecs: &[Codec],
    opus: Option<OpusOffer>,
    other_payloads: &[(u8, String)],
    telephone_event: Option<u8>,
) -> OfferedMedia {
    let mut payload_types: Vec<u8> = codecs.iter().map(Codec::payload_type).collect();
    let mut attributes: Vec<String> = codecs
        .iter()
        .map(|c| format!("a=rtpmap:{} {}/8000", c.payload_type(), c.encoding_name()))
        .collect();
    if let Some(opus) = opus {
        let at = opus.position.min(payload_types.len());
        payload_types.insert(at, opus.payload_type);
        let pt = opus.payload_type;
        attributes.insert(at, format!("a=rtpmap:{pt} opus/48000/2"));
        attributes.insert(at + 1, format!("a=fmtp:{pt} useinbandfec=1"));
    }
    for (pt, name) in other_payloads {
        payload_types.push(*pt);
        attributes.push(format!("a=rtpmap:{pt} {name}"));
    }
    if let Some(te) = telephone_event {
        let mut events = Vec::new();
        if opus.is_some() {
            events.push((te, OPUS_RTP_CLOCK_HZ));
            if !codecs.is_empty() {
                events.push((te.wrapping_add(1), 8000));
            }
        } else {
            events.push((te, 8000));
        }
        for (pt, clock_hz) in events {
            payload_types.push(pt);
            attributes.push(format!("a=rtpmap:{pt} telephone-event/{clock_hz}"));
            attributes.push(format!("a=fmtp:{pt} 0-16"));
        }
    }
    OfferedMedia {
        payload_types,
        attributes,
    }
}

/// The codec an answer chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnsweredCodec {
    G711(Codec),
    Opus { payload_type: u8 },
}

/// What the phone reads from the bridge's SDP answer besides the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answered {
    pub codec: AnsweredCodec,
    /// The telephone-event payload type and its clock rate, if answered.
    pub telephone_event: Option<(u8, u32)>,
}

/// Reads the chosen codec (the first payload type of `m=audio`, named by its
/// `a=rtpmap` or, for 0 and 8, statically) and telephone-event from an answer.
pub fn read_answer(sdp: &str) -> Result<Answered, String> {
    let media = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .ok_or("no m=audio line")?;
    let first: u8 = media
        .split_whitespace()
        .nth(2)
        .and_then(|pt| pt.parse().ok())
        .ok_or("no payload type")?;
    let rtpmaps: HashMap<u8, String> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(pt, name)| Some((pt.parse().ok()?, name.trim().to_ascii_lowercase())))
        .collect();
    let codec = match (first, rtpmaps.get(&first).map(String::as_str)) {
        (pt, Some(name)) if name.starts_with("opus/48000") => {
            AnsweredCodec::Opus { payload_type: pt }
        }
        (0, None) | (0, Some("pcmu/8000")) => AnsweredCodec::G711(Codec::Pcmu),
        (8, None) | (8, Some("pcma/8000")) => AnsweredCodec::G711(Codec::Pcma),
        (pt, name) => {
            return Err(format!(
                "an unexpected first payload type {pt} ({})",
                name.map_or("no rtpmap", |name| name)
            ))
        }
    };
    let telephone_event = rtpmaps.iter().find_map(|(pt, name)| {
        let clock = name.strip_prefix("telephone-event/")?;
        Some((*pt, clock.parse().ok()?))
    });
    Ok(Answered {
        codec,
        telephone_event,
    })
}

/// The codec state of a call: what the phone encodes with and decodes.
pub enum Voice {
    G711(Codec),
    Opus {
        payload_type: u8,
        encoder: Box<OpusEncoder>,
        decoder: Box<OpusDecoder>,
    },
}

impl Voice {
    /// The state for an answered codec (Opus needs libopus here).
    pub fn new(codec: AnsweredCodec) -> Result<Voice, OpusError> {
        Ok(match codec {
            AnsweredCodec::G711(codec) => Voice::G711(codec),
            AnsweredCodec::Opus { payload_type } => Voice::Opus {
                payload_type,
                encoder: Box::new(OpusEncoder::new(
                    OPUS_AUDIO_RATE_HZ,
                    OPUS_BITRATE_BPS,
                    OPUS_COMPLEXITY,
                )?),
                decoder: Box::new(OpusDecoder::new(OPUS_AUDIO_RATE_HZ)?),
            },
        })
    }

    /// The answered codec this state speaks.
    pub fn codec(&self) -> AnsweredCodec {
        match self {
            Voice::G711(codec) => AnsweredCodec::G711(*codec),
            Voice::Opus { payload_type, .. } => AnsweredCodec::Opus {
                payload_type: *payload_type,
            },
        }
    }

    /// The payload type of its RTP packets.
    pub fn payload_type(&self) -> u8 {
        match self {
            Voice::G711(codec) => codec.payload_type(),
            Voice::Opus { payload_type, .. } => *payload_type,
        }
    }

    /// The rate of the audio the phone sends and records.
    pub fn audio_rate_hz(&self) -> u32 {
        match self {
            Voice::G711(_) => 8000,
            Voice::Opus { .. } => OPUS_AUDIO_RATE_HZ,
        }
    }

    /// The RTP clock rate.
    pub fn rtp_clock_hz(&self) -> u32 {
        match self {
            Voice::G711(_) => 8000,
            Voice::Opus { .. } => OPUS_RTP_CLOCK_HZ,
        }
    }

    /// Audio samples in one 20 ms frame.
    pub fn frame_samples(&self) -> usize {
        self.audio_rate_hz() as usize / 50
    }

    /// RTP timestamp units in one 20 ms frame (160 for G.711, 960 for Opus).
    pub fn frame_ticks(&self) -> u32 {
        self.rtp_clock_hz() / 50
    }

    /// Encodes one 20 ms frame into `out`; returns the payload length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, OpusError> {
        match self {
            Voice::G711(codec) => Ok(codec.encode(pcm, out)),
            Voice::Opus { encoder, .. } => encoder.encode(pcm, out),
        }
    }

    /// Decodes a payload onto the end of `samples`; returns the samples added.
    pub fn decode(&mut self, payload: &[u8], samples: &mut Vec<i16>) -> Result<usize, OpusError> {
        let start = samples.len();
        match self {
            Voice::G711(codec) => {
                samples.resize(start + payload.len(), 0);
                Ok(codec.decode(payload, &mut samples[start..]))
            }
            Voice::Opus { decoder, .. } => {
                // Up to 120 ms in one packet (RFC 6716 3.2.5).
                samples.resize(start + 6 * decoder.frame_samples(), 0);
                let decoded = decoder.decode(payload, &mut samples[start..]);
                samples.truncate(start + *decoded.as_ref().unwrap_or(&0));
                decoded
            }
        }
    }

    /// RTP timestamp units covered by `samples` decoded audio samples.
    pub fn ticks_for(&self, samples: usize) -> u32 {
        (samples as u64 * self.rtp_clock_hz() as u64 / self.audio_rate_hz() as u64) as u32
    }

    /// Audio samples covered by `ticks` RTP timestamp units.
    pub fn samples_for(&self, ticks: u32) -> usize {
        (ticks as u64 * self.audio_rate_hz() as u64 / self.rtp_clock_hz() as u64) as usize
    }
}

/// Whether libopus is here for a test of the kit; in CI (`CI` set) its
/// absence fails the test, elsewhere the test says why it skips.
#[cfg(test)]
pub(crate) fn opus_here(test: &str) -> bool {
    match sipconf::media::codec::opus::available() {
        Ok(()) => true,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("{test}: libopus is required in CI (.ci/run installs libopus0): {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opus_only_offer_has_opus_and_telephone_event_at_48000() {
        let offer = offer_media(&[], Some(OpusOffer::first()), &[], Some(101));
        assert_eq!(offer.payload_types, [111, 101]);
        assert_eq!(
            offer.attributes,
            [
                "a=rtpmap:111 opus/48000/2",
                "a=fmtp:111 useinbandfec=1",
                "a=rtpmap:101 telephone-event/48000",
                "a=fmtp:101 0-16",
            ]
        );
    }

    #[test]
    fn opus_first_with_g711_offers_events_at_both_clocks() {
        let offer = offer_media(
            &[Codec::Pcmu, Codec::Pcma],
            Some(OpusOffer::first()),
            &[],
            Some(101),
        );
        assert_eq!(offer.payload_types, [111, 0, 8, 101, 102]);
        assert_eq!(offer.attributes[0], "a=rtpmap:111 opus/48000/2");
        assert!(offer
            .attributes
            .contains(&"a=rtpmap:101 telephone-event/48000".to_string()));
        assert!(offer
            .attributes
            .contains(&"a=rtpmap:102 telephone-event/8000".to_string()));
    }

    #[test]
    fn opus_can_be_offered_after_g711() {
        let opus = OpusOffer {
            payload_type: 96,
            position: 1,
        };
        let offer = offer_media(
            &[Codec::Pcma],
            Some(opus),
            &[(18, "G729/8000".into())],
            None,
        );
        assert_eq!(offer.payload_types, [8, 96, 18]);
        assert_eq!(
            offer.attributes,
            [
                "a=rtpmap:8 PCMA/8000",
                "a=rtpmap:96 opus/48000/2",
                "a=fmtp:96 useinbandfec=1",
                "a=rtpmap:18 G729/8000",
            ]
        );
    }

    #[test]
    fn a_g711_offer_is_unchanged_by_opus_support() {
        let offer = offer_media(&[Codec::Pcmu], None, &[], Some(101));
        assert_eq!(offer.payload_types, [0, 101]);
        assert_eq!(
            offer.attributes,
            [
                "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=fmtp:101 0-16",
            ]
        );
    }

    fn answer(m_line: &str, attributes: &str) -> String {
        format!("v=0\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n{m_line}\r\n{attributes}")
    }

    #[test]
    fn an_opus_answer_is_read_with_its_payload_type_and_event_clock() {
        let sdp = answer(
            "m=audio 4000 RTP/AVP 111 101",
            "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\na=rtpmap:101 telephone-event/48000\r\n",
        );
        assert_eq!(
            read_answer(&sdp),
            Ok(Answered {
                codec: AnsweredCodec::Opus { payload_type: 111 },
                telephone_event: Some((101, 48000)),
            })
        );
        // Opus is named by its rtpmap, whatever the number and case.
        let sdp = answer("m=audio 4000 RTP/AVP 96", "a=rtpmap:96 OPUS/48000/2\r\n");
        assert_eq!(
            read_answer(&sdp).map(|a| a.codec),
            Ok(AnsweredCodec::Opus { payload_type: 96 })
        );
    }

    #[test]
    fn a_g711_answer_to_an_opus_offer_is_read_as_g711() {
        let sdp = answer(
            "m=audio 4000 RTP/AVP 0 102",
            "a=rtpmap:0 PCMU/8000\r\na=rtpmap:102 telephone-event/8000\r\n",
        );
        assert_eq!(
            read_answer(&sdp),
            Ok(Answered {
                codec: AnsweredCodec::G711(Codec::Pcmu),
                telephone_event: Some((102, 8000)),
            })
        );
        let sdp = answer("m=audio 4000 RTP/AVP 8", "");
        assert_eq!(
            read_answer(&sdp).map(|a| a.codec),
            Ok(AnsweredCodec::G711(Codec::Pcma))
        );
    }

    #[test]
    fn answers_the_phone_cannot_speak_are_refused() {
        let unknown = answer("m=audio 4000 RTP/AVP 18", "a=rtpmap:18 G729/8000\r\n");
        assert!(read_answer(&unknown)
            .unwrap_err()
            .contains("18 (g729/8000)"));
        let wrong_clock = answer("m=audio 4000 RTP/AVP 111", "a=rtpmap:111 opus/16000\r\n");
        assert!(read_answer(&wrong_clock).is_err());
        assert!(read_answer("v=0\r\n").is_err());
        assert!(read_answer(&answer("m=audio 4000 RTP/AVP", "")).is_err());
    }

    #[test]
    fn an_opus_voice_runs_a_48000_clock_over_16_khz_audio() {
        if !opus_here("an_opus_voice_runs_a_48000_clock_over_16_khz_audio") {
            return;
        }
        let mut voice = Voice::new(AnsweredCodec::Opus { payload_type: 111 }).expect("opus");
        assert_eq!(voice.payload_type(), 111);
        assert_eq!(voice.frame_samples(), 320);
        assert_eq!(voice.frame_ticks(), 960);
        assert_eq!(voice.ticks_for(320), 960);
        assert_eq!(voice.samples_for(960), 320);
        // A 1 kHz tone comes back at its level once the codec has settled.
        let tone: Vec<i16> = (0..50 * 320)
            .map(|n| (8000.0 * (2.0 * std::f64::consts::PI * n as f64 / 16.0).sin()) as i16)
            .collect();
        let mut heard = Vec::new();
        let mut packet = [0u8; 1275];
        for frame in tone.chunks(320) {
            let written = voice.encode(frame, &mut packet).expect("encode");
            assert_eq!(voice.decode(&packet[..written], &mut heard), Ok(320));
        }
        let tail = &heard[25 * 320..];
        let level = crate::meter::tone_amplitude_at(tail, 1000.0, OPUS_AUDIO_RATE_HZ);
        assert!((7000.0..9000.0).contains(&level), "1 kHz at {level}");
        // A payload libopus rejects adds nothing.
        assert!(voice.decode(&[0x03, 0x00], &mut heard).is_err());
        assert_eq!(heard.len(), 50 * 320);
    }

    #[test]
    fn a_g711_voice_is_unchanged() {
        let mut voice = Voice::new(AnsweredCodec::G711(Codec::Pcmu)).expect("g711");
        assert_eq!(
            (
                voice.payload_type(),
                voice.frame_samples(),
                voice.frame_ticks()
            ),
            (0, 160, 160)
        );
        let mut packet = [0u8; 160];
        assert_eq!(voice.encode(&[1000; 160], &mut packet), Ok(160));
        let mut heard = Vec::new();
        assert_eq!(voice.decode(&packet, &mut heard), Ok(160));
        assert!((heard[0] - 1000).abs() < 40);
    }
}
