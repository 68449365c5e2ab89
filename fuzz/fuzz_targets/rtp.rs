//! An RTP datagram: the checked view reads exactly the header fields on the
//! wire, its payload lies inside the datagram, and the packet written again
//! from what was read reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipconf::media::rtp::{write_rtp, RtpHeader, RtpPacket, RTP_HEADER_BYTES};

fuzz_target!(|datagram: &[u8]| {
    let Ok(packet) = RtpPacket::new_checked(datagram) else {
        return;
    };
    assert!(datagram.len() >= RTP_HEADER_BYTES);
    assert_eq!(datagram[0] >> 6, 2);
    let header = RtpHeader {
        payload_type: datagram[1] & 0x7F,
        marker: datagram[1] & 0x80 != 0,
        sequence: u16::from_be_bytes([datagram[2], datagram[3]]),
        timestamp: u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]),
        ssrc: u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]),
    };
    assert_eq!(packet.payload_type(), header.payload_type);
    assert_eq!(packet.marker(), header.marker);
    assert_eq!(packet.sequence(), header.sequence);
    assert_eq!(packet.timestamp(), header.timestamp);
    assert_eq!(packet.ssrc(), header.ssrc);

    let payload = packet.payload();
    let start = payload.as_ptr() as usize - datagram.as_ptr() as usize;
    assert!(start >= RTP_HEADER_BYTES && start + payload.len() <= datagram.len());

    let mut rewritten = vec![0u8; RTP_HEADER_BYTES + payload.len()];
    let len = write_rtp(&header, payload, &mut rewritten).expect("the buffer fits");
    assert_eq!(len, rewritten.len());
    let again = RtpPacket::new_checked(&rewritten).expect("what we write reads back");
    assert_eq!(again.payload_type(), header.payload_type);
    assert_eq!(again.marker(), header.marker);
    assert_eq!(again.sequence(), header.sequence);
    assert_eq!(again.timestamp(), header.timestamp);
    assert_eq!(again.ssrc(), header.ssrc);
    assert_eq!(again.payload(), payload);
    // One byte short of the packet is refused, not written in part.
    if len > 0 {
        assert!(write_rtp(&header, payload, &mut rewritten[..len - 1]).is_err());
    }
});
