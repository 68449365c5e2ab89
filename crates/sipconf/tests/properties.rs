//! Property tests (proptest): the jitter buffer under any arrival order,
//! duplication and loss within its window, and the SIP messages we write
//! read back field for field. Case counts are bounded so `cargo test` stays
//! fast; fuzz/ explores the same ground for hours (docs/security.md).

use proptest::prelude::*;
use sipconf::media::jitter::{JitterBuffer, Pop, Push, CAPACITY_FRAMES};
use sipconf::sip::message::{self, write_request, write_response, Body, Message, OutgoingRequest};
use std::net::SocketAddr;

// ==== the jitter buffer ====

const FRAME_SAMPLES: u32 = 160;
const SSRC: u32 = 0x5EED;

/// Frame `n` of the stream: its number in the first four bytes, its low byte in the rest,
/// so a played frame names itself and shows it was not mixed with another.
fn frame(n: u32) -> [u8; FRAME_SAMPLES as usize] {
    let mut payload = [n as u8; FRAME_SAMPLES as usize];
    payload[..4].copy_from_slice(&n.to_be_bytes());
    payload
}

fn frame_number(payload: &[u8]) -> u32 {
    assert_eq!(payload.len(), FRAME_SAMPLES as usize);
    let n = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
    assert!(
        payload[4..].iter().all(|&b| b == n as u8),
        "frame {n} mixed with another"
    );
    n
}

/// One frame's fate on the way: how many ticks late it arrives (`None`: lost),
/// and whether a copy follows some ticks later.
#[derive(Clone, Debug)]
struct Arrival {
    delay_ticks: Option<u32>,
    duplicate_after_ticks: Option<u32>,
    /// Breaks ties between packets arriving in the same tick.
    order: u8,
}

fn arrivals(frames: usize, window_ticks: u32, lossy: bool) -> impl Strategy<Value = Vec<Arrival>> {
    let delay = if lossy {
        prop::option::weighted(0.9, 0..=window_ticks).boxed()
    } else {
        (0..=window_ticks).prop_map(Some).boxed()
    };
    let arrival = (
        delay,
        prop::option::weighted(0.1, 0..=window_ticks),
        any::<u8>(),
    )
        .prop_map(|(delay_ticks, duplicate_after_ticks, order)| Arrival {
            delay_ticks,
            duplicate_after_ticks,
            order,
        });
    prop::collection::vec(arrival, frames)
}

/// What the buffer played and how it accounted for the packets.
struct Playout {
    played: Vec<u32>,
    pushes: u64,
    outcomes: [u64; 3],
}

