//! SIP transactions (RFC 3261 section 17, RFC 6026): the state machines that absorb
//! retransmitted requests, retransmit our responses and requests over UDP, and time out.
//!
//! Sans-IO: every method takes `now` and returns the bytes to (re)send; the endpoint owns
//! the tables and the sockets are elsewhere.

use super::Transport;
use bytes::Bytes;
use ezk_sip_types::Method;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// RFC 3261 timer T4: how long a message may stay in the network. Timer I uses it.
pub const T4: Duration = Duration::from_secs(5);

/// Timer values of RFC 3261 section 17 and table 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
}

impl Timers {
    /// Timers B, F, H, J and L: 64*T1.
    pub fn timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

/// A message sent again and again, the interval doubling from T1 up to T2, until
/// `give_up_at` (timers G/H for responses, E/F for requests, 13.3.1.4 for 2xx).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retransmission {
    pub bytes: Bytes,
    /// `None` on reliable transports, where only the deadline applies.
    pub next_at: Option<Instant>,
    interval: Duration,
    cap: Duration,
    pub give_up_at: Instant,
}

/// Result of a retransmission timer firing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetransmitStep {
    Nothing,
    Resend(Bytes),
    GiveUp,
}

impl Retransmission {
    pub fn new(now: Instant, bytes: Bytes, timers: Timers, retransmit: bool) -> Self {
        Retransmission {
            bytes,
            next_at: retransmit.then(|| now + timers.t1),
            interval: timers.t1,
            cap: timers.t2,
            give_up_at: now + timers.timeout(),
        }
    }

    /// Timers A and B of an INVITE client transaction (RFC 3261 17.1.1.2): the interval
    /// doubles without the T2 cap until 64*T1.
    pub fn for_invite(now: Instant, bytes: Bytes, timers: Timers, retransmit: bool) -> Self {
        Retransmission {
            cap: timers.timeout(),
            ..Retransmission::new(now, bytes, timers, retransmit)
        }
    }

    /// Stop resending but keep the deadline (a provisional response arrived).
    pub fn stop_resending(&mut self) {
        self.next_at = None;
    }

    pub fn poll_timeout(&self) -> Instant {
        match self.next_at {
            Some(at) => at.min(self.give_up_at),
            None => self.give_up_at,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) -> RetransmitStep {
        if now >= self.give_up_at {
            return RetransmitStep::GiveUp;
        }
        match self.next_at {
            Some(at) if now >= at => {
                self.interval = (self.interval * 2).min(self.cap);
                self.next_at = Some(at + self.interval);
                RetransmitStep::Resend(self.bytes.clone())
            }
            _ => RetransmitStep::Nothing,
        }
    }
}

/// Server transaction identity (RFC 3261 17.2.3): branch, sent-by and method, where ACK
/// shares the INVITE's key so it can find the transaction of a non-2xx final response.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerKey {
    pub branch: String,
    pub sent_by: String,
    pub method: Method,
}

impl ServerKey {
    /// Builds the key. Pre-RFC 3261 branches (no magic cookie) fall back to values the
    /// retransmission shares with the original: Call-ID, CSeq number and From tag.
    pub fn new(
        branch: &str,
        sent_by: &str,
        method: &Method,
        call_id: &str,
        cseq: u32,
        from_tag: Option<&str>,
    ) -> Self {
        let method = if *method == Method::ACK {
            Method::INVITE
        } else {
            method.clone()
        };
        let branch = if branch.starts_with(super::message::BRANCH_MAGIC_COOKIE) {
            branch.to_owned()
        } else {
            format!("{branch}|{call_id}|{cseq}|{}", from_tag.unwrap_or_default())
        };
        ServerKey {
            branch,
            sent_by: sent_by.to_owned(),
            method,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// No final response yet; retransmitted requests get the last provisional one.
    Proceeding,
    /// Final response sent. INVITE: non-2xx, waiting for ACK (timers G and H).
    /// Non-INVITE: absorbing retransmissions until timer J.
    Completed,
    /// INVITE: ACK received for the non-2xx; absorbing ACKs until timer I.
    Confirmed,
    /// INVITE: 2xx sent (RFC 6026); absorbing INVITE retransmissions until timer L.
    Accepted,
    Terminated,
}

/// What the endpoint learns when a server transaction's timer fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerTimeout {
    Nothing,
    Resend(Bytes),
    /// Timer H: no ACK for our non-2xx final response.
    AckTimeout,
    /// The transaction is over and can be removed.
    Terminated,
}

#[derive(Clone, Debug)]
pub struct ServerTransaction {
    pub is_invite: bool,
    pub state: ServerState,
    pub transport: Transport,
    pub peer: SocketAddr,
    last_response: Option<Bytes>,
    /// Non-2xx final response to an INVITE, until ACK (timers G/H).
    retransmission: Option<Retransmission>,
    /// When a Completed/Confirmed/Accepted state ends (timers I, J, L).
    linger_until: Option<Instant>,
    timers: Timers,
}

impl ServerTransaction {
    pub fn new(is_invite: bool, transport: Transport, peer: SocketAddr, timers: Timers) -> Self {
        ServerTransaction {
            is_invite,
            state: ServerState::Proceeding,
            transport,
            peer,
            last_response: None,
            retransmission: None,
            linger_until: None,
            timers,
        }
    }

