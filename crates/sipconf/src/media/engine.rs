//! The media thread: the IO shell around `MediaCore`. It keeps the 20 ms
//! clock (an absolute schedule, late ticks counted, a resync when far
//! behind), every socket (`engine/sockets.rs`), the command and event queues
//! to the signalling plane, its doorbell, and the tick's timing counters.
//! Each tick it hands the core the commands waiting (at most
//! `COMMANDS_PER_TICK`), then the datagrams waiting on every socket (at most
//! `DATAGRAMS_PER_TICK` per member socket, RTCP read every
//! `RTCP_POLL_TICKS`), then runs the core's tick, whose datagrams leave
//! through the sockets. Nothing on the tick allocates, locks, logs or blocks.
//!
//! Owns: the clock, the sockets, the queues, the thread. Never touches:
//! member state, mixing or keys (the core's), except through the core's
//! methods.
//!
//! A member has its own RTP/RTCP socket pair, or (`media.shared_port`) all
//! share one pair: the RTP socket is then drained in large batches, each
//! datagram handed to the core, which finds its member by source address,
//! and the tick's packets leave in `sendmmsg` batches, so the system-call
//! cost is spread over up to 64 packets.

mod sockets;
#[cfg(test)]
mod tests_local;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::media::core::{Applied, Datagram, MediaCore, Port, Stream};
pub use crate::media::core::{CONFERENCE_RATE_HZ, TICK};
use crate::media::{Command, Event, MediaConfig, MediaStats};
use crate::net::udp::ReceiveBatch;
use crate::net::wakeup::Wakeup;
use sockets::{SharedPort, Sockets, SHARED_BATCH};

/// Further behind than this, the schedule restarts from now instead of catching up.
const MAX_TICKS_BEHIND: u32 = 5;
/// Commands handled per tick, so a burst cannot stretch one tick.
const COMMANDS_PER_TICK: usize = 64;
/// Datagrams read per socket per tick, so a flood on one member cannot starve the rest.
const DATAGRAMS_PER_TICK: usize = 16;
/// A member's RTCP socket is read every this many ticks (staggered across
/// members), not every tick: reports come every few seconds, and an empty
/// read is a system call (a quarter of the per-member cost at 1000 members).
const RTCP_POLL_TICKS: u64 = 10;

pub struct Engine {
    core: MediaCore,
    sockets: Sockets,
    commands: rtrb::Consumer<Command>,
    /// Rung after a tick that queued events (`ring_on_events`).
    wakeup: Option<Arc<Wakeup>>,
    stats: Arc<MediaStats>,
    max_members: usize,
    /// Ticks run so far.
    tick_number: u64,
}

/// What one tick decided about the thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Continue {
    Running,
    ShutDown,
}

impl Engine {
    /// Allocates every slot, mix and buffer for `config.max_members`, and binds
    /// the shared port if one is configured.
    pub fn new(
        config: MediaConfig,
        commands: rtrb::Consumer<Command>,
        events: rtrb::Producer<Event>,
        stats: Arc<MediaStats>,
    ) -> io::Result<Self> {
        let shared = config
            .shared_port
            .map(|address| SharedPort::bind(address, config.max_members))
            .transpose()?;
        let max_members = config.max_members;
        Ok(Engine {
            sockets: Sockets::new(max_members, shared, DATAGRAMS_PER_TICK),
            core: MediaCore::with_event_queue(config, Arc::clone(&stats), events),
            commands,
            wakeup: None,
            stats,
            max_members,
            tick_number: 0,
        })
    }

    /// The shared RTP port, when `MediaConfig::shared_port` is set.
    pub fn shared_port(&self) -> Option<u16> {
        let shared = self.sockets.shared.as_ref()?;
        shared.rtp.local_addr().ok().map(|a| a.port())
    }

    /// Rings `wakeup` after each tick that queued events, so the reader can
    /// sleep until then.
    pub fn ring_on_events(&mut self, wakeup: Arc<Wakeup>) {
        self.wakeup = Some(wakeup);
    }

    /// The thread body: tick every 20 ms on an absolute schedule until shut down.
    pub fn run(mut self) {
        tracing::info!(max_members = self.max_members, "media thread started");
        let mut next_tick_at = Instant::now();
        loop {
            let now = Instant::now();
            if next_tick_at > now {
                std::thread::sleep(next_tick_at - now);
            }
            let started_at = Instant::now();
            let behind = started_at.saturating_duration_since(next_tick_at);
            if behind > TICK {
                self.stats.late_ticks.fetch_add(1, Ordering::Relaxed);
            }
            if behind > TICK * MAX_TICKS_BEHIND {
                // Catching up would burst many packets at every phone; start afresh.
                self.stats.clock_resyncs.fetch_add(1, Ordering::Relaxed);
                next_tick_at = started_at;
            }
            let outcome = self.tick(started_at, ntp_now());
            if self.core.take_events_queued() {
                if let Some(wakeup) = self.wakeup.as_ref() {
                    wakeup.ring();
                }
            }
            let tick_ns = started_at.elapsed().as_nanos() as u64;
            self.stats.last_tick_ns.store(tick_ns, Ordering::Relaxed);
            self.stats.max_tick_ns.fetch_max(tick_ns, Ordering::Relaxed);
            self.stats.record_tick(tick_ns, behind.as_nanos() as u64);
            self.stats.ticks.fetch_add(1, Ordering::Relaxed);
            if outcome == Continue::ShutDown {
                break;
            }
            next_tick_at += TICK;
        }
        tracing::info!(
            ticks = self.stats.ticks.load(Ordering::Relaxed),
            late_ticks = self.stats.late_ticks.load(Ordering::Relaxed),
            "media thread stopped"
        );
    }

    /// One 20 ms tick at `now`; `ntp_timestamp` is wall time for RTCP sender reports.
    pub fn tick(&mut self, now: Instant, ntp_timestamp: u64) -> Continue {
        if self.drain_commands(now, ntp_timestamp) == Continue::ShutDown {
            return Continue::ShutDown;
        }
        self.tick_number = self.tick_number.wrapping_add(1);
        self.receive_shared_rtp(now);
        if self.tick_number.is_multiple_of(RTCP_POLL_TICKS) {
            self.receive_shared_rtcp(now);
        }
        self.receive_own(now);
        if !self.sockets.local.is_empty() {
            self.receive_local(now);
        }
        let Engine {
            core,
            sockets,
            stats,
            ..
        } = self;
        core.tick(now, ntp_timestamp, &mut sockets.sink(stats));
        if !sockets.local.is_empty() {
            end_local_tick(&mut sockets.local);
        }
        Continue::Running
    }

