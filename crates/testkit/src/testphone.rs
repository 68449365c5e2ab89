//! A scriptable SIP phone for loopback tests and the load generator: it places a
//! call over UDP, sends a known signal as G.711, G.722 or Opus RTP at real pace,
//! and records and decodes what it receives (its codecs are in `voice.rs`).
//!
//! Its SIP side is deliberately independent of the bridge's parser (plain text in
//! and out), so a test that uses it checks the bridge against a second reading of
//! RFC 3261 rather than against itself. It borrows only the bridge's G.711,
//! G.722 and Opus codecs and keypad table.

use crate::sip_text::{branch_of, request_uri_of, split_name_addrs};
pub use crate::sip_text::{response_to, tag_param, uri_of, SipText};
use crate::voice::{offer_media, read_answer, Voice};
pub use crate::voice::{AnsweredCodec, G722Offer, OpusOffer, G722_PAYLOAD_TYPE, OPUS_PAYLOAD_TYPE};
use sipconf::media::codec::opus::OpusError;
use sipconf::media::Codec;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::{timeout_at, Instant};

/// The most audio samples in one 20 ms frame (16 kHz G.722 or Opus).
const MAX_FRAME_SAMPLES: usize = 320;
/// The largest Opus payload (RFC 6716 3.4), and more than any G.711 frame.
const MAX_PAYLOAD_BYTES: usize = 1275;
/// How long the phone waits for any one SIP answer.
const SIP_WAIT: Duration = Duration::from_secs(5);

/// What to dial and how.
#[derive(Debug, Clone)]
pub struct PhoneOptions {
    /// The bridge's SIP address.
    pub server: SocketAddr,
    /// The number dialled (Request-URI user).
    pub number: String,
    /// G.711 codecs offered, in order of preference.
    pub codecs: Vec<Codec>,
    /// Whether and where G.722 is offered among `codecs` (none by default).
    pub g722: Option<G722Offer>,
    /// Offer Opus (`opus/48000/2`, in-band FEC) with this payload type at
    /// this place among the G.711 and G.722 codecs offered.
    pub opus: Option<OpusOffer>,
    /// Offer `telephone-event` with this payload type (at 48000 Hz when Opus
    /// is offered, and then at 8000 Hz as this + 1 when G.711 or G.722 is
    /// offered too).
    pub telephone_event: Option<u8>,
    /// Local address for the phone's sockets (loopback in tests).
    pub local_ip: IpAddr,
    /// Extra SDP media attribute lines (for example `a=sendonly`).
    pub extra_sdp: Vec<String>,
    /// Payload types the phone offers besides its G.711 codecs: `(pt, "G729/8000")`.
    pub other_payloads: Vec<(u8, String)>,
    /// The RTP port written in the SDP offer, when it is not the port the
    /// phone sends from (a NAT that rewrites ports).
    pub advertised_rtp_port: Option<u16>,
}

impl PhoneOptions {
    pub fn new(server: SocketAddr, number: &str, codec: Codec) -> PhoneOptions {
        PhoneOptions {
            server,
            number: number.to_string(),
            codecs: vec![codec],
            g722: None,
            opus: None,
            telephone_event: Some(101),
            local_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            extra_sdp: Vec::new(),
            other_payloads: Vec::new(),
            advertised_rtp_port: None,
        }
    }

    /// A phone offering only Opus (payload type 111) and telephone-event/48000.
    pub fn opus(server: SocketAddr, number: &str) -> PhoneOptions {
        PhoneOptions {
            codecs: Vec::new(),
            opus: Some(OpusOffer::first()),
            ..PhoneOptions::new(server, number, Codec::Pcmu)
        }
    }
}

/// An address as the host part of a SIP URI: IPv6 in brackets.
fn uri_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Why a call attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the bridge answered {0} {1}")]
    Rejected(u16, String),
    #[error("no answer to {0} within the wait")]
    Timeout(&'static str),
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("unusable answer from the bridge: {0}")]
    BadResponse(String),
    #[error("the phone's Opus codec: {0}")]
    Opus(#[from] OpusError),
}

fn random_token() -> String {
    use rand::Rng;
    format!("{:016x}", rand::rng().random::<u64>())
}

/// A signal the phone sends.
#[derive(Debug, Clone)]
pub enum Signal {
    Silence,
    /// A sine at `freq_hz` with peak `amplitude` (16-bit linear).
    Sine {
        freq_hz: f64,
        amplitude: f64,
    },
    /// Given samples, then silence, at the call's audio rate (8 kHz, 16 kHz
    /// with G.722 or Opus).
    Samples(Arc<[i16]>),
}

impl Signal {
    /// Sample `n` at `rate_hz` (`Samples` are taken at the phone's rate).
    fn sample(&self, n: usize, rate_hz: u32) -> i16 {
        match self {
            Signal::Silence => 0,
            Signal::Sine { freq_hz, amplitude } => {
                let phase = 2.0 * std::f64::consts::PI * freq_hz * n as f64 / f64::from(rate_hz);
                (amplitude * phase.sin()).round() as i16
            }
            Signal::Samples(s) => s.get(n).copied().unwrap_or(0),
        }
    }
}

/// How a key press is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyMode {
    /// The DTMF tone pair in the audio.
    InBand,
    /// RFC 4733 telephone-event packets, no audio during the press.
    Rfc4733,
    /// Both at once (some phones do this); the bridge must count it once.
    Both,
}

