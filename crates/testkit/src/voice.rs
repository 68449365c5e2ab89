//! The test phone's voice: the codecs it offers (G.711, G.722 and Opus,
//! RFC 3551 and RFC 7587), how it reads the bridge's answer, and the codec
//! state it then sends and decodes with. The codecs come from the bridge's
//! library; the SDP reading here is the kit's own, so the bridge is checked
//! against a second reading of RFC 3264, RFC 3551 and RFC 7587.

use sipconf::media::codec::g722::{G722Decoder, G722Encoder};
use sipconf::media::codec::opus::{OpusDecoder, OpusEncoder, OpusError};
use sipconf::media::Codec;
use std::collections::HashMap;

/// The G.711 codecs, in the order the kit tries them on an answer.
const G711: [Codec; 2] = [Codec::Pcmu, Codec::Pcma];

/// The static payload type of a G.711 codec (RFC 3551 table 4): the one
/// place the kit asks the library for it.
fn g711_payload_type(codec: Codec) -> u8 {
    codec.static_payload_type().unwrap_or(0)
}

/// The clock of G.711's and G.722's RTP timestamps and of the
/// telephone-event that goes with them.
const NARROW_RTP_CLOCK_HZ: u32 = 8000;
/// G.722's static payload type (RFC 3551 table 4).
pub const G722_PAYLOAD_TYPE: u8 = 9;
/// The rate of G.722 audio; its RTP clock stays 8000 (RFC 3551 4.5.2).
pub const G722_AUDIO_RATE_HZ: u32 = 16_000;
/// The rate an Opus phone samples and plays at: wideband, as the bridge's mix.
pub const OPUS_AUDIO_RATE_HZ: u32 = 16_000;
/// Opus's RTP clock whatever the audio rate (RFC 7587 4.1).
pub const OPUS_RTP_CLOCK_HZ: u32 = 48_000;
/// The payload type phones commonly give Opus (linphone, baresip, WebRTC).
pub const OPUS_PAYLOAD_TYPE: u8 = 111;
/// What the phone's Opus encoder sends: 32 kbit/s at complexity 5.
const OPUS_BITRATE_BPS: u32 = 32_000;
const OPUS_COMPLEXITY: u8 = 5;

/// Where a phone lists G.722 (payload type 9, `G722/8000`) in its offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum G722Offer {
    /// Before its G.711 codecs, as HD desk phones offer it.
    First,
    /// After its G.711 codecs.
    Last,
    /// Alone: the phone offers no G.711 at all.
    Only,
}

/// Opus in an offer: its dynamic payload type and its place among the
/// offered codecs (0: first, before any G.711 or G.722).
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

/// A codec the phone speaks: one it offers, and the one an answer chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnsweredCodec {
    G711(Codec),
    /// G.722 at 64 kbit/s, payload type 9.
    G722,
    Opus {
        payload_type: u8,
    },
}

impl AnsweredCodec {
    /// The payload type of its RTP packets.
    pub fn payload_type(self) -> u8 {
        match self {
            AnsweredCodec::G711(codec) => g711_payload_type(codec),
            AnsweredCodec::G722 => G722_PAYLOAD_TYPE,
            AnsweredCodec::Opus { payload_type } => payload_type,
        }
    }

    /// The rate of the audio the phone sends and records.
    pub fn audio_rate_hz(self) -> u32 {
        match self {
            AnsweredCodec::G711(_) => 8000,
            AnsweredCodec::G722 => G722_AUDIO_RATE_HZ,
            AnsweredCodec::Opus { .. } => OPUS_AUDIO_RATE_HZ,
        }
    }

    /// The RTP clock rate.
    pub fn rtp_clock_hz(self) -> u32 {
        match self {
            AnsweredCodec::G711(_) | AnsweredCodec::G722 => NARROW_RTP_CLOCK_HZ,
            AnsweredCodec::Opus { .. } => OPUS_RTP_CLOCK_HZ,
        }
    }

    /// Its `a=rtpmap` and `a=fmtp` lines in an offer.
    fn attributes(self) -> Vec<String> {
        let pt = self.payload_type();
        match self {
            AnsweredCodec::G711(codec) => {
                vec![format!("a=rtpmap:{pt} {}/8000", codec.encoding_name())]
            }
            AnsweredCodec::G722 => vec![format!("a=rtpmap:{pt} G722/8000")],
            AnsweredCodec::Opus { .. } => vec![
                format!("a=rtpmap:{pt} opus/48000/2"),
                format!("a=fmtp:{pt} useinbandfec=1"),
            ],
        }
    }
}