    fn reliable(&self) -> bool {
        self.transport != Transport::Udp
    }

    /// The transport gave us the same request again: what to resend (17.2.1, 17.2.2).
    pub fn on_request_retransmission(&self) -> Option<Bytes> {
        match self.state {
            ServerState::Proceeding | ServerState::Completed | ServerState::Accepted => {
                self.last_response.clone()
            }
            ServerState::Confirmed | ServerState::Terminated => None,
        }
    }

    /// ACK matched this INVITE transaction (non-2xx case): stop retransmitting.
    pub fn on_ack(&mut self, now: Instant) {
        if self.state == ServerState::Completed && self.is_invite {
            self.retransmission = None;
            self.state = ServerState::Confirmed;
            self.linger_until = Some(if self.reliable() { now } else { now + T4 });
        }
    }

    /// Record a response we send in this transaction; returns the bytes to transmit.
    pub fn send_response(&mut self, now: Instant, code: u16, bytes: Bytes) -> Bytes {
        if self.state != ServerState::Proceeding {
            // A final response was already sent; never send a second one.
            return bytes;
        }
        self.last_response = Some(bytes.clone());
        let timeout = self.timers.timeout();
        match (self.is_invite, code) {
            (_, 100..=199) => {}
            (true, 200..=299) => {
                // RFC 6026 Accepted: the dialog layer retransmits the 2xx.
                self.state = ServerState::Accepted;
                self.linger_until = Some(now + timeout);
            }
            (true, _) => {
                self.state = ServerState::Completed;
                self.retransmission = Some(Retransmission::new(
                    now,
                    bytes.clone(),
                    self.timers,
                    !self.reliable(),
                ));
            }
            (false, _) => {
                self.state = ServerState::Completed;
                // Timer J: zero on reliable transports.
                self.linger_until = Some(if self.reliable() { now } else { now + timeout });
            }
        }
        bytes
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let retransmit = self
            .retransmission
            .as_ref()
            .map(Retransmission::poll_timeout);
        match (retransmit, self.linger_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) -> ServerTimeout {
        if let Some(retransmission) = self.retransmission.as_mut() {
            match retransmission.handle_timeout(now) {
                RetransmitStep::Nothing => {}
                RetransmitStep::Resend(bytes) => return ServerTimeout::Resend(bytes),
                RetransmitStep::GiveUp => {
                    self.retransmission = None;
                    self.state = ServerState::Terminated;
                    return ServerTimeout::AckTimeout;
                }
            }
        }
        if self.linger_until.is_some_and(|at| now >= at) {
            self.state = ServerState::Terminated;
            return ServerTimeout::Terminated;
        }
        ServerTimeout::Nothing
    }
}

/// What the endpoint learns from a client transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOutcome {
    Nothing,
    Resend(Bytes),
    /// A final response arrived (the code) or timer F fired (`None`).
    Finished(Option<u16>),
}

/// Non-INVITE client transaction (RFC 3261 17.1.2), used for our BYE.
#[derive(Clone, Debug)]
pub struct ClientTransaction {
    pub transport: Transport,
    pub peer: SocketAddr,
    retransmission: Retransmission,
    finished: bool,
}

impl ClientTransaction {
    pub fn new(
        now: Instant,
        transport: Transport,
        peer: SocketAddr,
        request: Bytes,
        timers: Timers,
    ) -> Self {
        ClientTransaction {
            transport,
            peer,
            retransmission: Retransmission::new(now, request, timers, transport == Transport::Udp),
            finished: false,
        }
    }

