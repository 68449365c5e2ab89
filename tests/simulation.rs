//! The whole bridge in memory: the SIP endpoint, the switchboard and the
//! media core run together on a fake clock, and phones that speak literal
//! SIP and RTP reach them over an in-memory network. No socket, no thread,
//! no sleep: seconds of a conference run in milliseconds, and every step is
//! the same on every run. (quinn-proto's `Pair` and str0m's tests are the
//! model.) What a phone hears is decoded and measured, as on loopback.

use sipconf::calls::{Action, Input, Now, PortPool, Switchboard};
use sipconf::conference::{CallState, ConferenceState, MemberState, Registry};
use sipconf::config::Config;
use sipconf::events::CallbackEvent;
use sipconf::media::core::{Datagram, MediaCore, Port, Stream, Transmit, TICK};
use sipconf::media::dtmf::event_code;
use sipconf::media::rtp::{write_rtp, RtpHeader};
use sipconf::media::{Codec, MediaConfig, MediaStats};
use sipconf::sip::transport::SipCommand;
use sipconf::sip::{Endpoint, EndpointConfig, Transport};
use sipconf_testkit::meter::{db_ratio, tone_amplitude};
use sipconf_testkit::testphone::{response_to, tag_param, SipText};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

const BRIDGE: [u8; 4] = [192, 0, 2, 1];
const SIP_PORT: u16 = 5060;
/// The shared RTP port every call's SDP names.
const RTP_PORT: u16 = 20_000;
/// Each phone's tone, peak (16-bit linear): about -9 dBm0.
const TONE_PEAK: f64 = 8000.0;

fn bridge_sip() -> SocketAddr {
    SocketAddr::from((BRIDGE, SIP_PORT))
}

/// Where a phone is in its call.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CallPhase {
    Idle,
    Calling,
    InCall,
    /// Refused with this status.
    Refused(u16),
    /// Hung up, by either side.
    Ended,
}

/// A key the phone is sending as RFC 4733 events, and for how many more ticks.
struct Press {
    event: u8,
    timestamp: u32,
    ticks: u32,
}

/// A SIP phone with a tone generator, speaking literal SIP over the
/// in-memory network and G.711 u-law RTP to whatever the bridge's SDP named.
struct Phone {
    sip: SocketAddr,
    rtp: SocketAddr,
    tone_hz: f64,
    call_id: String,
    from_tag: String,
    to_tag: Option<String>,
    cseq: u32,
    phase: CallPhase,
    /// Where the bridge's answer told it to send RTP.
    bridge_rtp: Option<SocketAddr>,
    sequence: u16,
    timestamp: u32,
    samples_sent: u64,
    press: Option<Press>,
    /// Everything it decoded from the bridge's RTP, in order.
    heard: Vec<i16>,
}

impl Phone {
    fn new(n: u8, tone_hz: f64) -> Phone {
        let ip = IpAddr::from([192, 0, 2, 10 + n]);
        Phone {
            sip: SocketAddr::new(ip, 5060),
            rtp: SocketAddr::new(ip, 4000),
            tone_hz,
            call_id: format!("call-{n}@192.0.2.{}", 10 + n),
            from_tag: format!("tag-{n}"),
            to_tag: None,
            cseq: 1,
            phase: CallPhase::Idle,
            bridge_rtp: None,
            sequence: 1,
            timestamp: 0,
            samples_sent: 0,
            press: None,
            heard: Vec::new(),
        }
    }

    fn request(&self, method: &str, branch: &str, body: &str) -> String {
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let content_type = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        let ip = self.sip.ip();
        // A branch is a token (RFC 3261 25.1): the Call-ID's `@` may not be in it.
        let branch = branch.replace('@', ".");
        format!(
            "{method} sip:1000@192.0.2.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP {}:5060;branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:phone@{ip}>;tag={}\r\n\
             To: <sip:1000@192.0.2.1>{to_tag}\r\n\
             Call-ID: {}\r\n\
             CSeq: {} {method}\r\n\
             Contact: <sip:phone@{}>\r\n\
             {content_type}Content-Length: {}\r\n\r\n{body}",
            ip,
            self.from_tag,
            self.call_id,
            self.cseq,
            self.sip,
            body.len()
        )
    }

    fn invite(&mut self) -> String {
        self.phase = CallPhase::Calling;
        let ip = self.rtp.ip();
        let offer = format!(
            "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n",
            self.rtp.port()
        );
        self.request("INVITE", &format!("inv-{}", self.call_id), &offer)
    }

    fn bye(&mut self) -> String {
        self.cseq += 1;
        self.phase = CallPhase::Ended;
        self.request("BYE", &format!("bye-{}", self.call_id), "")
    }

