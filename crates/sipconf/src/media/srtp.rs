//! SRTP and SRTCP (RFC 3711) with the two suites desk phones offer over SDES
//! (RFC 4568 6.2): `AES_CM_128_HMAC_SHA1_80` and `AES_CM_128_HMAC_SHA1_32`.
//! AES in counter mode for confidentiality, HMAC-SHA1 for integrity, the
//! RFC's key derivation, its rollover counter and a 64-packet replay window.
//!
//! A [`Context`] holds one direction's session keys and sequence state: one
//! context protects what a member is sent, another unprotects what it sends.
//! Packets are transformed in place in the caller's buffer; after
//! `Context::new` nothing allocates. It never touches a socket, the clock, or
//! the SDP that carried the keys (the signalling plane parses `a=crypto`).
//!
//! The primitives are RustCrypto's audited `aes` (with AES-NI and ARMv8
//! crypto where the CPU has them), `hmac` and `sha1`; the counter mode, the
//! key derivation and the packet handling are written here against RFC 3711
//! and checked against its Appendix B vectors and packets made by libsrtp.

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes128;
use hmac::{Hmac, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

/// Master key and master salt lengths of both suites.
pub const MASTER_KEY_BYTES: usize = 16;
pub const MASTER_SALT_BYTES: usize = 14;
/// Bytes of the longest authentication tag (the 80-bit one).
pub const MAX_TAG_BYTES: usize = 10;
/// What protecting adds to an SRTCP packet: the E flag and index, and the tag.
pub const SRTCP_OVERHEAD_BYTES: usize = 4 + SRTCP_TAG_BYTES;
/// SRTCP's tag is 80 bits in both suites (RFC 4568 6.2.1, 6.2.2).
const SRTCP_TAG_BYTES: usize = 10;
const RTP_HEADER_BYTES: usize = 12;
const RTCP_HEADER_BYTES: usize = 8;
/// Keystream generated per AES call: 16 blocks, more than a 20 ms G.711 payload.
const KEYSTREAM_BLOCKS: usize = 16;
/// The replay window (RFC 3711 3.3.2 asks for at least 64).
const REPLAY_WINDOW: u64 = 64;

/// The crypto suites of RFC 4568 that this bridge speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Suite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
}

impl Suite {
    /// The suite's name in `a=crypto` (RFC 4568 6.2).
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    /// The suite an `a=crypto` name names, in any case.
    pub fn parse(name: &str) -> Option<Suite> {
        [Suite::AesCm128HmacSha1_80, Suite::AesCm128HmacSha1_32]
            .into_iter()
            .find(|suite| suite.name().eq_ignore_ascii_case(name))
    }

    /// Bytes of the tag on an SRTP packet.
    pub fn rtp_tag_bytes(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 => 10,
            Suite::AesCm128HmacSha1_32 => 4,
        }
    }
}

/// The keying material of one direction: what `a=crypto`'s `inline:` carries.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MasterKey {
    pub key: [u8; MASTER_KEY_BYTES],
    pub salt: [u8; MASTER_SALT_BYTES],
}

impl std::fmt::Debug for MasterKey {
    // Keys never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").finish_non_exhaustive()
    }
}

impl MasterKey {
    /// Key then salt, as `inline:` concatenates them before base64.
    pub fn from_concatenated(bytes: &[u8]) -> Option<MasterKey> {
        if bytes.len() != MASTER_KEY_BYTES + MASTER_SALT_BYTES {
            return None;
        }
        let mut key = [0u8; MASTER_KEY_BYTES];
        let mut salt = [0u8; MASTER_SALT_BYTES];
        key.copy_from_slice(&bytes[..MASTER_KEY_BYTES]);
        salt.copy_from_slice(&bytes[MASTER_KEY_BYTES..]);
        Some(MasterKey { key, salt })
    }

    /// Key then salt.
    pub fn concatenated(&self) -> [u8; MASTER_KEY_BYTES + MASTER_SALT_BYTES] {
        let mut out = [0u8; MASTER_KEY_BYTES + MASTER_SALT_BYTES];
        out[..MASTER_KEY_BYTES].copy_from_slice(&self.key);
        out[MASTER_KEY_BYTES..].copy_from_slice(&self.salt);
        out
    }
}

