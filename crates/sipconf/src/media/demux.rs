//! Which member a datagram on the shared RTP port (`media.shared_port`)
//! belongs to, found from its source address. The tables are open-addressing
//! hash tables with a fixed number of entries chosen at start, so finding,
//! adding and removing a member on the tick never allocates.
//!
//! A member is found by its SDP address and by the address its stream was
//! learned at. A datagram from another port at one of a member's IPs (its
//! signalling source's or its SDP address's) is handed to that member when it
//! is the only one there who could be learning (`media/latch.rs` then wants
//! a run in sequence before it takes it); where several could, nobody can
//! tell which, and it is dropped.

use std::net::{IpAddr, SocketAddr};

/// A fixed-capacity map from socket address to `V`, with linear probing and
/// backward-shift deletion (no tombstones, so lookups stay short however
/// many members come and go).
///
/// It holds at most `max_keys` keys and has at least twice as many entries,
/// so a probe always ends at an empty entry and the load stays below one half.
pub struct AddressTable<V> {
    entries: Box<[Option<(SocketAddr, V)>]>,
    /// log2 of the number of entries.
    bits: u32,
    len: usize,
    max_keys: usize,
}

/// `AddressTable::insert` refused a new key: `max_keys` are stored already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFull;

impl<V: Copy> AddressTable<V> {
    /// A table for up to `max_keys` keys, all of its memory allocated now.
    pub fn new(max_keys: usize) -> AddressTable<V> {
        let entries = (2 * max_keys.max(1)).next_power_of_two();
        AddressTable {
            entries: vec![None; entries].into_boxed_slice(),
            bits: entries.trailing_zeros(),
            len: 0,
            max_keys: max_keys.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn mask(&self) -> usize {
        self.entries.len() - 1
    }

    /// Fibonacci hashing of the address folded to 64 bits: the top bits of
    /// the product are well mixed even when only the port differs.
    fn home(&self, key: &SocketAddr) -> usize {
        let folded = match key {
            SocketAddr::V4(v4) => (u64::from(u32::from(*v4.ip())) << 16) | u64::from(v4.port()),
            SocketAddr::V6(v6) => {
                let ip = u128::from(*v6.ip());
                ((ip >> 64) as u64 ^ ip as u64).rotate_left(16) ^ u64::from(v6.port())
            }
        };
        let product = folded.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (product >> (64 - self.bits)) as usize & self.mask()
    }

    /// Where `key` is stored, if it is. Inlined into the shared port's
    /// lookup of every datagram: left to itself the compiler stopped
    /// doing so when the receive path grew SRTP (+0.6 % instructions).
    #[inline(always)]
    fn position(&self, key: &SocketAddr) -> Option<usize> {
        let mut at = self.home(key);
        // The table is never full, so an empty entry ends every probe.
        loop {
            match &self.entries[at] {
                None => return None,
                Some((stored, _)) if stored == key => return Some(at),
                Some(_) => at = (at + 1) & self.mask(),
            }
        }
    }

    #[inline(always)]
    pub fn get(&self, key: &SocketAddr) -> Option<V> {
        self.position(key)
            .and_then(|at| self.entries[at].map(|(_, value)| value))
    }

    /// Stores `value` under `key`, replacing and returning what was there.
    pub fn insert(&mut self, key: SocketAddr, value: V) -> Result<Option<V>, TableFull> {
        if let Some(at) = self.position(&key) {
            let old = self.entries[at].map(|(_, old)| old);
            self.entries[at] = Some((key, value));
            return Ok(old);
        }
        if self.len >= self.max_keys {
            return Err(TableFull);
        }
        let mut at = self.home(&key);
        while self.entries[at].is_some() {
            at = (at + 1) & self.mask();
        }
        self.entries[at] = Some((key, value));
        self.len += 1;
        Ok(None)
    }

    /// Removes `key`; returns its value if it was there.
    pub fn remove(&mut self, key: &SocketAddr) -> Option<V> {
        let mut hole = self.position(key)?;
        let removed = self.entries[hole].take().map(|(_, value)| value);
        self.len -= 1;
        // Backward shift: move each later entry of the run into the hole when
        // its home is not between the hole and itself (cyclically), so no
        // probe that passed the hole's old occupant stops early.
        let mut next = (hole + 1) & self.mask();
        while let Some((stored, _)) = &self.entries[next] {
            let home = self.home(stored);
            let distance_to_next = next.wrapping_sub(home) & self.mask();
            let distance_to_hole = hole.wrapping_sub(home) & self.mask();
            if distance_to_hole < distance_to_next {
                self.entries[hole] = self.entries[next].take();
                hole = next;
            }
            next = (next + 1) & self.mask();
        }
        removed
    }
}

/// The members filed at one IP: how many, and the XOR of their slot indices
/// (which is the slot itself when there is one); the same for those still
/// learning their stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct AtIp {
    members: u32,
    members_xor: u32,
    learning: u32,
    learning_xor: u32,
}

/// What a member is filed under; `None` where it is not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filed {
    /// Its SDP address, and the address its stream was learned at when that
    /// is another.
    pub rtp: [Option<SocketAddr>; 2],
    pub rtcp: Option<SocketAddr>,
    /// The IPs a stream of its may be learned at.
    pub ips: [Option<IpAddr>; 2],
    /// No stream is locked yet.
    pub learning: bool,
}

