//! An RTCP compound packet: `check_rtcp` accepts exactly the datagrams whose
//! packets are all RTCP (version 2, types 200..=204) with lengths that add up,
//! opening with SR or RR; and every report we write from the fuzzer's numbers
//! passes it with what we put in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipconf::media::rtp::{
    check_rtcp, write_rtcp_report, ReportBlock, SenderInfo, RTCP_BYE, RTCP_COMPOUND_MAX_BYTES,
    RTCP_RR, RTCP_SR,
};

/// The compound rules of RFC 3550 A.2, written out independently of the
/// library: `Some(has_bye)` for a valid compound.
fn valid_compound(datagram: &[u8]) -> Option<bool> {
    if datagram.len() < 8 || !matches!(datagram[1], RTCP_SR | RTCP_RR) {
        return None;
    }
    let (mut at, mut has_bye) = (0, false);
    while at < datagram.len() {
        let header = datagram.get(at..at + 4)?;
        if header[0] >> 6 != 2 || !(200..=204).contains(&header[1]) {
            return None;
        }
        has_bye |= header[1] == RTCP_BYE;
        at += (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1) * 4;
    }
    (at == datagram.len()).then_some(has_bye)
}

fn word(data: &[u8], index: usize) -> u32 {
    let mut bytes = [0u8; 4];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = data.get(index * 4 + i).copied().unwrap_or(0);
    }
    u32::from_be_bytes(bytes)
}

fuzz_target!(|datagram: &[u8]| {
    match check_rtcp(datagram) {
        Ok(summary) => {
            assert_eq!(
                valid_compound(datagram),
                Some(summary.has_bye),
                "{datagram:?}"
            );
            assert_eq!(summary.first_type, datagram[1]);
            assert_eq!(summary.sender_ssrc, word(datagram, 1));
        }
        Err(_) => assert_eq!(valid_compound(datagram), None, "refused {datagram:?}"),
    }

    // A report written from the fuzzer's numbers.
    let flags = datagram.first().copied().unwrap_or(0);
    let ssrc = word(datagram, 1);
    let sender = (flags & 1 != 0).then(|| SenderInfo {
        ntp_timestamp: u64::from(word(datagram, 2)) << 32 | u64::from(word(datagram, 3)),
        rtp_timestamp: word(datagram, 4),
        packets_sent: word(datagram, 5),
        octets_sent: word(datagram, 6),
    });
    let block = (flags & 2 != 0).then(|| ReportBlock {
        ssrc: word(datagram, 7),
        fraction_lost: word(datagram, 8) as u8,
        cumulative_lost: word(datagram, 9) as i32,
        highest_sequence: word(datagram, 10),
        jitter: word(datagram, 11),
    });
    let bye = flags & 4 != 0;
    let mut out = [0u8; RTCP_COMPOUND_MAX_BYTES];
    let len = write_rtcp_report(ssrc, sender.as_ref(), block.as_ref(), bye, &mut out)
        .expect("the largest compound fits");
    let summary = check_rtcp(&out[..len]).expect("what we write is a valid compound");
    assert_eq!(summary.sender_ssrc, ssrc);
    assert_eq!(
        summary.first_type,
        if sender.is_some() { RTCP_SR } else { RTCP_RR }
    );
    assert_eq!(summary.has_bye, bye);
});