    /// A SIP message from the bridge; returns what the phone answers.
    fn on_sip(&mut self, bytes: &[u8]) -> Vec<String> {
        let message = SipText::parse(bytes).expect("the bridge sends well-formed SIP");
        let cseq = message.header("CSeq").unwrap_or_default().to_string();
        match (message.status, message.method.as_deref()) {
            (Some(200), _) if cseq.ends_with("INVITE") => {
                self.to_tag = message.header("To").and_then(tag_param);
                self.bridge_rtp = Some(answered_rtp(&message.body));
                self.phase = CallPhase::InCall;
                // Every 200 (a retransmission too) is acknowledged.
                vec![self.request("ACK", &format!("ack-{}", self.call_id), "")]
            }
            (Some(code), _) if code >= 300 && cseq.ends_with("INVITE") => {
                self.phase = CallPhase::Refused(code);
                vec![]
            }
            (None, Some("BYE")) => {
                self.phase = CallPhase::Ended;
                vec![response_to(bytes, 200, "OK")]
            }
            _ => vec![],
        }
    }

    /// This tick's RTP: a frame of the tone, or a key's event packet.
    fn rtp_packet(&mut self) -> Option<Vec<u8>> {
        if self.phase != CallPhase::InCall {
            return None;
        }
        let mut out = vec![0u8; 12 + 160];
        let timestamp = self.timestamp;
        self.timestamp = self.timestamp.wrapping_add(160);
        let sequence = self.sequence;
        self.sequence = self.sequence.wrapping_add(1);
        if let Some(press) = &mut self.press {
            // RFC 4733: the event's timestamp stays its start; the duration
            // grows; the last three packets carry the end bit.
            press.ticks -= 1;
            let end = press.ticks < 3;
            let duration = (8 - press.ticks.min(8)) * 160;
            let payload = [
                press.event,
                if end { 0x80 | 10 } else { 10 },
                (duration >> 8) as u8,
                duration as u8,
            ];
            let header = RtpHeader {
                payload_type: 101,
                marker: press.ticks == 7,
                sequence,
                timestamp: press.timestamp,
                ssrc: 0x5151,
            };
            let len = write_rtp(&header, &payload, &mut out).expect("fits");
            if press.ticks == 0 {
                self.press = None;
            }
            out.truncate(len);
            return Some(out);
        }
        let mut pcm = [0i16; 160];
        for sample in pcm.iter_mut() {
            let t = self.samples_sent as f64 / 8000.0;
            *sample = (TONE_PEAK * (2.0 * std::f64::consts::PI * self.tone_hz * t).sin()) as i16;
            self.samples_sent += 1;
        }
        let mut payload = [0u8; 160];
        Codec::Pcmu.encode(&pcm, &mut payload);
        let header = RtpHeader {
            payload_type: 0,
            marker: false,
            sequence,
            timestamp,
            ssrc: 0x5151,
        };
        let len = write_rtp(&header, &payload, &mut out).expect("fits");
        out.truncate(len);
        Some(out)
    }

    /// Presses `digit` as RFC 4733 events over the next eight ticks (160 ms).
    fn press(&mut self, digit: char) {
        self.press = Some(Press {
            event: event_code(digit).expect("a keypad digit"),
            timestamp: self.timestamp,
            ticks: 8,
        });
    }

    fn on_rtp(&mut self, bytes: &[u8]) {
        let payload_type = bytes.get(1).map(|b| b & 0x7F);
        if payload_type != Some(0) || bytes.len() < 12 {
            return;
        }
        let mut pcm = [0i16; 160];
        let decoded = Codec::Pcmu.decode(&bytes[12..], &mut pcm);
        self.heard.extend_from_slice(&pcm[..decoded]);
    }

    /// What it heard of `tone_hz` over its last `seconds`, as a peak amplitude.
    fn hears(&self, tone_hz: f64, seconds: f64) -> f64 {
        let window = (8000.0 * seconds) as usize;
        let start = self.heard.len().saturating_sub(window);
        tone_amplitude(&self.heard[start..], tone_hz)
    }
}

/// The RTP address in the bridge's SDP answer.
fn answered_rtp(sdp: &str) -> SocketAddr {
    let ip = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .expect("c= line")
        .trim()
        .parse()
        .expect("an address");
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|m| m.split(' ').next())
        .expect("m= line")
        .parse()
        .expect("a port");
    SocketAddr::new(ip, port)
}

