//! The engine's sockets: each member's own RTP/RTCP pair (with its
//! connection to the phone) and the shared pair with its `recvmmsg` and
//! `sendmmsg` batches, the rings of local members (the room's sound card,
//! `media/local.rs`), and the sink through which the core's datagrams leave.
//!
//! Owns: every socket of the media plane and the system calls on them. Never
//! touches: member state beyond what the core exposes (`live_rtp_source`),
//! the mix, the events.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use crate::media::core::{add, Port, Stream, Transmit, TransmitSink};
use crate::media::local::{local_rate_hz, LocalPort, LOCAL_CODEC};
use crate::media::mixer::frame_samples;
use crate::media::rtp::{write_rtp, RtpHeader, RTP_HEADER_BYTES};
use crate::media::{MediaStats, MemberKey, MemberSockets};
use crate::net::udp::{
    disconnect, receive_buffer_bytes, set_buffer_bytes, RawAddr, ReceiveBatch, SendBatch,
};

/// Datagrams per `recvmmsg` and per `sendmmsg` on the shared port.
pub const SHARED_BATCH: usize = 64;
/// Socket buffer asked for per member on the shared port: every member's
/// datagrams wait in one buffer between two ticks, and one 172-byte RTP
/// datagram takes about 1 KiB of it with the kernel's overhead (the kernel
/// caps the request at `net.core.rmem_max`).
const SHARED_BUFFER_BYTES_PER_MEMBER: usize = 2048;

/// A member's own RTP/RTCP pair (`MemberSockets::Own`).
pub struct OwnPair {
    pub key: MemberKey,
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    /// `MemberSockets::Own::sdp_ip`: Some while the RTP socket may be connected.
    sdp_ip: Option<IpAddr>,
    /// The peer the RTP socket is connected to (see `keep_connection`).
    connected_to: Option<SocketAddr>,
}

impl OwnPair {
    /// Keeps the RTP socket connected to the phone while its stream is
    /// latched and alive (`wanted`, from `MediaCore::live_rtp_source`), so
    /// each send takes the connection's cached route instead of a route
    /// lookup; dissolves the connection once it is not, because a connected
    /// socket takes datagrams from its peer only and a new source (a phone
    /// behind a NAT that moved) could never be latched. Two system calls per
    /// change, none per tick.
    ///
    /// The connection is kept only if the socket still receives at the
    /// address our SDP gave the phone: connecting a socket bound to every
    /// address narrows it to the one the route to the phone leaves from, and
    /// on a box with several addresses that may not be the one the phone
    /// sends to. Then this member is never connected.
    pub fn keep_connection(&mut self, wanted: Option<SocketAddr>) {
        let Some(sdp_ip) = self.sdp_ip else {
            return;
        };
        if wanted == self.connected_to {
            return;
        }
        self.dissolve();
        let Some(remote) = wanted else {
            return;
        };
        if self.rtp.connect(remote).is_err() {
            return;
        }
        match self.rtp.local_addr() {
            // On a dual-stack socket an IPv4 connection's local address is
            // ::ffff:a.b.c.d, the IPv4 address our SDP named.
            Ok(local) if local.ip().to_canonical() == sdp_ip.to_canonical() => {
                self.connected_to = Some(remote)
            }
            _ => {
                let _ = disconnect(self.rtp.as_raw_fd());
                self.sdp_ip = None;
            }
        }
    }

    /// Dissolves a connection of the RTP socket (new remote addresses, or
    /// the member left: the call keeps its sockets for its next conference).
    pub fn dissolve(&mut self) {
        if self.connected_to.take().is_some() {
            // Dissolving a UDP connection does not fail on a live socket.
            let _ = disconnect(self.rtp.as_raw_fd());
        }
    }

    /// The peer the RTP socket is connected to.
    #[cfg(test)]
    pub fn connected_to(&self) -> Option<SocketAddr> {
        self.connected_to
    }

    #[inline]
    fn send_rtp(&mut self, datagram: &[u8], destination: SocketAddr, stats: &MediaStats) {
        let sent = if self.connected_to == Some(destination) {
            self.rtp.send(datagram)
        } else {
            self.rtp.send_to(datagram, destination)
        };
        match sent {
            Ok(_) => add(&stats.packets_out, 1),
            Err(error) => {
                add(&stats.send_errors, 1);
                let not_connected = matches!(
                    error.raw_os_error(),
                    Some(libc::ENOTCONN | libc::EDESTADDRREQ)
                );
                if not_connected {
                    // Dissolved behind our back (another holder of the
                    // call's socket): connect again on the next receive.
                    self.connected_to = None;
                }
            }
        }
    }
}

