//! Datagrams in: a member's own RTP and RTCP, and the shared port's, whose
//! member is found by source address (`Demux`); which source a member takes
//! its stream from is its latch's (`media/latch.rs`).
//!
//! A member that speaks SRTP has each datagram copied and unprotected
//! before anything else looks at it: one that fails authentication or is a
//! replay is dropped (counted by reason) and cannot latch an address.
//!
//! Owns: which member a datagram is for and what it did to it, counted per
//! tick by reason. Never touches: sockets (the caller read the datagram), the
//! clock, the mixes, the events.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Datagram, MediaCore, Port, Stream, TickCounts};
use crate::media::demux::Sender;
use crate::media::rtp::check_rtcp;
use crate::media::slot::Received;
use crate::media::srtp::{MemberSrtp, SrtpError};
use crate::media::MemberKey;

/// On the shared port, RTP from an unknown port at a member's IP counts
/// toward learning its stream only once the member is this old: in its
/// first moments such a stream is as likely a newer call from the same IP
/// (a PBX relaying many) whose member is not filed yet, which a tick or two
/// normally settles. With the run the latch wants, a phone behind a
/// port-rewriting NAT is heard about 0.3 s after it starts sending.
pub const NAT_LATCH_AFTER: Duration = Duration::from_millis(200);

/// Shared-port RTCP reports whose member is looked up by SSRC (a scan of
/// every slot) per tick, so a flood of unknown reports cannot stretch one.
/// The engine reads the shared RTCP socket at most once a tick, so this is
/// also the budget of one read.
pub const RTCP_SSRC_SCANS_PER_TICK: usize = 8;

impl MediaCore {
    /// Takes one datagram that arrived at `now`. What it did shows in the
    /// next tick (its frame, its keys) and in the counters at that tick's end.
    #[inline(always)]
    pub fn receive(&mut self, datagram: Datagram<'_>, now: Instant) {
        let Datagram {
            port,
            stream,
            source,
            contents,
        } = datagram;
        match (port, stream) {
            (Port::Member(key), Stream::Rtp) => {
                if let Some(index) = self.slot_of(key) {
                    // Its own socket: it is filed nowhere, so never refiled.
                    self.receive_member_rtp(index, contents, source, now);
                }
            }
            (Port::Member(key), Stream::Rtcp) => {
                if let Some(index) = self.slot_of(key) {
                    self.receive_rtcp(index, contents, source, now);
                }
            }
            (Port::Shared, Stream::Rtp) => self.receive_shared_rtp(contents, source, now),
            (Port::Shared, Stream::Rtcp) => self.receive_shared_rtcp(contents, source, now),
        }
    }

    /// RTP of a local member (`MemberSockets::Local`, the room's sound
    /// card): a frame the engine wrapped from its capture ring. Out of
    /// line, apart from `receive`, so the phones' path is compiled as it was.
    #[inline(never)]
    pub fn receive_local(
        &mut self,
        key: MemberKey,
        contents: &[u8],
        source: SocketAddr,
        now: Instant,
    ) {
        if let Some(index) = self.slot_of(key) {
            self.receive_member_rtp(index, contents, source, now);
        }
    }

    /// Hands RTP to member `index` (unprotected first if it speaks SRTP)
    /// and counts what became of it.
    #[inline(always)]
    fn receive_member_rtp(
        &mut self,
        index: usize,
        contents: &[u8],
        source: SocketAddr,
        now: Instant,
    ) {
        let slot = &mut self.slots[index];
        let received = if !slot.speaks_srtp() {
            slot.receive_rtp(contents, source, now)
        } else {
            match self.receive_srtp(index, contents, source, now) {
                Some(received) => received,
                None => return,
            }
        };
        self.count(received);
    }

    /// SRTP to member `index`: unprotected into the scratch buffer, then
    /// taken as RTP; None (counted) when it fails. Kept out of line so the
    /// plain RTP path stays as short as it was.
    #[cold]
    #[inline(never)]
    fn receive_srtp(
        &mut self,
        index: usize,
        contents: &[u8],
        source: SocketAddr,
        now: Instant,
    ) -> Option<Received> {
        let MediaCore {
            slots,
            unprotect_buffer,
            counts,
            ..
        } = self;
        let slot = &mut slots[index];
        match plaintext(slot.srtp_mut(), Stream::Rtp, contents, unprotect_buffer) {
            Ok(plain) => Some(slot.receive_rtp(plain, source, now)),
            Err(error) => {
                counts.srtp_dropped(error);
                None
            }
        }
    }

    /// Counts what became of an RTP datagram.
    #[inline(always)]
    fn count(&mut self, received: Received) {
        match received {
            Received::Audio(_) | Received::TelephoneEvent => self.counts.packets_in += 1,
            Received::Malformed | Received::UnexpectedPayloadType(_) => self.counts.malformed += 1,
            Received::ForeignSource => self.counts.foreign += 1,
            Received::Learning => self.counts.learning += 1,
            Received::Contested => self.counts.contested += 1,
        }
    }

    /// Hands shared-port RTP to member `index`, counts what became of it,
    /// and refiles the member if its stream locked or moved.
    fn receive_shared_member_rtp(
        &mut self,
        index: usize,
        contents: &[u8],
        source: SocketAddr,
        now: Instant,
    ) {
        self.receive_member_rtp(index, contents, source, now);
        self.refile_if_moved(index);
    }