/// Sends frame `n` at tick `n`; each tick pushes what arrived (in `order`),
/// then pops once, and the buffer is emptied at the end.
fn play(
    delay_frames: usize,
    first_timestamp: u32,
    arrivals: &[Arrival],
) -> (JitterBuffer, Playout) {
    let mut buffer = JitterBuffer::new(delay_frames, FRAME_SAMPLES);
    buffer.reset(FRAME_SAMPLES, 0xFF);
    let mut packets: Vec<(u32, u8, u32)> = Vec::new();
    for (n, arrival) in (0u32..).zip(arrivals) {
        if let Some(delay) = arrival.delay_ticks {
            packets.push((n + delay, arrival.order, n));
            if let Some(after) = arrival.duplicate_after_ticks {
                packets.push((n + delay + after, arrival.order.wrapping_add(1), n));
            }
        }
    }
    packets.sort_unstable();
    let mut playout = Playout {
        played: Vec::new(),
        pushes: 0,
        outcomes: [0; 3],
    };
    let last_tick = arrivals.len() as u32 + 3 * CAPACITY_FRAMES as u32;
    let mut next = packets.iter().peekable();
    for tick in 0..=last_tick {
        while let Some(&&(_, _, n)) = next.peek().filter(|p| p.0 == tick) {
            next.next();
            let timestamp = first_timestamp.wrapping_add(n * FRAME_SAMPLES);
            let outcome = buffer.push(timestamp, SSRC, &frame(n));
            playout.pushes += 1;
            let kind = match outcome {
                Push::Stored | Push::Resynced => 0,
                Push::Duplicate => 1,
                Push::Late => 2,
                Push::Oversize => panic!("a 20 ms frame is never oversize"),
            };
            playout.outcomes[kind] += 1;
        }
        assert!(buffer.buffered_frames() <= CAPACITY_FRAMES);
        if let Pop::Frame(payload) = buffer.pop() {
            playout.played.push(frame_number(payload));
        }
    }
    (buffer, playout)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any order, duplicates and loss within the buffer's window: frames come
    /// out in sequence order, each at most once, intact, and every packet is
    /// accounted for as stored, duplicate or late.
    #[test]
    fn jitter_buffer_plays_in_order_and_never_twice(
        delay_frames in 1..=6usize,
        first_timestamp in any::<u32>(),
        arrivals in (0..CAPACITY_FRAMES as u32 - 1)
            .prop_flat_map(|window| arrivals(120, window, true)),
    ) {
        let (buffer, playout) = play(delay_frames, first_timestamp, &arrivals);
        prop_assert!(
            playout.played.windows(2).all(|w| w[0] < w[1]),
            "out of order or twice: {:?}", playout.played
        );
        let stats = buffer.stats;
        prop_assert_eq!(stats.stored, playout.outcomes[0]);
        prop_assert_eq!(stats.duplicates, playout.outcomes[1]);
        prop_assert_eq!(stats.late, playout.outcomes[2]);
        prop_assert_eq!(stats.stored + stats.duplicates + stats.late, playout.pushes);
        prop_assert!(playout.played.len() as u64 <= stats.stored);
    }

    /// Nothing lost and no packet later than the playout delay allows: every
    /// frame is played, except the few a buffer that stayed too full dropped
    /// on purpose (counted in `shrunk`); none is concealed, and only the
    /// second copies of duplicated packets are refused (as duplicate or late).
    #[test]
    fn jitter_buffer_plays_every_frame_that_comes_in_time(
        (delay_frames, arrivals) in (1..=6usize)
            .prop_flat_map(|delay| (Just(delay), arrivals(80, delay as u32 - 1, false))),
        first_timestamp in any::<u32>(),
    ) {
        let (buffer, playout) = play(delay_frames, first_timestamp, &arrivals);
        let stats = buffer.stats;
        let copies = arrivals.iter().filter(|a| a.duplicate_after_ticks.is_some()).count();
        prop_assert_eq!(stats.late + stats.duplicates, copies as u64);
        prop_assert_eq!(stats.lost, 0);
        prop_assert_eq!(playout.played.len() as u64 + stats.shrunk, 80);
        prop_assert!(playout.played.windows(2).all(|w| w[0] < w[1]));
    }
}

// ==== SIP messages: write, parse, compare ====

fn source() -> SocketAddr {
    "192.0.2.7:5062".parse().expect("address")
}

/// RFC 3261 `token`. Without `%`: ezk-sip-types reads `%4b` in a Via or
/// To/From parameter as an escape, so a branch or tag holding one comes back
/// decoded. Harmless for us: responses echo the Via as written, and every
/// message of a transaction or dialog is decoded the same way.
fn token(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[A-Za-z0-9.!*_+`'~-]{{1,{max}}}")).expect("regex")
}

/// A Call-ID (`word`, RFC 3261 25.1): not a parameter, so `%` stays as written.
fn call_id_word(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[A-Za-z0-9.!%*_+`'~-]{{1,{max}}}")).expect("regex")
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])),
        "[a-z][a-z0-9]{0,10}(\\.[a-z][a-z0-9]{0,6}){0,2}",
        any::<[u16; 8]>().prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s))),
    ]
}

fn sip_uri() -> impl Strategy<Value = String> {
    ("[a-z0-9]{1,12}", host(), prop::option::of(1024..65535u16)).prop_map(|(user, host, port)| {
        match port {
            Some(port) => format!("sip:{user}@{host}:{port}"),
            None => format!("sip:{user}@{host}"),
        }
    })
}

/// `Name <uri>;tag=t`, `<uri>` or a bare URI.
fn name_addr(tag: Option<String>) -> impl Strategy<Value = (String, String)> {
    (
        sip_uri(),
        prop::option::of("[A-Za-z][A-Za-z0-9 ]{0,15}"),
        any::<bool>(),
    )
        .prop_map(move |(uri, display, bracket)| {
            let tag = tag
                .as_ref()
                .map(|t| format!(";tag={t}"))
                .unwrap_or_default();
            let text = match display {
                Some(display) => format!("\"{display}\" <{uri}>{tag}"),
                None if bracket || tag.is_empty() => format!("<{uri}>{tag}"),
                None => format!("{uri}{tag}"),
            };
            (uri, text)
        })
}

#[derive(Debug, Clone)]
struct Fields {
    method: &'static str,
    user: String,
    via_host: String,
    via_port: u16,
    branch: String,
    call_id: String,
    cseq: u32,
    from: (String, String),
    from_tag: String,
    to: (String, String),
    to_tag: Option<String>,
    body: String,
}

