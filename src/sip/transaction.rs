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
        self.transport == Transport::Tcp
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
}
