//! SDP offer/answer for one audio stream (RFC 4566, RFC 3264): parse the caller's offer,
//! pick a codec we can mix, and write the answer; for outbound calls, write our offer
//! and read the callee's answer.
//!
//! A hand parser: we read only the handful of lines an audio call needs, and every
//! rejection names the line that was wrong. It chooses no port or address (the
//! switchboard hands them in) and keeps no state between calls.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

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
    /// The offered `telephone-event/8000` payload type (RFC 4733), if any.
    pub telephone_event_pt: Option<u8>,
    /// Media-level direction, else session-level, else sendrecv.
    pub direction: Direction,
    pub ptime_ms: Option<u32>,
}

impl Offer {
    /// Where the caller wants to receive RTP.
    pub fn remote_rtp_addr(&self) -> SocketAddr {
        SocketAddr::new(self.connection_addr, self.audio_port)
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
    #[error("audio stream is not RTP/AVP: {0}")]
    UnsupportedProfile(String),
    #[error("malformed a=rtpmap: {0}")]
    MalformedRtpmap(String),
    #[error("malformed a=ptime: {0}")]
    MalformedPtime(String),
}

/// A codec the mixer can encode and decode. Add G.722 here (static pt 9, RTP clock
/// 8000 Hz per RFC 3551 although it samples at 16 kHz).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SdpCodec {
    Pcmu,
    Pcma,
}

impl SdpCodec {
    /// Codecs we accept, in the order we would offer them.
    pub const SUPPORTED: [SdpCodec; 2] = [SdpCodec::Pcmu, SdpCodec::Pcma];

    pub fn static_pt(self) -> u8 {
        match self {
            SdpCodec::Pcmu => 0,
            SdpCodec::Pcma => 8,
        }
    }

    pub fn encoding_name(self) -> &'static str {
        match self {
            SdpCodec::Pcmu => "PCMU",
            SdpCodec::Pcma => "PCMA",
        }
    }

    pub fn rtp_clock_rate_hz(self) -> u32 {
        8000
    }

    fn matches(self, payload: &OfferedPayload) -> bool {
        payload
            .encoding_name
            .eq_ignore_ascii_case(self.encoding_name())
            && payload.clock_rate_hz == self.rtp_clock_rate_hz()
            && payload.channels == 1
    }
}

/// Packet time we send and ask for.
pub const PTIME_MS: u32 = 20;

/// The result of negotiation: what both sides will use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub codec: SdpCodec,
    /// The payload type the caller used for the codec (equals the static one for 0/8).
    pub codec_pt: u8,
    pub telephone_event_pt: Option<u8>,
    pub remote_rtp_addr: SocketAddr,
    /// Direction of our answer.
    pub direction: Direction,
}

/// Offer and answer have no codec in common; the call layer answers 488.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no common codec (we support PCMU and PCMA)")]
pub struct NoCommonCodec;

