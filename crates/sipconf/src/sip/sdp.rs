//! SDP offer/answer for one audio stream (RFC 4566, RFC 3264): parse the caller's offer,
//! pick a codec we can mix, and write the answer; for outbound calls, write our offer
//! and read the callee's answer.
//!
//! A hand parser: we read only the handful of lines an audio call needs, and every
//! rejection names the line that was wrong. It chooses no port, address or key (the
//! switchboard hands them in) and keeps no state between calls.
//!
//! SRTP keys travel in `a=crypto` lines (SDES, RFC 4568): the offer lists the
//! suites and keys its author sends with, the answer picks one line by its tag
//! and gives the answerer's own key for that suite.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use base64::Engine as _;

use crate::media::srtp::{MasterKey, Suite};

/// Media direction attribute (RFC 3264 section 6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The direction an answer carries for an offer with this direction (RFC 3264 6.1).
    pub fn answer_to(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// The attribute name, without `a=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn from_attribute(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
}

/// One payload type listed on the audio `m=` line, with what its `a=rtpmap` says (or the
/// static assignment of RFC 3551 when there is no rtpmap).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferedPayload {
    pub pt: u8,
    /// Encoding name as written in the offer (compare case-insensitively).
    pub encoding_name: String,
    pub clock_rate_hz: u32,
    pub channels: u8,
}

/// What we need to know from an SDP offer to set up one audio stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// `c=` address (media level wins over session level). `0.0.0.0` means hold (RFC 2543 style).
    pub connection_addr: IpAddr,
    pub audio_port: u16,
    /// Payloads in the caller's order of preference.
    pub payloads: Vec<OfferedPayload>,
    /// The offered `telephone-event/8000` payload type (RFC 4733), if any
    /// (`telephone_event_at` finds one at another clock).
    pub telephone_event_pt: Option<u8>,
    /// Media-level direction, else session-level, else sendrecv.
    pub direction: Direction,
    pub ptime_ms: Option<u32>,
    /// The `m=` line's profile is RTP/SAVP or RTP/SAVPF (RFC 3711 7.1).
    pub secure_profile: bool,
    /// The usable `a=crypto` lines of the audio stream, in the offerer's order.
    pub crypto: Vec<Crypto>,
    /// Why the first `a=crypto` line that is not in `crypto` was left out.
    pub crypto_skipped: Option<String>,
}

/// One `a=crypto` line we can use (RFC 4568 9.1): one of our suites, one key,
/// no MKI, no session parameters that would change the transforms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    pub suite: Suite,
    pub key: MasterKey,
}

/// `media.srtp`: whether calls may, or must, encrypt their media.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SrtpPolicy {
    /// Plain RTP only: an RTP/SAVP offer gets 488 (RFC 3264 6: we support
    /// no profile of that stream); `a=crypto` on RTP/AVP is ignored.
    Off,
    /// SRTP when the offer carries a usable `a=crypto`, plain RTP otherwise.
    #[default]
    Offer,
    /// SRTP only: an offer without a usable `a=crypto` gets 488.
    Require,
}

impl Offer {
    /// Where the caller wants to receive RTP.
    pub fn remote_rtp_addr(&self) -> SocketAddr {
        SocketAddr::new(self.connection_addr, self.audio_port)
    }

    /// The offered `telephone-event` payload type at RTP clock `rate_hz`, if any.
    pub fn telephone_event_at(&self, rate_hz: u32) -> Option<u8> {
        self.payloads
            .iter()
            .find(|payload| {
                payload
                    .encoding_name
                    .eq_ignore_ascii_case("telephone-event")
                    && payload.clock_rate_hz == rate_hz
            })
            .map(|payload| payload.pt)
    }

    /// The far end puts us on hold: it will not receive (sendonly/inactive) or sends
    /// the old-style `c=0.0.0.0` (RFC 3264 section 8.4).
    pub fn is_hold(&self) -> bool {
        self.connection_addr.is_unspecified()
            || matches!(self.direction, Direction::SendOnly | Direction::Inactive)
    }
}

/// Why an SDP offer could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP is not UTF-8")]
    NotUtf8,
    #[error("SDP has no v= line")]
    MissingVersion,
    #[error("malformed c= line: {0}")]
    MalformedConnection(String),
    #[error("no c= line for the audio stream")]
    MissingConnection,
    #[error("malformed m= line: {0}")]
    MalformedMedia(String),
    #[error("no active audio m= line")]
    NoAudioStream,
    #[error("audio stream is not RTP/AVP or RTP/SAVP: {0}")]
    UnsupportedProfile(String),
    #[error("malformed a=rtpmap: {0}")]
    MalformedRtpmap(String),
    #[error("malformed a=ptime: {0}")]
    MalformedPtime(String),
}

/// A codec the mixer can encode and decode, as SDP names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SdpCodec {
    Pcmu,
    Pcma,
    /// G.722 (RFC 3551 4.5.2): 16 kHz audio on an 8000 Hz RTP clock, static type 9.
    G722,
    /// Opus (RFC 7587): always `opus/48000/2` in SDP, whatever is sent.
    Opus,
}

/// The payload type our offers give Opus (a dynamic one; answers take the offerer's).
pub const OPUS_OFFER_PT: u8 = 111;

impl SdpCodec {
    /// Every codec, in the bridge's default order of preference (`media.codecs`).
    pub const DEFAULT_ORDER: [SdpCodec; 4] = [
        SdpCodec::Opus,
        SdpCodec::G722,
        SdpCodec::Pcmu,
        SdpCodec::Pcma,
    ];

    /// The RFC 3551 static payload type, if the codec has one.
    pub fn static_pt(self) -> Option<u8> {
        match self {
            SdpCodec::Pcmu => Some(0),
            SdpCodec::Pcma => Some(8),
            SdpCodec::G722 => Some(9),
            SdpCodec::Opus => None,
        }
    }

    /// The payload type our offers list it under.
    pub fn offer_pt(self) -> u8 {
        self.static_pt().unwrap_or(OPUS_OFFER_PT)
    }