/// Who sent a datagram to the shared RTP port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// The member whose address it is.
    Member(usize),
    /// No member has the address, but it is at the IP of exactly one member
    /// who could be learning its stream there: that member's latch decides.
    AtIpOf(usize),
    /// At an IP where several members could be learning: nobody can tell which.
    Ambiguous,
    /// Nobody's.
    Foreign,
}

/// The demultiplexer of one shared port: RTP and RTCP addresses and member
/// IPs, and what each slot is filed under (so a change can be undone exactly).
pub struct Demux {
    rtp: AddressTable<u32>,
    rtcp: AddressTable<u32>,
    at_ip: AddressTable<AtIp>,
    filed: Box<[Filed]>,
}

impl Demux {
    /// Each of `max_members` slots is filed under at most two keys in the
    /// RTP and IP tables and one in the RTCP table, so no table ever holds
    /// more than it was made for and an insert cannot fail; `TableFull` is
    /// still handled (the member is not found, never a panic).
    pub fn new(max_members: usize) -> Demux {
        Demux {
            rtp: AddressTable::new(2 * max_members),
            rtcp: AddressTable::new(max_members),
            at_ip: AddressTable::new(2 * max_members),
            filed: vec![Filed::default(); max_members].into_boxed_slice(),
        }
    }

    /// What slot `index` is filed under now.
    pub fn filed(&self, index: usize) -> Filed {
        self.filed.get(index).copied().unwrap_or_default()
    }

    /// Files slot `index` under `wanted` (all `None` to forget it), changing
    /// only what differs from what it was filed under.
    pub fn file(&mut self, index: usize, wanted: Filed) {
        let Some(&filed) = self.filed.get(index) else {
            return;
        };
        if filed == wanted {
            return;
        }
        let slot = index as u32;
        if filed.rtp != wanted.rtp {
            for old in filed.rtp.into_iter().flatten() {
                remove_if_owner(&mut self.rtp, &old, slot);
            }
            for new in wanted.rtp.into_iter().flatten() {
                // Two members with one address: the newer one is found.
                let _ = self.rtp.insert(new, slot);
            }
        }
        if filed.rtcp != wanted.rtcp {
            if let Some(old) = filed.rtcp {
                remove_if_owner(&mut self.rtcp, &old, slot);
            }
            if let Some(new) = wanted.rtcp {
                let _ = self.rtcp.insert(new, slot);
            }
        }
        let mut ips = wanted.ips;
        if filed.ips != wanted.ips || filed.learning != wanted.learning {
            for ip in filed.ips.into_iter().flatten() {
                self.leave_ip(ip, slot, filed.learning);
            }
            for ip in ips.iter_mut() {
                if let Some(address) = *ip {
                    if !self.join_ip(address, slot, wanted.learning) {
                        *ip = None;
                    }
                }
            }
        }
        self.filed[index] = Filed { ips, ..wanted };
    }

    fn join_ip(&mut self, ip: IpAddr, slot: u32, learning: bool) -> bool {
        let key = SocketAddr::new(ip, 0);
        let mut at = self.at_ip.get(&key).unwrap_or_default();
        at.members += 1;
        at.members_xor ^= slot;
        if learning {
            at.learning += 1;
            at.learning_xor ^= slot;
        }
        self.at_ip.insert(key, at).is_ok()
    }

