//! Datagrams in: a member's own RTP and RTCP, and the shared port's, whose
//! member is found by source address (`Demux`) with the NAT latch rules.
//!
//! Owns: which member a datagram is for and what it did to it, counted per
//! tick. Never touches: sockets (the caller read the datagram), the clock,
//! the mixes, the events.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Datagram, MediaCore, Port, Stream};
use crate::media::demux::Sender;
use crate::media::rtp::check_rtcp;
use crate::media::slot::Received;

/// On the shared port, a member is latched to an unknown port at its SDP
/// address's IP only after waiting this long for RTP from the address it gave:
/// a phone sending from where it said is heard within a tick or two, while a
/// packet from an unknown port in the first moments is far more likely a
/// newer call from the same IP (a PBX relaying many) whose member is not
/// filed yet than this member behind a port-rewriting NAT.
pub const NAT_LATCH_AFTER: Duration = Duration::from_millis(500);

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
                    self.receive_rtp(index, contents, source, now);
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

    /// Hands RTP to member `index` and counts what became of it.
    fn receive_rtp(&mut self, index: usize, contents: &[u8], source: SocketAddr, now: Instant) {
        let slot = &mut self.slots[index];
        match slot.receive_rtp(contents, source, now) {
            Received::Audio(_) | Received::TelephoneEvent => self.counts.packets_in += 1,
            Received::Malformed | Received::UnexpectedPayloadType(_) => self.counts.malformed += 1,
            Received::ForeignSource => self.counts.foreign += 1,
        }
        if !slot.has_own_sockets() {
            self.refile_if_moved(index);
        }
    }

    /// A valid RTCP packet to member `index` latches its RTCP where it came from,
    /// and is a sign of life of a phone that sends no RTP while it is silent.
    fn receive_rtcp(&mut self, index: usize, contents: &[u8], source: SocketAddr, now: Instant) {
        if check_rtcp(contents).is_err() {
            self.counts.malformed += 1;
            return;
        }
        let slot = &mut self.slots[index];
        slot.latch_rtcp(source);
        slot.heard_from(now);
        if !slot.has_own_sockets() {
            self.refile_if_moved(index);
        }
    }

    /// A shared-port member latched a new address, or its first RTP: refile it.
    fn refile_if_moved(&mut self, index: usize) {
        let filed = self.slots[index].filed_as();
        if filed != self.demux.filed(index) {
            self.demux.file(index, filed);
        }
    }

    /// RTP on the shared port: the member whose address it came from, or
    /// the only one waiting at that IP once it has waited `NAT_LATCH_AFTER`.
    fn receive_shared_rtp(&mut self, contents: &[u8], source: SocketAddr, now: Instant) {
        let (index, nat_latch) = match self.demux.rtp_sender(source) {
            Sender::Member(index) => (index, false),
            Sender::OnlyWaitingAtIp(index) => (index, true),
            Sender::Foreign => {
                self.counts.foreign += 1;
                return;
            }
        };
        let Some(slot) = self.slots.get(index).filter(|slot| slot.is_active()) else {
            return;
        };
        if nat_latch && slot.age(now) < NAT_LATCH_AFTER {
            // Most likely a member whose AddMember is still queued,
            // sending from the same IP (a PBX): not this one's to take.
            self.counts.foreign += 1;
            return;
        }
        self.receive_rtp(index, contents, source, now);
    }

    /// RTCP on the shared port: a report from a member's RTCP address, or
    /// failing that with its RTP stream's SSRC, latches its RTCP there.
    fn receive_shared_rtcp(&mut self, contents: &[u8], source: SocketAddr, now: Instant) {
        let Ok(summary) = check_rtcp(contents) else {
            self.counts.malformed += 1;
            return;
        };
        let index = match self.demux.rtcp_sender(source) {
            Some(index) => Some(index),
            None if self.rtcp_ssrc_scans < RTCP_SSRC_SCANS_PER_TICK => {
                self.rtcp_ssrc_scans += 1;
                self.slots.iter().position(|slot| {
                    slot.is_active()
                        && !slot.has_own_sockets()
                        && slot.stream_ssrc() == Some(summary.sender_ssrc)
                })
            }
            None => None,
        };
        let Some(index) = index.filter(|&index| index < self.slots.len()) else {
            return;
        };
        self.slots[index].latch_rtcp(source);
        self.slots[index].heard_from(now);
        self.demux.file(index, self.slots[index].filed_as());
    }
}