    pub fn encoding_name(self) -> &'static str {
        match self {
            SdpCodec::Pcmu => "PCMU",
            SdpCodec::Pcma => "PCMA",
            SdpCodec::G722 => "G722",
            SdpCodec::Opus => "opus",
        }
    }

    /// The RTP clock (not always the sampling rate: G.722 samples at 16 kHz).
    pub fn rtp_clock_rate_hz(self) -> u32 {
        match self {
            SdpCodec::Opus => 48_000,
            _ => 8000,
        }
    }

    /// Channels as `a=rtpmap` writes them (RFC 7587 6.1: Opus is always `/2`).
    pub fn rtpmap_channels(self) -> u8 {
        match self {
            SdpCodec::Opus => 2,
            _ => 1,
        }
    }

    /// The name `media.codecs` uses.
    pub fn config_name(self) -> &'static str {
        match self {
            SdpCodec::Pcmu => "pcmu",
            SdpCodec::Pcma => "pcma",
            SdpCodec::G722 => "g722",
            SdpCodec::Opus => "opus",
        }
    }

    /// The codec `media.codecs` names (case-insensitive).
    pub fn from_config_name(name: &str) -> Option<SdpCodec> {
        SdpCodec::DEFAULT_ORDER
            .into_iter()
            .find(|codec| codec.config_name().eq_ignore_ascii_case(name))
    }

    fn matches(self, payload: &OfferedPayload) -> bool {
        let channels_ok = match self {
            // RFC 7587 says `/2`; a bare `opus/48000` (one channel) is the same stream.
            SdpCodec::Opus => matches!(payload.channels, 1 | 2),
            _ => payload.channels == 1,
        };
        payload
            .encoding_name
            .eq_ignore_ascii_case(self.encoding_name())
            && payload.clock_rate_hz == self.rtp_clock_rate_hz()
            && channels_ok
    }

    /// The `a=fmtp` parameters we write for it, if any: for Opus, that we
    /// send and want in-band FEC and never use more than the 16 kHz the mix
    /// carries (RFC 7587 7.1), so the far end spends no bits above it.
    fn fmtp(self) -> Option<&'static str> {
        match self {
            SdpCodec::Opus => {
                Some("useinbandfec=1;maxplaybackrate=16000;sprop-maxcapturerate=16000")
            }
            _ => None,
        }
    }

    /// `a=rtpmap` (and `a=fmtp`) lines for the codec under payload type `pt`.
    fn write_rtpmap(self, sdp: &mut String, pt: u8) {
        let _ = write!(
            sdp,
            "a=rtpmap:{pt} {}/{}",
            self.encoding_name(),
            self.rtp_clock_rate_hz()
        );
        if self.rtpmap_channels() != 1 {
            let _ = write!(sdp, "/{}", self.rtpmap_channels());
        }
        sdp.push_str("\r\n");
        if let Some(fmtp) = self.fmtp() {
            let _ = write!(sdp, "a=fmtp:{pt} {fmtp}\r\n");
        }
    }
}

/// Packet time we send and ask for.
pub const PTIME_MS: u32 = 20;

/// The SRTP of a call: the suite and tag of the offer's line we took, the
/// far end's key (what it sends with) and ours (what we send with).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SrtpKeys {
    pub tag: u32,
    pub suite: Suite,
    pub remote: MasterKey,
    pub local: MasterKey,
}

/// The result of negotiation: what both sides will use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub codec: SdpCodec,
    /// The payload type the caller used for the codec (equals the static one for 0/8).
    pub codec_pt: u8,
    pub telephone_event_pt: Option<u8>,
    /// The RTP clock of `telephone_event_pt`'s events: the codec's where the
    /// offer had one at it (RFC 4733 2.1), else 8000.
    pub telephone_event_rate_hz: u32,
    pub remote_rtp_addr: SocketAddr,
    /// Direction of our answer.
    pub direction: Direction,
    /// The answer's profile is RTP/SAVP (the offer's was secure).
    pub secure_profile: bool,
    /// Some: media is SRTP with these keys.
    pub srtp: Option<SrtpKeys>,
}

/// Why an offer cannot be answered; the call layer answers 488 with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotAcceptable {
    #[error("no common codec (we take {0})")]
    NoCommonCodec(String),
    #[error("SRTP is off here (media.srtp): offer RTP/AVP")]
    SrtpOff,
    #[error("SRTP is required here: offer a=crypto with AES_CM_128_HMAC_SHA1_80 or _32")]
    SrtpRequired,
    #[error("no usable a=crypto ({0})")]
    NoUsableCrypto(String),
}

/// Pick the first codec of `codecs` (the bridge's order of preference,
/// `media.codecs`) that the offer carries, and, as `policy` allows, the first
/// usable `a=crypto` line, answered with `local_key`.
pub fn negotiate(
    offer: &Offer,
    codecs: &[SdpCodec],
    policy: SrtpPolicy,
    local_key: MasterKey,
) -> Result<Negotiated, NotAcceptable> {
    let srtp = match (policy, offer.crypto.first()) {
        (SrtpPolicy::Off, _) if offer.secure_profile => return Err(NotAcceptable::SrtpOff),
        // Best-effort SRTP (`a=crypto` on RTP/AVP) is answered in plain RTP.
        (SrtpPolicy::Off, _) => None,
        (_, Some(crypto)) => Some(SrtpKeys {
            tag: crypto.tag,
            suite: crypto.suite,
            remote: crypto.key,
            local: local_key,
        }),
        (_, None) if offer.secure_profile => {
            let why = offer.crypto_skipped.as_deref().unwrap_or("none offered");
            return Err(NotAcceptable::NoUsableCrypto(why.to_owned()));
        }
        (SrtpPolicy::Require, None) => return Err(NotAcceptable::SrtpRequired),
        (SrtpPolicy::Offer, None) => None,
    };
    let mut negotiated = choose_codec(offer, codecs)?;
    negotiated.srtp = srtp;
    negotiated.secure_profile = offer.secure_profile && srtp.is_some();
    Ok(negotiated)
}

/// The first codec of `codecs` that the offer carries, with the telephone
/// events, address and direction that go with it (no SRTP).
pub fn choose_codec(offer: &Offer, codecs: &[SdpCodec]) -> Result<Negotiated, NotAcceptable> {
    codecs
        .iter()
        .find_map(|&codec| {
            offer
                .payloads
                .iter()
                .find(|payload| codec.matches(payload))
                .map(|payload| negotiated_with(offer, codec, payload.pt))
        })
        .ok_or_else(|| no_common_codec(codecs))
}

fn no_common_codec(codecs: &[SdpCodec]) -> NotAcceptable {
    let names: Vec<&str> = codecs.iter().map(|codec| codec.encoding_name()).collect();
    NotAcceptable::NoCommonCodec(names.join(", "))
}

/// The telephone events, address and direction that go with `codec`.
fn negotiated_with(offer: &Offer, codec: SdpCodec, codec_pt: u8) -> Negotiated {
    let codec_clock = codec.rtp_clock_rate_hz();
    let (telephone_event_pt, telephone_event_rate_hz) = match offer.telephone_event_at(codec_clock)
    {
        Some(pt) => (Some(pt), codec_clock),
        None => (offer.telephone_event_pt, 8000),
    };
    Negotiated {
        codec,
        codec_pt,
        telephone_event_pt,
        telephone_event_rate_hz,
        remote_rtp_addr: offer.remote_rtp_addr(),
        direction: offer.direction.answer_to(),
        secure_profile: false,
        srtp: None,
    }
}

/// Our `o=` line identity. The version must grow with every new answer in the same
/// dialog (RFC 3264 section 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdpSession {
    pub session_id: u64,
    pub session_version: u64,
}