impl Drop for OwnPair {
    fn drop(&mut self) {
        self.dissolve();
    }
}

/// The one RTP/RTCP socket pair every `MemberSockets::Shared` member uses,
/// with its batches.
pub struct SharedPort {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pub receive_batch: ReceiveBatch,
    send_batch: SendBatch,
    /// Per slot: the last RTP destination and its kernel form, so a packet
    /// costs a comparison, not a conversion.
    destinations: Box<[(SocketAddr, RawAddr)]>,
}

impl SharedPort {
    /// Binds RTP at `address` and RTCP on the port above, nonblocking. Port 0
    /// takes any free pair (tests); a few tries find one whose upper port is free.
    pub fn bind(address: SocketAddr, max_members: usize) -> io::Result<SharedPort> {
        let context = |what: &str, at: SocketAddr, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot bind the shared {what} port {at} (media.shared_port): {e}"),
            )
        };
        let tries = if address.port() == 0 { 32 } else { 1 };
        let mut last_error = None;
        for _ in 0..tries {
            let rtp = UdpSocket::bind(address).map_err(|e| context("RTP", address, e))?;
            let rtp_port = rtp.local_addr()?.port();
            let Some(rtcp_port) = rtp_port.checked_add(1) else {
                continue;
            };
            let rtcp_address = SocketAddr::new(address.ip(), rtcp_port);
            match UdpSocket::bind(rtcp_address) {
                Ok(rtcp) => {
                    rtp.set_nonblocking(true)?;
                    rtcp.set_nonblocking(true)?;
                    let buffer = max_members.saturating_mul(SHARED_BUFFER_BYTES_PER_MEMBER);
                    set_buffer_bytes(rtp.as_raw_fd(), buffer)?;
                    // Start-up, not the tick: a warning here is allowed.
                    let granted = receive_buffer_bytes(rtp.as_raw_fd()).unwrap_or(0);
                    if granted < buffer {
                        tracing::warn!(
                            granted_bytes = granted,
                            wanted_bytes = buffer,
                            "the shared RTP socket's receive buffer is smaller than \
                             max_members needs; raise net.core.rmem_max or RTP may be dropped"
                        );
                    }
                    let nowhere = SocketAddr::from(([0, 0, 0, 0], 0));
                    return Ok(SharedPort {
                        rtp,
                        rtcp,
                        receive_batch: ReceiveBatch::new(SHARED_BATCH),
                        send_batch: SendBatch::new(SHARED_BATCH),
                        destinations: vec![(nowhere, RawAddr::new(nowhere)); max_members]
                            .into_boxed_slice(),
                    });
                }
                Err(e) => last_error = Some(context("RTCP", rtcp_address, e)),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::AddrInUse, "no free shared RTP port pair")
        }))
    }

    /// Queues an RTP datagram for `sendmmsg`, sending the batch first if it is full.
    #[inline]
    fn queue_rtp(
        &mut self,
        slot: usize,
        datagram: &[u8],
        destination: SocketAddr,
        stats: &MediaStats,
    ) {
        if self.send_batch.is_full() {
            self.flush(stats);
        }
        let Some(cached) = self.destinations.get_mut(slot) else {
            return;
        };
        if cached.0 != destination {
            *cached = (destination, RawAddr::new(destination));
        }
        let len = datagram.len();
        self.send_batch.push(&cached.1, |buffer| {
            buffer[..len].copy_from_slice(datagram);
            len
        });
    }

    /// Sends what is queued; counts it as sent or failed.
    pub fn flush(&mut self, stats: &MediaStats) {
        let queued = self.send_batch.len();
        if queued == 0 {
            return;
        }
        let sent = self.send_batch.send(self.rtp.as_raw_fd());
        add(&stats.packets_out, sent as u64);
        add(&stats.send_errors, queued.saturating_sub(sent) as u64);
    }
}

/// Local members (`MemberSockets::Local`) the engine serves at once: a
/// box has one sound card, rarely two.
pub const LOCAL_MEMBERS_MAX: usize = 4;

/// A local member's rings, with the RTP its captured frames are wrapped in
/// for the core and the buffers to do it without allocating.
pub struct LocalPair {
    pub key: MemberKey,
    port: LocalPort,
    /// The member's `remote_rtp`: its frames come "from" there, so the
    /// core's latch takes them as the member's stream.
    source: SocketAddr,
    sequence: u16,
    timestamp: u32,
    pcm: Box<[i16]>,
    datagram: Box<[u8]>,
    /// The core sent the member a frame this tick.
    heard: bool,
}

