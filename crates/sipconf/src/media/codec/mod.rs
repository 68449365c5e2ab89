//! Audio codecs the bridge speaks on the wire, behind one `Codec` value the
//! engine can store per member and call without dynamic dispatch.

pub mod g711;
pub mod g722;
pub mod opus;

/// A negotiated audio codec (RFC 3551 static payload types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 u-law, payload type 0.
    Pcmu,
    /// G.711 A-law, payload type 8.
    Pcma,
}

impl Codec {
    /// Every codec, in a fixed order; `index()` is the position in this list.
    pub const ALL: [Codec; 2] = [Codec::Pcmu, Codec::Pcma];

    /// The RTP payload type (RFC 3551 table 4).
    pub fn payload_type(&self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The codec with this static payload type, if we speak it.
    pub fn from_payload_type(payload_type: u8) -> Option<Codec> {
        Codec::ALL
            .into_iter()
            .find(|codec| codec.payload_type() == payload_type)
    }

    /// The encoding name as SDP `a=rtpmap` spells it.
    pub fn encoding_name(&self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// Audio sample rate, which for G.711 is also the RTP clock rate.
    pub fn sample_rate_hz(&self) -> u32 {
        8000
    }

    /// Position in `Codec::ALL`, for per-codec tables such as the mixer's shared payloads.
    pub fn index(&self) -> usize {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 1,
        }
    }

    /// Encoded bytes per linear sample (G.711: one).
    pub fn bytes_per_sample(&self) -> usize {
        1
    }

    /// The encoded byte for linear zero; a payload of these is silence.
    pub fn silence_byte(&self) -> u8 {
        match self {
            Codec::Pcmu => g711::linear_to_ulaw(0),
            Codec::Pcma => g711::linear_to_alaw(0),
        }
    }

    /// Encodes `min(pcm.len(), out.len())` samples; returns the number of bytes written.
    pub fn encode(&self, pcm: &[i16], out: &mut [u8]) -> usize {
        let count = pcm.len().min(out.len());
        let (pcm, out) = (&pcm[..count], &mut out[..count]);
        match self {
            Codec::Pcmu => g711::encode_ulaw(pcm, out),
            Codec::Pcma => g711::encode_alaw(pcm, out),
        }
        count
    }

    /// Decodes `min(payload.len(), out.len())` bytes; returns the number of samples written.
    pub fn decode(&self, payload: &[u8], out: &mut [i16]) -> usize {
        let count = payload.len().min(out.len());
        let (payload, out) = (&payload[..count], &mut out[..count]);
        match self {
            Codec::Pcmu => g711::decode_ulaw(payload, out),
            Codec::Pcma => g711::decode_alaw(payload, out),
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_types_follow_rfc_3551() {
        assert_eq!(Codec::Pcmu.payload_type(), 0);
        assert_eq!(Codec::Pcma.payload_type(), 8);
        assert_eq!(Codec::from_payload_type(8), Some(Codec::Pcma));
        assert_eq!(Codec::from_payload_type(9), None);
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
        for codec in Codec::ALL {
            let mut pcm = [99i16; 1];
            codec.decode(&[codec.silence_byte()], &mut pcm);
            assert!(pcm[0].abs() <= 8, "{codec:?} silence decodes to {}", pcm[0]);
        }
    }
}