impl SdpSession {
    pub fn new(session_id: u64) -> Self {
        SdpSession {
            session_id,
            session_version: session_id,
        }
    }

    /// Call before each re-answer.
    pub fn bump_version(&mut self) {
        self.session_version = self.session_version.wrapping_add(1);
    }
}

/// The session part of our SDP: v=, o=, s=, c= and t= lines.
fn write_session_head(sdp: &mut String, session: SdpSession, local_rtp_addr: SocketAddr) {
    let ip = local_rtp_addr.ip();
    let addr_type = if ip.is_ipv4() { "IP4" } else { "IP6" };
    // Writing to a String cannot fail.
    let _ = write!(
        sdp,
        "v=0\r\no=sipconf {} {} IN {addr_type} {ip}\r\ns=sipconf\r\nc=IN {addr_type} {ip}\r\nt=0 0\r\n",
        session.session_id, session.session_version
    );
}

/// The one suite our offers carry, as tag 1: the 80-bit tag every phone takes.
pub const OFFERED_SUITE: Suite = Suite::AesCm128HmacSha1_80;
const OFFERED_CRYPTO_TAG: u32 = 1;

/// Write the SDP offer of an outbound call: `codecs` in our order of
/// preference, RFC 4733 telephone events at 8000 Hz (and at 48000 Hz under
/// the next payload type when Opus is offered), 20 ms packets, sendrecv; with
/// `srtp_key`, on RTP/SAVP with one `a=crypto` line carrying it.
pub fn build_offer(
    session: SdpSession,
    local_rtp_addr: SocketAddr,
    codecs: &[SdpCodec],
    telephone_event_pt: u8,
    srtp_key: Option<&MasterKey>,
) -> String {
    let mut sdp = String::with_capacity(512);
    write_session_head(&mut sdp, session, local_rtp_addr);
    let profile = if srtp_key.is_some() {
        "RTP/SAVP"
    } else {
        "RTP/AVP"
    };
    let wideband_events = codecs
        .contains(&SdpCodec::Opus)
        .then(|| wideband_event_pt(telephone_event_pt));
    let _ = write!(sdp, "m=audio {} {profile}", local_rtp_addr.port());
    for codec in codecs {
        let _ = write!(sdp, " {}", codec.offer_pt());
    }
    let _ = write!(sdp, " {telephone_event_pt}");
    if let Some(pt) = wideband_events {
        let _ = write!(sdp, " {pt}");
    }
    sdp.push_str("\r\n");
    for codec in codecs {
        codec.write_rtpmap(&mut sdp, codec.offer_pt());
    }
    write_telephone_event(&mut sdp, telephone_event_pt, 8000);
    if let Some(pt) = wideband_events {
        write_telephone_event(&mut sdp, pt, SdpCodec::Opus.rtp_clock_rate_hz());
    }
    let _ = write!(
        sdp,
        "a=ptime:{PTIME_MS}\r\na={}\r\n",
        Direction::SendRecv.as_str()
    );
    if let Some(key) = srtp_key {
        write_crypto(&mut sdp, OFFERED_CRYPTO_TAG, OFFERED_SUITE, key);
    }
    sdp
}

/// The payload type our offers give telephone events at 48000 Hz: the one
/// after the 8000 Hz type's, never Opus's.
fn wideband_event_pt(telephone_event_pt: u8) -> u8 {
    let mut pt = if telephone_event_pt >= 127 {
        96
    } else {
        telephone_event_pt + 1
    };
    if pt == OPUS_OFFER_PT {
        pt += 1;
    }
    pt
}

fn write_telephone_event(sdp: &mut String, pt: u8, rate_hz: u32) {
    let _ = write!(
        sdp,
        "a=rtpmap:{pt} telephone-event/{rate_hz}\r\na=fmtp:{pt} 0-15\r\n"
    );
}

/// Appends one `a=crypto` line (RFC 4568 9.1) carrying `key` for `suite`.
pub fn write_crypto(sdp: &mut String, tag: u32, suite: Suite, key: &MasterKey) {
    let _ = write!(
        sdp,
        "a=crypto:{tag} {} inline:{}\r\n",
        suite.name(),
        base64::engine::general_purpose::STANDARD.encode(key.concatenated())
    );
}

/// Parse the SDP answer to our offer. An answer has the structure of an offer (RFC 3264
/// section 6), so the same reader applies.
pub fn parse_answer(body: &[u8]) -> Result<Offer, SdpError> {
    parse_offer(body)
}

/// What an answer to our offer settles: the answerer's first codec of those we
/// offered, `codecs` (RFC 3264 6.1 lets the answerer order them), its
/// telephone-event type, and the direction we send in, mirrored from the answer's.
/// When we offered SRTP with `offered_key`, the answer must take our line
/// (tag 1, our suite) and give its own key (RFC 4568 7.1.2).
pub fn negotiate_answer(
    answer: &Offer,
    codecs: &[SdpCodec],
    offered_key: Option<MasterKey>,
) -> Result<Negotiated, NotAcceptable> {
    let (codec, codec_pt) = answer
        .payloads
        .iter()
        .find_map(|payload| {
            codecs
                .iter()
                .find(|codec| codec.matches(payload))
                .map(|&codec| (codec, payload.pt))
        })
        .ok_or_else(|| no_common_codec(codecs))?;
    let mut negotiated = negotiated_with(answer, codec, codec_pt);
    if let Some(local) = offered_key {
        let crypto = answer
            .crypto
            .iter()
            .find(|crypto| crypto.tag == OFFERED_CRYPTO_TAG && crypto.suite == OFFERED_SUITE)
            .ok_or_else(|| {
                NotAcceptable::NoUsableCrypto(
                    answer
                        .crypto_skipped
                        .clone()
                        .unwrap_or_else(|| "the answer has no a=crypto:1".to_owned()),
                )
            })?;
        negotiated.srtp = Some(SrtpKeys {
            tag: crypto.tag,
            suite: crypto.suite,
            remote: crypto.key,
            local,
        });
        negotiated.secure_profile = answer.secure_profile;
    }
    Ok(negotiated)
}

/// Write an SDP answer for one audio stream.
pub fn build_answer(
    session: SdpSession,
    local_rtp_addr: SocketAddr,
    negotiated: &Negotiated,
) -> String {
    let mut sdp = String::with_capacity(256);
    write_session_head(&mut sdp, session, local_rtp_addr);
    let profile = if negotiated.secure_profile {
        "RTP/SAVP"
    } else {
        "RTP/AVP"
    };
    let _ = write!(
        sdp,
        "m=audio {} {profile} {}",
        local_rtp_addr.port(),
        negotiated.codec_pt
    );
    if let Some(pt) = negotiated.telephone_event_pt {
        let _ = write!(sdp, " {pt}");
    }
    sdp.push_str("\r\n");
    negotiated.codec.write_rtpmap(&mut sdp, negotiated.codec_pt);
    if let Some(pt) = negotiated.telephone_event_pt {
        write_telephone_event(&mut sdp, pt, negotiated.telephone_event_rate_hz);
    }
    let _ = write!(
        sdp,
        "a=ptime:{PTIME_MS}\r\na={}\r\n",
        negotiated.direction.as_str()
    );
    if let Some(srtp) = &negotiated.srtp {
        // RFC 4568 5.1.2: the offer's tag, our key for the suite it named.
        write_crypto(&mut sdp, srtp.tag, srtp.suite, &srtp.local);
    }
    sdp
}