/// Pick the first offered payload we support (the offerer's preference wins, RFC 3264 6.1).
pub fn negotiate(offer: &Offer) -> Result<Negotiated, NoCommonCodec> {
    let (codec, codec_pt) = offer
        .payloads
        .iter()
        .find_map(|payload| {
            SdpCodec::SUPPORTED
                .into_iter()
                .find(|codec| codec.matches(payload))
                .map(|codec| (codec, payload.pt))
        })
        .ok_or(NoCommonCodec)?;
    Ok(Negotiated {
        codec,
        codec_pt,
        telephone_event_pt: offer.telephone_event_pt,
        remote_rtp_addr: offer.remote_rtp_addr(),
        direction: offer.direction.answer_to(),
    })
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

/// Write the SDP offer of an outbound call: every codec we mix, in our order of
/// preference, plus RFC 4733 telephone events, 20 ms packets, sendrecv.
pub fn build_offer(
    session: SdpSession,
    local_rtp_addr: SocketAddr,
    telephone_event_pt: u8,
) -> String {
    let mut sdp = String::with_capacity(320);
    write_session_head(&mut sdp, session, local_rtp_addr);
    let _ = write!(sdp, "m=audio {} RTP/AVP", local_rtp_addr.port());
    for codec in SdpCodec::SUPPORTED {
        let _ = write!(sdp, " {}", codec.static_pt());
    }
    let _ = write!(sdp, " {telephone_event_pt}\r\n");
    for codec in SdpCodec::SUPPORTED {
        let _ = write!(
            sdp,
            "a=rtpmap:{} {}/{}\r\n",
            codec.static_pt(),
            codec.encoding_name(),
            codec.rtp_clock_rate_hz()
        );
    }
    let _ = write!(
        sdp,
        "a=rtpmap:{telephone_event_pt} telephone-event/8000\r\na=fmtp:{telephone_event_pt} 0-15\r\n\
         a=ptime:{PTIME_MS}\r\na={}\r\n",
        Direction::SendRecv.as_str()
    );
    sdp
}

/// Parse the SDP answer to our offer. An answer has the structure of an offer (RFC 3264
/// section 6), so the same reader applies.
pub fn parse_answer(body: &[u8]) -> Result<Offer, SdpError> {
    parse_offer(body)
}

/// What an answer to our offer settles: the answerer's first codec we support (RFC 3264
/// 6.1 lets the answerer order them), its telephone-event type, and the direction we send
/// in, mirrored from the answer's.
pub fn negotiate_answer(answer: &Offer) -> Result<Negotiated, NoCommonCodec> {
    negotiate(answer)
}

/// Write an SDP answer for one audio stream.
pub fn build_answer(
    session: SdpSession,
    local_rtp_addr: SocketAddr,
    negotiated: &Negotiated,
) -> String {
    let mut sdp = String::with_capacity(256);
    write_session_head(&mut sdp, session, local_rtp_addr);
    let _ = write!(
        sdp,
        "m=audio {} RTP/AVP {}",
        local_rtp_addr.port(),
        negotiated.codec_pt
    );
    if let Some(pt) = negotiated.telephone_event_pt {
        let _ = write!(sdp, " {pt}");
    }
    let _ = write!(
        sdp,
        "\r\na=rtpmap:{} {}/{}\r\n",
        negotiated.codec_pt,
        negotiated.codec.encoding_name(),
        negotiated.codec.rtp_clock_rate_hz()
    );
    if let Some(pt) = negotiated.telephone_event_pt {
        let _ = write!(
            sdp,
            "a=rtpmap:{pt} telephone-event/8000\r\na=fmtp:{pt} 0-15\r\n"
        );
    }
    let _ = write!(
        sdp,
        "a=ptime:{PTIME_MS}\r\na={}\r\n",
        negotiated.direction.as_str()
    );
    sdp
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
                if profile != "RTP/AVP" && profile != "RTP/AVPF" {
                    return Err(SdpError::UnsupportedProfile(profile.to_owned()));
                }
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
    })
}

/// Unspecified address used by old-style hold offers.
pub const HOLD_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(media: &str, attrs: &str) -> String {
        format!(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n{media}\r\n{attrs}"
        )
    }

    #[test]
    fn first_offered_supported_codec_wins() {
        let sdp = offer(
            "m=audio 4000 RTP/AVP 18 8 0 101",
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n",
        );
        let parsed = parse_offer(sdp.as_bytes()).expect("offer");
        let negotiated = negotiate(&parsed).expect("codec");
        assert_eq!(negotiated.codec, SdpCodec::Pcma);
        assert_eq!(negotiated.codec_pt, 8);
        assert_eq!(negotiated.telephone_event_pt, Some(101));
        assert_eq!(
            negotiated.remote_rtp_addr,
            "192.0.2.10:4000".parse().expect("addr")
        );

        let sdp = offer("m=audio 4000 RTP/AVP 0 8", "");
        let negotiated = negotiate(&parse_offer(sdp.as_bytes()).expect("offer")).expect("codec");
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
        let negotiated = negotiate(&parsed).expect("codec");
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
    fn no_common_codec_is_an_error() {
        let sdp = offer(
            "m=audio 4000 RTP/AVP 18 9 101",
            "a=rtpmap:101 telephone-event/8000\r\n",
        );
        let parsed = parse_offer(sdp.as_bytes()).expect("offer");
        assert_eq!(negotiate(&parsed), Err(NoCommonCodec));
    }

    #[test]
    fn dynamic_pcmu_with_rtpmap_is_accepted() {
        let sdp = offer("m=audio 4000 RTP/AVP 110", "a=rtpmap:110 pcmu/8000\r\n");
        let negotiated = negotiate(&parse_offer(sdp.as_bytes()).expect("offer")).expect("codec");
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
            negotiate(&parsed).expect("codec").direction,
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
            negotiate(&parsed).expect("codec").direction,
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
            parse_offer(b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4 RTP/SAVP 0\r\n"),
            Err(SdpError::UnsupportedProfile("RTP/SAVP".into()))
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
            101,
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
        let negotiated = negotiate_answer(&answer).expect("codec");
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
        assert_eq!(negotiate_answer(&answer), Err(NoCommonCodec));
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