/// The codecs of an offer in the order listed: G.711 as `codecs`, G.722
/// placed as `g722` says, Opus at its position.
pub fn offered_codecs(
    codecs: &[Codec],
    g722: Option<G722Offer>,
    opus: Option<OpusOffer>,
) -> Vec<AnsweredCodec> {
    let g711 = codecs.iter().map(|&c| AnsweredCodec::G711(c));
    let mut offered: Vec<AnsweredCodec> = match g722 {
        None => g711.collect(),
        Some(G722Offer::First) => std::iter::once(AnsweredCodec::G722).chain(g711).collect(),
        Some(G722Offer::Last) => g711.chain(std::iter::once(AnsweredCodec::G722)).collect(),
        Some(G722Offer::Only) => vec![AnsweredCodec::G722],
    };
    if let Some(opus) = opus {
        let at = opus.position.min(offered.len());
        offered.insert(
            at,
            AnsweredCodec::Opus {
                payload_type: opus.payload_type,
            },
        );
    }
    offered
}

/// The media part of an offer: the `m=` line's payload types and the
/// attribute lines describing them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedMedia {
    pub payload_types: Vec<u8>,
    pub attributes: Vec<String>,
}

/// The payload types and `a=rtpmap`/`a=fmtp` lines of an offer of the
/// codecs [`offered_codecs`] lists. With Opus, telephone-event is offered at
/// 48000 Hz with `telephone_event`, and (when G.711 or G.722 is offered too)
/// at 8000 Hz with `telephone_event + 1`: RFC 4733 events run on the clock
/// of the audio they go with.
pub fn offer_media(
    codecs: &[Codec],
    g722: Option<G722Offer>,
    opus: Option<OpusOffer>,
    other_payloads: &[(u8, String)],
    telephone_event: Option<u8>,
) -> OfferedMedia {
    let offered = offered_codecs(codecs, g722, opus);
    let mut payload_types: Vec<u8> = offered.iter().map(|c| c.payload_type()).collect();
    let mut attributes: Vec<String> = offered.iter().flat_map(|c| c.attributes()).collect();
    for (pt, name) in other_payloads {
        payload_types.push(*pt);
        attributes.push(format!("a=rtpmap:{pt} {name}"));
    }
    if let Some(te) = telephone_event {
        let wide = offered
            .iter()
            .any(|c| c.rtp_clock_hz() == OPUS_RTP_CLOCK_HZ);
        let narrow = offered
            .iter()
            .any(|c| c.rtp_clock_hz() == NARROW_RTP_CLOCK_HZ);
        let mut events = Vec::new();
        if wide {
            events.push((te, OPUS_RTP_CLOCK_HZ));
            if narrow {
                events.push((te.wrapping_add(1), NARROW_RTP_CLOCK_HZ));
            }
        } else {
            events.push((te, NARROW_RTP_CLOCK_HZ));
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

/// What the phone reads from the bridge's SDP answer besides the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answered {
    pub codec: AnsweredCodec,
    /// The telephone-event payload type and its clock rate, if answered.
    pub telephone_event: Option<(u8, u32)>,
}

/// Reads the chosen codec (the first payload type of `m=audio`, RFC 3264
/// 6.1, named by its `a=rtpmap` or, for the static types 0, 8 and 9, by its
/// number; an rtpmap contradicting the static type is refused) and
/// telephone-event from an answer.
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
    let name = rtpmaps.get(&first).map(String::as_str);
    let g711 = G711.into_iter().find(|&c| g711_payload_type(c) == first);
    let codec = match (first, name, g711) {
        (pt, Some(name), _) if name.starts_with("opus/48000") => {
            AnsweredCodec::Opus { payload_type: pt }
        }
        (G722_PAYLOAD_TYPE, None | Some("g722/8000"), _) => AnsweredCodec::G722,
        (_, None, Some(codec)) => AnsweredCodec::G711(codec),
        (_, Some(name), Some(codec))
            if name.eq_ignore_ascii_case(&format!("{}/8000", codec.encoding_name())) =>
        {
            AnsweredCodec::G711(codec)
        }
        (pt, name, _) => {
            return Err(format!(
                "an unexpected first payload type {pt} ({})",
                name.unwrap_or("no rtpmap")
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
    /// The phone's own G.722 pair (the bridge's coder; boxed, as Opus's,
    /// so a G.711 voice stays small).
    G722 {
        encoder: Box<G722Encoder>,
        decoder: Box<G722Decoder>,
    },
    Opus {
        payload_type: u8,
        encoder: Box<OpusEncoder>,
        decoder: Box<OpusDecoder>,
    },
}

impl Voice {
    /// The state for an answered codec, from its reset state (Opus needs
    /// libopus here).
    pub fn new(codec: AnsweredCodec) -> Result<Voice, OpusError> {
        Ok(match codec {
            AnsweredCodec::G711(codec) => Voice::G711(codec),
            AnsweredCodec::G722 => Voice::G722 {
                encoder: Box::new(G722Encoder::new()),
                decoder: Box::new(G722Decoder::new()),
            },
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
            Voice::G722 { .. } => AnsweredCodec::G722,
            Voice::Opus { payload_type, .. } => AnsweredCodec::Opus {
                payload_type: *payload_type,
            },
        }
    }

    /// The payload type of its RTP packets.
    pub fn payload_type(&self) -> u8 {
        self.codec().payload_type()
    }

    /// The rate of the audio the phone sends and records.
    pub fn audio_rate_hz(&self) -> u32 {
        self.codec().audio_rate_hz()
    }

    /// The RTP clock rate.
    pub fn rtp_clock_hz(&self) -> u32 {
        self.codec().rtp_clock_hz()
    }

    /// Audio samples in one 20 ms frame.
    pub fn frame_samples(&self) -> usize {
        self.audio_rate_hz() as usize / 50
    }

    /// RTP timestamp units in one 20 ms frame (160 for G.711 and G.722, 960
    /// for Opus).
    pub fn frame_ticks(&self) -> u32 {
        self.rtp_clock_hz() / 50
    }

    /// Encodes one 20 ms frame into `out`; returns the payload length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, OpusError> {
        match self {
            Voice::G711(codec) => Ok(codec.encode(pcm, out)),
            Voice::G722 { encoder, .. } => Ok(encoder.encode(pcm, out)),
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
            Voice::G722 { decoder, .. } => {
                // Each octet holds two 16 kHz samples (64 kbit/s).
                samples.resize(start + 2 * payload.len(), 0);
                let decoded = decoder.decode(payload, &mut samples[start..]);
                samples.truncate(start + decoded);
                Ok(decoded)
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
        let offer = offer_media(&[], None, Some(OpusOffer::first()), &[], Some(101));
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
            None,
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
            None,
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
        let offer = offer_media(&[Codec::Pcmu], None, None, &[], Some(101));
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

    #[test]
    fn g722_with_opus_offers_events_at_both_clocks() {
        let offer = offer_media(
            &[Codec::Pcmu],
            Some(G722Offer::Only),
            Some(OpusOffer::first()),
            &[],
            Some(101),
        );
        assert_eq!(offer.payload_types, [111, 9, 101, 102]);
        assert!(offer
            .attributes
            .contains(&"a=rtpmap:9 G722/8000".to_string()));
        assert!(offer
            .attributes
            .contains(&"a=rtpmap:102 telephone-event/8000".to_string()));
    }

    #[test]
    fn a_g722_answer_is_read_by_its_static_type_or_rtpmap() {
        for attributes in ["", "a=rtpmap:9 G722/8000\r\n"] {
            let sdp = answer("m=audio 4000 RTP/AVP 9", attributes);
            assert_eq!(read_answer(&sdp).map(|a| a.codec), Ok(AnsweredCodec::G722));
        }
        let renamed = answer("m=audio 4000 RTP/AVP 9", "a=rtpmap:9 G7221/16000\r\n");
        assert!(read_answer(&renamed).is_err());
        let pcmu_as_pcma = answer("m=audio 4000 RTP/AVP 0", "a=rtpmap:0 PCMA/8000\r\n");
        assert!(read_answer(&pcmu_as_pcma).is_err());
    }

    #[test]
    fn a_g722_voice_runs_an_8000_clock_over_16_khz_audio() {
        let mut voice = Voice::new(AnsweredCodec::G722).expect("g722");
        assert_eq!(
            (
                voice.payload_type(),
                voice.frame_samples(),
                voice.frame_ticks()
            ),
            (9, 320, 160)
        );
        assert_eq!(voice.ticks_for(320), 160);
        assert_eq!(voice.samples_for(160), 320);
        let mut packet = [0u8; 160];
        let mut heard = Vec::new();
        for _ in 0..5 {
            assert_eq!(voice.encode(&[0; 320], &mut packet), Ok(160));
            assert_eq!(voice.decode(&packet, &mut heard), Ok(320));
        }
        assert_eq!(heard.len(), 5 * 320);
    }
}
