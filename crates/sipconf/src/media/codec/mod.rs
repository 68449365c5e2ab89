//! Audio codecs the bridge speaks on the wire, behind one `Codec` value the
//! engine can store per member and call without dynamic dispatch, and the
//! state a stateful codec keeps per member (`CodecState`).
//!
//! Who owns what (docs/architecture.md "Wideband conferences"): a member's
//! decoder and the encoder of its own mix are in its `CodecState`, in its
//! slot; G.711 keeps none, G.722's is a plain value (reset in place when a
//! slot starts), Opus's is made by libopus on the heap, so it is built on
//! the signalling side (`CodecState::new`) and carried boxed in
//! `AddMember`/`Command::SetCodec`. The encoders of a mix's shared payloads
//! are the mix's (`mixer.rs`).

pub mod g711;
pub mod g722;
pub mod opus;

use std::fmt;

use g722::{G722Decoder, G722Encoder};
use opus::{OpusDecoder, OpusEncoder, OpusError};

/// A codec the media plane cannot serve in this build or on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodecUnavailable(pub Codec);

impl fmt::Display for CodecUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "codec {} is not available in the media plane",
            self.0.encoding_name()
        )
    }
}

impl std::error::Error for CodecUnavailable {}

/// One member's codec state: its decoder and the encoder of the mix it
/// hears when it talks (or has a mix of its own). Coding through it is the
/// same call for every codec; G.711 keeps nothing.
// Held inline in every slot, allocated once at start: boxing G.722's plain
// state to shrink G.711's would put a heap allocation on each join.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum CodecState {
    /// PCMU or PCMA: stateless.
    G711(Codec),
    /// G.722: ADPCM states, plain values.
    G722 {
        decoder: G722Decoder,
        encoder: G722Encoder,
    },
    /// Opus: libopus states on the heap, made on the signalling side
    /// (`OpusStates::new`).
    Opus(Box<OpusCodec>),
}

/// An Opus member's decoder and the encoder of its own mix, both at 16 kHz.
pub struct OpusCodec {
    pub decoder: OpusDecoder,
    pub encoder: OpusEncoder,
}

impl fmt::Debug for OpusCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpusCodec")
    }
}

/// What an Opus member brings to the media plane, all allocated by libopus
/// on the signalling side so the media thread never does: its own states,
/// and an encoder for its mix's shared Opus stream, which a mix without one
/// keeps (`Mix::offer_opus_encoder`) and any other drops while handling the
/// command (as SRTP contexts are).
pub struct OpusStates {
    pub member: CodecState,
    pub mix_encoder: Box<OpusEncoder>,
}

impl fmt::Debug for OpusStates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpusStates")
    }
}

impl OpusStates {
    /// Everything an Opus member needs, at `bitrate_bps` and `complexity`
    /// (`MediaConfig::opus_bitrate_bps`, `opus_complexity`).
    pub fn new(bitrate_bps: u32, complexity: u8) -> Result<Box<OpusStates>, OpusError> {
        let rate_hz = Codec::Opus.sample_rate_hz();
        let encoder = || OpusEncoder::new(rate_hz, bitrate_bps, complexity);
        Ok(Box::new(OpusStates {
            member: CodecState::Opus(Box::new(OpusCodec {
                decoder: OpusDecoder::new(rate_hz)?,
                encoder: encoder()?,
            })),
            mix_encoder: Box::new(encoder()?),
        }))
    }
}

impl CodecState {
    /// The state a member speaking `codec` starts with; made on the
    /// signalling side for codecs whose state lives on the heap.
    pub fn new(codec: Codec) -> Result<CodecState, CodecUnavailable> {
        match codec {
            Codec::Pcmu | Codec::Pcma => Ok(CodecState::G711(codec)),
            Codec::G722 => Ok(CodecState::G722 {
                decoder: G722Decoder::new(),
                encoder: G722Encoder::new(),
            }),
            // On the heap: `OpusStates::new`, off the media thread.
            Codec::Opus => Err(CodecUnavailable(codec)),
        }
    }

    /// Whether the media plane can serve `codec` here (Opus: whether
    /// libopus loads).
    pub fn available(codec: Codec) -> Result<(), CodecUnavailable> {
        match codec {
            Codec::Opus => opus::available().map_err(|_| CodecUnavailable(codec)),
            _ => CodecState::new(codec).map(|_| ()),
        }
    }

    pub fn codec(&self) -> Codec {
        match self {
            CodecState::G711(codec) => *codec,
            CodecState::G722 { .. } => Codec::G722,
            CodecState::Opus(_) => Codec::Opus,
        }
    }