    pub fn on_response(&mut self, code: u16) -> ClientOutcome {
        if self.finished || code < 200 {
            // Provisional: timer E keeps running (capped at T2 already).
            return ClientOutcome::Nothing;
        }
        self.finished = true;
        ClientOutcome::Finished(Some(code))
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.finished).then(|| self.retransmission.poll_timeout())
    }

    pub fn handle_timeout(&mut self, now: Instant) -> ClientOutcome {
        if self.finished {
            return ClientOutcome::Nothing;
        }
        match self.retransmission.handle_timeout(now) {
            RetransmitStep::Nothing => ClientOutcome::Nothing,
            RetransmitStep::Resend(bytes) => ClientOutcome::Resend(bytes),
            RetransmitStep::GiveUp => {
                self.finished = true;
                ClientOutcome::Finished(None)
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InviteClientState {
    /// INVITE sent, nothing heard: timer A resends, timer B gives up.
    Calling,
    /// A provisional response arrived: no more resending, no timeout at this layer.
    Proceeding,
    /// A non-2xx final response arrived and was ACKed; absorbing its retransmissions
    /// until timer D.
    Completed,
    /// A 2xx arrived (RFC 6026); its retransmissions go to the dialog layer until timer M.
    Accepted,
    Terminated,
}

/// What the endpoint learns from a response to our INVITE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InviteResponse {
    /// 1xx while no final response has arrived.
    Provisional,
    /// The first final response; for a non-2xx the caller must pass the ACK to
    /// [`InviteClientTransaction::ack_final`].
    Final,
    /// A 2xx again (a retransmission, or another fork): the dialog layer ACKs it.
    Retransmitted2xx,
    /// The non-2xx final again: resend this ACK (RFC 3261 17.1.1.2).
    ResendAck(Bytes),
    /// Late or stray: nothing to do.
    Ignore,
}

/// What the endpoint learns when an INVITE client transaction's timer fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InviteClientTimeout {
    Nothing,
    Resend(Bytes),
    /// Timer B: no response at all within 64*T1 (the call fails with 408).
    TimedOut,
    /// Timer D or M ended the transaction; it can be removed.
    Terminated,
}

/// INVITE client transaction (RFC 3261 17.1.1 with the Accepted state of RFC 6026).
#[derive(Clone, Debug)]
pub struct InviteClientTransaction {
    pub transport: Transport,
    pub peer: SocketAddr,
    pub state: InviteClientState,
    retransmission: Retransmission,
    /// ACK of a non-2xx final response, sent again for each retransmission of it.
    ack: Option<Bytes>,
    /// When the Completed or Accepted state ends (timers D and M).
    linger_until: Option<Instant>,
    timers: Timers,
}

impl InviteClientTransaction {
    pub fn new(
        now: Instant,
        transport: Transport,
        peer: SocketAddr,
        invite: Bytes,
        timers: Timers,
    ) -> Self {
        InviteClientTransaction {
            transport,
            peer,
            state: InviteClientState::Calling,
            retransmission: Retransmission::for_invite(
                now,
                invite,
                timers,
                transport == Transport::Udp,
            ),
            ack: None,
            linger_until: None,
            timers,
        }
    }

    pub fn on_response(&mut self, now: Instant, code: u16) -> InviteResponse {
        use InviteClientState::*;
        match (self.state, code) {
            (Calling | Proceeding, 100..=199) => {
                self.state = Proceeding;
                self.retransmission.stop_resending();
                InviteResponse::Provisional
            }
            (Calling | Proceeding, 200..=299) => {
                self.state = Accepted;
                self.linger_until = Some(now + self.timers.timeout());
                InviteResponse::Final
            }
            (Calling | Proceeding, _) => {
                self.state = Completed;
                self.retransmission.stop_resending();
                // Timer D: at least 32 s on UDP, zero on reliable transports.
                let linger = if self.transport == Transport::Udp {
                    self.timers.timeout().max(Duration::from_secs(32))
                } else {
                    Duration::ZERO
                };
                self.linger_until = Some(now + linger);
                InviteResponse::Final
            }
            (Accepted, 200..=299) => InviteResponse::Retransmitted2xx,
            (Completed, 300..=699) => match &self.ack {
                Some(ack) => InviteResponse::ResendAck(ack.clone()),
                None => InviteResponse::Ignore,
            },
            _ => InviteResponse::Ignore,
        }
    }

    /// Record the ACK we sent for the non-2xx final response (same branch as the INVITE).
    pub fn ack_final(&mut self, ack: Bytes) {
        if self.state == InviteClientState::Completed {
            self.ack = Some(ack);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            InviteClientState::Calling => Some(self.retransmission.poll_timeout()),
            InviteClientState::Completed | InviteClientState::Accepted => self.linger_until,
            InviteClientState::Proceeding | InviteClientState::Terminated => None,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) -> InviteClientTimeout {
        match self.state {
            InviteClientState::Calling => match self.retransmission.handle_timeout(now) {
                RetransmitStep::Nothing => InviteClientTimeout::Nothing,
                RetransmitStep::Resend(bytes) => InviteClientTimeout::Resend(bytes),
                RetransmitStep::GiveUp => {
                    self.state = InviteClientState::Terminated;
                    InviteClientTimeout::TimedOut
                }
            },
            InviteClientState::Completed | InviteClientState::Accepted => {
                if self.linger_until.is_some_and(|at| now >= at) {
                    self.state = InviteClientState::Terminated;
                    InviteClientTimeout::Terminated
                } else {
                    InviteClientTimeout::Nothing
                }
            }
            InviteClientState::Proceeding | InviteClientState::Terminated => {
                InviteClientTimeout::Nothing
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMERS: Timers = Timers {
        t1: Duration::from_millis(500),
        t2: Duration::from_secs(4),
    };

    fn peer() -> SocketAddr {
        "192.0.2.7:5060".parse().expect("addr")
    }

    #[test]
    fn retransmission_doubles_to_t2_and_gives_up_at_64_t1() {
        let start = Instant::now();
        let mut retransmission = Retransmission::new(start, Bytes::from_static(b"x"), TIMERS, true);
        let mut sent_at_ms = Vec::new();
        let gave_up_at = loop {
            let now = retransmission.poll_timeout();
            match retransmission.handle_timeout(now) {
                RetransmitStep::Resend(_) => sent_at_ms.push((now - start).as_millis()),
                RetransmitStep::GiveUp => break now,
                RetransmitStep::Nothing => panic!("woken for nothing"),
            }
        };
        assert_eq!(
            &sent_at_ms[..7],
            &[500, 1500, 3500, 7500, 11500, 15500, 19500]
        );
        assert_eq!(gave_up_at - start, Duration::from_secs(32));
    }

    #[test]
    fn invite_non_2xx_waits_for_ack_then_lingers_for_t4() {
        let start = Instant::now();
        let mut txn = ServerTransaction::new(true, Transport::Udp, peer(), TIMERS);
        txn.send_response(start, 100, Bytes::from_static(b"100"));
        assert_eq!(
            txn.on_request_retransmission().as_deref(),
            Some(&b"100"[..])
        );
        txn.send_response(start, 486, Bytes::from_static(b"486"));
        assert_eq!(txn.state, ServerState::Completed);
        assert_eq!(
            txn.handle_timeout(start + TIMERS.t1),
            ServerTimeout::Resend(Bytes::from_static(b"486"))
        );
        txn.on_ack(start + TIMERS.t1);
        assert_eq!(txn.state, ServerState::Confirmed);
        assert_eq!(txn.poll_timeout(), Some(start + TIMERS.t1 + T4));
        assert_eq!(
            txn.handle_timeout(start + TIMERS.t1 + T4),
            ServerTimeout::Terminated
        );
    }

    #[test]
    fn invite_non_2xx_without_ack_times_out() {
        let start = Instant::now();
        let mut txn = ServerTransaction::new(true, Transport::Tcp, peer(), TIMERS);
        txn.send_response(start, 487, Bytes::from_static(b"487"));
        // Reliable transport: no retransmission, only timer H.
        assert_eq!(txn.poll_timeout(), Some(start + TIMERS.timeout()));
        assert_eq!(
            txn.handle_timeout(start + TIMERS.timeout()),
            ServerTimeout::AckTimeout
        );
    }

    #[test]
    fn non_invite_absorbs_retransmissions_until_timer_j() {
        let start = Instant::now();
        let mut txn = ServerTransaction::new(false, Transport::Udp, peer(), TIMERS);
        txn.send_response(start, 200, Bytes::from_static(b"200"));
        assert_eq!(
            txn.on_request_retransmission().as_deref(),
            Some(&b"200"[..])
        );
        assert_eq!(txn.poll_timeout(), Some(start + TIMERS.timeout()));
        assert_eq!(
            txn.handle_timeout(start + TIMERS.timeout()),
            ServerTimeout::Terminated
        );
    }

    #[test]
    fn client_transaction_ends_on_final_or_timer_f() {
        let start = Instant::now();
        let mut bye = ClientTransaction::new(
            start,
            Transport::Udp,
            peer(),
            Bytes::from_static(b"BYE"),
            TIMERS,
        );
        assert_eq!(
            bye.handle_timeout(start + TIMERS.t1),
            ClientOutcome::Resend(Bytes::from_static(b"BYE"))
        );
        assert_eq!(bye.on_response(100), ClientOutcome::Nothing);
        assert_eq!(bye.on_response(200), ClientOutcome::Finished(Some(200)));
        assert_eq!(bye.poll_timeout(), None);

        let mut lost = ClientTransaction::new(
            start,
            Transport::Tcp,
            peer(),
            Bytes::from_static(b"BYE"),
            TIMERS,
        );
        assert_eq!(lost.poll_timeout(), Some(start + TIMERS.timeout()));
        assert_eq!(
            lost.handle_timeout(start + TIMERS.timeout()),
            ClientOutcome::Finished(None)
        );
    }

    #[test]
    fn invite_timer_a_doubles_without_t2_cap_until_timer_b() {
        let start = Instant::now();
        let mut invite = InviteClientTransaction::new(
            start,
            Transport::Udp,
            peer(),
            Bytes::from_static(b"INVITE"),
            TIMERS,
        );
        let mut sent_at_ms = Vec::new();
        let timed_out_at = loop {
            let now = invite.poll_timeout().expect("timer running");
            match invite.handle_timeout(now) {
                InviteClientTimeout::Resend(_) => sent_at_ms.push((now - start).as_millis()),
                InviteClientTimeout::TimedOut => break now,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(sent_at_ms, vec![500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(timed_out_at - start, Duration::from_secs(32));
    }

    #[test]
    fn invite_provisional_stops_timers_and_non_2xx_ack_is_resent() {
        let start = Instant::now();
        let mut invite = InviteClientTransaction::new(
            start,
            Transport::Udp,
            peer(),
            Bytes::from_static(b"INVITE"),
            TIMERS,
        );
        assert_eq!(invite.on_response(start, 180), InviteResponse::Provisional);
        assert_eq!(invite.poll_timeout(), None);
        assert_eq!(invite.on_response(start, 486), InviteResponse::Final);
        invite.ack_final(Bytes::from_static(b"ACK"));
        assert_eq!(
            invite.on_response(start, 486),
            InviteResponse::ResendAck(Bytes::from_static(b"ACK"))
        );
        assert_eq!(invite.on_response(start, 200), InviteResponse::Ignore);
        let timer_d = invite.poll_timeout().expect("timer D");
        assert_eq!(timer_d - start, Duration::from_secs(32));
        assert_eq!(
            invite.handle_timeout(timer_d),
            InviteClientTimeout::Terminated
        );
    }

    #[test]
    fn invite_2xx_retransmissions_are_reported_until_timer_m() {
        let start = Instant::now();
        let mut invite = InviteClientTransaction::new(
            start,
            Transport::Tcp,
            peer(),
            Bytes::from_static(b"INVITE"),
            TIMERS,
        );
        assert_eq!(invite.on_response(start, 200), InviteResponse::Final);
        assert_eq!(
            invite.on_response(start, 200),
            InviteResponse::Retransmitted2xx
        );
        assert_eq!(invite.poll_timeout(), Some(start + TIMERS.timeout()));
    }
}