/// Reads one `a=crypto` value (RFC 4568 9.1): `Ok` if we can use it, else why not.
/// `tag suite inline:key||salt[|lifetime][|MKI:length][;inline:...] [session-params]`.
pub fn parse_crypto(value: &str) -> Result<Crypto, String> {
    let mut fields = value.split_ascii_whitespace();
    let (Some(tag), Some(suite), Some(key_params)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(format!("malformed a=crypto:{value}"));
    };
    let tag: u32 = tag
        .parse()
        .ok()
        .filter(|tag| (1..=999_999_999).contains(tag))
        .ok_or_else(|| format!("a=crypto tag {tag} is not 1-9 digits"))?;
    let suite = Suite::parse(suite).ok_or_else(|| format!("suite {suite} is not supported"))?;
    // WSH (a window size hint) and KDR=0 leave the transforms as they are;
    // any other session parameter (UNENCRYPTED_SRTP, a key derivation rate,
    // FEC) would change them.
    if let Some(param) =
        fields.find(|param| !(param.starts_with("WSH=") || param.eq_ignore_ascii_case("KDR=0")))
    {
        return Err(format!("session parameter {param} is not supported"));
    }
    if key_params.contains(';') {
        return Err("several keys in one a=crypto (MKI) are not supported".to_owned());
    }
    let inline = key_params
        .get(..7)
        .filter(|method| method.eq_ignore_ascii_case("inline:"))
        .map(|_| &key_params[7..])
        .ok_or_else(|| format!("key method of {key_params} is not inline"))?;
    let mut parts = inline.split('|');
    let key_salt = parts.next().unwrap_or_default();
    // A lifetime is accepted and not enforced: a call re-keys before 2^31
    // packets only if it lasts more than a year. An MKI would tag every packet.
    for part in parts {
        if part.contains(':') {
            return Err("an MKI in a=crypto is not supported".to_owned());
        }
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key_salt)
        .map_err(|_| format!("key {key_salt} is not base64"))?;
    let key = MasterKey::from_concatenated(&bytes)
        .ok_or_else(|| format!("key is {} bytes, not 30", bytes.len()))?;
    Ok(Crypto { tag, suite, key })
}

/// RFC 3551 table 4: static audio payload types we can name without an rtpmap.
fn static_payload(pt: u8) -> Option<(&'static str, u32)> {
    match pt {
        0 => Some(("PCMU", 8000)),
        3 => Some(("GSM", 8000)),
        4 => Some(("G723", 8000)),
        8 => Some(("PCMA", 8000)),
        9 => Some(("G722", 8000)),
        18 => Some(("G729", 8000)),
        _ => None,
    }
}

fn parse_connection(value: &str) -> Result<IpAddr, SdpError> {
    let malformed = || SdpError::MalformedConnection(value.to_owned());
    let mut fields = value.split_ascii_whitespace();
    if fields.next() != Some("IN") {
        return Err(malformed());
    }
    let addr_type = fields.next().ok_or_else(malformed)?;
    // Multicast addresses may carry /ttl; we only take the address.
    let addr = fields
        .next()
        .ok_or_else(malformed)?
        .split('/')
        .next()
        .unwrap_or_default();
    let ip: IpAddr = addr.parse().map_err(|_| malformed())?;
    match (addr_type, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(ip),
        _ => Err(malformed()),
    }
}

struct AudioSection {
    port: u16,
    pts: Vec<u8>,
    connection: Option<IpAddr>,
    direction: Option<Direction>,
    rtpmaps: Vec<(u8, String, u32, u8)>,
    ptime_ms: Option<u32>,
    secure_profile: bool,
    crypto: Vec<Crypto>,
    crypto_skipped: Option<String>,
}

fn parse_rtpmap(value: &str) -> Result<(u8, String, u32, u8), SdpError> {
    let malformed = || SdpError::MalformedRtpmap(value.to_owned());
    let (pt, encoding) = value.split_once(' ').ok_or_else(malformed)?;
    let pt: u8 = pt.trim().parse().map_err(|_| malformed())?;
    let mut parts = encoding.trim().split('/');
    let name = parts
        .next()
        .filter(|n| !n.is_empty())
        .ok_or_else(malformed)?;
    let clock_rate_hz: u32 = parts
        .next()
        .ok_or_else(malformed)?
        .parse()
        .map_err(|_| malformed())?;
    let channels: u8 = match parts.next() {
        Some(ch) => ch.parse().map_err(|_| malformed())?,
        None => 1,
    };
    Ok((pt, name.to_owned(), clock_rate_hz, channels))
}