    /// Decodes one frame's payload into `out` (at `codec().sample_rate_hz()`);
    /// returns the samples written. Out of line: the tick decodes G.711
    /// through `Codec::decode` itself.
    #[inline(never)]
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> usize {
        match self {
            CodecState::G711(codec) => codec.decode(payload, out),
            CodecState::G722 { decoder, .. } => decoder.decode(payload, out),
            // A packet libopus refuses is concealed like a lost one.
            CodecState::Opus(opus) => opus
                .decoder
                .decode(payload, out)
                .or_else(|_| opus.decoder.conceal(out))
                .unwrap_or(0),
        }
    }

    /// A frame was lost: Opus recovers it from `next` (the following
    /// packet, when it has arrived) by its in-band FEC, else conceals it
    /// (PLC); returns the samples written, none for a codec that cannot
    /// (the caller fades the last frame out).
    #[cold]
    #[inline(never)]
    pub fn recover(&mut self, next: Option<&[u8]>, out: &mut [i16]) -> usize {
        let CodecState::Opus(opus) = self else {
            return 0;
        };
        let recovered = match next {
            Some(next) => opus.decoder.decode_fec(next, out),
            None => opus.decoder.conceal(out),
        };
        recovered
            .or_else(|_| opus.decoder.conceal(out))
            .unwrap_or(0)
    }

    /// Encodes the member's own frame (at the codec's rate) into `out`;
    /// returns the bytes written.
    #[inline(never)]
    pub fn encode_own(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        match self {
            CodecState::G711(codec) => codec.encode(pcm, out),
            CodecState::G722 { encoder, .. } => encoder.encode(pcm, out),
            CodecState::Opus(opus) => opus.encoder.encode(pcm, out).unwrap_or(0),
        }
    }

    /// The member starts hearing a mix of its own after the listeners'
    /// shared stream: its encoder continues from the shared one's state
    /// (`shared`, before this tick's frame), so the phone's decoder, which
    /// followed the shared stream, stays in step. Opus needs no such
    /// hand-over: each packet carries its own mode and the decoder follows
    /// a change of encoder with at most a short transition.
    pub fn continue_from_shared(&mut self, shared: &SharedEncoders) {
        if let CodecState::G722 { encoder, .. } = self {
            *encoder = shared.g722;
        }
    }
}

/// The encoders of one mix's shared payloads (stateful codecs only: G.711
/// needs none), kept by the mix, one per codec.
#[derive(Clone, Debug, Default)]
pub struct SharedEncoders {
    pub g722: G722Encoder,
}

impl SharedEncoders {
    /// Encodes the listeners' frame (at the codec's rate) for `codec`;
    /// returns the bytes written. G.711 goes through `Codec::encode`.
    pub fn encode(&mut self, codec: Codec, pcm: &[i16], out: &mut [u8]) -> usize {
        match codec {
            Codec::G722 => self.g722.encode(pcm, out),
            Codec::Pcmu | Codec::Pcma | Codec::Opus => codec.encode(pcm, out),
        }
    }

    /// The shared stream of `codec` starts (its first listener joined): from
    /// the reset state, as the phone's decoder starts.
    pub fn reset(&mut self, codec: Codec) {
        if codec == Codec::G722 {
            self.g722.reset();
        }
    }
}

/// A negotiated audio codec. Its payload type is whatever SDP negotiated
/// (`AddMember::payload_type`); `static_payload_type` is RFC 3551's, where
/// there is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 u-law, payload type 0.
    Pcmu,
    /// G.711 A-law, payload type 8.
    Pcma,
    /// G.722 at 64 kbit/s, payload type 9: 16 kHz audio on an 8000 Hz RTP
    /// clock (RFC 3551 §4.5.2).
    G722,
    /// Opus (RFC 7587), dynamic payload type, RTP clock 48000 Hz; mono
    /// voice, decoded to and encoded from 16 kHz here.
    Opus,
}

impl Codec {
    /// Every codec, in a fixed order; `index()` is the position in this list.
    pub const ALL: [Codec; 4] = [Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus];

    /// The two G.711 laws: stateless, one byte per 8 kHz sample
    /// (`encode`, `decode`).
    pub const G711: [Codec; 2] = [Codec::Pcmu, Codec::Pcma];