    /// Hands the core what waits in the command queue, up to `COMMANDS_PER_TICK`.
    fn drain_commands(&mut self, now: Instant, ntp_timestamp: u64) -> Continue {
        if self.commands.is_abandoned() && self.commands.is_empty() {
            let Engine {
                core,
                sockets,
                stats,
                ..
            } = self;
            core.shut_down(ntp_timestamp, &mut sockets.sink(stats));
            sockets.stop_all();
            return Continue::ShutDown;
        }
        for _ in 0..COMMANDS_PER_TICK {
            let Ok(command) = self.commands.pop() else {
                break;
            };
            if self.apply(command, now, ntp_timestamp) == Continue::ShutDown {
                return Continue::ShutDown;
            }
        }
        Continue::Running
    }

    /// Carries out one command, taking up or letting go of the sockets of
    /// members that come and go.
    fn apply(&mut self, command: Command, now: Instant, ntp_timestamp: u64) -> Continue {
        let Engine {
            core,
            sockets,
            stats,
            ..
        } = self;
        if let Command::AddMember(add) = &command {
            if !sockets.can_serve(&add.sockets) {
                stats.commands_dropped.fetch_add(1, Ordering::Relaxed);
                return Continue::Running;
            }
        }
        match core.command(command, now, ntp_timestamp, &mut sockets.sink(stats)) {
            Applied::Nothing | Applied::Refused { .. } => {}
            Applied::Started { key, sockets: own } => {
                let remote_rtp = core.member(key).map(|member| member.remote_rtp);
                sockets.start(key, own, remote_rtp.unwrap_or(LOCAL_SOURCE));
            }
            Applied::RemoteChanged { key } => sockets.dissolve(key.slot as usize),
            Applied::Stopped { key } => sockets.stop(key.slot as usize),
            Applied::ShutDown => {
                sockets.stop_all();
                return Continue::ShutDown;
            }
        }
        Continue::Running
    }

    /// Drains the shared RTP socket (bounded, so a flood cannot stretch the
    /// tick) into the core, which finds each datagram's member.
    fn receive_shared_rtp(&mut self, now: Instant) {
        let budget = 2 * self.core.active_members() + SHARED_BATCH;
        self.receive_shared(Stream::Rtp, budget, now);
    }

    /// Reads the shared RTCP socket into the core.
    fn receive_shared_rtcp(&mut self, now: Instant) {
        let budget = self.core.active_members() + SHARED_BATCH;
        self.receive_shared(Stream::Rtcp, budget, now);
    }

    fn receive_shared(&mut self, stream: Stream, budget: usize, now: Instant) {
        let Engine { core, sockets, .. } = self;
        let Some(shared) = sockets.shared.as_mut() else {
            return;
        };
        let fd = match stream {
            Stream::Rtp => shared.rtp.as_raw_fd(),
            Stream::Rtcp => shared.rtcp.as_raw_fd(),
        };
        let batch = &mut shared.receive_batch;
        let mut read = 0;
        while read < budget {
            let want = SHARED_BATCH.min(budget - read);
            // An error (an ICMP port unreachable surfacing) is not ours to
            // handle: what waits is read next tick.
            let got = batch.receive(fd, want).unwrap_or(0);
            for i in 0..got {
                let Some(source) = batch.source(i) else {
                    continue;
                };
                let datagram = Datagram {
                    port: Port::Shared,
                    stream,
                    source,
                    contents: batch.datagram(i),
                };
                core.receive(datagram, now);
            }
            read += got;
            if got < want {
                break;
            }
        }
    }

    /// Reads each member's own sockets into the core (RTCP every
    /// `RTCP_POLL_TICKS`, staggered), and keeps its RTP socket connected to
    /// the phone while its stream is locked at its SDP address and alive,
    /// looked at on the same ticks as RTCP: a connection made or dissolved
    /// up to 200 ms late only means a few sends take the unconnected path,
    /// or a stream that moved is learned that much later.
    fn receive_own(&mut self, now: Instant) {
        let Engine {
            core,
            sockets,
            tick_number,
            ..
        } = self;
        let batch = &mut sockets.receive_batch;
        for &slot in &sockets.own_slots {
            let index = slot as usize;
            let Some(pair) = sockets.own[index].as_mut() else {
                continue;
            };
            let port = Port::Member(pair.key);
            receive_into(core, batch, pair.rtp.as_raw_fd(), port, Stream::Rtp, now);
            if (*tick_number + index as u64).is_multiple_of(RTCP_POLL_TICKS) {
                receive_into(core, batch, pair.rtcp.as_raw_fd(), port, Stream::Rtcp, now);
                pair.keep_connection(core.live_rtp_source(pair.key, now));
            }
        }
    }
}

impl Engine {
    /// Hands the core each local member's captured frame (`media/local.rs`)
    /// as RTP from its `remote_rtp`: one a tick, silence when the sound card
    /// fell behind, so the member is never timed out nor waited for. Out
    /// of line: the tick's code for phones stays as it was.
    #[inline(never)]
    fn receive_local(&mut self, now: Instant) {
        let Engine { core, sockets, .. } = self;
        for pair in &mut sockets.local {
            let key = pair.key;
            let (contents, source) = pair.captured_rtp();
            core.receive_local(key, contents, source, now);
        }
    }
}

/// Every local member's tick is over (`LocalPair::end_tick`).
#[inline(never)]
fn end_local_tick(local: &mut [sockets::LocalPair]) {
    for pair in local {
        pair.end_tick();
    }
}

/// Where a local member's stream "comes from" when the core has no address
/// for it (it always has one: its `AddMember::remote_rtp`).
const LOCAL_SOURCE: std::net::SocketAddr = std::net::SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9,
));

/// Hands `core` what waits on one of a member's own sockets. One recvmmsg
/// takes it (up to the per-tick cap) and stops at an empty socket without a
/// second call. An error (an ICMP port unreachable surfacing, say) is not
/// ours to handle: what waits is read next tick.
#[inline(always)]
fn receive_into(
    core: &mut MediaCore,
    batch: &mut ReceiveBatch,
    fd: RawFd,
    port: Port,
    stream: Stream,
    now: Instant,
) {
    let waiting = batch.receive(fd, DATAGRAMS_PER_TICK).unwrap_or(0);
    for i in 0..waiting {
        let Some(source) = batch.source(i) else {
            continue;
        };
        let datagram = Datagram {
            port,
            stream,
            source,
            contents: batch.datagram(i),
        };
        core.receive(datagram, now);
    }
}

/// Seconds from 1900 (NTP era 0) to 1970 (Unix epoch).
const NTP_UNIX_OFFSET_SECONDS: u64 = 2_208_988_800;