impl LocalPair {
    fn new(key: MemberKey, port: LocalPort, source: SocketAddr) -> LocalPair {
        let frame = frame_samples(local_rate_hz());
        LocalPair {
            key,
            port,
            source,
            sequence: 0,
            timestamp: 0,
            pcm: vec![0; frame].into_boxed_slice(),
            // G.711: one byte a sample.
            datagram: vec![0; RTP_HEADER_BYTES + frame].into_boxed_slice(),
            heard: false,
        }
    }

    /// This tick's captured frame as the member's next RTP packet, and where
    /// it comes from. Less than a frame captured: silence, counted, and
    /// what there is waits for the next tick.
    pub fn captured_rtp(&mut self) -> (&[u8], SocketAddr) {
        let frame = self.pcm.len();
        if self.port.capture.len() >= frame {
            self.port.capture.pop(&mut self.pcm);
        } else {
            add(&self.port.stats.capture_underruns, 1);
            self.pcm.fill(0);
        }
        let mut payload = [0u8; FRAME_PAYLOAD_MAX];
        let len = LOCAL_CODEC.encode(&self.pcm, &mut payload);
        let header = RtpHeader {
            // G.711 has a static type, so the default is never taken.
            payload_type: LOCAL_CODEC.static_payload_type().unwrap_or(0),
            marker: false,
            sequence: self.sequence,
            timestamp: self.timestamp,
            ssrc: LOCAL_SSRC,
        };
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(frame as u32);
        // The buffer holds a header and a frame of the local codec.
        let len = write_rtp(&header, &payload[..len], &mut self.datagram).unwrap_or(0);
        (&self.datagram[..len], self.source)
    }

    /// The core's RTP for the member: decoded into the playback ring. The
    /// core wrote it with a bare 12-byte header (`write_rtp`: no CSRC, no
    /// extension, never SRTP for a local member), so the payload follows
    /// at once; not parsed again, so the RTP reader keeps its one call
    /// site on the receive path, inlined there.
    fn play(&mut self, datagram: &[u8]) {
        let Some(payload) = datagram.get(RTP_HEADER_BYTES..) else {
            return;
        };
        let samples = LOCAL_CODEC.decode(payload, &mut self.pcm);
        self.push_playback(samples);
        self.heard = true;
    }

    /// A tick in which the core sent the member nothing (it is alone, or
    /// held): the sound card plays a frame of silence, so its clock still
    /// sees one frame a tick.
    pub fn end_tick(&mut self) {
        if !std::mem::take(&mut self.heard) {
            self.pcm.fill(0);
            self.push_playback(self.pcm.len());
        }
    }

    fn push_playback(&mut self, samples: usize) {
        if self.port.playback.push(&self.pcm[..samples]) < samples {
            add(&self.port.stats.playback_overruns, 1);
        }
    }
}

/// The largest local frame's payload (one byte per sample at most, as
/// `ENCODED_FRAME_BYTES_MAX`).
const FRAME_PAYLOAD_MAX: usize = crate::media::mixer::ENCODED_FRAME_BYTES_MAX;
/// The SSRC of every local member's stream: it never leaves the process.
const LOCAL_SSRC: u32 = 0x50C4_CA7D;

/// Every socket of the media thread.
pub struct Sockets {
    /// Per slot, the member's own pair while it has one.
    pub own: Vec<Option<OwnPair>>,
    /// Slots with an own pair, ascending: the receive loop walks these, so
    /// members on the shared port cost it nothing. Capacity `max_members`.
    pub own_slots: Vec<u32>,
    /// Where each own socket's datagrams land; one batch serves every member in turn.
    pub receive_batch: ReceiveBatch,
    /// `media.shared_port`: the pair every `MemberSockets::Shared` member uses.
    pub shared: Option<SharedPort>,
    /// Local members' rings (capacity `LOCAL_MEMBERS_MAX`, reserved at start).
    pub local: Vec<LocalPair>,
}

impl Sockets {
    pub fn new(max_members: usize, shared: Option<SharedPort>, batch: usize) -> Sockets {
        Sockets {
            own: (0..max_members).map(|_| None).collect(),
            own_slots: Vec::with_capacity(max_members),
            receive_batch: ReceiveBatch::new(batch),
            shared,
            local: Vec::with_capacity(LOCAL_MEMBERS_MAX),
        }
    }

    /// Whether a new member's sockets can be served: its own pair is set
    /// nonblocking, or the shared port exists.
    pub fn can_serve(&self, sockets: &MemberSockets) -> bool {
        match sockets {
            MemberSockets::Own { rtp, rtcp, .. } => rtp
                .set_nonblocking(true)
                .and_then(|()| rtcp.set_nonblocking(true))
                .is_ok(),
            MemberSockets::Shared => self.shared.is_some(),
            MemberSockets::Local(_) => self.local.len() < LOCAL_MEMBERS_MAX,
        }
    }