/// Parse an SDP offer and extract the first active audio stream.
pub fn parse_offer(body: &[u8]) -> Result<Offer, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
    let mut saw_version = false;
    let mut session_connection = None;
    let mut session_direction = None;
    let mut audio: Option<AudioSection> = None;
    // True while we are inside an m= section that is not the chosen audio stream.
    let mut in_other_media = false;

    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let Some((kind, value)) = line.split_once('=') else {
            continue;
        };
        match kind {
            "v" => saw_version = true,
            "m" => {
                let malformed = || SdpError::MalformedMedia(value.to_owned());
                let mut fields = value.split_ascii_whitespace();
                let media = fields.next().ok_or_else(malformed)?;
                let port_field = fields.next().ok_or_else(malformed)?;
                // A port may be written port/count (RFC 4566 5.14).
                let port: u16 = port_field
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .parse()
                    .map_err(|_| malformed())?;
                let profile = fields.next().ok_or_else(malformed)?;
                let wanted = media == "audio" && port != 0 && audio.is_none();
                if !wanted {
                    in_other_media = true;
                    continue;
                }
                let secure_profile = match profile {
                    "RTP/AVP" | "RTP/AVPF" => false,
                    "RTP/SAVP" | "RTP/SAVPF" => true,
                    _ => return Err(SdpError::UnsupportedProfile(profile.to_owned())),
                };
                let pts = fields
                    .map(|pt| pt.parse::<u8>().map_err(|_| malformed()))
                    .collect::<Result<Vec<u8>, SdpError>>()?;
                in_other_media = false;
                audio = Some(AudioSection {
                    port,
                    pts,
                    connection: None,
                    direction: None,
                    rtpmaps: Vec::new(),
                    ptime_ms: None,
                    secure_profile,
                    crypto: Vec::new(),
                    crypto_skipped: None,
                });
            }
            _ if in_other_media => {}
            "c" => {
                let ip = parse_connection(value)?;
                match audio.as_mut() {
                    Some(section) => section.connection = Some(ip),
                    None => session_connection = Some(ip),
                }
            }
            "a" => {
                let (name, attr_value) = value.split_once(':').unwrap_or((value, ""));
                if let Some(direction) = Direction::from_attribute(name) {
                    match audio.as_mut() {
                        Some(section) => section.direction = Some(direction),
                        None => session_direction = Some(direction),
                    }
                    continue;
                }
                let Some(section) = audio.as_mut() else {
                    continue;
                };
                match name {
                    "rtpmap" => section.rtpmaps.push(parse_rtpmap(attr_value)?),
                    "ptime" => {
                        let ptime_ms = attr_value
                            .trim()
                            .parse::<f32>()
                            .map_err(|_| SdpError::MalformedPtime(attr_value.to_owned()))?;
                        // Below 1 ms is no packet time (it would read as 0 ms).
                        if !(ptime_ms.is_finite() && ptime_ms >= 1.0) {
                            return Err(SdpError::MalformedPtime(attr_value.to_owned()));
                        }
                        section.ptime_ms = Some(ptime_ms as u32);
                    }
                    // A line we cannot use is skipped (RFC 4568 7.1.1): another may do.
                    "crypto" => match parse_crypto(attr_value) {
                        Ok(crypto) => section.crypto.push(crypto),
                        Err(why) => {
                            section.crypto_skipped.get_or_insert(why);
                        }
                    },
                    _ => {}
                }
            }
            _ => {}
        }
    }

    if !saw_version {
        return Err(SdpError::MissingVersion);
    }
    let section = audio.ok_or(SdpError::NoAudioStream)?;
    let connection_addr = section
        .connection
        .or(session_connection)
        .ok_or(SdpError::MissingConnection)?;

    let mut telephone_event_pt = None;
    let mut payloads = Vec::with_capacity(section.pts.len());
    for &pt in &section.pts {
        let mapped = section
            .rtpmaps
            .iter()
            .find(|(map_pt, ..)| *map_pt == pt)
            .map(|(_, name, rate, channels)| (name.clone(), *rate, *channels))
            .or_else(|| static_payload(pt).map(|(name, rate)| (name.to_owned(), rate, 1)));
        // Dynamic types without an rtpmap cannot be used; skip them rather than fail.
        let Some((encoding_name, clock_rate_hz, channels)) = mapped else {
            continue;
        };
        if encoding_name.eq_ignore_ascii_case("telephone-event") && clock_rate_hz == 8000 {
            telephone_event_pt.get_or_insert(pt);
        }
        payloads.push(OfferedPayload {
            pt,
            encoding_name,
            clock_rate_hz,
            channels,
        });
    }

    Ok(Offer {
        connection_addr,
        audio_port: section.port,
        payloads,
        telephone_event_pt,
        direction: section
            .direction
            .or(session_direction)
            .unwrap_or(Direction::SendRecv),
        ptime_ms: section.ptime_ms,
        secure_profile: section.secure_profile,
        crypto: section.crypto,
        crypto_skipped: section.crypto_skipped,
    })
}

/// Unspecified address used by old-style hold offers.
pub const HOLD_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

#[cfg(test)]
mod tests {
    use super::*;

    /// Every codec, in the default order of preference.
    const ALL: &[SdpCodec] = &SdpCodec::DEFAULT_ORDER;

    /// Our key in answers: 30 bytes of 0x11.
    const KEY: MasterKey = MasterKey {
        key: [0x11; 16],
        salt: [0x11; 14],
    };

    fn offer(media: &str, attrs: &str) -> String {
        format!(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n{media}\r\n{attrs}"
        )
    }

    #[test]
    fn our_first_preferred_codec_that_the_offer_carries_wins() {
        let sdp = offer(
            "m=audio 4000 RTP/AVP 18 8 0 101",
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n",
        );
        let parsed = parse_offer(sdp.as_bytes()).expect("offer");
        let negotiated = negotiate(&parsed, ALL, SrtpPolicy::Offer, KEY).expect("codec");
        // PCMU before PCMA in our order, whatever the offer's.
        assert_eq!(negotiated.codec, SdpCodec::Pcmu);
        assert_eq!(negotiated.codec_pt, 0);
        let pcma_first = [SdpCodec::Pcma, SdpCodec::Pcmu];
        let negotiated = negotiate(&parsed, &pcma_first, SrtpPolicy::Offer, KEY).expect("codec");
        assert_eq!((negotiated.codec, negotiated.codec_pt), (SdpCodec::Pcma, 8));
        assert_eq!(negotiated.telephone_event_pt, Some(101));
        assert_eq!(
            negotiated.remote_rtp_addr,
            "192.0.2.10:4000".parse().expect("addr")
        );

        let sdp = offer("m=audio 4000 RTP/AVP 0 8", "");
        let negotiated = negotiate(
            &parse_offer(sdp.as_bytes()).expect("offer"),
            ALL,
            SrtpPolicy::Offer,
            KEY,
        )
        .expect("codec");
        assert_eq!(negotiated.codec, SdpCodec::Pcmu);
        assert_eq!(negotiated.telephone_event_pt, None);
    }

    #[test]
    fn telephone_event_pt_96_is_kept_and_answered() {
        let sdp = offer(
            "m=audio 4000 RTP/AVP 0 96",
            "a=rtpmap:0 PCMU/8000\r\na=rtpmap:96 telephone-event/8000\r\na=ptime:30\r\n",
        );
        let parsed = parse_offer(sdp.as_bytes()).expect("offer");
        assert_eq!(parsed.telephone_event_pt, Some(96));
        assert_eq!(parsed.ptime_ms, Some(30));
        let negotiated = negotiate(&parsed, ALL, SrtpPolicy::Offer, KEY).expect("codec");
        let answer = build_answer(
            SdpSession::new(7),
            "198.51.100.1:20000".parse().expect("addr"),
            &negotiated,
        );
        assert_eq!(
            answer,
            "v=0\r\no=sipconf 7 7 IN IP4 198.51.100.1\r\ns=sipconf\r\nc=IN IP4 198.51.100.1\r\n\
             t=0 0\r\nm=audio 20000 RTP/AVP 0 96\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
        );
    }

    #[test]
    fn telephone_event_at_16khz_is_not_taken() {
        let sdp = offer(
            "m=audio 4000 RTP/AVP 0 97",
            "a=rtpmap:97 telephone-event/16000\r\n",
        );
        assert_eq!(
            parse_offer(sdp.as_bytes())
                .expect("offer")
                .telephone_event_pt,
            None
        );
    }