/// Wall time as a 64-bit NTP timestamp, for RTCP sender reports.
fn ntp_now() -> u64 {
    let since_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let seconds = since_unix.as_secs() + NTP_UNIX_OFFSET_SECONDS;
    let fraction = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::Codec;
    use crate::media::core::tests::tone_power;
    use crate::media::core::NAT_LATCH_AFTER;
    use crate::media::latch::LEARN_RUN;
    use crate::media::rtp::{
        check_rtcp, write_rtcp_report, write_rtp, RtpHeader, RtpPacket, RTCP_COMPOUND_MAX_BYTES,
    };
    use crate::media::slot::LONE_KEEPALIVE_TICKS;
    use crate::media::{
        spawn, AddMember, MediaHandle, MemberFlags, MemberKey, MemberKeys, MemberSockets,
    };
    use crate::net::udp::disconnect;
    use std::net::{IpAddr, SocketAddr, UdpSocket};

    impl Engine {
        /// Adds a member at `now`, as the command queue would.
        fn add_member(&mut self, add: AddMember, now: Instant) {
            self.apply(Command::AddMember(Box::new(add)), now, 0);
        }

        /// The peer the member's own RTP socket is connected to.
        fn rtp_connected_to(&self, key: MemberKey) -> Option<SocketAddr> {
            let pair = self.sockets.own[key.slot as usize].as_ref()?;
            pair.connected_to()
        }

        fn remote_rtp(&self, key: MemberKey) -> SocketAddr {
            self.core.member(key).expect("a member").remote_rtp
        }

        fn remote_rtcp(&self, key: MemberKey) -> SocketAddr {
            self.core.member(key).expect("a member").remote_rtcp
        }
    }

    fn loopback_socket() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").expect("bind loopback")
    }

    /// A socket on `ip` bound to a port named in the bind, as `PortPool`
    /// binds them (a port the kernel picked is let go when a connection is
    /// dissolved; a named one is kept).
    fn explicit_port_socket(ip: IpAddr) -> UdpSocket {
        for _ in 0..32 {
            let port = address(&loopback_socket()).port();
            if let Ok(socket) = UdpSocket::bind((ip, port)) {
                return socket;
            }
        }
        panic!("no free port on {ip} in 32 tries");
    }

    fn address(socket: &UdpSocket) -> SocketAddr {
        socket.local_addr().expect("bound")
    }

    /// A phone on loopback: its RTP socket and the engine socket it talks to.
    struct Phone {
        rtp: UdpSocket,
        rtcp: UdpSocket,
        bridge: SocketAddr,
        tone_hz: f64,
    }

    /// A member's bridge-side sockets and the phone facing them.
    fn member_with_phone(key: MemberKey, flags: MemberFlags, tone_hz: f64) -> (AddMember, Phone) {
        let sockets = (loopback_socket(), loopback_socket());
        member_on(sockets, None, key, flags, tone_hz)
    }

    /// A member on the given bridge-side RTP/RTCP pair, our SDP naming
    /// `sdp_ip` (`MemberSockets::Own`), and a phone facing it.
    fn member_on(
        (member_rtp, member_rtcp): (UdpSocket, UdpSocket),
        sdp_ip: Option<IpAddr>,
        key: MemberKey,
        flags: MemberFlags,
        tone_hz: f64,
    ) -> (AddMember, Phone) {
        let phone = Phone {
            rtp: loopback_socket(),
            rtcp: loopback_socket(),
            bridge: address(&member_rtp),
            tone_hz,
        };
        let add = AddMember {
            key,
            mix: 0,
            sockets: MemberSockets::Own {
                rtp: member_rtp,
                rtcp: member_rtcp,
                sdp_ip,
            },
            remote_rtp: address(&phone.rtp),
            remote_rtcp: address(&phone.rtcp),
            signalling_ip: Some(address(&phone.rtp).ip()),
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event_pt: Some(101),
            telephone_event_rate_hz: 8000,
            flags,
            keypad: true,
            opus: None,
            srtp: None,
            link: false,
        };
        (add, phone)
    }

    /// Adds a member to a running engine; returns its key and phone.
    fn add_member(
        media: &mut MediaHandle,
        keys: &mut MemberKeys,
        tone_hz: f64,
    ) -> (MemberKey, Phone) {
        let key = keys.allocate().expect("slot");
        let (add, phone) = member_with_phone(key, MemberFlags::default(), tone_hz);
        media
            .send(Command::AddMember(Box::new(add)))
            .expect("queue has room");
        (key, phone)
    }

    /// One frame of the phone's tone as an RTP packet.
    fn tone_packet(phone: &Phone, frame: u32, datagram: &mut [u8]) -> usize {
        let mut pcm = [0i16; 160];
        for (n, sample) in pcm.iter_mut().enumerate() {
            let t = f64::from(frame * 160 + n as u32) / 8000.0;
            *sample = (8000.0 * (2.0 * std::f64::consts::PI * phone.tone_hz * t).sin()) as i16;
        }
        let mut payload = [0u8; 160];
        Codec::Pcmu.encode(&pcm, &mut payload);
        let header = RtpHeader {
            payload_type: 0,
            marker: frame == 0,
            sequence: frame as u16,
            timestamp: frame * 160,
            ssrc: ssrc_of(phone),
        };
        write_rtp(&header, &payload, datagram).expect("fits")
    }

    /// Each phone's stream has its own SSRC, as real phones draw theirs.
    fn ssrc_of(phone: &Phone) -> u32 {
        0x5EED_0000 + phone.tone_hz as u32
    }

    /// Every RTP payload waiting on the phone's socket.
    fn received_payloads(phone: &Phone) -> Vec<Vec<u8>> {
        phone.rtp.set_nonblocking(true).expect("nonblocking");
        let mut datagram = [0u8; 1500];
        let mut payloads = Vec::new();
        while let Ok((len, _)) = phone.rtp.recv_from(&mut datagram) {
            let packet = RtpPacket::new_checked(&datagram[..len]).expect("bridge sends valid RTP");
            payloads.push(packet.payload().to_vec());
        }
        payloads
    }

    fn decoded(payloads: &[Vec<u8>]) -> Vec<i16> {
        let mut pcm = vec![0i16; payloads.iter().map(Vec::len).sum()];
        let mut at = 0;
        for payload in payloads {
            at += Codec::Pcmu.decode(payload, &mut pcm[at..]);
        }
        pcm
    }

    /// Sends `frames` 20 ms frames of the phone's tone at real-time pace; returns
    /// the audio it received, decoded.
    fn talk_and_listen(phone: &Phone, frames: u32) -> Vec<i16> {
        let mut heard = Vec::new();
        let mut datagram = [0u8; 1500];
        let started = Instant::now();
        for frame in 0..frames {
            let len = tone_packet(phone, frame, &mut datagram);
            phone
                .rtp
                .send_to(&datagram[..len], phone.bridge)
                .expect("send");
            heard.extend(decoded(&received_payloads(phone)));
            let next_frame_at = started + TICK * (frame + 1);
            std::thread::sleep(next_frame_at.saturating_duration_since(Instant::now()));
        }
        heard
    }

    #[test]
    fn two_phones_each_hear_the_other_and_not_themselves() {
        let (mut media, thread) = spawn(MediaConfig {
            max_members: 4,
            ..MediaConfig::default()
        })
        .expect("spawn");
        let mut keys = MemberKeys::new(4);
        let (_, high) = add_member(&mut media, &mut keys, 1000.0);
        let (_, low) = add_member(&mut media, &mut keys, 400.0);
        let (heard_by_high, heard_by_low) = std::thread::scope(|scope| {
            let high = scope.spawn(|| talk_and_listen(&high, 50));
            let low = scope.spawn(|| talk_and_listen(&low, 50));
            (high.join().expect("phone"), low.join().expect("phone"))
        });
        media.send(Command::Shutdown).expect("queue has room");
        thread.join().expect("media thread");

        for (heard, own_hz, other_hz) in [
            (&heard_by_high, 1000.0, 400.0),
            (&heard_by_low, 400.0, 1000.0),
        ] {
            assert!(
                heard.len() >= 160 * 20,
                "only {} samples arrived",
                heard.len()
            );
            let other = tone_power(heard, other_hz);
            let own = tone_power(heard, own_hz);
            assert!(
                other > 1000.0 * own,
                "{own_hz} Hz phone: other {other:e}, own {own:e}"
            );
        }
        let stats = media.stats();
        assert!(stats.packets_in.load(Ordering::Relaxed) >= 80);
        assert!(stats.packets_out.load(Ordering::Relaxed) >= 80);
        assert_eq!(stats.malformed.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_silent_member_raises_one_rtp_timeout() {
        let (mut media, thread) = spawn(MediaConfig {
            max_members: 2,
            rtp_timeout: Some(Duration::from_millis(300)),
            ..MediaConfig::default()
        })
        .expect("spawn");
        let mut keys = MemberKeys::new(2);
        let (key, _phone) = add_member(&mut media, &mut keys, 1000.0);
        let started = Instant::now();
        let mut timeouts = Vec::new();
        while started.elapsed() < Duration::from_millis(1000) {
            while let Some(event) = media.poll_event() {
                if let Event::RtpTimeout { key } = event {
                    timeouts.push((key, started.elapsed()));
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        media
            .send(Command::RemoveMember { key })
            .expect("queue has room");
        keys.release(key);
        media.send(Command::Shutdown).expect("queue has room");
        thread.join().expect("media thread");
        assert_eq!(timeouts.len(), 1, "{timeouts:?}");
        assert_eq!(timeouts[0].0, key);
        assert!(timeouts[0].1 >= Duration::from_millis(280));
    }

    /// A room of 20 joining and then hanging up at once, through a queue of
    /// 4: what does not fit waits in `MediaHandle`'s backlog, and in the end
    /// every slot is freed, so nothing is sent to the phones any more.
    /// (Before the backlog, 16 of the removals failed and their slots kept
    /// sending.)
    #[test]
    fn a_burst_bigger_than_the_queue_waits_and_every_member_is_removed() {
        let (mut media, thread) = spawn(MediaConfig {
            max_members: 32,
            command_queue_len: 4,
            ..MediaConfig::default()
        })
        .expect("spawn");
        let mut keys = MemberKeys::new(32);
        let members: Vec<(MemberKey, Phone)> = (0..20)
            .map(|_| {
                let key = keys.allocate().expect("slot");
                let (add, phone) = member_with_phone(key, MemberFlags::default(), 1000.0);
                assert!(media.send(Command::AddMember(Box::new(add))).is_ok());
                phone
                    .rtp
                    .set_read_timeout(Some(Duration::from_millis(100)))
                    .expect("timeout");
                (key, phone)
            })
            .collect();
        assert!(media.has_backlog(), "20 adds do not fit in a queue of 4");
        let flush_all = |media: &mut MediaHandle| {
            // The media thread takes what fits in the queue each 20 ms tick.
            for _ in 0..400 {
                if !media.flush_backlog() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            panic!("the backlog did not empty within 2 s");
        };
        flush_all(&mut media);
        // Every member is in the mix: each is sent a frame every tick.
        let mut buf = [0u8; 512];
        for (_, phone) in &members {
            assert!(phone.rtp.recv_from(&mut buf).is_ok(), "every member sends");
        }

        for (key, _) in &members {
            assert!(media.send(Command::RemoveMember { key: *key }).is_ok());
            keys.release(*key);
        }
        assert!(
            media.has_backlog(),
            "20 removals do not fit in a queue of 4"
        );
        flush_all(&mut media);
        // What was sent before the last removal was taken, then silence (a
        // member left behind would keep the reads below from timing out).
        std::thread::sleep(Duration::from_millis(60));
        for (_, phone) in &members {
            for _ in 0..100 {
                if phone.rtp.recv_from(&mut buf).is_err() {
                    break;
                }
            }
            assert!(
                phone.rtp.recv_from(&mut buf).is_err(),
                "a removed member still sends"
            );
        }
        media.send(Command::Shutdown).expect("queue has room");
        thread.join().expect("media thread");
    }

    /// Three members go silent at once into an event queue of two slots,
    /// read only now and then: every timeout still arrives, once each.
    #[test]
    fn rtp_timeouts_that_find_the_event_queue_full_are_raised_again() {
        let (mut media, thread) = spawn(MediaConfig {
            max_members: 3,
            rtp_timeout: Some(Duration::from_millis(200)),
            event_queue_len: 2,
            ..MediaConfig::default()
        })
        .expect("spawn");
        let mut keys = MemberKeys::new(3);
        let members: Vec<(MemberKey, Phone)> = (0..3)
            .map(|_| add_member(&mut media, &mut keys, 1000.0))
            .collect();
        let started = Instant::now();
        let mut timeouts = Vec::new();
        while started.elapsed() < Duration::from_millis(1500) && timeouts.len() < 3 {
            std::thread::sleep(Duration::from_millis(100));
            while let Some(event) = media.poll_event() {
                if let Event::RtpTimeout { key } = event {
                    timeouts.push(key);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        while let Some(event) = media.poll_event() {
            if let Event::RtpTimeout { key } = event {
                timeouts.push(key);
            }
        }
        for (key, _) in &members {
            media
                .send(Command::RemoveMember { key: *key })
                .expect("queue has room");
            keys.release(*key);
        }
        media.send(Command::Shutdown).expect("queue has room");
        thread.join().expect("media thread");
        timeouts.sort_by_key(|key| key.slot);
        let mut expected: Vec<MemberKey> = members.iter().map(|(key, _)| *key).collect();
        expected.sort_by_key(|key| key.slot);
        assert_eq!(timeouts, expected);
    }

    #[test]
    fn removing_a_member_sends_rtcp_bye() {
        let (mut media, thread) = spawn(MediaConfig {
            max_members: 1,
            ..MediaConfig::default()
        })
        .expect("spawn");
        let mut keys = MemberKeys::new(1);
        let (key, phone) = add_member(&mut media, &mut keys, 1000.0);
        media
            .send(Command::RemoveMember { key })
            .expect("queue has room");
        keys.release(key);
        phone
            .rtcp
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let mut datagram = [0u8; 256];
        let (len, _) = phone.rtcp.recv_from(&mut datagram).expect("an RTCP packet");
        let summary = check_rtcp(&datagram[..len]).expect("valid RTCP");
        assert!(summary.has_bye);
        media.send(Command::Shutdown).expect("queue has room");
        thread.join().expect("media thread");
        assert_eq!(media.stats().commands_dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_member_alone_is_sent_silence_once_a_second_and_full_rate_once_someone_joins() {
        let (_commands_in, commands) = rtrb::RingBuffer::new(16);
        let (events, _events_out) = rtrb::RingBuffer::new(64);
        let config = MediaConfig {
            max_members: 2,
            ..MediaConfig::default()
        };
        let stats = Arc::new(MediaStats::default());
        let mut engine = Engine::new(config, commands, events, stats).expect("engine");
        let start = Instant::now();
        let key = |slot| MemberKey {
            slot,
            generation: 1,
        };
        let (add, alone) = member_with_phone(key(0), MemberFlags::default(), 1000.0);
        engine.add_member(add, start);
        let mut datagram = [0u8; 1500];
        let mut tick = 0u32;
        let mut run = |engine: &mut Engine, tick: &mut u32, ticks: u32, phones: &[&Phone]| {
            for _ in 0..ticks {
                for phone in phones {
                    let len = tone_packet(phone, *tick, &mut datagram);
                    phone
                        .rtp
                        .send_to(&datagram[..len], phone.bridge)
                        .expect("send");
                }
                std::thread::sleep(Duration::from_millis(1));
                assert_eq!(engine.tick(start + TICK * *tick, 0), Continue::Running);
                *tick += 1;
            }
        };
        let packets = |phone: &Phone| {
            phone.rtp.set_nonblocking(true).expect("nonblocking");
            let mut datagram = [0u8; 1500];
            let mut headers = Vec::new();
            while let Ok((len, _)) = phone.rtp.recv_from(&mut datagram) {
                let packet = RtpPacket::new_checked(&datagram[..len]).expect("valid RTP");
                headers.push((packet.marker(), packet.sequence(), packet.timestamp()));
            }
            headers
        };
        // Alone (talking, even): 2 s bring a packet at once and one a second.
        run(&mut engine, &mut tick, 2 * LONE_KEEPALIVE_TICKS, &[&alone]);
        let lone = packets(&alone);
        assert_eq!(lone.len(), 2, "{lone:?}");
        assert_eq!(
            lone[1].1,
            lone[0].1.wrapping_add(1),
            "sequence numbers stay contiguous"
        );
        assert_eq!(
            lone[1].2.wrapping_sub(lone[0].2),
            160 * LONE_KEEPALIVE_TICKS,
            "the timestamp keeps real time"
        );
        // Someone joins: every tick again, the first packet marked.
        let (add, other) = member_with_phone(key(1), MemberFlags::default(), 400.0);
        engine.add_member(add, start + TICK * tick);
        run(&mut engine, &mut tick, 10, &[&alone, &other]);
        let together = packets(&alone);
        assert_eq!(together.len(), 10);
        assert!(together[0].0, "the marker bit starts the talkspurt");
        assert!(together[1..].iter().all(|packet| !packet.0));
    }

    #[test]
    fn muted_is_not_heard_deaf_hears_silence_and_held_gets_nothing() {
        let (_commands_in, commands) = rtrb::RingBuffer::new(16);
        let (events, mut events_out) = rtrb::RingBuffer::new(16);
        let stats = Arc::new(MediaStats::default());
        let config = MediaConfig {
            max_members: 5,
            ..MediaConfig::default()
        };
        let mut engine = Engine::new(config, commands, events, Arc::clone(&stats)).expect("engine");
        let flags = [
            MemberFlags::default(),
            MemberFlags {
                muted: true,
                ..MemberFlags::default()
            },
            MemberFlags {
                deaf: true,
                ..MemberFlags::default()
            },
            MemberFlags {
                held: true,
                ..MemberFlags::default()
            },
            MemberFlags::default(),
        ];
        let tones = [1000.0, 400.0, 0.0, 0.0, 0.0];
        let start = Instant::now();
        let phones: Vec<(MemberKey, Phone)> = (0..5)
            .map(|slot| {
                let key = MemberKey {
                    slot,
                    generation: 1,
                };
                let (add, phone) =
                    member_with_phone(key, flags[slot as usize], tones[slot as usize]);
                engine.add_member(add, start);
                (key, phone)
            })
            .collect();
        let mut datagram = [0u8; 1500];
        for frame in 0..20u32 {
            for (_, phone) in &phones[..2] {
                let len = tone_packet(phone, frame, &mut datagram);
                phone
                    .rtp
                    .send_to(&datagram[..len], phone.bridge)
                    .expect("send");
            }
            // Faster than real time: the engine takes the time it is given.
            std::thread::sleep(Duration::from_millis(1));
            assert_eq!(engine.tick(start + TICK * frame, 0), Continue::Running);
        }

        let listener = decoded(&received_payloads(&phones[4].1));
        assert!(tone_power(&listener, 1000.0) > 1000.0 * tone_power(&listener, 400.0));
        let deaf = received_payloads(&phones[2].1);
        assert_eq!(deaf.len(), 20);
        assert!(deaf
            .iter()
            .flatten()
            .all(|&byte| byte == Codec::Pcmu.silence_byte()));
        assert!(received_payloads(&phones[3].1).is_empty());

        let talker = phones[0].0;
        let mut talking = Vec::new();
        while let Ok(event) = events_out.pop() {
            if let Event::Talking { key, talking: on } = event {
                talking.push((key, on));
            }
        }
        assert_eq!(talking, [(talker, true)]);
    }

    /// An engine on loopback (with a shared port unless made `per_call`),
    /// driven tick by tick.
    struct TickedBridge {
        engine: Engine,
        commands: rtrb::Producer<Command>,
        stats: Arc<MediaStats>,
        port: SocketAddr,
        start: Instant,
        ticks: u32,
    }

    impl TickedBridge {
        fn new(max_members: usize) -> TickedBridge {
            TickedBridge::with_shared_port(max_members, Some(SocketAddr::from(([127, 0, 0, 1], 0))))
        }

        /// Members bring their own sockets (`add_own`).
        fn per_call(max_members: usize) -> TickedBridge {
            TickedBridge::with_shared_port(max_members, None)
        }

        fn with_shared_port(max_members: usize, shared_port: Option<SocketAddr>) -> TickedBridge {
            let (commands, commands_out) = rtrb::RingBuffer::new(16);
            let (events, _events_out) = rtrb::RingBuffer::new(1024);
            let stats = Arc::new(MediaStats::default());
            let config = MediaConfig {
                max_members,
                shared_port,
                ..MediaConfig::default()
            };
            let engine = Engine::new(config, commands_out, events, Arc::clone(&stats))
                .expect("bind a shared pair on loopback");
            let port = engine.shared_port().unwrap_or(0);
            TickedBridge {
                engine,
                commands,
                stats,
                port: SocketAddr::from(([127, 0, 0, 1], port)),
                start: Instant::now(),
                ticks: 0,
            }
        }

        /// A member with its own RTP/RTCP pair, bound to explicit ports as the
        /// call's port pool binds them, and our SDP naming `sdp_ip`; returns
        /// a clone of its RTP socket too, kept as the call keeps it.
        fn add_own(
            &mut self,
            slot: u32,
            sdp_ip: IpAddr,
            tone_hz: f64,
        ) -> (MemberKey, Phone, UdpSocket) {
            self.add_own_bound(slot, IpAddr::from([127, 0, 0, 1]), sdp_ip, tone_hz)
        }

        /// As `add_own`, the member's sockets bound on `bind`; an IPv4
        /// phone talks to an IPv4-mapped `bind` at the IPv4 address.
        fn add_own_bound(
            &mut self,
            slot: u32,
            bind: IpAddr,
            sdp_ip: IpAddr,
            tone_hz: f64,
        ) -> (MemberKey, Phone, UdpSocket) {
            let key = MemberKey {
                slot,
                generation: 1,
            };
            let sockets = (explicit_port_socket(bind), explicit_port_socket(bind));
            let kept = sockets.0.try_clone().expect("clone");
            let (add, mut phone) =
                member_on(sockets, Some(sdp_ip), key, MemberFlags::default(), tone_hz);
            phone.bridge = SocketAddr::new(bind.to_canonical(), phone.bridge.port());
            self.command(Command::AddMember(Box::new(add)));
            (key, phone, kept)
        }

        /// Adds a member on the shared port whose SDP names `sdp_rtp`; the
        /// phone sends from `phone.rtp`, whatever the SDP said.
        fn add(&mut self, slot: u32, sdp_rtp: SocketAddr, tone_hz: f64) -> (MemberKey, Phone) {
            let key = MemberKey {
                slot,
                generation: 1,
            };
            let phone = Phone {
                rtp: loopback_socket(),
                rtcp: loopback_socket(),
                bridge: self.port,
                tone_hz,
            };
            let add = AddMember {
                key,
                mix: 0,
                sockets: MemberSockets::Shared,
                remote_rtp: sdp_rtp,
                remote_rtcp: SocketAddr::new(sdp_rtp.ip(), sdp_rtp.port() + 1),
                signalling_ip: Some(sdp_rtp.ip()),
                codec: Codec::Pcmu,
                payload_type: 0,
                telephone_event_pt: Some(101),
                telephone_event_rate_hz: 8000,
                flags: MemberFlags::default(),
                keypad: true,
                opus: None,
                srtp: None,
                link: false,
            };
            self.command(Command::AddMember(Box::new(add)));
            (key, phone)
        }

        /// A member whose phone sends from exactly the address its SDP named.
        fn add_phone(&mut self, slot: u32, tone_hz: f64) -> (MemberKey, Phone) {
            let socket = loopback_socket();
            let (key, mut phone) = self.add(slot, address(&socket), tone_hz);
            phone.rtp = socket;
            (key, phone)
        }

        fn command(&mut self, command: Command) {
            self.commands.push(command).expect("queue has room");
        }

        /// `frames` ticks faster than real time, each `talkers` sending one frame first.
        fn run(&mut self, talkers: &[&Phone], frames: u32) {
            let mut datagram = [0u8; 1500];
            for _ in 0..frames {
                for phone in talkers {
                    let len = tone_packet(phone, self.ticks, &mut datagram);
                    phone
                        .rtp
                        .send_to(&datagram[..len], phone.bridge)
                        .expect("send");
                }
                // Loopback delivery is immediate, but give the kernel a moment.
                std::thread::sleep(Duration::from_millis(1));
                let now = self.start + TICK * self.ticks;
                assert_eq!(self.engine.tick(now, 0), Continue::Running);
                self.ticks += 1;
            }
        }

        fn packets_in(&self) -> u64 {
            self.stats.packets_in.load(Ordering::Relaxed)
        }
    }

    /// The phone hears the `heard_hz` tone and not its own.
    fn hears_only(phone: &Phone, heard_hz: f64) {
        let heard = decoded(&received_payloads(phone));
        assert!(heard.len() >= 160 * 10, "only {} samples", heard.len());
        let other = tone_power(&heard, heard_hz);
        let own = tone_power(&heard, phone.tone_hz);
        assert!(other > 1000.0 * own, "other {other:e}, own {own:e}");
    }

    #[test]
    fn an_own_socket_is_connected_to_its_phone_and_freed_for_a_phone_that_moved() {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        let mut bridge = TickedBridge::per_call(4);
        let (key, phone, kept) = bridge.add_own(0, loopback, 1000.0);
        let (_, listener, _) = bridge.add_own(1, loopback, 400.0);
        let port = address(&kept).port();
        bridge.run(&[&phone, &listener], 10);
        assert_eq!(kept.peer_addr().ok(), Some(address(&phone.rtp)));
        assert_eq!(
            bridge.engine.rtp_connected_to(key),
            Some(address(&phone.rtp))
        );
        hears_only(&listener, 1000.0);
        hears_only(&phone, 400.0);

        // The phone moves (a NAT rebinding): nothing from the new port is
        // taken while the old stream is alive, as without a connection.
        let moved = Phone {
            rtp: loopback_socket(),
            rtcp: loopback_socket(),
            bridge: phone.bridge,
            tone_hz: phone.tone_hz,
        };
        let before = bridge.packets_in();
        bridge.run(&[&moved], 5);
        assert_eq!(bridge.packets_in(), before);
        // Dropped by the kernel for the connection, so not counted.
        assert_eq!(bridge.stats.foreign.load(Ordering::Relaxed), 0);
        // Silent for over a second: the connection is dissolved, the socket
        // keeps its port, and the moved stream is learned after a run in
        // sequence, but not connected to (its SDP address could still win
        // it back).
        bridge.run(&[&listener], 60);
        assert!(kept.peer_addr().is_err(), "still connected");
        assert_eq!(address(&kept).port(), port);
        let _ = received_payloads(&listener);
        bridge.run(&[&moved, &listener], 15);
        assert_eq!(
            bridge.stats.learning.load(Ordering::Relaxed),
            u64::from(LEARN_RUN) - 1
        );
        hears_only(&listener, 1000.0);
        hears_only(&moved, 400.0);
        assert!(kept.peer_addr().is_err(), "connected to a learned address");
        assert_eq!(bridge.engine.remote_rtp(key), address(&moved.rtp));

        // The SDP address wins the stream back at its first packet, and the
        // socket is connected to it again.
        let _ = received_payloads(&phone);
        bridge.run(&[&phone, &listener], 15);
        assert_eq!(kept.peer_addr().ok(), Some(address(&phone.rtp)));
        hears_only(&phone, 400.0);

        // A connection dissolved behind the member's back (by another holder
        // of the call's socket) costs one packet and is made again.
        disconnect(kept.as_raw_fd()).expect("disconnect");
        let _ = received_payloads(&phone);
        bridge.run(&[&phone, &listener], 15);
        assert_eq!(kept.peer_addr().ok(), Some(address(&phone.rtp)));
        let heard = received_payloads(&phone).len();
        assert!(heard >= 13, "the phone got {heard} of 15 packets");

        // Leaving dissolves it, so the call's socket takes any source again.
        bridge.command(Command::RemoveMember { key });
        bridge.run(&[], 1);
        assert!(kept.peer_addr().is_err(), "still connected after leaving");
        assert_eq!(address(&kept).port(), port);
    }

    #[test]
    fn an_own_socket_is_not_connected_when_our_sdp_named_another_address() {
        // The route to the phone leaves from 127.0.0.1, but the SDP told it
        // to send to 127.0.0.2: connected, the socket would take datagrams
        // at 127.0.0.1 only.
        let mut bridge = TickedBridge::per_call(4);
        let (key, phone, kept) = bridge.add_own(0, IpAddr::from([127, 0, 0, 2]), 1000.0);
        let (_, listener, _) = bridge.add_own(1, IpAddr::from([127, 0, 0, 1]), 400.0);
        bridge.run(&[&phone, &listener], 15);
        assert!(kept.peer_addr().is_err());
        assert_eq!(bridge.engine.rtp_connected_to(key), None);
        hears_only(&listener, 1000.0);
        hears_only(&phone, 400.0);
    }

    #[test]
    fn an_own_dual_stack_socket_is_connected_to_an_ipv4_phone() {
        // An IPv6 socket carrying IPv4, as one bound to `::` does, on loopback.
        let mapped = IpAddr::from(std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        let loopback = IpAddr::from([127, 0, 0, 1]);
        let mut bridge = TickedBridge::per_call(4);
        let (key, talker, kept) = bridge.add_own_bound(0, mapped, loopback, 1000.0);
        let (_, listener, _) = bridge.add_own_bound(1, mapped, loopback, 400.0);
        bridge.run(&[&talker, &listener], 10);
        assert_eq!(
            bridge.engine.rtp_connected_to(key),
            Some(address(&talker.rtp))
        );
        assert!(kept.peer_addr().is_ok(), "not connected");
        assert_eq!(bridge.stats.foreign.load(Ordering::Relaxed), 0);
        hears_only(&listener, 1000.0);
        hears_only(&talker, 400.0);
    }

    #[test]
    fn a_dual_stack_shared_port_tells_ipv4_phones_apart_and_they_hear_each_other() {
        let mapped_loopback = "[::ffff:127.0.0.1]:0".parse().expect("address");
        let mut bridge = TickedBridge::with_shared_port(4, Some(mapped_loopback));
        let (_, high) = bridge.add_phone(0, 1000.0);
        let (_, low) = bridge.add_phone(1, 400.0);
        bridge.run(&[&high, &low], 10);
        assert_eq!(bridge.stats.foreign.load(Ordering::Relaxed), 0);
        hears_only(&low, 1000.0);
        hears_only(&high, 400.0);
    }

    #[test]
    fn shared_port_members_are_told_apart_by_source_and_hear_each_other() {
        let mut bridge = TickedBridge::new(4);
        let (_, high) = bridge.add_phone(0, 1000.0);
        let (_, low) = bridge.add_phone(1, 400.0);
        bridge.run(&[&high, &low], 20);
        hears_only(&high, 400.0);
        hears_only(&low, 1000.0);
        assert_eq!(bridge.packets_in(), 40);
        assert_eq!(bridge.stats.packets_out.load(Ordering::Relaxed), 40);
        assert_eq!(bridge.stats.send_errors.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn shared_port_learns_a_rewritten_port_for_the_one_member_learning_at_that_ip() {
        let mut bridge = TickedBridge::new(4);
        // The SDP names a port nobody sends from (a NAT rewrote it).
        let (key, behind_nat) = bridge.add(0, SocketAddr::from(([127, 0, 0, 1], 9)), 1000.0);
        let (_, listener) = bridge.add_phone(1, 400.0);
        // Its first moments an unknown port is as likely a newer call from
        // the same IP whose member is not filed yet; then a run in sequence.
        let guard_ticks = (NAT_LATCH_AFTER.as_millis() / TICK.as_millis()) as u32;
        let learning_ticks = guard_ticks + u32::from(LEARN_RUN) - 1;
        bridge.run(&[&behind_nat, &listener], learning_ticks);
        assert_eq!(
            bridge.engine.remote_rtp(key),
            SocketAddr::from(([127, 0, 0, 1], 9))
        );
        // (Loopback may hand a datagram to the next tick: counted, not exact.)
        assert!(bridge.stats.learning.load(Ordering::Relaxed) >= u64::from(guard_ticks));
        let _ = received_payloads(&listener);
        let _ = received_payloads(&behind_nat);
        bridge.run(&[&behind_nat, &listener], 20);
        hears_only(&listener, 1000.0);
        hears_only(&behind_nat, 400.0);
        assert_eq!(bridge.engine.remote_rtp(key), address(&behind_nat.rtp));

        // Locked and alive: another stream at the same IP is not taken,
        // however long its run in sequence.
        let intruder = loopback_socket();
        let before = bridge.packets_in();
        let mut datagram = [0u8; 200];
        for sequence in 0..20u16 {
            let header = RtpHeader {
                payload_type: 0,
                marker: false,
                sequence,
                timestamp: 160 * u32::from(sequence),
                ssrc: 0xBAD,
            };
            let len = write_rtp(&header, &[0xFF; 160], &mut datagram).expect("fits");
            intruder
                .send_to(&datagram[..len], bridge.port)
                .expect("send");
            bridge.run(&[&behind_nat], 1);
        }
        assert_eq!(bridge.packets_in(), before + 20, "only the phone's own");
        assert_eq!(bridge.engine.remote_rtp(key), address(&behind_nat.rtp));
        // Two members at that IP: nobody can tell whose it would be.
        assert!(bridge.stats.ambiguous.load(Ordering::Relaxed) >= 20);
    }

    #[test]
    fn shared_port_rtp_from_an_unknown_port_is_dropped_when_two_members_learn_at_that_ip() {
        let mut bridge = TickedBridge::new(4);
        let nowhere = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let (_, first) = bridge.add(0, nowhere(9), 1000.0);
        let (_, _second) = bridge.add(1, nowhere(11), 400.0);
        bridge.run(&[&first], 5);
        assert_eq!(bridge.packets_in(), 0);
        assert_eq!(bridge.stats.ambiguous.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn shared_port_follows_a_new_remote_address_and_forgets_a_removed_member() {
        let mut bridge = TickedBridge::new(4);
        let (key, talker) = bridge.add_phone(0, 1000.0);
        let (_, listener) = bridge.add_phone(1, 400.0);
        bridge.run(&[&talker, &listener], 10);
        assert_eq!(bridge.packets_in(), 20);

        // A re-INVITE moves the talker to a new socket: the old one is foreign.
        let moved = Phone {
            rtp: loopback_socket(),
            ..talker
        };
        bridge.command(Command::SetRemote {
            key,
            remote_rtp: address(&moved.rtp),
            remote_rtcp: address(&moved.rtcp),
        });
        received_payloads(&listener);
        bridge.run(&[&moved, &listener], 10);
        assert_eq!(bridge.packets_in(), 40);
        hears_only(&listener, 1000.0);
        let old = Phone {
            rtp: talker.rtp,
            rtcp: loopback_socket(),
            ..moved
        };
        bridge.run(&[&old], 5);
        assert_eq!(bridge.packets_in(), 40, "the old address is nobody's");

        // Removed: its RTP is dropped and nothing more is sent to it.
        bridge.command(Command::RemoveMember { key });
        bridge.run(&[], 1);
        received_payloads(&moved);
        bridge.run(&[&moved], 5);
        assert_eq!(bridge.packets_in(), 40);
        assert!(received_payloads(&moved).is_empty());
        assert_eq!(bridge.engine.core.active_members(), 1);
    }

    #[test]
    fn shared_port_hold_and_resume_keep_the_member_found() {
        let mut bridge = TickedBridge::new(4);
        let (key, talker) = bridge.add_phone(0, 1000.0);
        let (_, listener) = bridge.add_phone(1, 400.0);
        bridge.run(&[&talker, &listener], 5);
        let held = MemberFlags {
            held: true,
            ..MemberFlags::default()
        };
        bridge.command(Command::SetFlags { key, flags: held });
        bridge.run(&[&listener], 5);
        received_payloads(&talker);
        bridge.run(&[&listener], 5);
        assert!(received_payloads(&talker).is_empty(), "held: nothing sent");
        bridge.command(Command::SetFlags {
            key,
            flags: MemberFlags::default(),
        });
        received_payloads(&listener);
        let before = bridge.packets_in();
        bridge.run(&[&talker, &listener], 20);
        assert_eq!(bridge.packets_in(), before + 40);
        hears_only(&listener, 1000.0);
        hears_only(&talker, 400.0);
    }

    #[test]
    fn a_report_to_a_members_own_rtcp_socket_is_latched_within_a_poll_period() {
        let mut bridge = TickedBridge::per_call(1);
        let (key, phone, _) = bridge.add_own(0, IpAddr::from([127, 0, 0, 1]), 1000.0);
        bridge.run(&[&phone], 1);
        let member_rtcp = address(&bridge.engine.sockets.own[0].as_ref().expect("own").rtcp);
        let reporter = loopback_socket();
        assert_ne!(bridge.engine.remote_rtcp(key), address(&reporter));
        let mut report = [0u8; RTCP_COMPOUND_MAX_BYTES];
        let len = write_rtcp_report(ssrc_of(&phone), None, None, false, &mut report).expect("fits");
        reporter.send_to(&report[..len], member_rtcp).expect("send");
        bridge.run(&[&phone], RTCP_POLL_TICKS as u32);
        assert_eq!(bridge.engine.remote_rtcp(key), address(&reporter));
    }

    #[test]
    fn shared_port_rtcp_is_matched_by_ssrc_and_reports_leave_the_shared_pair() {
        let mut bridge = TickedBridge::new(2);
        let (key, phone) = bridge.add_phone(0, 1000.0);
        bridge.run(&[&phone], 2);
        // A receiver report from a port nobody named, about the stream's SSRC.
        let reporter = loopback_socket();
        let mut report = [0u8; RTCP_COMPOUND_MAX_BYTES];
        let len = write_rtcp_report(ssrc_of(&phone), None, None, false, &mut report).expect("fits");
        let shared_rtcp = SocketAddr::new(bridge.port.ip(), bridge.port.port() + 1);
        reporter.send_to(&report[..len], shared_rtcp).expect("send");
        bridge.run(&[&phone], RTCP_POLL_TICKS as u32);
        assert_eq!(bridge.engine.remote_rtcp(key), address(&reporter));

        bridge.command(Command::RemoveMember { key });
        bridge.run(&[], 1);
        reporter
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let mut datagram = [0u8; 256];
        let (len, from) = reporter.recv_from(&mut datagram).expect("an RTCP BYE");
        assert!(check_rtcp(&datagram[..len]).expect("valid RTCP").has_bye);
        assert_eq!(from, shared_rtcp);
    }
}