    /// A member started in `key.slot` with `sockets` (`remote_rtp`: where
    /// the core takes its stream from); a pair left there by the slot's
    /// previous member is dissolved and closed.
    pub fn start(&mut self, key: MemberKey, sockets: MemberSockets, remote_rtp: SocketAddr) {
        let index = key.slot as usize;
        self.local.retain(|pair| pair.key.slot != key.slot);
        let pair = match sockets {
            MemberSockets::Own { rtp, rtcp, sdp_ip } => Some(OwnPair {
                key,
                rtp,
                rtcp,
                sdp_ip,
                connected_to: None,
            }),
            MemberSockets::Shared => None,
            MemberSockets::Local(port) => {
                // Within the capacity reserved at start (`can_serve`).
                self.local.push(LocalPair::new(key, port, remote_rtp));
                None
            }
        };
        let Some(entry) = self.own.get_mut(index) else {
            return;
        };
        let has_pair = pair.is_some();
        *entry = pair;
        self.list(index, has_pair);
    }

    /// The member in `slot` left: its pair's connection is dissolved and the
    /// pair closed (the call keeps its own handles to the sockets).
    pub fn stop(&mut self, slot: usize) {
        self.local.retain(|pair| pair.key.slot as usize != slot);
        if let Some(entry) = self.own.get_mut(slot) {
            *entry = None;
            self.list(slot, false);
        }
    }

    /// Every member left.
    pub fn stop_all(&mut self) {
        for slot in 0..self.own.len() {
            self.stop(slot);
        }
    }

    /// The member's remote addresses changed: no connection to the old one.
    pub fn dissolve(&mut self, slot: usize) {
        if let Some(pair) = self.own.get_mut(slot).and_then(Option::as_mut) {
            pair.dissolve();
        }
    }

    fn list(&mut self, slot: usize, has_pair: bool) {
        let slot = slot as u32;
        match (self.own_slots.binary_search(&slot), has_pair) {
            // Within the capacity reserved at start: no more slots than that.
            (Err(position), true) => self.own_slots.insert(position, slot),
            (Ok(position), false) => {
                self.own_slots.remove(position);
            }
            _ => {}
        }
    }

    /// The sink the core's datagrams leave through, counting into `stats`.
    pub fn sink<'a>(&'a mut self, stats: &'a MediaStats) -> SocketSink<'a> {
        SocketSink {
            own: &mut self.own,
            shared: self.shared.as_mut(),
            local: &mut self.local,
            stats,
        }
    }
}

/// Sends the core's datagrams: a member's own pair at once, the shared RTP
/// in `sendmmsg` batches (sent when full and at `flush`), shared RTCP at once.
pub struct SocketSink<'a> {
    own: &'a mut [Option<OwnPair>],
    shared: Option<&'a mut SharedPort>,
    local: &'a mut [LocalPair],
    stats: &'a MediaStats,
}

impl TransmitSink for SocketSink<'_> {
    #[inline(always)]
    fn transmit(&mut self, transmit: Transmit<'_>) {
        let Transmit {
            member,
            port,
            stream,
            destination,
            contents,
        } = transmit;
        match port {
            Port::Member(key) => {
                let Some(pair) = self.own.get_mut(key.slot as usize).and_then(Option::as_mut)
                else {
                    play_local(self.local, key, stream, contents);
                    return;
                };
                match stream {
                    Stream::Rtp => pair.send_rtp(contents, destination, self.stats),
                    Stream::Rtcp => {
                        if pair.rtcp.send_to(contents, destination).is_err() {
                            add(&self.stats.send_errors, 1);
                        }
                    }
                }
            }
            Port::Shared => {
                let Some(shared) = self.shared.as_deref_mut() else {
                    return;
                };
                match stream {
                    Stream::Rtp => {
                        shared.queue_rtp(member.slot as usize, contents, destination, self.stats)
                    }
                    Stream::Rtcp => {
                        if shared.rtcp.send_to(contents, destination).is_err() {
                            add(&self.stats.send_errors, 1);
                        }
                    }
                }
            }
        }
    }

    fn flush(&mut self) {
        if let Some(shared) = self.shared.as_deref_mut() {
            shared.flush(self.stats);
        }
    }
}

/// RTP the core sent a local member (its RTCP goes nowhere).
#[cold]
#[inline(never)]
fn play_local(local: &mut [LocalPair], key: MemberKey, stream: Stream, datagram: &[u8]) {
    if stream != Stream::Rtp {
        return;
    }
    if let Some(pair) = local.iter_mut().find(|pair| pair.key == key) {
        pair.play(datagram);
    }
}