    /// The RFC 3551 static payload type (table 4), if the codec has one.
    pub fn static_payload_type(&self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::G722 => Some(9),
            Codec::Opus => None,
        }
    }

    /// The codec with this static payload type, if we speak it.
    pub fn from_static_payload_type(payload_type: u8) -> Option<Codec> {
        Codec::ALL
            .into_iter()
            .find(|codec| codec.static_payload_type() == Some(payload_type))
    }

    /// The encoding name as SDP `a=rtpmap` spells it.
    pub fn encoding_name(&self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
            Codec::Opus => "opus",
        }
    }

    /// The RTP clock rate: what a packet's timestamp counts (RFC 3551
    /// keeps G.722 at 8000 for history's sake; RFC 7587 puts Opus at 48000).
    pub fn rtp_clock_hz(&self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::G722 => 8000,
            Codec::Opus => 48_000,
        }
    }

    /// The rate we decode to and encode from.
    pub fn sample_rate_hz(&self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::G722 | Codec::Opus => 16_000,
        }
    }

    /// Decoded at 16 kHz: the member's conference mixes at 16 kHz.
    pub fn is_wideband(&self) -> bool {
        self.sample_rate_hz() > 8000
    }

    /// RTP timestamp units in one 20 ms frame (160, or 960 for Opus).
    pub fn rtp_frame_ticks(&self) -> u32 {
        self.rtp_clock_hz() / 50
    }

    /// G.711: stateless, one byte per sample, coded by `encode` and `decode`.
    pub fn is_g711(&self) -> bool {
        matches!(self, Codec::Pcmu | Codec::Pcma)
    }

    /// Position in `Codec::ALL`, for per-codec tables such as the mixer's shared payloads.
    pub fn index(&self) -> usize {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 1,
            Codec::G722 => 2,
            Codec::Opus => 3,
        }
    }

    /// The byte a gap in a jitter-buffered frame is filled with: G.711's
    /// encoded zero; for G.722 a zero byte (the lowest sub-band codes,
    /// heard as a near-silent click at worst). Opus frames are never
    /// filled byte-wise.
    pub fn silence_byte(&self) -> u8 {
        match self {
            Codec::Pcmu => g711::linear_to_ulaw(0),
            Codec::Pcma => g711::linear_to_alaw(0),
            Codec::G722 | Codec::Opus => 0,
        }
    }

    /// G.711 only (stateless): encodes `min(pcm.len(), out.len())` samples;
    /// returns the number of bytes written (none for a stateful codec,
    /// which a member's `CodecState` codes).
    pub fn encode(&self, pcm: &[i16], out: &mut [u8]) -> usize {
        let count = pcm.len().min(out.len());
        let (pcm, out) = (&pcm[..count], &mut out[..count]);
        match self {
            Codec::Pcmu => g711::encode_ulaw(pcm, out),
            Codec::Pcma => g711::encode_alaw(pcm, out),
            Codec::G722 | Codec::Opus => return 0,
        }
        count
    }

    /// G.711 only (stateless): decodes `min(payload.len(), out.len())`
    /// bytes; returns the number of samples written (none for a stateful codec).
    pub fn decode(&self, payload: &[u8], out: &mut [i16]) -> usize {
        let count = payload.len().min(out.len());
        let (payload, out) = (&payload[..count], &mut out[..count]);
        match self {
            Codec::Pcmu => g711::decode_ulaw(payload, out),
            Codec::Pcma => g711::decode_alaw(payload, out),
            Codec::G722 | Codec::Opus => return 0,
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_types_and_clocks_follow_rfc_3551_and_7587() {
        assert_eq!(Codec::Pcmu.static_payload_type(), Some(0));
        assert_eq!(Codec::Pcma.static_payload_type(), Some(8));
        assert_eq!(Codec::from_static_payload_type(9), Some(Codec::G722));
        assert_eq!(Codec::from_static_payload_type(96), None);
        let clocks: Vec<(u32, u32, u32)> = Codec::ALL
            .iter()
            .map(|c| (c.rtp_clock_hz(), c.sample_rate_hz(), c.rtp_frame_ticks()))
            .collect();
        assert_eq!(
            clocks,
            [
                (8000, 8000, 160),
                (8000, 8000, 160),
                (8000, 16_000, 160),
                (48_000, 16_000, 960)
            ]
        );
        for (index, codec) in Codec::ALL.iter().enumerate() {
            assert_eq!(codec.index(), index);
        }
    }

    #[test]
    fn encode_and_decode_stop_at_the_shorter_buffer() {
        let pcm = [1000i16; 10];
        let mut out = [0u8; 4];
        assert_eq!(Codec::Pcmu.encode(&pcm, &mut out), 4);
        let mut back = [0i16; 2];
        assert_eq!(Codec::Pcma.decode(&out, &mut back), 2);
    }

    #[test]
    fn silence_byte_decodes_to_zero_or_the_smallest_step() {
        for codec in Codec::G711 {
            let mut pcm = [99i16; 1];
            codec.decode(&[codec.silence_byte()], &mut pcm);
            assert!(pcm[0].abs() <= 8, "{codec:?} silence decodes to {}", pcm[0]);
        }
    }
}