    fn leave_ip(&mut self, ip: IpAddr, slot: u32, learning: bool) {
        let key = SocketAddr::new(ip, 0);
        let Some(mut at) = self.at_ip.get(&key) else {
            return;
        };
        if at.members <= 1 {
            self.at_ip.remove(&key);
            return;
        }
        at.members -= 1;
        at.members_xor ^= slot;
        if learning && at.learning > 0 {
            at.learning -= 1;
            at.learning_xor ^= slot;
        }
        let _ = self.at_ip.insert(key, at);
    }

    /// Who sent an RTP datagram from `source`.
    pub fn rtp_sender(&self, source: SocketAddr) -> Sender {
        if let Some(slot) = self.rtp.get(&source) {
            return Sender::Member(slot as usize);
        }
        let Some(at) = self.at_ip.get(&SocketAddr::new(source.ip(), 0)) else {
            return Sender::Foreign;
        };
        // One member learning at the IP is the one a new stream there may be
        // (the others have theirs). None learning: a member whose stream
        // moved, when it is the only one there.
        match (at.learning, at.members) {
            (1, _) => Sender::AtIpOf(at.learning_xor as usize),
            (0, 1) => Sender::AtIpOf(at.members_xor as usize),
            _ => Sender::Ambiguous,
        }
    }

    /// The member whose RTCP address `source` is.
    pub fn rtcp_sender(&self, source: SocketAddr) -> Option<usize> {
        self.rtcp.get(&source).map(|slot| slot as usize)
    }
}

