//! RTP and RTCP on the wire (RFC 3550): a checked view over a received RTP
//! packet, RTP and RTCP (SR/RR + SDES CNAME, BYE) written into caller buffers,
//! and the per-stream sender and receiver bookkeeping those reports need.
//! Views and writers over buffers the caller owns: nothing here allocates or
//! touches a socket.

use rtp_rs::{RtpPacketBuilder, RtpReader, RtpReaderError};

/// RTP fixed header length (RFC 3550 §5.1).
pub const RTP_HEADER_BYTES: usize = 12;

/// Why a datagram is not an RTP packet we can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtpError {
    /// Shorter than the 12-byte fixed header.
    Truncated { len_bytes: usize },
    /// Version field is not 2.
    BadVersion(u8),
    /// CSRC list or header extension runs past the end of the datagram.
    HeaderTruncated {
        header_bytes: usize,
        len_bytes: usize,
    },
    /// The padding count is zero or larger than the payload.
    BadPadding(u8),
}

impl From<RtpReaderError> for RtpError {
    fn from(error: RtpReaderError) -> Self {
        match error {
            RtpReaderError::BufferTooShort(len_bytes) => RtpError::Truncated { len_bytes },
            RtpReaderError::UnsupportedVersion(version) => RtpError::BadVersion(version),
            RtpReaderError::HeadersTruncated {
                header_len,
                buffer_len,
            } => RtpError::HeaderTruncated {
                header_bytes: header_len,
                len_bytes: buffer_len,
            },
            RtpReaderError::PaddingLengthInvalid(count) => RtpError::BadPadding(count),
        }
    }
}

/// A validated RTP packet borrowed from the receive buffer; no accessor can panic.
pub struct RtpPacket<'a> {
    reader: RtpReader<'a>,
}

impl<'a> RtpPacket<'a> {
    /// Checks lengths and version once.
    pub fn new_checked(datagram: &'a [u8]) -> Result<Self, RtpError> {
        Ok(RtpPacket {
            reader: RtpReader::new(datagram)?,
        })
    }

    pub fn payload_type(&self) -> u8 {
        self.reader.payload_type()
    }

    pub fn marker(&self) -> bool {
        self.reader.mark()
    }

    pub fn sequence(&self) -> u16 {
        self.reader.sequence_number().into()
    }

    pub fn timestamp(&self) -> u32 {
        self.reader.timestamp()
    }

    pub fn ssrc(&self) -> u32 {
        self.reader.ssrc()
    }

    /// The payload, without header extension or padding.
    pub fn payload(&self) -> &'a [u8] {
        self.reader.payload()
    }
}

/// Why a packet could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The caller's buffer is shorter than the packet.
    BufferTooSmall { needed_bytes: usize },
    /// Payload type above 127.
    BadPayloadType(u8),
}

/// The header fields of one outgoing RTP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpHeader {
    pub payload_type: u8,
    pub marker: bool,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

/// Writes an RTP packet into `out`; returns its length.
pub fn write_rtp(header: &RtpHeader, payload: &[u8], out: &mut [u8]) -> Result<usize, BuildError> {
    if header.payload_type > 127 {
        return Err(BuildError::BadPayloadType(header.payload_type));
    }
    let builder = RtpPacketBuilder::new()
        .payload_type(header.payload_type)
        .marked(header.marker)
        .sequence(header.sequence.into())
        .timestamp(header.timestamp)
        .ssrc(header.ssrc)
        .payload(payload);
    let needed_bytes = builder.target_length();
    builder
        .build_into(out)
        .map_err(|_| BuildError::BufferTooSmall { needed_bytes })
}

/// One outgoing RTP stream: SSRC, sequence, timestamp and the counts an SR reports.
#[derive(Clone, Debug)]
pub struct RtpSender {
    pub ssrc: u32,
    sequence: u16,
    timestamp: u32,
    /// The next packet starts a talkspurt (first packet, or first after a pause).
    marker_pending: bool,
    pub packets_sent: u32,
    pub octets_sent: u32,
}

impl RtpSender {
    /// Starts a stream; RFC 3550 §5.1 wants random initial values for all three.
    pub fn new(ssrc: u32, initial_sequence: u16, initial_timestamp: u32) -> Self {
        RtpSender {
            ssrc,
            sequence: initial_sequence,
            timestamp: initial_timestamp,
            marker_pending: true,
            packets_sent: 0,
            octets_sent: 0,
        }
    }

