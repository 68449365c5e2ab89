//! A stream of RFC 4733 telephone-event packets (and silent gaps) into one
//! member's receiver: presses come out as Start then End of the same digit,
//! never two Starts in a row, never an End before its Start; and an event
//! block written from what was read reads back the same.
//!
//! Input: records of 10 bytes: 2 bytes of gap (receiver clock), 1 byte SSRC
//! choice, 3 bytes RTP timestamp, 4 bytes payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipconf::media::dtmf::rfc4733::{Rfc4733Receiver, TelephoneEvent, EVENT_PAYLOAD_BYTES};
use sipconf::media::dtmf::ToneEvent;

fuzz_target!(|data: &[u8]| {
    let mut receiver = Rfc4733Receiver::new();
    let mut now: u64 = 0;
    // The digit and start of the press in progress, as the events tell it.
    let mut open: Option<(char, u64)> = None;
    let mut check = |receiver: &mut Rfc4733Receiver, now: u64| {
        while let Some(event) = receiver.poll_event() {
            match event {
                ToneEvent::Start { digit, at } => {
                    assert_eq!(open, None, "two Starts in a row");
                    assert!(at <= now);
                    open = Some((digit, at));
                }
                ToneEvent::End { digit, start, end } => {
                    assert_eq!(open.take(), Some((digit, start)), "End without its Start");
                    assert!(end >= start);
                }
            }
        }
        assert_eq!(receiver.active(), open.is_some());
    };
    for record in data.chunks_exact(10) {
        now += u64::from(u16::from_be_bytes([record[0], record[1]]));
        let ssrc = u32::from(record[2] & 3);
        let timestamp = u32::from_be_bytes([0, record[3], record[4], record[5]]);
        let payload = &record[6..10];

        let event = TelephoneEvent::parse(payload).expect("four bytes are a block");
        let mut written = [0u8; EVENT_PAYLOAD_BYTES];
        event.write(&mut written);
        assert_eq!(TelephoneEvent::parse(&written), Ok(event));
        // The reserved bit is the only thing not carried over.
        assert_eq!(written[0], payload[0]);
        assert_eq!(written[1], payload[1] & 0xBF);
        assert_eq!(written[2..], payload[2..]);

        receiver
            .on_packet(now, ssrc, timestamp, payload)
            .expect("a whole block");
        check(&mut receiver, now);
        receiver.poll_timeout(now);
        check(&mut receiver, now);
    }
    // Short payloads are refused with their length.
    let rest = data.chunks_exact(10).remainder();
    if rest.len() < EVENT_PAYLOAD_BYTES {
        assert!(receiver.on_packet(now, 0, 0, rest).is_err());
    }
    // Long enough without a packet, every press ends.
    receiver.poll_timeout(now + 1_000_000);
    check(&mut receiver, now + 1_000_000);
    assert!(!receiver.active());
});