/// The bridge's three cores and their records, with the phones, on one clock.
struct Sim {
    now: Now,
    endpoint: Endpoint,
    switchboard: Switchboard,
    records: Registry,
    media: MediaCore,
    phones: Vec<Phone>,
    callbacks: Vec<CallbackEvent>,
    /// SIP in flight from a phone to the bridge.
    to_bridge: VecDeque<(SocketAddr, String)>,
    /// What each fetch of speech or a file is answered with.
    clip: sipconf::audio::Clip,
    /// The sentences and files the switchboard asked for.
    fetched: Vec<String>,
}

impl Sim {
    fn new(config: &str, phones: Vec<Phone>) -> Sim {
        let config = Arc::new(Config::parse(config, "simulation").expect("valid config"));
        let now = Now::current();
        let ports = PortPool::shared(RTP_PORT).advertising(Some(IpAddr::from(BRIDGE)));
        let mut endpoint_config = EndpointConfig::new(bridge_sip());
        endpoint_config.max_transactions = 256;
        let mut media = MediaCore::new(
            MediaConfig {
                max_members: config.media.max_members,
                ..MediaConfig::default()
            },
            Arc::new(MediaStats::default()),
        );
        media.seed(7);
        // A stand-in for speech: half a second of 500 Hz.
        let clip: Vec<i16> = (0..4000)
            .map(|n| {
                (6000.0 * (2.0 * std::f64::consts::PI * 500.0 * n as f64 / 8000.0).sin()) as i16
            })
            .collect();
        Sim {
            now,
            endpoint: Endpoint::new(endpoint_config),
            switchboard: Switchboard::new(config, Box::new(ports), now),
            records: Registry::new(),
            media,
            phones,
            callbacks: Vec::new(),
            to_bridge: VecDeque::new(),
            clip: clip.into(),
            fetched: Vec::new(),
        }
    }

    fn dial(&mut self, phone: usize) {
        let invite = self.phones[phone].invite();
        self.to_bridge.push_back((self.phones[phone].sip, invite));
        self.settle();
    }

    fn hang_up(&mut self, phone: usize) {
        let bye = self.phones[phone].bye();
        self.to_bridge.push_back((self.phones[phone].sip, bye));
        self.settle();
    }