/// One member's SRTP, both ways: `inbound` unprotects what it sends us
/// (its key from the SDP), `outbound` protects what we send it (ours).
/// Made on the signalling side when the member joins, so the media thread
/// derives no keys.
#[derive(Clone, Debug)]
pub struct MemberSrtp {
    pub inbound: Context,
    pub outbound: Context,
}

impl MemberSrtp {
    pub fn new(suite: Suite, remote: &MasterKey, local: &MasterKey) -> MemberSrtp {
        MemberSrtp {
            inbound: Context::new(suite, remote),
            outbound: Context::new(suite, local),
        }
    }
}

/// Why a packet was not protected or not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    #[error("packet too short for its header and tag")]
    TooShort,
    #[error("no room in the buffer for the tag")]
    NoRoom,
    #[error("authentication failed")]
    AuthenticationFailed,
    #[error("packet replayed")]
    Replayed,
    #[error("packet older than the replay window")]
    TooOld,
}

/// One direction's session keys for RTP or RTCP (RFC 3711 4.3).
#[derive(Clone)]
struct SessionKeys {
    cipher: Aes128,
    salt: [u8; MASTER_SALT_BYTES],
    /// HMAC keyed once; each packet's MAC starts from a copy of it.
    auth: HmacSha1,
}

/// The labels of RFC 3711 4.3.1 / 4.3.2.
const LABEL_RTP_ENCRYPTION: u8 = 0x00;
const LABEL_RTP_AUTH: u8 = 0x01;
const LABEL_RTP_SALT: u8 = 0x02;
const LABEL_RTCP_ENCRYPTION: u8 = 0x03;
const LABEL_RTCP_AUTH: u8 = 0x04;
const LABEL_RTCP_SALT: u8 = 0x05;

impl SessionKeys {
    fn derive(master: &MasterKey, labels: [u8; 3]) -> SessionKeys {
        let master_cipher = Aes128::new(GenericArray::from_slice(&master.key));
        let mut key = [0u8; 16];
        let mut auth = [0u8; 20];
        let mut salt = [0u8; MASTER_SALT_BYTES];
        derive_key(&master_cipher, &master.salt, labels[0], &mut key);
        derive_key(&master_cipher, &master.salt, labels[1], &mut auth);
        derive_key(&master_cipher, &master.salt, labels[2], &mut salt);
        SessionKeys {
            cipher: Aes128::new(GenericArray::from_slice(&key)),
            salt,
            auth: <HmacSha1 as Mac>::new_from_slice(&auth).expect("HMAC takes a key of any length"),
        }
    }

    /// XORs the keystream for `ssrc` and packet index `index` into `data`.
    fn crypt(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..MASTER_SALT_BYTES].copy_from_slice(&self.salt);
        for (byte, ssrc_byte) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *byte ^= ssrc_byte;
        }
        // The 48-bit index times 2^16: bytes 8..14.
        for (byte, index_byte) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *byte ^= index_byte;
        }
        aes_cm(&self.cipher, iv, data);
    }

    /// The HMAC-SHA1 of `parts`, in order.
    fn mac(&self, parts: &[&[u8]]) -> [u8; 20] {
        let mut mac = self.auth.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

/// AES in counter mode (RFC 3711 4.1.1): block `n` of the keystream is the
/// encryption of `iv + n`, XORed into `data`.
fn aes_cm(cipher: &Aes128, iv: [u8; 16], data: &mut [u8]) {
    let start = u128::from_be_bytes(iv);
    let mut counter: u128 = 0;
    for chunk in data.chunks_mut(16 * KEYSTREAM_BLOCKS) {
        let blocks_needed = chunk.len().div_ceil(16);
        let mut blocks = [GenericArray::from([0u8; 16]); KEYSTREAM_BLOCKS];
        for block in blocks.iter_mut().take(blocks_needed) {
            *block = GenericArray::from(start.wrapping_add(counter).to_be_bytes());
            counter += 1;
        }
        cipher.encrypt_blocks(&mut blocks[..blocks_needed]);
        for (byte, key) in chunk.iter_mut().zip(blocks.iter().flatten()) {
            *byte ^= key;
        }
    }
}

/// The key derivation of RFC 3711 4.3.1 with a key derivation rate of 0:
/// `label` XORed into the master salt at byte 7, the AES-CM keystream of
/// the master key from there.
fn derive_key(master: &Aes128, master_salt: &[u8; MASTER_SALT_BYTES], label: u8, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..MASTER_SALT_BYTES].copy_from_slice(master_salt);
    iv[7] ^= label;
    out.fill(0);
    aes_cm(master, iv, out);
}