/// Removes `key` only if `slot` owns it: another member may have taken the
/// address over since.
fn remove_if_owner(table: &mut AddressTable<u32>, key: &SocketAddr, slot: u32) {
    if table.get(key) == Some(slot) {
        table.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, last], port))
    }

    fn member_at(address: SocketAddr, learning: bool) -> Filed {
        Filed {
            rtp: [Some(address), None],
            rtcp: Some(SocketAddr::new(address.ip(), address.port() + 1)),
            ips: [Some(address.ip()), None],
            learning,
        }
    }

    #[test]
    fn table_finds_what_was_inserted_and_forgets_what_was_removed() {
        let mut table = AddressTable::new(4);
        assert_eq!(table.insert(at(1, 4000), 1u32), Ok(None));
        assert_eq!(table.insert(at(1, 4002), 2), Ok(None));
        assert_eq!(table.insert(at(1, 4000), 3), Ok(Some(1)), "replaces");
        assert_eq!(table.get(&at(1, 4000)), Some(3));
        assert_eq!(table.get(&at(1, 4002)), Some(2));
        assert_eq!(table.get(&at(2, 4000)), None);
        assert_eq!(table.remove(&at(1, 4000)), Some(3));
        assert_eq!(table.get(&at(1, 4000)), None);
        assert_eq!(table.get(&at(1, 4002)), Some(2));
        assert_eq!(table.remove(&at(1, 4000)), None);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_full_table_refuses_a_new_key_but_still_replaces_and_frees() {
        let mut table = AddressTable::new(3);
        for port in 0..3 {
            assert_eq!(table.insert(at(1, port), u32::from(port)), Ok(None));
        }
        assert_eq!(table.insert(at(1, 9), 9), Err(TableFull));
        assert_eq!(table.insert(at(1, 2), 7), Ok(Some(2)));
        table.remove(&at(1, 0));
        assert_eq!(table.insert(at(1, 9), 9), Ok(None));
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn removal_keeps_every_other_key_findable_through_churn() {
        // Many keys in a small table: long probe runs that wrap around.
        let mut table = AddressTable::new(64);
        let key = |n: u16| at((n % 3) as u8, 10_000 + n * 2);
        let mut present = std::collections::HashSet::new();
        for round in 0..2000u32 {
            let n = (round.wrapping_mul(2_654_435_761) >> 7) as u16 % 100;
            if present.contains(&n) {
                assert_eq!(table.remove(&key(n)), Some(u32::from(n)));
                present.remove(&n);
            } else if table.insert(key(n), u32::from(n)).is_ok() {
                present.insert(n);
            } else {
                assert_eq!(present.len(), 64);
            }
            for &m in &present {
                assert_eq!(table.get(&key(m)), Some(u32::from(m)), "round {round}");
            }
            assert_eq!(table.len(), present.len());
        }
    }

    #[test]
    fn members_are_found_by_rtp_and_rtcp_address_and_forgotten_when_unfiled() {
        let mut demux = Demux::new(4);
        demux.file(0, member_at(at(1, 4000), false));
        demux.file(1, member_at(at(2, 4000), false));
        assert_eq!(demux.rtp_sender(at(1, 4000)), Sender::Member(0));
        assert_eq!(demux.rtp_sender(at(2, 4000)), Sender::Member(1));
        assert_eq!(demux.rtcp_sender(at(2, 4001)), Some(1));
        demux.file(0, Filed::default());
        assert_eq!(demux.rtp_sender(at(1, 4000)), Sender::Foreign);
        assert_eq!(demux.rtcp_sender(at(1, 4001)), None);
        assert_eq!(demux.rtp_sender(at(2, 4000)), Sender::Member(1));
    }

    #[test]
    fn a_new_remote_address_replaces_the_old_one() {
        let mut demux = Demux::new(2);
        demux.file(0, member_at(at(1, 4000), false));
        demux.file(0, member_at(at(1, 5000), false));
        // Still at the member's IP: its latch, not the table, decides.
        assert_eq!(demux.rtp_sender(at(1, 4000)), Sender::AtIpOf(0));
        assert_eq!(demux.rtp_sender(at(1, 5000)), Sender::Member(0));
    }

    #[test]
    fn an_unknown_port_goes_to_the_one_member_learning_at_that_ip() {
        let mut demux = Demux::new(4);
        let rewritten = at(1, 31_337);
        demux.file(0, member_at(at(1, 4000), true));
        assert_eq!(demux.rtp_sender(rewritten), Sender::AtIpOf(0));
        assert_eq!(demux.rtp_sender(at(9, 4000)), Sender::Foreign, "other IP");

        // Two learning at one IP: nobody can tell which.
        demux.file(2, member_at(at(1, 4002), true));
        assert_eq!(demux.rtp_sender(rewritten), Sender::Ambiguous);

        // One of them locked its stream: the other is again the one.
        demux.file(0, member_at(at(1, 4000), false));
        assert_eq!(demux.rtp_sender(rewritten), Sender::AtIpOf(2));
        // Both locked: two members there, none learning.
        demux.file(2, member_at(at(1, 4002), false));
        assert_eq!(demux.rtp_sender(rewritten), Sender::Ambiguous);
        // One left: a stream of the other's may have moved.
        demux.file(0, Filed::default());
        assert_eq!(demux.rtp_sender(rewritten), Sender::AtIpOf(2));
        demux.file(2, Filed::default());
        assert_eq!(demux.rtp_sender(rewritten), Sender::Foreign);
    }

    #[test]
    fn a_member_is_found_at_its_sdp_address_and_where_its_stream_was_learned() {
        let mut demux = Demux::new(2);
        let signalling = IpAddr::from([203, 0, 113, 5]);
        let learned = SocketAddr::new(signalling, 31_000);
        demux.file(
            0,
            Filed {
                rtp: [Some(at(1, 4000)), Some(learned)],
                rtcp: None,
                ips: [Some(at(1, 0).ip()), Some(signalling)],
                learning: false,
            },
        );
        assert_eq!(demux.rtp_sender(at(1, 4000)), Sender::Member(0));
        assert_eq!(demux.rtp_sender(learned), Sender::Member(0));
        assert_eq!(
            demux.rtp_sender(SocketAddr::new(signalling, 9)),
            Sender::AtIpOf(0)
        );
        demux.file(0, Filed::default());
        assert_eq!(demux.rtp_sender(learned), Sender::Foreign);
    }

    #[test]
    fn a_member_that_lost_its_address_to_another_does_not_remove_it() {
        let mut demux = Demux::new(2);
        demux.file(0, member_at(at(1, 4000), false));
        demux.file(1, member_at(at(1, 4000), false));
        assert_eq!(demux.rtp_sender(at(1, 4000)), Sender::Member(1));
        demux.file(0, Filed::default());
        assert_eq!(demux.rtp_sender(at(1, 4000)), Sender::Member(1));
    }
}