    /// Writes the next packet into `out` and advances the clock by `frame_samples`.
    pub fn write_next(
        &mut self,
        payload_type: u8,
        payload: &[u8],
        frame_samples: u32,
        out: &mut [u8],
    ) -> Result<usize, BuildError> {
        let header = RtpHeader {
            payload_type,
            marker: self.marker_pending,
            sequence: self.sequence,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
        };
        let len_bytes = write_rtp(&header, payload, out)?;
        self.marker_pending = false;
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(frame_samples);
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self.octets_sent.wrapping_add(payload.len() as u32);
        Ok(len_bytes)
    }

    /// A tick passes without a packet (held): time moves on, and the next packet
    /// carries the marker bit so the far end resets its playout (RFC 3551 §4.1).
    pub fn skip(&mut self, frame_samples: u32) {
        self.timestamp = self.timestamp.wrapping_add(frame_samples);
        self.marker_pending = true;
    }

    /// The RTP timestamp the next packet will carry.
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }
}

/// Reception statistics of one incoming stream, for RTCP report blocks (RFC 3550 §6.4.1, A.3).
#[derive(Clone, Debug, Default)]
pub struct ReceptionStats {
    pub ssrc: Option<u32>,
    /// Interarrival jitter of the audio (RFC 3550 A.8); a new SSRC starts it afresh.
    pub interarrival: crate::media::quality::Interarrival,
    base_sequence: u32,
    /// Highest sequence seen, extended with the wrap count in the upper 16 bits.
    highest_sequence: u32,
    pub packets_received: u32,
    expected_prior: u32,
    received_prior: u32,
}

impl ReceptionStats {
    /// Accounts one valid packet; a new SSRC starts the counts afresh.
    pub fn on_packet(&mut self, ssrc: u32, sequence: u16) {
        if self.ssrc != Some(ssrc) {
            *self = ReceptionStats {
                ssrc: Some(ssrc),
                base_sequence: u32::from(sequence),
                highest_sequence: u32::from(sequence),
                ..ReceptionStats::default()
            };
        }
        let highest_low = self.highest_sequence as u16;
        let ahead = sequence.wrapping_sub(highest_low) as i16;
        if ahead > 0 {
            let mut extended = (self.highest_sequence & 0xFFFF_0000) | u32::from(sequence);
            if sequence < highest_low {
                extended = extended.wrapping_add(0x1_0000);
            }
            self.highest_sequence = extended;
        }
        self.packets_received = self.packets_received.wrapping_add(1);
    }

    /// Packets the sequence numbers say were sent since the first one.
    fn expected(&self) -> u32 {
        self.highest_sequence
            .wrapping_sub(self.base_sequence)
            .wrapping_add(1)
    }

    /// Packets expected and not received since the stream started (RFC
    /// 3550 §6.4.1 "cumulative number of packets lost"); negative when
    /// duplicates outnumber losses; 0 before the first packet.
    pub fn cumulative_lost(&self) -> i64 {
        if self.ssrc.is_none() {
            return 0;
        }
        i64::from(self.expected()) - i64::from(self.packets_received)
    }

    /// The report block for the next SR/RR, and resets the interval counts.
    pub fn report_block(&mut self) -> Option<ReportBlock> {
        let ssrc = self.ssrc?;
        let expected = self.expected();
        let cumulative_lost = self.cumulative_lost().clamp(-0x80_0000, 0x7F_FFFF) as i32;
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        let received_interval = self.packets_received.wrapping_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.packets_received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost,
            highest_sequence: self.highest_sequence,
            jitter: self.interarrival.jitter_units(),
        })
    }
}

/// One RTCP reception report block. LSR and DLSR are sent as zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    /// 24-bit signed on the wire.
    pub cumulative_lost: i32,
    pub highest_sequence: u32,
    /// Interarrival jitter in timestamp units (RFC 3550 §6.4.1, A.8).
    pub jitter: u32,
}

/// RTCP packet types (RFC 3550 §12.1).
pub const RTCP_SR: u8 = 200;
pub const RTCP_RR: u8 = 201;
pub const RTCP_SDES: u8 = 202;
pub const RTCP_BYE: u8 = 203;
pub const RTCP_APP: u8 = 204;