/// A key pressed during [`Phone::stream_with_keys`].
#[derive(Clone, Copy, Debug)]
pub struct KeyPress {
    /// When the press starts, from the start of the stream (a multiple of 20).
    pub at_ms: u64,
    pub digit: char,
    pub duration_ms: u64,
    pub mode: KeyMode,
}

impl KeyPress {
    pub fn new(at_ms: u64, digit: char, mode: KeyMode) -> KeyPress {
        KeyPress {
            at_ms,
            digit,
            duration_ms: 100,
            mode,
        }
    }
}

/// Peak of each tone of an in-band key: -6 dBm0 (0 dBm0 peaks at 22930).
const KEY_TONE_PEAK: f64 = 11_493.0;

fn key_tone_sample(digit: char, n: usize, rate_hz: u32) -> i16 {
    let Some((low, high)) = sipconf::media::dtmf::key_tones_hz(digit) else {
        return 0;
    };
    let t = n as f64 / f64::from(rate_hz);
    let phase = 2.0 * std::f64::consts::PI * t;
    (KEY_TONE_PEAK * ((phase * low).sin() + (phase * high).sin())) as i16
}

/// A timestamp jump up to this far ahead is a pause in the far end's
/// sending and plays as silence; a bigger one is a new timeline.
const MAX_SILENCE_GAP_MS: u32 = 10_000;

/// What the phone received during a media run.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Decoded audio, in arrival order; a forward jump in the RTP timestamp
    /// (silence suppression, RFC 3551) plays as that much silence, as on a phone.
    pub samples: Vec<i16>,
    /// The rate of `samples`: 8000 (G.711) or 16000 (G.722, Opus).
    pub sample_rate_hz: u32,
    /// SSRC and RTP timestamp the next packet is expected to carry.
    expected: Option<(u32, u32)>,
    pub packets: usize,
    /// Packets with a payload type other than the negotiated codec's.
    pub other_packets: usize,
    /// Packets of the negotiated codec that did not decode (Opus only).
    pub undecodable_packets: usize,
    /// Distinct source addresses RTP came from.
    pub sources: Vec<SocketAddr>,
}

impl Default for Recording {
    fn default() -> Recording {
        Recording {
            samples: Vec::new(),
            sample_rate_hz: 8000,
            expected: None,
            packets: 0,
            other_packets: 0,
            undecodable_packets: 0,
            sources: Vec::new(),
        }
    }
}

impl Recording {
    /// The amplitude (peak, 16-bit linear) of `freq_hz` in the samples from
    /// `from_s` to `to_s` seconds into the recording, at its own rate.
    pub fn tone_amplitude(&self, freq_hz: f64, from_s: f64, to_s: f64) -> f64 {
        let rate_hz = self.sample_rate_hz;
        let at = |seconds: f64| ((seconds * f64::from(rate_hz)) as usize).min(self.samples.len());
        let (from, to) = (at(from_s), at(to_s));
        crate::meter::tone_amplitude_at(&self.samples[from..to.max(from)], freq_hz, rate_hz)
    }
}

/// One call in progress.
pub struct Phone {
    options: PhoneOptions,
    sip: UdpSocket,
    rtp: Arc<UdpSocket>,
    call_id: String,
    from_tag: String,
    to_tag: String,
    to_header: String,
    cseq: u32,
    /// The bridge's Contact, where in-dialog requests go.
    remote_target: String,
    /// Record-Route of the bridge's 2xx, reversed (RFC 3261 12.1.2): the Route
    /// headers of requests in the call.
    route_set: Vec<String>,
    /// Where requests in the call are sent: the first route's address, or the
    /// bridge's SIP address when there is no route set.
    next_hop: SocketAddr,
    /// Where the bridge said to send RTP.
    pub remote_rtp: SocketAddr,
    /// The G.711 codec the bridge chose (the first offered when it chose
    /// G.722 or Opus: see [`Phone::answered_codec`]).
    pub codec: Codec,
    /// What the phone sends and decodes with: the answer's codec.
    voice: Voice,
    /// The bridge's SDP answer.
    pub answer_sdp: String,
    /// The telephone-event payload type the bridge answered, if any.
    pub telephone_event: Option<u8>,
    /// The clock rate of the answered telephone-event (8000 or 48000).
    pub telephone_event_rate_hz: u32,
    /// Requests the bridge sent to the phone (methods), answered with 200.
    pub requests_seen: Vec<String>,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    sent_samples: usize,
    sdp_version: u32,
    /// Every this many audio packets one is lost on the way (`lose_every`).
    lose_every: Option<usize>,
    /// Audio packets built and lost on the way, never sent.
    pub packets_lost: usize,
    audio_packets_built: usize,
}

impl Phone {
    /// Places a call and returns once it is answered and acknowledged.
    pub async fn call(options: PhoneOptions) -> Result<Phone, CallError> {
        let mut phone = Phone::new(options).await?;
        let sdp = phone.offer("sendrecv");
        let invite = phone.request("INVITE", &phone.invite_uri(), &sdp);
        let response = phone.transact("INVITE", invite).await?;
        phone.accept_answer(&response)?;
        Ok(phone)
    }