/// The highest packet index seen and which of the 64 before it were seen.
#[derive(Clone, Copy, Debug, Default)]
struct ReplayWindow {
    highest: u64,
    /// Bit `n` set: index `highest - n` was accepted.
    seen: u64,
}

impl ReplayWindow {
    fn check(&self, index: u64) -> Result<(), SrtpError> {
        if index > self.highest {
            return Ok(());
        }
        let behind = self.highest - index;
        if behind >= REPLAY_WINDOW {
            return Err(SrtpError::TooOld);
        }
        if self.seen & (1 << behind) != 0 {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    fn accept(&mut self, index: u64) {
        if index > self.highest {
            let ahead = index - self.highest;
            self.seen = if ahead >= REPLAY_WINDOW {
                0
            } else {
                self.seen << ahead
            };
            self.seen |= 1;
            self.highest = index;
        } else {
            self.seen |= 1 << (self.highest - index);
        }
    }
}

/// What a receiver knows of the stream it unprotects (RFC 3711 3.3.1).
#[derive(Clone, Copy, Debug)]
struct Received {
    ssrc: u32,
    roc: u32,
    /// The highest sequence number accepted (`s_l`).
    sequence: u16,
    window: ReplayWindow,
}

/// One direction of an SRTP session: protects what is sent, or unprotects
/// what arrives, for RTP and its RTCP.
#[derive(Clone)]
pub struct Context {
    suite: Suite,
    rtp: SessionKeys,
    rtcp: SessionKeys,
    /// Sender: the rollover counter and the last sequence number sent.
    sent: Option<(u32, u16)>,
    /// Receiver: the stream's state once a packet was accepted.
    received: Option<Received>,
    /// Sender: the SRTCP index of the last report sent.
    rtcp_sent: u32,
    /// Receiver: SRTCP indexes seen.
    rtcp_received: Option<ReplayWindow>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Derives the session keys; everything later works in place.
    pub fn new(suite: Suite, master: &MasterKey) -> Context {
        Context {
            suite,
            rtp: SessionKeys::derive(
                master,
                [LABEL_RTP_ENCRYPTION, LABEL_RTP_AUTH, LABEL_RTP_SALT],
            ),
            rtcp: SessionKeys::derive(
                master,
                [LABEL_RTCP_ENCRYPTION, LABEL_RTCP_AUTH, LABEL_RTCP_SALT],
            ),
            sent: None,
            received: None,
            rtcp_sent: 0,
            rtcp_received: None,
        }
    }

    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Encrypts the RTP packet in `buffer[..len]` and appends its tag;
    /// returns the SRTP packet's length.
    pub fn protect_rtp(&mut self, buffer: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let tag_bytes = self.suite.rtp_tag_bytes();
        let header = rtp_header_len(buffer.get(..len).ok_or(SrtpError::TooShort)?)?;
        if buffer.len() < len + tag_bytes {
            return Err(SrtpError::NoRoom);
        }
        let sequence = u16::from_be_bytes([buffer[2], buffer[3]]);
        let ssrc = u32::from_be_bytes([buffer[8], buffer[9], buffer[10], buffer[11]]);
        let roc = match self.sent {
            // A sequence number below the last one by more than half the
            // space is the next cycle (RFC 3711 3.3.1).
            Some((roc, last)) if sequence < last && last - sequence > 0x8000 => roc.wrapping_add(1),
            Some((roc, _)) => roc,
            None => 0,
        };
        self.sent = Some((roc, sequence));
        let index = (u64::from(roc) << 16) | u64::from(sequence);
        self.rtp.crypt(ssrc, index, &mut buffer[header..len]);
        let tag = self.rtp.mac(&[&buffer[..len], &roc.to_be_bytes()]);
        buffer[len..len + tag_bytes].copy_from_slice(&tag[..tag_bytes]);
        Ok(len + tag_bytes)
    }

    /// Checks the SRTP packet in `buffer` (its tag, that it is no replay)
    /// and decrypts it in place; returns the RTP packet's length.
    pub fn unprotect_rtp(&mut self, buffer: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_bytes = self.suite.rtp_tag_bytes();
        let len = buffer
            .len()
            .checked_sub(tag_bytes)
            .ok_or(SrtpError::TooShort)?;
        let header = rtp_header_len(&buffer[..len])?;
        let sequence = u16::from_be_bytes([buffer[2], buffer[3]]);
        let ssrc = u32::from_be_bytes([buffer[8], buffer[9], buffer[10], buffer[11]]);
        // A new SSRC is a new stream: its rollover counter starts afresh.
        let state = self.received.filter(|r| r.ssrc == ssrc);
        let roc = match state {
            None => 0,
            Some(r) => estimate_roc(r.roc, r.sequence, sequence),
        };
        let index = (u64::from(roc) << 16) | u64::from(sequence);
        if let Some(r) = &state {
            r.window.check(index)?;
        }
        let mut mac = self.rtp.auth.clone();
        mac.update(&buffer[..len]);
        mac.update(&roc.to_be_bytes());
        mac.verify_truncated_left(&buffer[len..])
            .map_err(|_| SrtpError::AuthenticationFailed)?;
        self.rtp.crypt(ssrc, index, &mut buffer[header..len]);
        let mut received = state.unwrap_or(Received {
            ssrc,
            roc,
            sequence,
            window: ReplayWindow {
                highest: index,
                seen: 0,
            },
        });
        if index >= received.window.highest {
            received.roc = roc;
            received.sequence = sequence;
        }
        received.window.accept(index);
        self.received = Some(received);
        Ok(len)
    }

    /// Encrypts the RTCP packet in `buffer[..len]` and appends the E flag,
    /// its SRTCP index and the tag; returns the SRTCP packet's length.
    pub fn protect_rtcp(&mut self, buffer: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        if len < RTCP_HEADER_BYTES || buffer.len() < len {
            return Err(SrtpError::TooShort);
        }
        if buffer.len() < len + SRTCP_OVERHEAD_BYTES {
            return Err(SrtpError::NoRoom);
        }
        // The index is 31 bits; it counts reports, one every few seconds.
        self.rtcp_sent = (self.rtcp_sent + 1) & 0x7FFF_FFFF;
        let index = self.rtcp_sent;
        let ssrc = u32::from_be_bytes([buffer[4], buffer[5], buffer[6], buffer[7]]);
        self.rtcp
            .crypt(ssrc, u64::from(index), &mut buffer[RTCP_HEADER_BYTES..len]);
        buffer[len..len + 4].copy_from_slice(&(0x8000_0000 | index).to_be_bytes());
        let tag = self.rtcp.mac(&[&buffer[..len + 4]]);
        buffer[len + 4..len + SRTCP_OVERHEAD_BYTES].copy_from_slice(&tag[..SRTCP_TAG_BYTES]);
        Ok(len + SRTCP_OVERHEAD_BYTES)
    }

    /// Checks and decrypts the SRTCP packet in `buffer`; returns the RTCP
    /// packet's length.
    pub fn unprotect_rtcp(&mut self, buffer: &mut [u8]) -> Result<usize, SrtpError> {
        let len = buffer
            .len()
            .checked_sub(SRTCP_OVERHEAD_BYTES)
            .filter(|&len| len >= RTCP_HEADER_BYTES)
            .ok_or(SrtpError::TooShort)?;
        let authenticated = len + 4;
        let mut mac = self.rtcp.auth.clone();
        mac.update(&buffer[..authenticated]);
        mac.verify_truncated_left(&buffer[authenticated..])
            .map_err(|_| SrtpError::AuthenticationFailed)?;
        let word = u32::from_be_bytes([
            buffer[len],
            buffer[len + 1],
            buffer[len + 2],
            buffer[len + 3],
        ]);
        let (encrypted, index) = (word & 0x8000_0000 != 0, u64::from(word & 0x7FFF_FFFF));
        if let Some(window) = &self.rtcp_received {
            window.check(index)?;
        }
        if encrypted {
            let ssrc = u32::from_be_bytes([buffer[4], buffer[5], buffer[6], buffer[7]]);
            self.rtcp
                .crypt(ssrc, index, &mut buffer[RTCP_HEADER_BYTES..len]);
        }
        let window = self.rtcp_received.get_or_insert(ReplayWindow {
            highest: index,
            seen: 0,
        });
        window.accept(index);
        Ok(len)
    }
}

/// The rollover counter of a packet with sequence number `sequence`, given
/// the highest accepted `highest` under `roc` (RFC 3711 Appendix A).
fn estimate_roc(roc: u32, highest: u16, sequence: u16) -> u32 {
    if highest < 0x8000 {
        if sequence > highest && sequence - highest > 0x8000 {
            roc.wrapping_sub(1)
        } else {
            roc
        }
    } else if sequence < highest && highest - sequence > 0x8000 {
        roc.wrapping_add(1)
    } else {
        roc
    }
}

/// The length of an RTP header with its CSRCs and extension, which SRTP
/// leaves in the clear.
fn rtp_header_len(packet: &[u8]) -> Result<usize, SrtpError> {
    if packet.len() < RTP_HEADER_BYTES || packet[0] >> 6 != 2 {
        return Err(SrtpError::TooShort);
    }
    let csrcs = usize::from(packet[0] & 0x0F);
    let mut len = RTP_HEADER_BYTES + 4 * csrcs;
    if packet[0] & 0x10 != 0 {
        let words = packet.get(len + 2..len + 4).ok_or(SrtpError::TooShort)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    if len > packet.len() {
        return Err(SrtpError::TooShort);
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// RFC 3711 Appendix B.3's master key and salt, also used for the libsrtp packets.
    fn rfc_master() -> MasterKey {
        MasterKey::from_concatenated(&hex(
            "E1F97A0D3E018BE0D64FA32C06DE4139 0EC675AD498AFEEBB6960B3AABE6",
        ))
        .expect("30 bytes")
    }

    #[test]
    fn the_counter_mode_keystream_is_rfc_3711_b2() {
        let cipher = Aes128::new(GenericArray::from_slice(&hex(
            "2B7E151628AED2A6ABF7158809CF4F3C",
        )));
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"));
        let mut keystream = [0u8; 48];
        aes_cm(&cipher, iv, &mut keystream);
        assert_eq!(
            keystream.to_vec(),
            hex(
                "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB
                 41E95B3BB0A2E8DD477901E4FCA894C0"
            )
        );
    }

    #[test]
    fn the_session_keys_are_rfc_3711_b3() {
        let master = rfc_master();
        let cipher = Aes128::new(GenericArray::from_slice(&master.key));
        let derive = |label: u8, len: usize| {
            let mut out = vec![0u8; len];
            derive_key(&cipher, &master.salt, label, &mut out);
            out
        };
        assert_eq!(derive(0, 16), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        assert_eq!(derive(2, 14), hex("30CBBC08863D8C85D49DB34A9AE1"));
        assert_eq!(
            derive(1, 20),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
        // SRTCP's keys (labels 3, 4, 5).
        assert_eq!(derive(3, 16), hex("4C1AA45A81F73D61C800BBB00FBB1EAA"));
        assert_eq!(derive(5, 14), hex("9581C7AD87B3E530BF3E4454A8B3"));
        assert_eq!(derive(4, 16), hex("8D54534FEB49AE8E7993A6BD0B844FC3"));
    }

    fn rtp(sequence: u16, timestamp: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut packet = vec![0x80, 0];
        packet.extend_from_slice(&sequence.to_be_bytes());
        packet.extend_from_slice(&timestamp.to_be_bytes());
        packet.extend_from_slice(&ssrc.to_be_bytes());
        packet.extend_from_slice(payload);
        packet
    }

    fn protect(context: &mut Context, packet: &[u8]) -> Vec<u8> {
        let mut buffer = packet.to_vec();
        buffer.resize(packet.len() + MAX_TAG_BYTES, 0);
        let len = context
            .protect_rtp(&mut buffer, packet.len())
            .expect("protects");
        buffer.truncate(len);
        buffer
    }

    /// Packets libsrtp 2 protected with the RFC's master key (through
    /// pylibsrtp 1.0.0), sequence numbers 65534 to 1 across a rollover.
    const LIBSRTP_80: [(u16, &str); 4] = [
        (
            65534,
            "8000fffe009ffec001020304ee5cb0d8f17e5c9e5dfd6de29da797e5cfcf9e9442974f8709df",
        ),
        (
            65535,
            "8000ffff009fff6001020304bf757116c33d6986b0add8ae08238979d52aa46643409c0c8aab",
        ),
        (
            0,
            "80000000000000000102030460560f5aec4010dc92ad17e87c72a0fba94b28a878f641ae3dad",
        ),
        (
            1,
            "80000001000000a001020304283a814413f0a48d792071823defc0aeedd66e4b95b4a6476324",
        ),
    ];

    fn wrap_packet(sequence: u16) -> Vec<u8> {
        let timestamp = u32::from(sequence) * 160;
        rtp(
            sequence,
            timestamp,
            0x0102_0304,
            &(0u8..16).collect::<Vec<_>>(),
        )
    }

    #[test]
    fn packets_across_a_rollover_are_what_libsrtp_makes() {
        let mut sender = Context::new(Suite::AesCm128HmacSha1_80, &rfc_master());
        for (sequence, expected) in LIBSRTP_80 {
            assert_eq!(
                protect(&mut sender, &wrap_packet(sequence)),
                hex(expected),
                "sequence {sequence}"
            );
        }
    }

    #[test]
    fn libsrtps_packets_across_a_rollover_unprotect_to_the_rtp_sent() {
        let mut receiver = Context::new(Suite::AesCm128HmacSha1_80, &rfc_master());
        for (sequence, srtp) in LIBSRTP_80 {
            let mut buffer = hex(srtp);
            let len = receiver.unprotect_rtp(&mut buffer).expect("authentic");
            assert_eq!(
                buffer[..len],
                wrap_packet(sequence)[..],
                "sequence {sequence}"
            );
        }
    }

    #[test]
    fn the_32_bit_suite_is_what_libsrtp_makes_and_reads_back() {
        // libsrtp, the same key and packet, both suites.
        let packet = rtp(65535, 320, 0xCAFE_BABE, &(0u8..16).collect::<Vec<_>>());
        let short = "8000ffff00000140cafebabe58c43f542802acd92f48fe341db1b81c6ba37711";
        let mut sender = Context::new(Suite::AesCm128HmacSha1_32, &rfc_master());
        assert_eq!(protect(&mut sender, &packet), hex(short));
        let mut receiver = Context::new(Suite::AesCm128HmacSha1_32, &rfc_master());
        let mut buffer = hex(short);
        assert_eq!(receiver.unprotect_rtp(&mut buffer), Ok(packet.len()));
    }

    #[test]
    fn srtcp_is_what_libsrtp_makes_and_reads_back() {
        // An empty receiver report, protected twice: indexes 1 and 2.
        let report = hex("80c9000101020304");
        let expected = [
            "80c9000101020304800000011adc2fae257e527ff55e",
            "80c900010102030480000002c274d23324e80e0bab55",
        ];
        let mut sender = Context::new(Suite::AesCm128HmacSha1_32, &rfc_master());
        let mut receiver = Context::new(Suite::AesCm128HmacSha1_32, &rfc_master());
        for srtcp in expected {
            let mut buffer = report.clone();
            buffer.resize(report.len() + SRTCP_OVERHEAD_BYTES, 0);
            let len = sender
                .protect_rtcp(&mut buffer, report.len())
                .expect("fits");
            assert_eq!(buffer[..len], hex(srtcp)[..]);
            let mut arriving = hex(srtcp);
            assert_eq!(receiver.unprotect_rtcp(&mut arriving), Ok(report.len()));
            assert_eq!(arriving[..report.len()], report[..]);
        }
        // A sender report with a payload to encrypt, from libsrtp.
        let sender_report = {
            let mut r = hex("80c80006cafebabe");
            r.extend(0u8..20);
            r
        };
        let from_libsrtp = "80c80006cafebabeda82aaf34b2914111d5a31e15ed1000c6e550139\
                            80000001323b6a241a6ce15eb70c";
        let mut receiver = Context::new(Suite::AesCm128HmacSha1_80, &rfc_master());
        let mut buffer = hex(from_libsrtp);
        assert_eq!(
            receiver.unprotect_rtcp(&mut buffer),
            Ok(sender_report.len())
        );
        assert_eq!(buffer[..sender_report.len()], sender_report[..]);
    }

    #[test]
    fn a_changed_byte_fails_authentication_and_leaves_the_stream_as_it_was() {
        let mut sender = Context::new(Suite::AesCm128HmacSha1_80, &rfc_master());
        let mut receiver = Context::new(Suite::AesCm128HmacSha1_80, &rfc_master());
        let first = protect(&mut sender, &wrap_packet(10));
        let mut tampered = first.clone();
        tampered[20] ^= 1;
        assert_eq!(
            receiver.unprotect_rtp(&mut tampered),
            Err(SrtpError::AuthenticationFailed)
        );
        let mut genuine = first;
        assert!(receiver.unprotect_rtp(&mut genuine).is_ok());
    }

    #[test]
    fn a_replayed_or_too_old_packet_is_refused() {
        let mut sender = Context::new(Suite::AesCm128HmacSha1_80, &rfc_master());
        let mut receiver = Context::new(Suite::AesCm128HmacSha1_80, &rfc_master());
        let packets: Vec<Vec<u8>> = (100..200)
            .map(|s| protect(&mut sender, &wrap_packet(s)))
            .collect();
        let mut first = packets[0].clone();
        assert!(receiver.unprotect_rtp(&mut first).is_ok());
        let mut again = packets[0].clone();
        assert_eq!(receiver.unprotect_rtp(&mut again), Err(SrtpError::Replayed));
        let mut latest = packets[99].clone();
        assert!(receiver.unprotect_rtp(&mut latest).is_ok());
        // 10 behind the newest: late but in the window.
        let mut late = packets[89].clone();
        assert!(receiver.unprotect_rtp(&mut late).is_ok());
        // 99 behind: outside the 64-packet window.
        let mut stale = packets[1].clone();
        assert_eq!(receiver.unprotect_rtp(&mut stale), Err(SrtpError::TooOld));
    }

    #[test]
    fn a_round_trip_keeps_csrcs_and_extensions_in_the_clear() {
        // Two CSRCs and a one-word header extension.
        let mut packet = vec![0x92, 0x00, 0x00, 0x05, 0, 0, 0, 0, 0, 0, 0, 9];
        packet.extend_from_slice(&[1, 1, 1, 1, 2, 2, 2, 2]);
        packet.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x01, 7, 7, 7, 7]);
        packet.extend_from_slice(&[0x55; 40]);
        let mut sender = Context::new(Suite::AesCm128HmacSha1_80, &rfc_master());
        let srtp = protect(&mut sender, &packet);
        assert_eq!(srtp[..28], packet[..28], "header, CSRCs and extension stay");
        assert_ne!(srtp[28..68], packet[28..68], "the payload is encrypted");
        let mut receiver = Context::new(Suite::AesCm128HmacSha1_80, &rfc_master());
        let mut buffer = srtp;
        assert_eq!(receiver.unprotect_rtp(&mut buffer), Ok(packet.len()));
        assert_eq!(buffer[..packet.len()], packet[..]);
    }

    #[test]
    fn short_and_malformed_packets_are_errors_not_panics() {
        let mut context = Context::new(Suite::AesCm128HmacSha1_80, &rfc_master());
        for bytes in [&[][..], &[0x80; 5][..], &[0x80; 21][..], &[0x9F; 40][..]] {
            let mut buffer = bytes.to_vec();
            assert!(context.unprotect_rtp(&mut buffer).is_err());
            let mut buffer = bytes.to_vec();
            assert!(context.unprotect_rtcp(&mut buffer).is_err());
        }
        let mut small = [0x80u8; 14];
        assert_eq!(context.protect_rtp(&mut small, 14), Err(SrtpError::NoRoom));
    }

    #[test]
    fn suites_are_named_as_in_rfc_4568() {
        assert_eq!(
            Suite::parse("aes_cm_128_hmac_sha1_32"),
            Some(Suite::AesCm128HmacSha1_32)
        );
        assert_eq!(Suite::AesCm128HmacSha1_80.name(), "AES_CM_128_HMAC_SHA1_80");
        assert_eq!(Suite::parse("AEAD_AES_128_GCM"), None);
    }
}