/// What goes into a sender report: wall clock and the stream's counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderInfo {
    /// 64-bit NTP timestamp (seconds since 1900 in the upper half).
    pub ntp_timestamp: u64,
    pub rtp_timestamp: u32,
    pub packets_sent: u32,
    pub octets_sent: u32,
}

/// Bytes a report compound can take: SR with one block (52) + SDES with our CNAME (28) + BYE (8).
pub const RTCP_COMPOUND_MAX_BYTES: usize = 52 + 28 + 8;

/// Writes a compound RTCP packet: SR (when `sender` is given, else RR), optional
/// report block, SDES CNAME (RFC 3550 §6.1 requires it in every compound),
/// and BYE when `bye` is set. Returns the length written.
pub fn write_rtcp_report(
    ssrc: u32,
    sender: Option<&SenderInfo>,
    block: Option<&ReportBlock>,
    bye: bool,
    out: &mut [u8],
) -> Result<usize, BuildError> {
    let mut writer = Writer { out, at: 0 };
    let blocks = u8::from(block.is_some());
    let (packet_type, words) = match sender {
        Some(_) => (RTCP_SR, 6 + 6 * usize::from(blocks)),
        None => (RTCP_RR, 1 + 6 * usize::from(blocks)),
    };
    writer.header(blocks, packet_type, words)?;
    writer.u32(ssrc)?;
    if let Some(info) = sender {
        writer.u32((info.ntp_timestamp >> 32) as u32)?;
        writer.u32(info.ntp_timestamp as u32)?;
        writer.u32(info.rtp_timestamp)?;
        writer.u32(info.packets_sent)?;
        writer.u32(info.octets_sent)?;
    }
    if let Some(block) = block {
        writer.u32(block.ssrc)?;
        let lost = (block.cumulative_lost as u32) & 0x00FF_FFFF;
        writer.u32((u32::from(block.fraction_lost) << 24) | lost)?;
        writer.u32(block.highest_sequence)?;
        writer.u32(block.jitter)?;
        writer.u32(0)?; // LSR
        writer.u32(0)?; // DLSR
    }
    // SDES: one chunk, CNAME "sipconf-XXXXXXXX" (16 bytes), END, padded to a word.
    writer.header(1, RTCP_SDES, 6)?;
    writer.u32(ssrc)?;
    writer.bytes(&[1, 16])?; // CNAME item, length
    writer.bytes(b"sipconf-")?;
    for shift in (0..8).rev() {
        let nibble = ((ssrc >> (shift * 4)) & 0xF) as u8;
        writer.bytes(&[b"0123456789abcdef"[usize::from(nibble)]])?;
    }
    writer.bytes(&[0, 0])?; // END item and padding to the 32-bit boundary
    if bye {
        writer.header(1, RTCP_BYE, 1)?;
        writer.u32(ssrc)?;
    }
    Ok(writer.at)
}

struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    /// Common RTCP header: V=2, no padding, count, type, length in words minus one.
    fn header(&mut self, count: u8, packet_type: u8, words_after: usize) -> Result<(), BuildError> {
        let length = words_after as u16;
        self.bytes(&[0x80 | count, packet_type])?;
        self.bytes(&length.to_be_bytes())
    }

    fn u32(&mut self, value: u32) -> Result<(), BuildError> {
        self.bytes(&value.to_be_bytes())
    }

    fn bytes(&mut self, bytes: &[u8]) -> Result<(), BuildError> {
        let end = self.at + bytes.len();
        let target = self
            .out
            .get_mut(self.at..end)
            .ok_or(BuildError::BufferTooSmall { needed_bytes: end })?;
        target.copy_from_slice(bytes);
        self.at = end;
        Ok(())
    }
}

/// Why a datagram on the RTCP port is not a valid compound packet (RFC 3550 A.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtcpError {
    /// Shorter than one RTCP header plus SSRC.
    Truncated {
        len_bytes: usize,
    },
    BadVersion(u8),
    /// The first packet must be SR or RR.
    NotReportFirst(u8),
    /// A packet type outside 200..=204 appeared.
    UnknownType(u8),
    /// Packet lengths do not add up to the datagram length.
    BadLength,
}

/// The little we take from an incoming RTCP compound: who sent it and what kind it opens with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtcpSummary {
    pub first_type: u8,
    pub sender_ssrc: u32,
    pub has_bye: bool,
}