    #[test]
    fn no_common_codec_is_an_error_naming_ours() {
        let sdp = offer(
            "m=audio 4000 RTP/AVP 18 3 101",
            "a=rtpmap:101 telephone-event/8000\r\n",
        );
        let parsed = parse_offer(sdp.as_bytes()).expect("offer");
        assert_eq!(
            negotiate(&parsed, ALL, SrtpPolicy::Offer, KEY),
            Err(NotAcceptable::NoCommonCodec(
                "opus, G722, PCMU, PCMA".into()
            ))
        );
        // G.722 offered but not in `media.codecs`.
        let sdp = offer("m=audio 4000 RTP/AVP 9", "");
        let parsed = parse_offer(sdp.as_bytes()).expect("offer");
        assert_eq!(
            negotiate(&parsed, &[SdpCodec::Pcmu], SrtpPolicy::Offer, KEY),
            Err(NotAcceptable::NoCommonCodec("PCMU".into()))
        );
    }

    /// baresip's offer (G.722 first) and linphone's (Opus first), answered in
    /// our order for several `media.codecs` orders.
    #[test]
    fn codec_choice_follows_media_codecs_for_offers_in_any_order() {
        let baresip = offer(
            "m=audio 4000 RTP/AVP 9 0 8 101",
            "a=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
        );
        let linphone = offer(
            "m=audio 4000 RTP/AVP 96 97 98 0 8 101 100",
            "a=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1\r\na=rtpmap:97 speex/16000\r\n\
             a=rtpmap:98 speex/8000\r\na=rtpmap:101 telephone-event/48000\r\n\
             a=rtpmap:100 telephone-event/8000\r\n",
        );
        let pcmu_only = offer("m=audio 4000 RTP/AVP 0", "");
        use SdpCodec::{Opus, Pcma, Pcmu, G722};
        let cases: [(&[SdpCodec], &str, (SdpCodec, u8)); 8] = [
            (ALL, &baresip, (G722, 9)),
            (ALL, &linphone, (Opus, 96)),
            (ALL, &pcmu_only, (Pcmu, 0)),
            (&[G722, Opus, Pcmu], &linphone, (Opus, 96)),
            (&[Pcma, G722], &baresip, (Pcma, 8)),
            (&[Pcmu, Opus], &linphone, (Pcmu, 0)),
            (&[G722, Opus], &baresip, (G722, 9)),
            (&[Opus, Pcma], &baresip, (Pcma, 8)),
        ];
        for (codecs, sdp, expected) in cases {
            let parsed = parse_offer(sdp.as_bytes()).expect("offer");
            let negotiated = negotiate(&parsed, codecs, SrtpPolicy::Offer, KEY).expect("codec");
            assert_eq!(
                (negotiated.codec, negotiated.codec_pt),
                expected,
                "{codecs:?} {sdp}"
            );
        }
    }

    #[test]
    fn telephone_events_follow_the_codec_clock() {
        let sdp = offer(
            "m=audio 4000 RTP/AVP 111 0 101 110",
            "a=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n\
             a=rtpmap:110 telephone-event/48000\r\n",
        );
        let parsed = parse_offer(sdp.as_bytes()).expect("offer");
        let opus = negotiate(&parsed, ALL, SrtpPolicy::Offer, KEY).expect("codec");
        assert_eq!(
            (opus.telephone_event_pt, opus.telephone_event_rate_hz),
            (Some(110), 48_000)
        );
        let pcmu = negotiate(&parsed, &[SdpCodec::Pcmu], SrtpPolicy::Offer, KEY).expect("codec");
        assert_eq!(
            (pcmu.telephone_event_pt, pcmu.telephone_event_rate_hz),
            (Some(101), 8000)
        );
        let answer = build_answer(
            SdpSession::new(7),
            "198.51.100.1:20000".parse().expect("addr"),
            &opus,
        );
        assert!(
            answer.contains(
                "m=audio 20000 RTP/AVP 111 110\r\na=rtpmap:111 opus/48000/2\r\n\
                 a=fmtp:111 useinbandfec=1;maxplaybackrate=16000;sprop-maxcapturerate=16000\r\n\
                 a=rtpmap:110 telephone-event/48000\r\na=fmtp:110 0-15\r\n"
            ),
            "{answer}"
        );
        // Opus with events at 8000 only: those are taken, at their clock.
        let sdp = offer(
            "m=audio 4000 RTP/AVP 111 101",
            "a=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n",
        );
        let parsed = parse_offer(sdp.as_bytes()).expect("offer");
        let opus = negotiate(&parsed, ALL, SrtpPolicy::Offer, KEY).expect("codec");
        assert_eq!(
            (opus.telephone_event_pt, opus.telephone_event_rate_hz),
            (Some(101), 8000)
        );
    }

    #[test]
    fn our_offer_lists_media_codecs_in_order_with_events_at_both_clocks() {
        let sdp = build_offer(
            SdpSession::new(9),
            "198.51.100.1:20002".parse().expect("addr"),
            ALL,
            101,
            None,
        );
        assert!(
            sdp.contains(
                "m=audio 20002 RTP/AVP 111 9 0 8 101 102\r\na=rtpmap:111 opus/48000/2\r\n\
                 a=fmtp:111 useinbandfec=1;maxplaybackrate=16000;sprop-maxcapturerate=16000\r\n\
                 a=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
                 a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n\
                 a=rtpmap:102 telephone-event/48000\r\na=fmtp:102 0-15\r\n"
            ),
            "{sdp}"
        );
        // A callee answering with any of them is understood, in its order.
        let answer = offer(
            "m=audio 5000 RTP/AVP 9 102",
            "a=rtpmap:102 telephone-event/48000\r\n",
        );
        let parsed = parse_answer(answer.as_bytes()).expect("answer");
        let agreed = negotiate_answer(&parsed, ALL, None).expect("codec");
        assert_eq!((agreed.codec, agreed.codec_pt), (SdpCodec::G722, 9));
        assert_eq!(
            agreed.telephone_event_pt, None,
            "events at 48000 do not go with G.722"
        );
    }

    #[test]
    fn dynamic_pcmu_with_rtpmap_is_accepted() {
        let sdp = offer("m=audio 4000 RTP/AVP 110", "a=rtpmap:110 pcmu/8000\r\n");
        let negotiated = negotiate(
            &parse_offer(sdp.as_bytes()).expect("offer"),
            ALL,
            SrtpPolicy::Offer,
            KEY,
        )
        .expect("codec");
        assert_eq!(
            (negotiated.codec, negotiated.codec_pt),
            (SdpCodec::Pcmu, 110)
        );
    }

    #[test]
    fn sendonly_offer_is_hold_and_answered_recvonly() {
        let sdp = offer("m=audio 4000 RTP/AVP 0", "a=sendonly\r\n");
        let parsed = parse_offer(sdp.as_bytes()).expect("offer");
        assert_eq!(parsed.direction, Direction::SendOnly);
        assert!(parsed.is_hold());
        assert_eq!(
            negotiate(&parsed, ALL, SrtpPolicy::Offer, KEY)
                .expect("codec")
                .direction,
            Direction::RecvOnly
        );
    }