    /// Sends an INVITE, waits for a provisional answer, then CANCELs it. Returns the
    /// final status of the INVITE (487 expected) and that of the CANCEL.
    pub async fn call_and_cancel(options: PhoneOptions) -> Result<(u16, u16), CallError> {
        let mut phone = Phone::new(options).await?;
        let sdp = phone.offer("sendrecv");
        let invite = phone.request("INVITE", &phone.invite_uri(), &sdp);
        let branch = branch_of(&invite);
        phone.send(&invite).await?;
        phone
            .wait_for(|m| m.status.is_some_and(|s| s < 200))
            .await?;
        let cancel = phone.cancel_for(&invite, &branch);
        phone.send(&cancel).await?;
        let mut cancel_status = None;
        let mut invite_status = None;
        let deadline = Instant::now() + SIP_WAIT;
        while cancel_status.is_none() || invite_status.is_none() {
            let m = phone.receive(deadline, "CANCEL").await?;
            match (m.status, m.cseq_method()) {
                (Some(s), Some("CANCEL")) if s >= 200 => cancel_status = Some(s),
                (Some(s), Some("INVITE")) if s >= 200 => {
                    invite_status = Some(s);
                    phone.to_tag = m.header("To").and_then(tag_param).unwrap_or_default();
                    phone.to_header = m.header("To").unwrap_or_default().to_string();
                    let ack = phone.ack_for_failure(&invite, &branch);
                    phone.send(&ack).await?;
                }
                _ => {}
            }
        }
        Ok((invite_status.unwrap_or(0), cancel_status.unwrap_or(0)))
    }

    async fn new(options: PhoneOptions) -> Result<Phone, CallError> {
        let sip = UdpSocket::bind((options.local_ip, 0)).await?;
        let rtp = Arc::new(UdpSocket::bind((options.local_ip, 0)).await?);
        let codec = options.codecs.first().copied().unwrap_or(Codec::Pcmu);
        use rand::Rng;
        Ok(Phone {
            sip,
            rtp,
            call_id: format!("{}@testphone", random_token()),
            from_tag: random_token(),
            to_tag: String::new(),
            to_header: format!("<sip:{}@{}>", options.number, options.server),
            cseq: 0,
            remote_target: String::new(),
            route_set: Vec::new(),
            next_hop: options.server,
            remote_rtp: options.server,
            codec,
            voice: Voice::G711(codec),
            answer_sdp: String::new(),
            telephone_event: None,
            telephone_event_rate_hz: 8000,
            requests_seen: Vec::new(),
            ssrc: rand::rng().random(),
            seq: rand::rng().random(),
            timestamp: rand::rng().random(),
            sent_samples: 0,
            lose_every: None,
            packets_lost: 0,
            audio_packets_built: 0,
            sdp_version: 1,
            options,
        })
    }

    fn invite_uri(&self) -> String {
        format!("sip:{}@{}", self.options.number, self.options.server)
    }

    fn local_sip(&self) -> SocketAddr {
        self.sip
            .local_addr()
            .unwrap_or(SocketAddr::new(self.options.local_ip, 0))
    }

    /// The phone's RTP address.
    pub fn rtp_addr(&self) -> SocketAddr {
        self.rtp
            .local_addr()
            .unwrap_or(SocketAddr::new(self.options.local_ip, 0))
    }

    /// An SDP offer with the given direction attribute.
    fn offer(&mut self, direction: &str) -> String {
        self.sdp_version += 1;
        let ip = self.options.local_ip;
        let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
        let connection = if direction == "hold-c0" {
            "0.0.0.0".to_string()
        } else {
            ip.to_string()
        };
        let media = offer_media(
            &self.options.codecs,
            self.options.g722,
            self.options.opus,
            &self.options.other_payloads,
            self.options.telephone_event,
        );
        let pts: Vec<String> = media.payload_types.iter().map(u8::to_string).collect();
        let mut sdp = format!(
            "v=0\r\no=testphone 1 {} IN {family} {ip}\r\ns=-\r\nc=IN {family} {connection}\r\nt=0 0\r\nm=audio {} RTP/AVP {}\r\n",
            self.sdp_version,
            self.options
                .advertised_rtp_port
                .unwrap_or_else(|| self.rtp_addr().port()),
            pts.join(" ")
        );
        for attribute in &media.attributes {
            sdp.push_str(attribute);
            sdp.push_str("\r\n");
        }
        sdp.push_str("a=ptime:20\r\n");
        if direction != "hold-c0" {
            sdp.push_str(&format!("a={direction}\r\n"));
        }
        for extra in &self.options.extra_sdp {
            sdp.push_str(extra);
            sdp.push_str("\r\n");
        }
        sdp
    }