    /// Hands one input to the switchboard and carries out what it asks.
    fn switchboard(&mut self, input: Input) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            self.switchboard.handle(self.now, &mut self.records, input);
            while let Some(action) = self.switchboard.poll_action() {
                let now = self.now.instant;
                match action {
                    Action::Sip(command) => match command {
                        SipCommand::Ring(call) => self.endpoint.ring(now, call),
                        SipCommand::Accept(call, sdp) => self.endpoint.accept(now, call, sdp),
                        SipCommand::AcceptLink(call, sdp, link) => {
                            self.endpoint.accept_link(now, call, sdp, Some(link))
                        }
                        SipCommand::Reject(call, code, reason) => {
                            self.endpoint.reject(now, call, code, &reason)
                        }
                        SipCommand::AcceptReoffer(call, sdp) => {
                            self.endpoint.accept_reoffer(now, call, sdp)
                        }
                        SipCommand::RejectReoffer(call, code, reason) => {
                            self.endpoint.reject_reoffer(now, call, code, &reason)
                        }
                        SipCommand::Hangup(call) => self.endpoint.hangup(now, call),
                        SipCommand::ByeOrphan(dialog) => self.endpoint.bye_orphan(now, *dialog),
                    },
                    Action::Media(command) => {
                        let mut sent = Vec::new();
                        let mut sink = |t: Transmit<'_>| sent.push(owned(t));
                        self.media.command(command, now, 0, &mut sink);
                        self.deliver_media(sent);
                    }
                    Action::Callback(event) => self.callbacks.push(*event),
                    Action::Fetch { id, source } => {
                        self.fetched.push(format!("{source:?}"));
                        inputs.push_back(Input::Clip {
                            id,
                            result: Ok(self.clip.clone()),
                        });
                    }
                    Action::Invite { call_id, call } => {
                        let key = self.endpoint.invite(now, *call).ok();
                        inputs.push_back(Input::Invited { call_id, key });
                    }
                    // The simulated bridge has no `[[room]] cascade`.
                    Action::Reply { .. } | Action::ResolveLink { .. } => {}
                }
            }
        }
    }

    /// Moves SIP between the phones and the endpoint, and the endpoint's
    /// events to the switchboard, until nothing more happens at this instant.
    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            while let Some((from, text)) = self.to_bridge.pop_front() {
                self.endpoint.handle_datagram(
                    self.now.instant,
                    Transport::Udp,
                    from,
                    text.as_bytes(),
                );
                moved = true;
            }
            while let Some(transmit) = self.endpoint.poll_transmit() {
                let phone = self
                    .phones
                    .iter_mut()
                    .find(|p| p.sip == transmit.destination)
                    .expect("the bridge answers a phone");
                for reply in phone.on_sip(&transmit.bytes) {
                    self.to_bridge.push_back((phone.sip, reply));
                }
                moved = true;
            }
            while let Some(event) = self.endpoint.poll_event() {
                self.switchboard(Input::Sip(event));
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("SIP did not settle in 1000 rounds");
    }

    fn deliver_media(&mut self, sent: Vec<(SocketAddr, Stream, Vec<u8>)>) {
        for (destination, stream, bytes) in sent {
            if stream != Stream::Rtp {
                continue;
            }
            if let Some(phone) = self.phones.iter_mut().find(|p| p.rtp == destination) {
                phone.on_rtp(&bytes);
            }
        }
    }

    /// One 20 ms tick of everything: the phones send, timers fire, the
    /// media core mixes and sends, its events reach the switchboard.
    fn tick(&mut self) {
        self.now = self.now.after(TICK);
        let now = self.now.instant;
        for phone in &mut self.phones {
            if let Some(packet) = phone.rtp_packet() {
                assert_eq!(phone.bridge_rtp, Some(SocketAddr::from((BRIDGE, RTP_PORT))));
                let datagram = Datagram {
                    port: Port::Shared,
                    stream: Stream::Rtp,
                    source: phone.rtp,
                    contents: &packet,
                };
                self.media.receive(datagram, now);
            }
        }
        if self.endpoint.poll_timeout().is_some_and(|at| at <= now) {
            self.endpoint.handle_timeout(now);
        }
        if self.switchboard.poll_timeout().is_some_and(|at| at <= now) {
            self.switchboard(Input::Timeout);
        }
        let mut sent = Vec::new();
        let mut sink = |t: Transmit<'_>| sent.push(owned(t));
        self.media.tick(now, 0, &mut sink);
        self.deliver_media(sent);
        while let Some(event) = self.media.poll_event() {
            self.switchboard(Input::Media(event));
        }
        self.settle();
    }

    fn run(&mut self, duration: Duration) {
        for _ in 0..(duration.as_millis() / TICK.as_millis()) {
            self.tick();
        }
    }

    fn shut_down(&mut self) {
        self.switchboard(Input::Shutdown);
        self.settle();
    }

    fn callbacks_named(&self, what: &str) -> usize {
        self.callbacks
            .iter()
            .filter(|c| match c {
                CallbackEvent::Member { member, .. } => {
                    what == format!("member:{}", member.state.as_str())
                }
                CallbackEvent::Conference(c) => what == format!("conference:{}", c.state.as_str()),
                CallbackEvent::Call { event_type, .. } => what == *event_type,
                _ => false,
            })
            .count()
    }
}

fn owned(t: Transmit<'_>) -> (SocketAddr, Stream, Vec<u8>) {
    (t.destination, t.stream, t.contents.to_vec())
}

/// Three phones, each sending its own tone, far enough apart that a meter
/// over a second tells them apart.
fn three_phones() -> Vec<Phone> {
    vec![
        Phone::new(0, 600.0),
        Phone::new(1, 1000.0),
        Phone::new(2, 1400.0),
    ]
}

const ROOM: &str = "[media]\nmax_members = 16\n[[room]]\nnumber = \"1000\"\n";

#[test]
fn three_callers_in_a_room_each_hear_the_other_two_and_never_themselves() {
    let mut sim = Sim::new(ROOM, three_phones());
    for phone in 0..3 {
        sim.dial(phone);
        assert_eq!(sim.phones[phone].phase, CallPhase::InCall);
    }
    let conference = sim
        .records
        .room_conference("1000")
        .expect("the room's conference")
        .clone();
    assert_eq!(conference.active_members, 3);
    sim.run(Duration::from_secs(2));

    for listener in 0..3 {
        for talker in 0..3 {
            let tone = sim.phones[talker].tone_hz;
            let level = db_ratio(sim.phones[listener].hears(tone, 1.0), TONE_PEAK);
            if listener == talker {
                assert!(
                    level < -40.0,
                    "phone {listener} hears itself at {level:.1} dB"
                );
            } else {
                assert!(
                    level.abs() < 1.0,
                    "phone {listener} hears phone {talker} at {level:.1} dB, not 0"
                );
            }
        }
    }
    // The records say who talks.
    let talking = sim
        .records
        .members_of(&conference.id)
        .iter()
        .filter(|m| m.talking)
        .count();
    assert_eq!(talking, 3);
}