    #[test]
    fn session_level_inactive_applies_to_audio() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
                   a=inactive\r\nm=audio 4000 RTP/AVP 8\r\n";
        let parsed = parse_offer(sdp.as_bytes()).expect("offer");
        assert_eq!(parsed.direction, Direction::Inactive);
        assert_eq!(
            negotiate(&parsed, ALL, SrtpPolicy::Offer, KEY)
                .expect("codec")
                .direction,
            Direction::Inactive
        );
    }

    #[test]
    fn zero_connection_address_means_hold() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
                   m=audio 4000 RTP/AVP 0\r\n";
        let parsed = parse_offer(sdp.as_bytes()).expect("offer");
        assert_eq!(parsed.connection_addr, HOLD_ADDR);
        assert_eq!(parsed.direction, Direction::SendRecv);
        assert!(parsed.is_hold());
    }

    #[test]
    fn media_level_connection_and_ipv6_win() {
        let sdp = "v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
                   m=video 5000 RTP/AVP 96\r\nc=IN IP4 192.0.2.99\r\n\
                   m=audio 4000 RTP/AVP 0\r\nc=IN IP6 2001:db8::1\r\n";
        let parsed = parse_offer(sdp.as_bytes()).expect("offer");
        assert_eq!(
            parsed.remote_rtp_addr(),
            "[2001:db8::1]:4000".parse().expect("addr")
        );
    }

    #[test]
    fn precise_errors() {
        assert_eq!(parse_offer(b"\xff\xfe"), Err(SdpError::NotUtf8));
        assert_eq!(
            parse_offer(b"s=-\r\nm=audio 1 RTP/AVP 0\r\n"),
            Err(SdpError::MissingVersion)
        );
        assert_eq!(
            parse_offer(b"v=0\r\nm=audio 1 RTP/AVP 0\r\n"),
            Err(SdpError::MissingConnection)
        );
        assert_eq!(
            parse_offer(b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 1 RTP/AVP 96\r\n"),
            Err(SdpError::NoAudioStream)
        );
        assert_eq!(
            parse_offer(b"v=0\r\nc=IN IP4 nonsense\r\n"),
            Err(SdpError::MalformedConnection("IN IP4 nonsense".into()))
        );
        assert_eq!(
            parse_offer(b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\n"),
            Err(SdpError::MalformedMedia("audio x RTP/AVP 0".into()))
        );
        assert_eq!(
            parse_offer(b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4 UDP/TLS/RTP/SAVPF 0\r\n"),
            Err(SdpError::UnsupportedProfile("UDP/TLS/RTP/SAVPF".into()))
        );
        assert_eq!(
            parse_offer(
                b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4 RTP/AVP 0\r\na=rtpmap:zz PCMU/8000\r\n"
            ),
            Err(SdpError::MalformedRtpmap("zz PCMU/8000".into()))
        );
    }

    #[test]
    fn offer_lists_pcmu_pcma_and_telephone_event() {
        let sdp = build_offer(
            SdpSession::new(9),
            "198.51.100.1:20002".parse().expect("addr"),
            &[SdpCodec::Pcmu, SdpCodec::Pcma],
            101,
            None,
        );
        assert_eq!(
            sdp,
            "v=0\r\no=sipconf 9 9 IN IP4 198.51.100.1\r\ns=sipconf\r\nc=IN IP4 198.51.100.1\r\n\
             t=0 0\r\nm=audio 20002 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
        );
        // Our own offer reads back as what we meant.
        let parsed = parse_offer(sdp.as_bytes()).expect("own offer parses");
        assert_eq!(parsed.telephone_event_pt, Some(101));
        assert_eq!(parsed.payloads.len(), 3);
    }

    #[test]
    fn answer_picks_the_answerers_first_supported_codec() {
        let sdp = offer(
            "m=audio 5004 RTP/AVP 8 0 96",
            "a=rtpmap:96 telephone-event/8000\r\na=recvonly\r\n",
        );
        let answer = parse_answer(sdp.as_bytes()).expect("answer");
        let negotiated = negotiate_answer(&answer, ALL, None).expect("codec");
        assert_eq!(negotiated.codec, SdpCodec::Pcma);
        assert_eq!(negotiated.codec_pt, 8);
        assert_eq!(negotiated.telephone_event_pt, Some(96));
        assert_eq!(
            negotiated.remote_rtp_addr,
            "192.0.2.10:5004".parse().expect("addr")
        );
        // They only receive: we only send.
        assert_eq!(negotiated.direction, Direction::SendOnly);

        let sdp = offer("m=audio 5004 RTP/AVP 18", "");
        let answer = parse_answer(sdp.as_bytes()).expect("answer");
        assert_eq!(
            negotiate_answer(&answer, ALL, None),
            Err(NotAcceptable::NoCommonCodec(
                "opus, G722, PCMU, PCMA".into()
            ))
        );
    }

    /// 30 bytes 0, 1, .. 29 as `inline:` writes them.
    const OFFERED_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd";

    fn offered_key() -> MasterKey {
        MasterKey::from_concatenated(&(0..30).collect::<Vec<u8>>()).expect("30 bytes")
    }

    #[test]
    fn savp_offer_is_answered_with_the_first_usable_crypto_line_and_our_key() {
        let sdp = offer(
            "m=audio 4000 RTP/SAVP 0 101",
            &format!(
                "a=rtpmap:101 telephone-event/8000\r\n\
                 a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{OFFERED_KEY}|2^31|1:4\r\n\
                 a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{OFFERED_KEY}|2^31\r\n\
                 a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:{OFFERED_KEY}\r\n"
            ),
        );
        let parsed = parse_offer(sdp.as_bytes()).expect("offer");
        assert!(parsed.secure_profile);
        assert_eq!(parsed.crypto.len(), 2);
        assert_eq!(
            parsed.crypto_skipped.as_deref(),
            Some("an MKI in a=crypto is not supported")
        );
        let negotiated = negotiate(&parsed, ALL, SrtpPolicy::Offer, KEY).expect("answer");
        assert_eq!(
            negotiated.srtp,
            Some(SrtpKeys {
                tag: 2,
                suite: Suite::AesCm128HmacSha1_80,
                remote: offered_key(),
                local: KEY,
            })
        );
        let answer = build_answer(
            SdpSession::new(7),
            "198.51.100.1:20000".parse().expect("addr"),
            &negotiated,
        );
        assert_eq!(
            answer,
            "v=0\r\no=sipconf 7 7 IN IP4 198.51.100.1\r\ns=sipconf\r\nc=IN IP4 198.51.100.1\r\n\
             t=0 0\r\nm=audio 20000 RTP/SAVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n\
             a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:ERERERERERERERERERERERERERERERERERERERER\r\n"
        );
        // The answer reads back with our key under the offer's tag.
        let read_back = parse_answer(answer.as_bytes()).expect("answer parses");
        assert_eq!(read_back.crypto[0].key, KEY);
        assert_eq!(read_back.crypto[0].tag, 2);
    }

    #[test]
    fn our_srtp_offer_carries_our_key_and_takes_the_answerers() {
        let sdp = build_offer(
            SdpSession::new(9),
            "198.51.100.1:20002".parse().expect("addr"),
            &[SdpCodec::Pcmu, SdpCodec::Pcma],
            101,
            Some(&KEY),
        );
        assert!(sdp.contains("m=audio 20002 RTP/SAVP 0 8 101\r\n"), "{sdp}");
        assert!(sdp.ends_with(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:ERERERERERERERERERERERERERERERERERERERER\r\n"
        ));
        let answer = offer(
            "m=audio 5004 RTP/SAVP 0",
            &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{OFFERED_KEY}\r\n"),
        );
        let answer = parse_answer(answer.as_bytes()).expect("answer");
        let keys = negotiate_answer(&answer, ALL, Some(KEY))
            .expect("srtp")
            .srtp;
        assert_eq!(
            keys.map(|k| (k.remote, k.local)),
            Some((offered_key(), KEY))
        );
        let plain = parse_answer(offer("m=audio 5004 RTP/AVP 0", "").as_bytes()).expect("answer");
        assert_eq!(
            negotiate_answer(&plain, ALL, Some(KEY)),
            Err(NotAcceptable::NoUsableCrypto(
                "the answer has no a=crypto:1".into()
            ))
        );
    }

    #[test]
    fn srtp_policy_decides_plain_and_secure_offers() {
        let plain = parse_offer(offer("m=audio 4000 RTP/AVP 0", "").as_bytes()).expect("offer");
        let secure = parse_offer(
            offer(
                "m=audio 4000 RTP/SAVP 0",
                &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{OFFERED_KEY}\r\n"),
            )
            .as_bytes(),
        )
        .expect("offer");
        // Best-effort SRTP: a=crypto on RTP/AVP.
        let best_effort = parse_offer(
            offer(
                "m=audio 4000 RTP/AVP 0",
                &format!("a=crypto:5 AES_CM_128_HMAC_SHA1_32 inline:{OFFERED_KEY}\r\n"),
            )
            .as_bytes(),
        )
        .expect("offer");
        let srtp_of = |offer: &Offer, policy| {
            negotiate(offer, ALL, policy, KEY).map(|n| (n.secure_profile, n.srtp.map(|k| k.tag)))
        };
        assert_eq!(srtp_of(&plain, SrtpPolicy::Off), Ok((false, None)));
        assert_eq!(
            srtp_of(&secure, SrtpPolicy::Off),
            Err(NotAcceptable::SrtpOff)
        );
        assert_eq!(srtp_of(&best_effort, SrtpPolicy::Off), Ok((false, None)));
        assert_eq!(srtp_of(&plain, SrtpPolicy::Offer), Ok((false, None)));
        assert_eq!(srtp_of(&secure, SrtpPolicy::Offer), Ok((true, Some(1))));
        assert_eq!(
            srtp_of(&best_effort, SrtpPolicy::Offer),
            Ok((false, Some(5)))
        );
        assert_eq!(
            srtp_of(&plain, SrtpPolicy::Require),
            Err(NotAcceptable::SrtpRequired)
        );
        assert_eq!(srtp_of(&secure, SrtpPolicy::Require), Ok((true, Some(1))));
        assert_eq!(
            srtp_of(&best_effort, SrtpPolicy::Require),
            Ok((false, Some(5)))
        );
    }

    #[test]
    fn savp_offer_without_a_usable_crypto_line_says_why() {
        let sdp = offer(
            "m=audio 4000 RTP/SAVP 0",
            "a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:AAAA\r\n",
        );
        let parsed = parse_offer(sdp.as_bytes()).expect("offer");
        assert_eq!(
            negotiate(&parsed, ALL, SrtpPolicy::Offer, KEY),
            Err(NotAcceptable::NoUsableCrypto(
                "suite AES_256_CM_HMAC_SHA1_80 is not supported".into()
            ))
        );
        let sdp = offer("m=audio 4000 RTP/SAVP 0", "");
        let parsed = parse_offer(sdp.as_bytes()).expect("offer");
        assert_eq!(
            negotiate(&parsed, ALL, SrtpPolicy::Require, KEY),
            Err(NotAcceptable::NoUsableCrypto("none offered".into()))
        );
    }

    #[test]
    fn crypto_lines_we_cannot_use_are_refused_precisely() {
        let suite = "AES_CM_128_HMAC_SHA1_80";
        let refused = |value: &str| parse_crypto(value).expect_err(value);
        assert_eq!(refused("1"), "malformed a=crypto:1");
        assert_eq!(
            refused(&format!("0 {suite} inline:{OFFERED_KEY}")),
            "a=crypto tag 0 is not 1-9 digits"
        );
        assert_eq!(
            refused(&format!("1 {suite} uri:{OFFERED_KEY}")),
            format!("key method of uri:{OFFERED_KEY} is not inline")
        );
        assert_eq!(
            refused(&format!("1 {suite} inline:not*base64")),
            "key not*base64 is not base64"
        );
        assert_eq!(
            refused(&format!(
                "1 {suite} inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxw="
            )),
            "key is 29 bytes, not 30"
        );
        assert_eq!(
            refused(&format!(
                "1 {suite} inline:{OFFERED_KEY};inline:{OFFERED_KEY}"
            )),
            "several keys in one a=crypto (MKI) are not supported"
        );
        assert_eq!(
            refused(&format!("1 {suite} inline:{OFFERED_KEY} UNENCRYPTED_SRTP")),
            "session parameter UNENCRYPTED_SRTP is not supported"
        );
        let taken = parse_crypto(&format!(
            "7 aes_cm_128_hmac_sha1_32 INLINE:{OFFERED_KEY}|1048576 KDR=0 WSH=128"
        ))
        .expect("usable");
        assert_eq!(
            taken,
            Crypto {
                tag: 7,
                suite: Suite::AesCm128HmacSha1_32,
                key: offered_key()
            }
        );
    }

    #[test]
    fn a_ptime_under_one_ms_is_malformed() {
        // Found by fuzz/sdp: `a=ptime:0.53` was read as a packet time of 0 ms.
        let sdp = offer("m=audio 4000 RTP/AVP 0", "a=ptime:0.53\r\n");
        assert_eq!(
            parse_offer(sdp.as_bytes()),
            Err(SdpError::MalformedPtime("0.53".to_owned()))
        );
        let sdp = offer("m=audio 4000 RTP/AVP 0", "a=ptime:1.5\r\n");
        assert_eq!(
            parse_offer(sdp.as_bytes()).expect("offer").ptime_ms,
            Some(1)
        );
    }

    #[test]
    fn session_version_bumps() {
        let mut session = SdpSession::new(41);
        session.bump_version();
        assert_eq!(
            session,
            SdpSession {
                session_id: 41,
                session_version: 42
            }
        );
    }
}