    /// A valid RTCP packet to member `index` latches its RTCP where it came
    /// from, if that is at one of the member's IPs; such a report is a sign
    /// of life of a phone that sends no RTP while it is silent.
    fn receive_rtcp(&mut self, index: usize, contents: &[u8], source: SocketAddr, now: Instant) {
        let valid = if self.slots[index].speaks_srtp() {
            self.unprotect_rtcp(index, contents)
        } else {
            let valid = check_rtcp(contents).is_ok();
            self.counts.malformed += u64::from(!valid);
            valid
        };
        if !valid {
            return;
        }
        if self.slots[index].latch_rtcp(source) {
            self.slots[index].heard_from(now);
        } else {
            self.counts.foreign += 1;
        }
        self.refile_if_moved(index);
    }

    /// Whether SRTCP to member `index` is authentic and a valid report
    /// once unprotected; what is not is counted here, by reason.
    #[cold]
    #[inline(never)]
    fn unprotect_rtcp(&mut self, index: usize, contents: &[u8]) -> bool {
        let MediaCore {
            slots,
            unprotect_buffer,
            counts,
            ..
        } = self;
        let srtp = slots[index].srtp_mut();
        match plaintext(srtp, Stream::Rtcp, contents, unprotect_buffer) {
            Ok(plain) => {
                let valid = check_rtcp(plain).is_ok();
                counts.malformed += u64::from(!valid);
                valid
            }
            Err(error) => {
                counts.srtp_dropped(error);
                false
            }
        }
    }

    /// A shared-port member locked or moved its stream or latched its RTCP:
    /// refile it. (A member with its own sockets is filed nowhere.)
    #[inline(always)]
    fn refile_if_moved(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        if !slot.has_own_sockets() && slot.take_moved() {
            self.demux.file(index, slot.filed_as());
        }
    }

    /// RTP on the shared port: the member whose address it came from, or
    /// the one who could be learning a stream at that IP, once it is
    /// `NAT_LATCH_AFTER` old.
    fn receive_shared_rtp(&mut self, contents: &[u8], source: SocketAddr, now: Instant) {
        let (index, at_ip) = match self.demux.rtp_sender(source) {
            Sender::Member(index) => (index, false),
            Sender::AtIpOf(index) => (index, true),
            Sender::Ambiguous => {
                self.counts.ambiguous += 1;
                return;
            }
            Sender::Foreign => {
                self.counts.foreign += 1;
                return;
            }
        };
        let Some(slot) = self.slots.get(index).filter(|slot| slot.is_active()) else {
            return;
        };
        if at_ip && slot.age(now) < NAT_LATCH_AFTER {
            // Most likely a member whose AddMember is still queued,
            // sending from the same IP (a PBX): not this one's to learn.
            self.counts.learning += 1;
            return;
        }
        self.receive_shared_member_rtp(index, contents, source, now);
    }

    /// RTCP on the shared port: a report from a member's RTCP address, or
    /// failing that with its RTP stream's SSRC, latches its RTCP there.
    fn receive_shared_rtcp(&mut self, contents: &[u8], source: SocketAddr, now: Instant) {
        // The sender's SSRC is in the clear in RTCP and SRTCP alike; the
        // rest of an SRTCP report is checked once it is unprotected.
        let Some(ssrc) = contents.get(4..8) else {
            self.counts.malformed += 1;
            return;
        };
        let sender_ssrc = u32::from_be_bytes([ssrc[0], ssrc[1], ssrc[2], ssrc[3]]);
        let index = match self.demux.rtcp_sender(source) {
            Some(index) => Some(index),
            None if self.rtcp_ssrc_scans < RTCP_SSRC_SCANS_PER_TICK => {
                self.rtcp_ssrc_scans += 1;
                self.slots.iter().position(|slot| {
                    slot.is_active()
                        && !slot.has_own_sockets()
                        && slot.stream_ssrc() == Some(sender_ssrc)
                })
            }
            None => None,
        };
        let Some(index) = index.filter(|&index| index < self.slots.len()) else {
            if check_rtcp(contents).is_err() {
                self.counts.malformed += 1;
            }
            return;
        };
        self.receive_rtcp(index, contents, source, now);
    }
}

/// A member's datagram as RTP or RTCP: `contents` itself, or, for a member
/// that speaks SRTP, copied into `buffer` and unprotected there.
fn plaintext<'a>(
    srtp: Option<&mut MemberSrtp>,
    stream: Stream,
    contents: &'a [u8],
    buffer: &'a mut [u8],
) -> Result<&'a [u8], SrtpError> {
    let Some(srtp) = srtp else {
        return Ok(contents);
    };
    // Longer than any datagram the engine reads: not SRTP of ours.
    let buffer = buffer
        .get_mut(..contents.len())
        .ok_or(SrtpError::TooShort)?;
    buffer.copy_from_slice(contents);
    let len = match stream {
        Stream::Rtp => srtp.inbound.unprotect_rtp(buffer)?,
        Stream::Rtcp => srtp.inbound.unprotect_rtcp(buffer)?,
    };
    Ok(&buffer[..len])
}

impl TickCounts {
    /// Counts an SRTP or SRTCP datagram that was dropped, by reason.
    fn srtp_dropped(&mut self, error: SrtpError) {
        match error {
            SrtpError::AuthenticationFailed => self.srtp_auth_failed += 1,
            SrtpError::Replayed | SrtpError::TooOld => self.srtp_replayed += 1,
            SrtpError::TooShort | SrtpError::NoRoom => self.malformed += 1,
        }
    }
}
