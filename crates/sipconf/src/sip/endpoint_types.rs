//! What crosses the endpoint's boundary: its configuration, the calls the
//! call layer places, the keys and events it hands back, what it sends, and
//! its counters. The endpoint itself is `endpoint.rs`.

use crate::sip::dialog::Dialog;
use crate::sip::sdp;
use crate::sip::session_timer::TimerSettings;
use crate::sip::source_guard::{LimitStats, SourceLimits};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How a SIP message travels. Reliable transports (everything but UDP) are not
/// retransmitted by the transaction layer (RFC 3261 17.1.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    /// TCP with TLS (`[sip.tls]`), on its own port.
    Tls,
}

impl Transport {
    /// The Via transport token.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// The transport a URI's `;transport=` parameter names, if we speak it.
    pub fn from_param(value: &str) -> Option<Transport> {
        if value.eq_ignore_ascii_case("udp") {
            Some(Transport::Udp)
        } else if value.eq_ignore_ascii_case("tcp") {
            Some(Transport::Tcp)
        } else if value.eq_ignore_ascii_case("tls") {
            Some(Transport::Tls)
        } else {
            None
        }
    }
}

/// Digest credentials for calls we place (config `[sip.outbound]`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // The password must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A call the bridge places: an INVITE with our SDP offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingCall {
    /// Request-URI, e.g. `sip:alice@127.0.0.1:5070`; also the To URI.
    pub request_uri: String,
    /// Our From URI, e.g. `sip:1000@bridge`.
    pub from_uri: String,
    pub from_display: Option<String>,
    /// Next hop: the Request-URI's host and port, or the outbound proxy.
    pub destination: SocketAddr,
    /// UDP, or TCP: the transport shell opens the connection to `destination`.
    pub transport: Transport,
    pub offer_sdp: String,
    /// Answer digest challenges with these; without them a 401/407 fails the call.
    pub credentials: Option<Credentials>,
    /// `X-Sipconf-Link` to send: the call is a cascade link.
    pub link: Option<String>,
}

/// Why an outgoing call could not be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InviteError {
    #[error("call or transaction table full")]
    TableFull,
}

/// Opaque handle for one call (one INVITE dialog) in the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallKey(pub u64);

#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Address written into Via and Contact: the bound address, or the advertised one
    /// when bound to a wildcard address.
    pub local_addr: SocketAddr,
    pub user_agent: String,
    /// Server plus client transactions alive at once; beyond this new requests
    /// get 503, and beyond seven eighths of it, new calls and out-of-dialog
    /// requests do.
    pub max_transactions: usize,
    /// Calls alive at once; beyond this new INVITEs get 503.
    pub max_dialogs: usize,
    pub t1: Duration,
    pub t2: Duration,
    /// RFC 4028 session timers: the interval we ask for and the shortest we accept.
    pub session_timer: TimerSettings,
    /// Who may send requests, how fast, and how much each source may hold.
    pub limits: SourceLimits,
    /// Where the limits count what they refuse, for `/metrics`.
    pub limit_stats: Arc<LimitStats>,
    /// The port of SIP over TLS (`[sip.tls]`), written in Via and Contact of
    /// what travels on TLS; `None`: no TLS.
    pub tls_port: Option<u16>,
}

impl EndpointConfig {
    /// RFC 3261 default timers (T1 500 ms, T2 4 s) and tables sized for a small board.
    pub fn new(local_addr: SocketAddr) -> Self {
        EndpointConfig {
            local_addr,
            user_agent: "sipconf".to_owned(),
            max_transactions: 1024,
            max_dialogs: 256,
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            session_timer: TimerSettings::default(),
            limits: SourceLimits::default(),
            limit_stats: Arc::default(),
            tls_port: None,
        }
    }

    /// Our address in the Via and Contact of a message on `transport`: TLS
    /// listens on a port of its own.
    pub fn local_addr_for(&self, transport: Transport) -> SocketAddr {
        local_addr_for(self.local_addr, self.tls_port, transport)
    }
}

pub(super) fn local_addr_for(
    local_addr: SocketAddr,
    tls_port: Option<u16>,
    transport: Transport,
) -> SocketAddr {
    match (transport, tls_port) {
        (Transport::Tls, Some(port)) => SocketAddr::new(local_addr.ip(), port),
        _ => local_addr,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub transport: Transport,
    pub destination: SocketAddr,
    pub bytes: Bytes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    RemoteBye,
    LocalBye,
    AckTimeout,
    Cancelled,
    Rejected,
    /// The far end was to refresh the session (RFC 4028) and did not: we sent BYE.
    SessionExpired,
    /// Our session refresh got 408 or 481, or nothing: we ended the call.
    RefreshFailed,
}

/// What happened, for the call layer. Every call that was announced with `IncomingCall`
/// or started with `Endpoint::invite` gets exactly one `Ended`, always its last event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SipEvent {
    /// A new INVITE. The endpoint has already sent 100 Trying. The call layer must answer
    /// with `accept`, or `reject`.
    IncomingCall {
        call: CallKey,
        /// Request-URI user part.
        user: String,
        /// From URI.
        from: String,
        to: String,
        offer: sdp::Offer,
        source: SocketAddr,
        transport: Transport,
        /// Its `X-Sipconf-Link` header: a cascade link from another bridge.
        link: Option<String>,
    },
    /// ACK received for our 2xx: the call is up.
    Confirmed { call: CallKey },
    /// The caller sent CANCEL before we answered (we already replied 487). `Ended` with
    /// reason `Cancelled` follows.
    Cancelled { call: CallKey },
    /// re-INVITE or UPDATE with a new offer; answer with `accept_reoffer` or `reject_reoffer`.
    Reoffer { call: CallKey, offer: sdp::Offer },
    /// The call is over: BYE from the far end (already answered 200), our BYE completed or
    /// timed out, or no ACK within 64*T1.
    Ended { call: CallKey, reason: EndReason },
    /// A session refresh (RFC 4028: a re-INVITE or UPDATE, either way) succeeded:
    /// the far end is alive, even if it sends no RTP.
    Refreshed { call: CallKey },
    /// A call we placed is ringing (180) or has early media (183); once per code.
    Progress { call: CallKey, code: u16 },
    /// A call we placed was answered with this SDP; we have already sent the ACK.
    Answered {
        call: CallKey,
        answer: sdp::Offer,
        /// The 2xx's `X-Sipconf-Link`: the far end is a bridge, named there.
        link: Option<String>,
    },
    /// A call we placed failed: its non-2xx final response, 408 when nothing answered
    /// within 64*T1, 487 after our CANCEL, 488 for an unusable answer. `Ended` with
    /// reason `Rejected` follows.
    Failed {
        call: CallKey,
        code: u16,
        reason: String,
    },
    /// The call's dialog once established, for the call layer to keep so a
    /// restarted bridge can still end it (`Endpoint::bye_orphan`). The
    /// transport sends it after `Confirmed` and `Answered`, from
    /// `Endpoint::dialog`; the endpoint itself never does.
    Established { call: CallKey, dialog: Box<Dialog> },
}

/// Counters for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
    pub requests_total: u64,
    pub responses_total: u64,
    /// Messages that failed to parse (answered 400 when possible, else dropped).
    pub malformed_total: u64,
    /// Requests refused with 503 because a table was full.
    pub overload_rejections_total: u64,
    pub transactions_in_use: usize,
    pub calls_in_use: usize,
}