fn fields() -> impl Strategy<Value = Fields> {
    let tags = (token(16), prop::option::of(token(16)));
    (
        prop::sample::select(vec![
            "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "INFO",
        ]),
        "[a-z0-9]{0,12}",
        host(),
        1024..65535u16,
        token(24),
        (call_id_word(30), prop::option::of(host())),
        0..=i32::MAX as u32,
        tags,
        "(v=0\r\n[a-z]=[ -~]{0,40}\r\n){0,3}",
    )
        .prop_flat_map(
            |(
                method,
                user,
                via_host,
                via_port,
                branch,
                (id, id_host),
                cseq,
                (from_tag, to_tag),
                body,
            )| {
                let call_id = match id_host {
                    Some(host) => format!("{id}@{host}"),
                    None => id,
                };
                (
                    Just((
                        method, user, via_host, via_port, branch, call_id, cseq, body,
                    )),
                    name_addr(Some(from_tag.clone())),
                    Just(from_tag),
                    name_addr(to_tag.clone()),
                    Just(to_tag),
                )
            },
        )
        .prop_map(
            |(
                (method, user, via_host, via_port, branch, call_id, cseq, body),
                from,
                from_tag,
                to,
                to_tag,
            )| {
                Fields {
                    method,
                    user,
                    via_host,
                    via_port,
                    branch: format!("{}{branch}", message::BRANCH_MAGIC_COOKIE),
                    call_id,
                    cseq,
                    from,
                    from_tag,
                    to,
                    to_tag,
                    body,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A valid request written by us parses back to the same fields, and our
    /// response to it parses back as the response to that transaction.
    #[test]
    fn sip_request_and_its_response_round_trip(fields in fields()) {
        let request_uri = if fields.user.is_empty() {
            "sip:192.0.2.1".to_owned()
        } else {
            format!("sip:{}@192.0.2.1", fields.user)
        };
        let via = format!(
            "SIP/2.0/UDP {}:{};branch={};rport",
            fields.via_host, fields.via_port, fields.branch
        );
        let written = write_request(&OutgoingRequest {
            method: fields.method,
            request_uri: &request_uri,
            via: &via,
            routes: &[],
            from: &fields.from.1,
            to: &fields.to.1,
            call_id: &fields.call_id,
            cseq: fields.cseq,
            extra: &[("Contact", "<sip:alice@192.0.2.7:5062>")],
            body: (!fields.body.is_empty()).then_some(Body {
                content_type: "application/sdp",
                text: &fields.body,
            }),
            user_agent: "sipconf-test",
        });
        let Ok(Message::Request(request)) = message::parse(&written, source()) else {
            panic!("{:?}", String::from_utf8_lossy(&written));
        };
        prop_assert_eq!(request.method.to_string(), fields.method);
        prop_assert_eq!(&request.uri_user, &fields.user);
        prop_assert_eq!(&request.branch, &fields.branch);
        prop_assert_eq!(request.sent_by.clone(), format!("{}:{}", fields.via_host, fields.via_port));
        prop_assert_eq!(&request.call_id, &fields.call_id);
        prop_assert_eq!(request.cseq, fields.cseq);
        prop_assert_eq!(&request.from_uri, &fields.from.0);
        prop_assert_eq!(request.from_tag.as_deref(), Some(fields.from_tag.as_str()));
        prop_assert_eq!(&request.to_uri, &fields.to.0);
        prop_assert_eq!(&request.to_tag, &fields.to_tag);
        prop_assert_eq!(&request.body[..], fields.body.as_bytes());
        let contact = request.contact_uri();
        prop_assert_eq!(contact.as_deref(), Some("sip:alice@192.0.2.7:5062"));

        let ok = write_response(&request.echo, 200, "OK", Some("ours"), &[], None, "sipconf-test");
        let Ok(Message::Response(response)) = message::parse(&ok, source()) else {
            panic!("{:?}", String::from_utf8_lossy(&ok));
        };
        prop_assert_eq!(response.code, 200);
        prop_assert_eq!(&response.branch, &fields.branch);
        prop_assert_eq!(&response.call_id, &fields.call_id);
        prop_assert_eq!(response.cseq, fields.cseq);
        prop_assert_eq!(response.cseq_method.to_string(), fields.method);
        let expected_tag = fields.to_tag.clone().unwrap_or_else(|| "ours".to_owned());
        prop_assert_eq!(response.to_tag.as_deref(), Some(expected_tag.as_str()));
    }
}