/// Validates an incoming compound packet; its content is otherwise ignored.
pub fn check_rtcp(datagram: &[u8]) -> Result<RtcpSummary, RtcpError> {
    if datagram.len() < 8 {
        return Err(RtcpError::Truncated {
            len_bytes: datagram.len(),
        });
    }
    let first_type = datagram[1];
    if first_type != RTCP_SR && first_type != RTCP_RR {
        return Err(RtcpError::NotReportFirst(first_type));
    }
    let sender_ssrc = u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]);
    let mut has_bye = false;
    let mut rest = datagram;
    while !rest.is_empty() {
        let [first, packet_type, length_high, length_low, ..] = *rest else {
            return Err(RtcpError::BadLength);
        };
        if first >> 6 != 2 {
            return Err(RtcpError::BadVersion(first >> 6));
        }
        if !(RTCP_SR..=RTCP_APP).contains(&packet_type) {
            return Err(RtcpError::UnknownType(packet_type));
        }
        has_bye |= packet_type == RTCP_BYE;
        let packet_bytes = (usize::from(u16::from_be_bytes([length_high, length_low])) + 1) * 4;
        rest = rest.get(packet_bytes..).ok_or(RtcpError::BadLength)?;
    }
    Ok(RtcpSummary {
        first_type,
        sender_ssrc,
        has_bye,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_written_then_read_gives_back_every_field() {
        let header = RtpHeader {
            payload_type: 8,
            marker: true,
            sequence: 65535,
            timestamp: 0xDEAD_BEEF,
            ssrc: 0x1234_5678,
        };
        let mut out = [0u8; 64];
        let len = write_rtp(&header, &[1, 2, 3], &mut out).expect("fits");
        assert_eq!(len, RTP_HEADER_BYTES + 3);
        let packet = RtpPacket::new_checked(&out[..len]).expect("valid");
        assert_eq!(packet.payload_type(), 8);
        assert!(packet.marker());
        assert_eq!(packet.sequence(), 65535);
        assert_eq!(packet.timestamp(), 0xDEAD_BEEF);
        assert_eq!(packet.ssrc(), 0x1234_5678);
        assert_eq!(packet.payload(), &[1, 2, 3]);
    }

    #[test]
    fn rtp_build_into_a_short_buffer_is_an_error() {
        let header = RtpHeader {
            payload_type: 0,
            marker: false,
            sequence: 1,
            timestamp: 1,
            ssrc: 1,
        };
        assert_eq!(
            write_rtp(&header, &[0; 160], &mut [0u8; 100]),
            Err(BuildError::BufferTooSmall { needed_bytes: 172 })
        );
        let bad = RtpHeader {
            payload_type: 200,
            ..header
        };
        assert_eq!(
            write_rtp(&bad, &[], &mut [0u8; 100]),
            Err(BuildError::BadPayloadType(200))
        );
    }

    #[test]
    fn truncated_rtp_is_an_error() {
        assert_eq!(
            RtpPacket::new_checked(&[0x80, 0, 0]).err(),
            Some(RtpError::Truncated { len_bytes: 3 })
        );
        // CC = 15 promises 60 bytes of CSRCs that are not there.
        let mut datagram = [0u8; 20];
        datagram[0] = 0x8F;
        assert!(matches!(
            RtpPacket::new_checked(&datagram).err(),
            Some(RtpError::HeaderTruncated { .. })
        ));
    }

    #[test]
    fn rtp_with_wrong_version_is_an_error() {
        let mut datagram = [0u8; 12];
        datagram[0] = 0x40;
        assert_eq!(
            RtpPacket::new_checked(&datagram).err(),
            Some(RtpError::BadVersion(1))
        );
    }

    #[test]
    fn garbage_never_panics_the_rtp_or_rtcp_parser() {
        let mut state = 0x2545_F491_u32;
        let mut datagram = [0u8; 48];
        for round in 0..20_000 {
            for byte in datagram.iter_mut() {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                *byte = state as u8;
            }
            datagram[0] = (datagram[0] & 0x3F) | 0x80; // mostly version 2, to go deeper
            let len = round % datagram.len();
            if let Ok(packet) = RtpPacket::new_checked(&datagram[..len]) {
                let _ = packet.payload();
            }
            let _ = check_rtcp(&datagram[..len]);
        }
    }

    #[test]
    fn sender_sets_marker_once_and_advances_sequence_and_timestamp() {
        let mut sender = RtpSender::new(7, 65535, 1000);
        let mut out = [0u8; 200];
        let len = sender
            .write_next(0, &[0xFF; 160], 160, &mut out)
            .expect("fits");
        let first = RtpPacket::new_checked(&out[..len]).expect("valid");
        assert!(first.marker());
        assert_eq!((first.sequence(), first.timestamp()), (65535, 1000));
        let len = sender
            .write_next(0, &[0xFF; 160], 160, &mut out)
            .expect("fits");
        let second = RtpPacket::new_checked(&out[..len]).expect("valid");
        assert!(!second.marker());
        assert_eq!((second.sequence(), second.timestamp()), (0, 1160));
        sender.skip(160);
        let len = sender
            .write_next(0, &[0xFF; 160], 160, &mut out)
            .expect("fits");
        let third = RtpPacket::new_checked(&out[..len]).expect("valid");
        assert!(third.marker());
        assert_eq!((third.sequence(), third.timestamp()), (1, 1480));
        assert_eq!((sender.packets_sent, sender.octets_sent), (3, 480));
    }

    #[test]
    fn sender_report_with_block_sdes_and_bye_validates() {
        let info = SenderInfo {
            ntp_timestamp: 0x0102_0304_0506_0708,
            rtp_timestamp: 99,
            packets_sent: 5,
            octets_sent: 800,
        };
        let block = ReportBlock {
            ssrc: 42,
            fraction_lost: 25,
            cumulative_lost: -1,
            highest_sequence: 0x1_0005,
            jitter: 7,
        };
        let mut out = [0u8; RTCP_COMPOUND_MAX_BYTES];
        let len = write_rtcp_report(0xABCD_0123, Some(&info), Some(&block), true, &mut out)
            .expect("fits");
        assert_eq!(len, RTCP_COMPOUND_MAX_BYTES);
        let summary = check_rtcp(&out[..len]).expect("valid");
        assert_eq!(
            summary,
            RtcpSummary {
                first_type: RTCP_SR,
                sender_ssrc: 0xABCD_0123,
                has_bye: true
            }
        );
        assert_eq!(&out[8..12], &[1, 2, 3, 4]);
        assert_eq!(&out[32..36], &[25, 0xFF, 0xFF, 0xFF]);
        assert_eq!(&out[40..44], &[0, 0, 0, 7], "jitter");
        assert_eq!(&out[70..78], b"abcd0123");
    }

    #[test]
    fn receiver_report_without_blocks_is_the_shortest_compound() {
        let mut out = [0u8; RTCP_COMPOUND_MAX_BYTES];
        let len = write_rtcp_report(1, None, None, false, &mut out).expect("fits");
        assert_eq!(len, 8 + 28);
        assert_eq!(out[1], RTCP_RR);
        assert!(!check_rtcp(&out[..len]).expect("valid").has_bye);
        assert!(write_rtcp_report(1, None, None, false, &mut out[..20]).is_err());
    }

    #[test]
    fn rtcp_with_bad_lengths_or_types_is_rejected() {
        let mut out = [0u8; RTCP_COMPOUND_MAX_BYTES];
        let len = write_rtcp_report(1, None, None, false, &mut out).expect("fits");
        assert_eq!(check_rtcp(&out[..len - 4]), Err(RtcpError::BadLength));
        let mut wrong_first = out;
        wrong_first[1] = RTCP_SDES;
        assert_eq!(
            check_rtcp(&wrong_first[..len]),
            Err(RtcpError::NotReportFirst(RTCP_SDES))
        );
        let mut unknown = out;
        unknown[9] = 99;
        assert_eq!(check_rtcp(&unknown[..len]), Err(RtcpError::UnknownType(99)));
    }

    #[test]
    fn reception_stats_count_loss_across_sequence_wrap() {
        let mut stats = ReceptionStats::default();
        for sequence in [65533u16, 65534, 0, 1, 3] {
            stats.on_packet(9, sequence);
        }
        let block = stats.report_block().expect("has a source");
        // 65533..=65535 and 0..=3 is 7 expected, 5 received.
        assert_eq!(block.cumulative_lost, 2);
        assert_eq!(block.highest_sequence, 0x1_0003);
        assert_eq!(block.fraction_lost, (2 * 256 / 7) as u8);
        stats.on_packet(9, 4);
        assert_eq!(stats.report_block().expect("source").fraction_lost, 0);
    }
}