    /// Builds a request in the dialog (or the initial INVITE).
    fn request(&mut self, method: &str, uri: &str, body: &str) -> String {
        if method != "ACK" && method != "CANCEL" {
            self.cseq += 1;
        }
        let local = self.local_sip();
        let to = if self.to_tag.is_empty() || self.to_header.contains(";tag=") {
            self.to_header.clone()
        } else {
            format!("{};tag={}", self.to_header, self.to_tag)
        };
        let content_type = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".to_string()
        };
        let routes: String = if self.to_tag.is_empty() {
            String::new()
        } else {
            self.route_set
                .iter()
                .map(|route| format!("Route: {route}\r\n"))
                .collect()
        };
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{};rport\r\nMax-Forwards: 70\r\n{routes}From: <sip:phone@{}>;tag={}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {} {method}\r\nContact: <sip:phone@{local}>\r\nUser-Agent: sipconf-testphone\r\n{content_type}Content-Length: {}\r\n\r\n{body}",
            random_token(),
            uri_host(local.ip()),
            self.from_tag,
            self.call_id,
            self.cseq,
            body.len()
        )
    }

    fn cancel_for(&self, invite: &str, branch: &str) -> String {
        let local = self.local_sip();
        format!(
            "CANCEL {} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:phone@{}>;tag={}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} CANCEL\r\nContent-Length: 0\r\n\r\n",
            request_uri_of(invite),
            uri_host(local.ip()),
            self.from_tag,
            self.to_header,
            self.call_id,
            self.cseq
        )
    }

    /// ACK for a non-2xx final response: same branch as the INVITE (RFC 3261 17.1.1.3).
    fn ack_for_failure(&self, invite: &str, branch: &str) -> String {
        let local = self.local_sip();
        let to = if self.to_header.contains("tag=") || self.to_tag.is_empty() {
            self.to_header.clone()
        } else {
            format!("{};tag={}", self.to_header, self.to_tag)
        };
        format!(
            "ACK {} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:phone@{}>;tag={}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {} ACK\r\nContent-Length: 0\r\n\r\n",
            request_uri_of(invite),
            uri_host(local.ip()),
            self.from_tag,
            self.call_id,
            self.cseq
        )
    }

    /// Sends a request: out of a call to the bridge's address, in a call to its
    /// next hop (the first route, when the bridge's 2xx had a Record-Route).
    async fn send(&self, text: &str) -> Result<(), CallError> {
        let destination = if self.to_tag.is_empty() {
            self.options.server
        } else {
            self.next_hop
        };
        self.sip.send_to(text.as_bytes(), destination).await?;
        Ok(())
    }

    /// Sends raw bytes to the bridge's SIP port from this phone's SIP socket.
    pub async fn send_raw(&self, bytes: &[u8]) -> Result<(), CallError> {
        self.sip.send_to(bytes, self.options.server).await?;
        Ok(())
    }

    /// Receives the next SIP message; requests from the bridge are answered 200 and
    /// remembered, and still returned.
    async fn receive(
        &mut self,
        deadline: Instant,
        waiting_for: &'static str,
    ) -> Result<SipText, CallError> {
        let mut buf = vec![0u8; 65_536];
        loop {
            let (n, from) = match timeout_at(deadline, self.sip.recv_from(&mut buf)).await {
                Ok(r) => r?,
                Err(_) => return Err(CallError::Timeout(waiting_for)),
            };
            let Some(message) = SipText::parse(&buf[..n]) else {
                continue;
            };
            if let Some(method) = &message.method {
                self.requests_seen.push(method.clone());
                if method != "ACK" {
                    let ok = response_to(&buf[..n], 200, "OK");
                    self.sip.send_to(ok.as_bytes(), from).await?;
                }
            }
            return Ok(message);
        }
    }

    async fn wait_for(&mut self, want: impl Fn(&SipText) -> bool) -> Result<SipText, CallError> {
        let deadline = Instant::now() + SIP_WAIT;
        loop {
            let m = self.receive(deadline, "a request").await?;
            if want(&m) {
                return Ok(m);
            }
        }
    }

    /// Sends a request and waits for its final response, retransmitting on UDP at
    /// 500 ms intervals. A 2xx to an INVITE is acknowledged; a failure is returned
    /// as `Rejected` (and acknowledged for INVITE).
    async fn transact(
        &mut self,
        method: &'static str,
        request: String,
    ) -> Result<SipText, CallError> {
        let deadline = Instant::now() + SIP_WAIT;
        let branch = branch_of(&request);
        self.send(&request).await?;
        let mut next_retransmit = Instant::now() + Duration::from_millis(500);
        let mut provisional = false;
        loop {
            let wait = if provisional {
                deadline
            } else {
                next_retransmit.min(deadline)
            };
            let message = match self.receive(wait, method).await {
                Ok(m) => m,
                Err(CallError::Timeout(_)) if Instant::now() < deadline => {
                    self.send(&request).await?;
                    next_retransmit = Instant::now() + Duration::from_millis(500);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if message.cseq_method() != Some(method) || message.status.is_none() {
                continue;
            }
            let status = message.status.unwrap_or(0);
            if status < 200 {
                provisional = true;
                continue;
            }
            if method == "INVITE" {
                if let Some(to) = message.header("To") {
                    self.to_header = to.to_string();
                    self.to_tag = tag_param(to).unwrap_or_default();
                }
                if status < 300 {
                    if let Some(contact) = message.header("Contact") {
                        self.remote_target = uri_of(contact);
                    }
                    if self.route_set.is_empty() {
                        self.follow_record_route(&message);
                    }
                    let target = if self.remote_target.is_empty() {
                        self.invite_uri()
                    } else {
                        self.remote_target.clone()
                    };
                    let ack = self.request("ACK", &target, "");
                    self.send(&ack).await?;
                } else {
                    let ack = self.ack_for_failure(&request, &branch);
                    self.send(&ack).await?;
                }
            }
            if status >= 300 {
                return Err(CallError::Rejected(status, message.reason.clone()));
            }
            return Ok(message);
        }
    }

    /// The route set of the call from the bridge's first 2xx (RFC 3261 12.1.2):
    /// its Record-Route reversed, the first route being the next hop.
    fn follow_record_route(&mut self, response: &SipText) {
        let mut routes: Vec<String> = response
            .headers("Record-Route")
            .iter()
            .flat_map(|value| split_name_addrs(value))
            .collect();
        routes.reverse();
        let first_hop = routes.first().map(|route| uri_of(route)).and_then(|uri| {
            let host_port = uri.strip_prefix("sip:")?.rsplit('@').next()?;
            let host_port = host_port.split(';').next()?;
            host_port
                .parse::<SocketAddr>()
                .ok()
                .or_else(|| Some(SocketAddr::new(host_port.parse().ok()?, 5060)))
        });
        if let Some(hop) = first_hop {
            self.next_hop = hop;
        }
        self.route_set = routes;
    }

    /// The codec the bridge answered (G.711, G.722, or Opus with its payload
    /// type); before the answer, the G.711 codec offered first.
    pub fn answered_codec(&self) -> AnsweredCodec {
        self.voice.codec()
    }

    /// The rate of the audio the phone sends and records (8000, or 16000 with
    /// G.722 or Opus).
    pub fn audio_rate_hz(&self) -> u32 {
        self.voice.audio_rate_hz()
    }

    /// The route set the phone follows in this call (empty without Record-Route).
    pub fn route_set(&self) -> &[String] {
        &self.route_set
    }

    fn accept_answer(&mut self, response: &SipText) -> Result<(), CallError> {
        let sdp = &response.body;
        let bad = |what: &str| CallError::BadResponse(format!("{what} in SDP answer:\n{sdp}"));
        let ip: IpAddr = sdp
            .lines()
            .find_map(|l| l.strip_prefix("c=IN IP4 ").or(l.strip_prefix("c=IN IP6 ")))
            .and_then(|a| a.trim().parse().ok())
            .ok_or_else(|| bad("no connection address"))?;
        let media = sdp
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .ok_or_else(|| bad("no m=audio line"))?;
        let port: u16 = media
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| bad("no port"))?;
        let answered = read_answer(sdp).map_err(|why| bad(&why))?;
        let offered = match answered.codec {
            AnsweredCodec::G711(_) => true,
            AnsweredCodec::G722 => self.options.g722.is_some(),
            AnsweredCodec::Opus { .. } => self.options.opus.is_some(),
        };
        if !offered {
            return Err(bad(&format!("{:?} not offered", answered.codec)));
        }
        if answered.codec != self.voice.codec() {
            // A new codec starts from its reset state (RFC 3264 8.3.2); the
            // same codec in a re-answer keeps its state, as the stream goes on.
            self.voice = Voice::new(answered.codec)?;
        }
        if let AnsweredCodec::G711(codec) = answered.codec {
            self.codec = codec;
        }
        self.telephone_event = answered.telephone_event.map(|(pt, _)| pt);
        self.telephone_event_rate_hz = answered.telephone_event.map_or(8000, |(_, hz)| hz);
        self.remote_rtp = SocketAddr::new(ip, port);
        self.answer_sdp = sdp.clone();
        Ok(())
    }

    /// Sends a re-INVITE with the given direction (`sendonly`, `inactive`,
    /// `sendrecv`, or `hold-c0` for the RFC 2543 `c=0.0.0.0` hold) and returns the
    /// bridge's SDP answer.
    pub async fn reinvite(&mut self, direction: &str) -> Result<String, CallError> {
        let sdp = self.offer(direction);
        let target = self.remote_target.clone();
        let request = self.request("INVITE", &target, &sdp);
        let response = self.transact("INVITE", request).await?;
        Ok(response.body)
    }

    /// Hangs up with BYE; returns the final status.
    pub async fn hangup(&mut self) -> Result<u16, CallError> {
        let target = self.remote_target.clone();
        let request = self.request("BYE", &target, "");
        let response = self.transact("BYE", request).await?;
        Ok(response.status.unwrap_or(0))
    }

    /// Waits until the bridge sends BYE (answered 200); true if it came in time.
    pub async fn wait_for_bye(&mut self, within: Duration) -> bool {
        if self.requests_seen.iter().any(|m| m == "BYE") {
            return true;
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            match self.receive(deadline, "BYE").await {
                Ok(m) if m.method.as_deref() == Some("BYE") => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
        false
    }

    /// Sends `signal` at real pace (one packet per 20 ms on an absolute schedule)
    /// for `duration`, while recording what arrives. Returns the recording. On a
    /// G.722 or Opus call the signal is made and the recording decoded at 16 kHz.
    pub async fn stream(
        &mut self,
        signal: &Signal,
        duration: Duration,
    ) -> Result<Recording, CallError> {
        self.stream_with_keys(signal, duration, &[]).await
    }

    /// As [`Phone::stream`], pressing `keys` on the way: in-band (the key's
    /// tone pair replaces the signal), as RFC 4733 telephone-event packets (the
    /// phone sends no audio during the press, like most desk phones), or both.
    pub async fn stream_with_keys(
        &mut self,
        signal: &Signal,
        duration: Duration,
        keys: &[KeyPress],
    ) -> Result<Recording, CallError> {
        let frames = (duration.as_millis() / 20) as usize;
        let mut recording = Recording {
            sample_rate_hz: self.voice.audio_rate_hz(),
            ..Recording::default()
        };
        let rate_hz = self.voice.audio_rate_hz();
        let mut pcm_frame = [0i16; MAX_FRAME_SAMPLES];
        let pcm = &mut pcm_frame[..self.voice.frame_samples()];
        let mut packet = [0u8; 12 + MAX_PAYLOAD_BYTES];
        let mut buf = [0u8; 2048];
        // Packets that arrived before this run are not part of it: the
        // recording's sample index is then time since the run started.
        while self.rtp.try_recv_from(&mut buf).is_ok() {}
        let start = Instant::now();
        for frame in 0..=frames {
            if frame < frames {
                let frame_ms = 20 * frame as u64;
                let pressed = keys
                    .iter()
                    .find(|k| frame_ms >= k.at_ms && frame_ms < k.at_ms + k.duration_ms);
                let ended = keys.iter().find(|k| {
                    frame_ms >= k.at_ms + k.duration_ms && frame_ms < k.at_ms + k.duration_ms + 20
                });
                for (i, s) in pcm.iter_mut().enumerate() {
                    let n = self.sent_samples + i;
                    *s = match pressed {
                        Some(key) if key.mode != KeyMode::Rfc4733 => {
                            key_tone_sample(key.digit, n, rate_hz)
                        }
                        _ => signal.sample(n, rate_hz),
                    };
                }
                let audio = pressed.is_none_or(|key| key.mode != KeyMode::Rfc4733);
                let event = pressed
                    .filter(|key| key.mode != KeyMode::InBand)
                    .map(|key| (key, false))
                    .or_else(|| {
                        ended
                            .filter(|key| key.mode != KeyMode::InBand)
                            .map(|key| (key, true))
                    });
                if let Some((key, end)) = event {
                    self.send_telephone_event(key, frame_ms, end).await?;
                }
                if audio {
                    let length = self.build_rtp(pcm, &mut packet)?;
                    if self.loses_this_packet() {
                        self.packets_lost += 1;
                    } else {
                        self.rtp.send_to(&packet[..length], self.remote_rtp).await?;
                    }
                } else {
                    // No packet, but the RTP clock runs on.
                    self.timestamp = self.timestamp.wrapping_add(self.voice.frame_ticks());
                }
                self.sent_samples += pcm.len();
            }
            let next = start + Duration::from_millis(20 * (frame as u64 + 1));
            loop {
                match timeout_at(next, self.rtp.recv_from(&mut buf)).await {
                    Ok(Ok((n, from))) => self.record(&buf[..n], from, &mut recording),
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => break,
                }
            }
        }
        Ok(recording)
    }

    /// One RFC 4733 packet for `key` at `frame_ms` (three copies of the end
    /// packet when `end`, as RFC 4733 §2.5.1.4 recommends).
    async fn send_telephone_event(
        &mut self,
        key: &KeyPress,
        frame_ms: u64,
        end: bool,
    ) -> Result<(), CallError> {
        let Some(pt) = self.telephone_event else {
            return Ok(());
        };
        let Some(code) = "0123456789*#ABCD".find(key.digit) else {
            return Ok(());
        };
        let elapsed_ms = if end {
            key.duration_ms
        } else {
            frame_ms - key.at_ms + 20
        };
        // Events run on the audio's RTP clock (RFC 4733 2.1): 48000 with Opus.
        let ticks_per_ms = u64::from(self.voice.rtp_clock_hz() / 1000);
        let duration = (elapsed_ms * ticks_per_ms).min(0xffff) as u16;
        // The event's timestamp is the press start on the phone's RTP clock;
        // `self.timestamp` is this frame's.
        let frames_since_start = ((frame_ms - key.at_ms) / 20) as u32;
        let timestamp = self
            .timestamp
            .wrapping_sub(frames_since_start * self.voice.frame_ticks());
        let first = !end && frame_ms == key.at_ms;
        let copies = if end { 3 } else { 1 };
        for _ in 0..copies {
            let mut packet = [0u8; 16];
            packet[0] = 0x80;
            packet[1] = pt | if first { 0x80 } else { 0 };
            packet[2..4].copy_from_slice(&self.seq.to_be_bytes());
            packet[4..8].copy_from_slice(&timestamp.to_be_bytes());
            packet[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
            packet[12] = code as u8;
            packet[13] = if end { 0x80 } else { 0 } | 10; // E bit, volume -10 dBm0
            packet[14..16].copy_from_slice(&duration.to_be_bytes());
            self.rtp.send_to(&packet, self.remote_rtp).await?;
            self.seq = self.seq.wrapping_add(1);
        }
        Ok(())
    }

    /// From now on every `n`th audio packet `stream` builds is lost on the
    /// way: its sequence number and timestamp are used, the packet is not
    /// sent (counted in `packets_lost`). `None` sends them all again.
    pub fn lose_every(&mut self, n: Option<usize>) {
        self.lose_every = n.filter(|&n| n > 0);
    }

    /// Counts the audio packet just built; whether `lose_every` loses it.
    fn loses_this_packet(&mut self) -> bool {
        self.audio_packets_built += 1;
        self.lose_every
            .is_some_and(|n| self.audio_packets_built.is_multiple_of(n))
    }

    /// Sends one RTP packet with an arbitrary payload type and payload (for
    /// telephone-event and malformed-input tests).
    pub async fn send_rtp_raw(&self, bytes: &[u8]) -> Result<(), CallError> {
        self.rtp.send_to(bytes, self.remote_rtp).await?;
        Ok(())
    }

    /// One RTP packet of the negotiated codec in `packet`; returns its length.
    fn build_rtp(&mut self, pcm: &[i16], packet: &mut [u8]) -> Result<usize, CallError> {
        packet[0] = 0x80;
        packet[1] = self.voice.payload_type();
        packet[2..4].copy_from_slice(&self.seq.to_be_bytes());
        packet[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        packet[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let payload = self.voice.encode(pcm, &mut packet[12..])?;
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(self.voice.frame_ticks());
        Ok(12 + payload)
    }

    fn record(&mut self, packet: &[u8], from: SocketAddr, recording: &mut Recording) {
        if packet.len() < 12 || packet[0] >> 6 != 2 {
            return;
        }
        if !recording.sources.contains(&from) {
            recording.sources.push(from);
        }
        let pt = packet[1] & 0x7f;
        let csrc = (packet[0] & 0x0f) as usize;
        let header = 12 + 4 * csrc;
        if pt != self.voice.payload_type() || packet.len() < header {
            recording.other_packets += 1;
            return;
        }
        let payload = &packet[header..];
        let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        let timestamp = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        if let Some((expected_ssrc, expected)) = recording.expected {
            let ahead = timestamp.wrapping_sub(expected) as i32;
            let max_gap = (MAX_SILENCE_GAP_MS * self.voice.rtp_clock_hz() / 1000) as i32;
            if expected_ssrc == ssrc && (1..=max_gap).contains(&ahead) {
                let silence_until = recording.samples.len() + self.voice.samples_for(ahead as u32);
                recording.samples.resize(silence_until, 0);
            }
        }
        let Ok(decoded) = self.voice.decode(payload, &mut recording.samples) else {
            recording.undecodable_packets += 1;
            return;
        };
        let ticks = self.voice.ticks_for(decoded);
        recording.expected = Some((ssrc, timestamp.wrapping_add(ticks)));
        recording.packets += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::{db_ratio, tone_amplitude_at};

    /// A peer that answers the phone's INVITE with Opus, then sends every RTP
    /// packet back and notes its payload type and timestamp.
    async fn opus_answerer(sip: UdpSocket, rtp: UdpSocket) -> (String, Vec<(u8, u32)>) {
        let mut buf = [0u8; 4096];
        let (n, phone) = sip.recv_from(&mut buf).await.expect("INVITE");
        let invite = String::from_utf8_lossy(&buf[..n]).to_string();
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 111 101\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\na=rtpmap:101 telephone-event/48000\r\n",
            rtp.local_addr().expect("rtp").port()
        );
        let ok = response_to(&buf[..n], 200, "OK").replace(
            "Content-Length: 0\r\n\r\n",
            &format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            ),
        );
        sip.send_to(ok.as_bytes(), phone).await.expect("200");
        let mut seen = Vec::new();
        while seen.len() < 50 {
            let Ok(Ok((n, from))) =
                tokio::time::timeout(Duration::from_secs(2), rtp.recv_from(&mut buf)).await
            else {
                break;
            };
            if n >= 12 {
                let timestamp = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
                seen.push((buf[1] & 0x7f, timestamp));
            }
            rtp.send_to(&buf[..n], from).await.expect("echo");
        }
        (invite, seen)
    }

    #[tokio::test]
    async fn an_opus_call_sends_a_48000_clock_and_records_16_khz_audio() {
        if !crate::voice::opus_here("an_opus_call_sends_a_48000_clock_and_records_16_khz_audio") {
            return;
        }
        let sip = UdpSocket::bind("127.0.0.1:0").await.expect("sip");
        let rtp = UdpSocket::bind("127.0.0.1:0").await.expect("rtp");
        let server = sip.local_addr().expect("sip");
        let peer = tokio::spawn(opus_answerer(sip, rtp));

        let mut phone = Phone::call(PhoneOptions::opus(server, "1000"))
            .await
            .expect("call");
        assert_eq!(
            phone.answered_codec(),
            AnsweredCodec::Opus { payload_type: 111 }
        );
        assert_eq!(phone.audio_rate_hz(), 16000);
        assert_eq!(phone.telephone_event, Some(101));
        assert_eq!(phone.telephone_event_rate_hz, 48000);
        let tone = Signal::Sine {
            freq_hz: 1000.0,
            amplitude: 8000.0,
        };
        let heard = phone
            .stream(&tone, Duration::from_secs(1))
            .await
            .expect("stream");
        let (invite, seen) = peer.await.expect("peer");

        assert!(invite.contains("m=audio "), "{invite}");
        assert!(invite.contains(" RTP/AVP 111 101\r\n"), "{invite}");
        assert!(invite.contains("a=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\n"));
        assert!(invite.contains("a=rtpmap:101 telephone-event/48000\r\n"));
        assert!(seen.len() >= 45, "{} packets", seen.len());
        assert!(seen.iter().all(|(pt, _)| *pt == 111));
        assert!(seen.windows(2).all(|w| w[1].1.wrapping_sub(w[0].1) == 960));

        assert_eq!(heard.sample_rate_hz, 16000);
        assert_eq!(heard.undecodable_packets, 0);
        assert!(heard.packets >= 45, "{} packets heard", heard.packets);
        // Past the first 300 ms (the codec's delay and the loop's start), the
        // tone is back at its level.
        let tail = heard.samples.get(4800..).unwrap_or_default();
        assert!(tail.len() >= 8000, "{} samples heard", heard.samples.len());
        let level_db = db_ratio(tone_amplitude_at(tail, 1000.0, 16000), 8000.0);
        assert!(level_db.abs() < 1.0, "1 kHz heard at {level_db:.2} dB");
    }

    /// A phone that has not called yet (its sockets bound on loopback).
    async fn phone(g722: Option<G722Offer>, codecs: Vec<Codec>) -> Phone {
        let server = SocketAddr::from(([127, 0, 0, 1], 5060));
        let mut options = PhoneOptions::new(server, "1000", Codec::Pcmu);
        options.codecs = codecs;
        options.g722 = g722;
        Phone::new(options).await.expect("loopback sockets")
    }

    fn media_line(sdp: &str) -> &str {
        sdp.lines()
            .find(|l| l.starts_with("m=audio "))
            .unwrap_or("")
    }

    /// A 200 OK whose SDP answer lists `payload_types` with `rtpmaps`.
    fn answer(payload_types: &str, rtpmaps: &str) -> SipText {
        let sdp = format!(
            "v=0\r\no=bridge 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio 40000 RTP/AVP {payload_types}\r\n{rtpmaps}a=sendrecv\r\n"
        );
        SipText::parse(format!("SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\n\r\n{sdp}").as_bytes())
            .expect("a response")
    }

    #[tokio::test]
    async fn a_g722_first_offer_lists_payload_type_9_first_with_its_rtpmap() {
        let mut phone = phone(Some(G722Offer::First), vec![Codec::Pcmu, Codec::Pcma]).await;
        let sdp = phone.offer("sendrecv");
        assert!(media_line(&sdp).ends_with("RTP/AVP 9 0 8 101"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:9 G722/8000\r\n"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:0 PCMU/8000\r\n"), "{sdp}");
    }

    #[tokio::test]
    async fn g722_offered_last_or_only_sits_where_asked() {
        let mut last = phone(Some(G722Offer::Last), vec![Codec::Pcma]).await;
        assert!(media_line(&last.offer("sendrecv")).ends_with("RTP/AVP 8 9 101"));
        let mut only = phone(Some(G722Offer::Only), vec![Codec::Pcmu]).await;
        let sdp = only.offer("sendrecv");
        assert!(media_line(&sdp).ends_with("RTP/AVP 9 101"), "{sdp}");
        assert!(!sdp.contains("PCMU"), "{sdp}");
    }

    #[tokio::test]
    async fn without_g722_the_offer_is_g711_as_before() {
        let mut phone = phone(None, vec![Codec::Pcmu]).await;
        let sdp = phone.offer("sendrecv");
        assert!(media_line(&sdp).ends_with("RTP/AVP 0 101"), "{sdp}");
        assert!(!sdp.contains("G722"), "{sdp}");
        assert_eq!(phone.answered_codec(), AnsweredCodec::G711(Codec::Pcmu));
    }

    #[tokio::test]
    async fn an_answer_with_payload_type_9_makes_a_g722_call_at_16_khz() {
        let mut phone = phone(Some(G722Offer::First), vec![Codec::Pcmu]).await;
        let response = answer(
            "9 101",
            "a=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
        );
        phone.accept_answer(&response).expect("a usable answer");
        assert_eq!(phone.answered_codec(), AnsweredCodec::G722);
        assert_eq!(phone.audio_rate_hz(), 16_000);
        assert_eq!(phone.voice.frame_samples(), 320);
        assert_eq!(phone.telephone_event, Some(101));
        assert_eq!(phone.telephone_event_rate_hz, 8000);
        assert_eq!(phone.remote_rtp.port(), 40000);
    }

    #[tokio::test]
    async fn an_answer_without_rtpmap_for_the_static_type_is_g722_too() {
        let mut phone = phone(Some(G722Offer::Only), vec![]).await;
        phone
            .accept_answer(&answer("9", ""))
            .expect("a usable answer");
        assert_eq!(phone.answered_codec(), AnsweredCodec::G722);
    }

    #[tokio::test]
    async fn an_answer_choosing_pcmu_over_offered_g722_is_a_g711_call() {
        let mut phone = phone(Some(G722Offer::First), vec![Codec::Pcmu]).await;
        phone
            .accept_answer(&answer("0 101", "a=rtpmap:0 PCMU/8000\r\n"))
            .expect("a usable answer");
        assert_eq!(phone.answered_codec(), AnsweredCodec::G711(Codec::Pcmu));
        assert_eq!(phone.codec, Codec::Pcmu);
    }

    #[tokio::test]
    async fn g722_the_phone_did_not_offer_or_under_another_name_is_refused() {
        let mut g711_only = phone(None, vec![Codec::Pcmu]).await;
        assert!(g711_only.accept_answer(&answer("9", "")).is_err());
        let mut wideband = phone(Some(G722Offer::First), vec![Codec::Pcmu]).await;
        let renamed = answer("9", "a=rtpmap:9 G7221/16000\r\n");
        assert!(wideband.accept_answer(&renamed).is_err());
    }

    #[tokio::test]
    async fn g722_frames_tick_the_rtp_clock_160_and_decode_to_320_samples() {
        let mut phone = phone(Some(G722Offer::Only), vec![]).await;
        phone
            .accept_answer(&answer("9", ""))
            .expect("a usable answer");
        let from = SocketAddr::from(([127, 0, 0, 1], 40000));
        let tone = Signal::Sine {
            freq_hz: 6000.0,
            amplitude: 8000.0,
        };
        let mut recording = Recording {
            sample_rate_hz: 16_000,
            ..Recording::default()
        };
        let mut timestamps = Vec::new();
        for frame in 0..25 {
            let pcm: Vec<i16> = (0..320)
                .map(|i| tone.sample(frame * 320 + i, 16_000))
                .collect();
            let mut packet = [0u8; 12 + MAX_PAYLOAD_BYTES];
            let length = phone.build_rtp(&pcm, &mut packet).expect("g722 encodes");
            assert_eq!((packet[1], length), (9, 12 + 160));
            timestamps.push(u32::from_be_bytes([
                packet[4], packet[5], packet[6], packet[7],
            ]));
            if frame == 20 {
                continue; // lost: the next one plays a frame of silence in its place
            }
            phone.record(&packet[..length], from, &mut recording);
        }
        assert!(timestamps
            .windows(2)
            .all(|w| w[1].wrapping_sub(w[0]) == 160));
        assert_eq!(recording.packets, 24);
        assert_eq!(recording.samples.len(), 25 * 320);
        assert!(recording.samples[20 * 320..21 * 320]
            .iter()
            .all(|&s| s == 0));
        // The phone's encoder and decoder are a G.722 pair: the 6 kHz tone,
        // above narrowband's 4 kHz, comes back within 1 dB.
        let heard = recording.tone_amplitude(6000.0, 0.1, 0.4);
        assert!(db_ratio(heard, 8000.0).abs() < 1.0, "{heard}");
    }
}