#[test]
fn a_caller_mutes_with_0_then_hangs_up_and_stopping_says_bye_to_the_rest() {
    let mut sim = Sim::new(ROOM, three_phones());
    for phone in 0..3 {
        sim.dial(phone);
    }
    sim.run(Duration::from_secs(1));
    let muted_tone = sim.phones[0].tone_hz;

    // Phone 0 presses 0: it is muted, the others stop hearing it.
    sim.phones[0].press('0');
    sim.run(Duration::from_secs(2));
    for listener in [1, 2] {
        let level = db_ratio(sim.phones[listener].hears(muted_tone, 1.0), TONE_PEAK);
        assert!(
            level < -40.0,
            "phone {listener} still hears the muted phone at {level:.1} dB"
        );
    }
    let conference = sim
        .records
        .room_conference("1000")
        .expect("room")
        .id
        .clone();
    let members = sim.records.members_of(&conference);
    assert!(members[0].mute, "the member record is muted");
    assert!(!members[1].mute && !members[2].mute);

    // Phone 1 hangs up: its member leaves, the others stay.
    sim.hang_up(1);
    let members = sim.records.members_of(&conference);
    assert_eq!(members[1].state, MemberState::Completed);
    assert_eq!(
        sim.records
            .room_conference("1000")
            .expect("room")
            .active_members,
        2
    );

    // The bridge stops: BYE to both who are left, and every record ends.
    sim.shut_down();
    assert_eq!(sim.phones[0].phase, CallPhase::Ended);
    assert_eq!(sim.phones[2].phase, CallPhase::Ended);
    let completed = sim.records.conference(&conference).expect("record");
    assert_eq!(completed.state, ConferenceState::Completed);
    assert_eq!(sim.callbacks_named("member:completed"), 3);
    assert_eq!(sim.callbacks_named("conference:completed"), 1);
    for member in sim.records.members_of(&conference).iter() {
        let call = sim.records.call(&member.call_id).expect("call record");
        assert_eq!(call.state, CallState::Completed);
    }
}

#[test]
fn a_pin_room_prompts_and_the_right_pin_joins_the_caller_to_the_others() {
    let config = format!("{ROOM}pin = \"42\"\n");
    let mut sim = Sim::new(&config, vec![Phone::new(0, 600.0), Phone::new(1, 1000.0)]);
    // The first caller hears the prompt (the stand-in clip) in its lobby.
    sim.dial(0);
    sim.run(Duration::from_millis(400));
    assert_eq!(sim.fetched.len(), 1, "the prompt: {:?}", sim.fetched);
    let prompt = db_ratio(sim.phones[0].hears(500.0, 0.3), 6000.0);
    assert!(prompt.abs() < 1.0, "the prompt is heard at {prompt:.1} dB");
    assert!(sim.records.room_conference("1000").is_none());

    for digit in ['4', '2', '#'] {
        sim.phones[0].press(digit);
        sim.run(Duration::from_millis(300));
    }
    assert_eq!(
        sim.records
            .room_conference("1000")
            .map(|c| c.active_members),
        Some(1),
        "the right PIN joins the room"
    );
    sim.dial(1);
    for digit in ['4', '2', '#'] {
        sim.phones[1].press(digit);
        sim.run(Duration::from_millis(300));
    }
    sim.run(Duration::from_secs(2));
    let heard = db_ratio(sim.phones[0].hears(1000.0, 1.0), TONE_PEAK);
    assert!(heard.abs() < 1.0, "phone 0 hears phone 1 at {heard:.1} dB");
    let heard = db_ratio(sim.phones[1].hears(600.0, 1.0), TONE_PEAK);
    assert!(heard.abs() < 1.0, "phone 1 hears phone 0 at {heard:.1} dB");
}

#[test]
fn a_full_room_refuses_the_next_caller_with_486_and_the_others_talk_on() {
    let config = "[media]\nmax_members = 16\n[[room]]\nnumber = \"1000\"\nmax_members = 2\n";
    let mut sim = Sim::new(config, three_phones());
    for phone in 0..3 {
        sim.dial(phone);
    }
    assert_eq!(sim.phones[2].phase, CallPhase::Refused(486));
    sim.run(Duration::from_secs(2));
    let heard = db_ratio(sim.phones[0].hears(1000.0, 1.0), TONE_PEAK);
    assert!(heard.abs() < 1.0, "phone 0 hears phone 1 at {heard:.1} dB");
    let stranger = db_ratio(sim.phones[0].hears(1400.0, 1.0), TONE_PEAK);
    assert!(
        stranger < -40.0,
        "the refused phone is heard at {stranger:.1} dB"
    );
}
