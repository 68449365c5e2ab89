//! The sans-IO SIP user agent of the bridge: feed it datagrams and timeouts, take out
//! what to send and what happened. It answers INVITEs on behalf of the call layer,
//! keeps transactions and dialogs in bounded tables and never reads a clock.
//!
//! This file holds the tables, the dispatch of requests and responses, and the
//! timers; what crosses its boundary (config, calls placed, events, stats) is
//! `endpoint_types.rs`, the UAS half (calls placed to the bridge) is `endpoint_uas.rs`, the UAC
//! half (calls the bridge places) `endpoint_uac.rs`. It never touches a socket (the
//! transport shell does) and knows nothing of rooms, records or media: what a call
//! becomes is the switchboard's decision, reported back as `ring`, `accept`, `reject`.

use super::dialog::{Dialog, DialogId};
use super::message::{self, Body, EchoHeaders, Message, OutgoingRequest, Request, Response};
use super::registration::Registration;
use super::sdp;
use super::session_timer::{self, SessionTimer, TimerAnswer, TimerHeaders};
use super::source_guard::SourceGuard;
use super::transaction::{
    ClientOutcome, ClientTransaction, InviteClientTransaction, Retransmission, RetransmitStep,
    ServerKey, ServerState, ServerTimeout, ServerTransaction, Timers,
};
use bytes::Bytes;
use ezk_sip_types::{Method, Name};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "endpoint_types.rs"]
mod types;
use types::local_addr_for;
pub use types::*;

/// Methods we implement, for Allow (RFC 3261 20.5).
pub(crate) const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE";
/// Option tags we support, for Supported (RFC 3261 20.37).
const SUPPORTED: &str = session_timer::OPTION_TAG;
/// Methods we recognise but refuse with 405.
const KNOWN_NOT_ALLOWED: [&str; 8] = [
    "REGISTER",
    "SUBSCRIBE",
    "NOTIFY",
    "MESSAGE",
    "REFER",
    "INFO",
    "PRACK",
    "PUBLISH",
];
const SDP_CONTENT_TYPE: &str = "application/sdp";
/// How long an incoming call may stay unanswered before we refuse it with 480.
pub const UNANSWERED_CALL_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallPhase {
    /// We sent the INVITE; waiting for its final response.
    Calling,
    /// INVITE received; waiting for the call layer to accept or reject.
    Offered,
    /// 2xx sent, retransmitting until ACK.
    Answered,
    Confirmed,
    /// Our BYE is outstanding.
    Terminating,
}

/// An offer in a re-INVITE or UPDATE waiting for the call layer's answer.
#[derive(Clone, Debug)]
struct PendingReoffer {
    key: ServerKey,
    echo: EchoHeaders,
    is_invite: bool,
    cseq: u32,
    /// The requester's Contact: the dialog's remote target once we accept.
    contact: Option<String>,
    /// Its session timer, decided when it came.
    timer: TimerAnswer,
}

/// A 2xx to an INVITE retransmitted until its ACK (RFC 3261 13.3.1.4), to where
/// the INVITE came from (its Via), which need not be the dialog's next hop.
#[derive(Clone, Debug)]
struct Pending2xx {
    cseq: u32,
    retransmission: Retransmission,
    transport: Transport,
    destination: SocketAddr,
}

/// Whether the call layer hung up a call we placed before it was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hangup {
    NotWanted,
    /// No provisional response yet: CANCEL must wait for one (RFC 3261 9.1).
    Wanted,
    /// CANCEL sent; without a final response by then the call is given up (RFC 3261 9.1).
    CancelSent {
        give_up_at: Instant,
    },
}

/// A credential sent on every later INVITE of the call (RFC 3261 22.3).
#[derive(Clone, Debug)]
struct SentAuthorization {
    /// `Authorization` or `Proxy-Authorization`.
    header: &'static str,
    realm: String,
    value: String,
}

/// Our INVITE of a call we place, while no final response has settled it.
#[derive(Clone, Debug)]
struct Outgoing {
    destination: SocketAddr,
    credentials: Option<Credentials>,
    /// Via of the INVITE in progress; CANCEL and the non-2xx ACK reuse it (RFC 3261 9.1,
    /// 17.1.1.3).
    via: String,
    branch: String,
    invite_cseq: u32,
    authorizations: Vec<SentAuthorization>,
    /// (status code, realm) of every challenge answered so far.
    challenges_answered: Vec<(u16, String)>,
    /// A challenge with `stale=true` was answered again once already.
    stale_retried: bool,
    provisional_received: bool,
    progress_reported: Vec<u16>,
    hangup: Hangup,
    /// The session interval our INVITE asks for, and its Min-SE: the largest
    /// a 422 named, or ours (RFC 4028 7.4).
    session_expires_s: u32,
    min_se_s: u32,
}

/// The dialog-creating INVITE of a call we answer.
#[derive(Clone, Debug)]
struct UasInvite {
    /// Where it came from: its source's count of pending INVITEs.
    source: IpAddr,
    key: ServerKey,
    echo: EchoHeaders,
    cseq: u32,
    /// Our session timer answer to it (RFC 4028), carried by the 2xx.
    timer: TimerAnswer,
}

#[derive(Clone, Debug)]
struct Call {
    dialog: Dialog,
    phase: CallPhase,
    /// The INVITE that created the call, for calls we answer; `None` for calls we place.
    uas_invite: Option<UasInvite>,
    /// Our INVITE while we wait for its final response, for calls we place.
    outgoing: Option<Outgoing>,
    /// Our user part for Contact: the Request-URI user of a call we answer, the From
    /// user of a call we place.
    local_user: String,
    pending_2xx: Option<Pending2xx>,
    reoffer: Option<PendingReoffer>,
    /// Our last SDP, offered again when a re-INVITE comes without an offer.
    local_sdp: Option<String>,
    /// When the call layer must have answered the INVITE or the pending re-offer; after
    /// that we refuse it ourselves so no transaction waits forever.
    answer_due: Option<Instant>,
    /// The RFC 4028 session timer, once a 2xx set one up.
    session: Option<SessionTimer>,
    /// The far end listed UPDATE in Allow: refreshes are UPDATEs without a body
    /// rather than re-INVITEs.
    peer_allows_update: bool,
    refresh: Option<RefreshInFlight>,
    /// `X-Sipconf-Link` this call sends (its INVITE, or our 2xx): a cascade link.
    link: Option<String>,
}

#[derive(Clone, Debug)]
struct ServerEntry {
    txn: ServerTransaction,
    call: Option<CallKey>,
    /// The source whose table share it takes (`endpoint_limits.rs`), if any.
    charged_to: Option<IpAddr>,
}

/// What a non-INVITE client transaction is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientJob {
    /// `report`: the call to end when the BYE completes (`None` if already ended).
    Bye {
        report: Option<CallKey>,
    },
    Cancel,
    /// A session refresh by UPDATE.
    Refresh(CallKey),
    /// A REGISTER of `registrations[i]`.
    Register(usize),
}

#[derive(Clone, Debug)]
struct ClientEntry {
    txn: ClientTransaction,
    job: ClientJob,
}

#[derive(Clone, Debug)]
struct InviteClientEntry {
    txn: InviteClientTransaction,
    call: CallKey,
    /// The ACK of the 2xx that established the call, resent for each retransmitted 2xx
    /// (RFC 3261 13.2.2.4).
    ack_2xx: Option<Transmit>,
    /// A session refresh re-INVITE rather than the INVITE that places the call.
    refresh: bool,
}

pub struct Endpoint {
    config: EndpointConfig,
    timers: Timers,
    server_txns: HashMap<ServerKey, ServerEntry>,
    /// Non-INVITE (BYE, CANCEL), keyed by the branch we generated. A CANCEL shares its
    /// INVITE's branch; the two live in different tables.
    client_txns: HashMap<String, ClientEntry>,
    /// Our INVITEs, keyed by branch.
    invite_txns: HashMap<String, InviteClientEntry>,
    calls: HashMap<CallKey, Call>,
    dialogs: HashMap<DialogId, CallKey>,
    registrations: Vec<Registration>,
    next_call: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SipEvent>,
    stats: EndpointStats,
    guard: SourceGuard,
    rng: StdRng,
}

/// One response to send: status, extra headers after the mandatory ones, optional body.
struct Reply<'a> {
    code: u16,
    reason: &'a str,
    extra: &'a [(&'a str, &'a str)],
    body: Option<Body<'a>>,
}

impl<'a> Reply<'a> {
    fn new(code: u16, reason: &'a str) -> Self {
        Reply {
            code,
            reason,
            extra: &[],
            body: None,
        }
    }

    fn extra(mut self, extra: &'a [(&'a str, &'a str)]) -> Self {
        self.extra = extra;
        self
    }

    fn body(mut self, body: Body<'a>) -> Self {
        self.body = Some(body);
        self
    }
}

/// The parts of a request needed to answer it.
struct Origin {
    transport: Transport,
    source: SocketAddr,
}

impl Endpoint {
    pub fn new(config: EndpointConfig) -> Self {
        Endpoint {
            guard: SourceGuard::new(config.limits.clone(), Arc::clone(&config.limit_stats)),
            timers: Timers {
                t1: config.t1,
                t2: config.t2,
            },
            config,
            server_txns: HashMap::new(),
            client_txns: HashMap::new(),
            invite_txns: HashMap::new(),
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            registrations: Vec::new(),
            next_call: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: EndpointStats::default(),
            rng: StdRng::from_os_rng(),
        }
    }

    pub fn stats(&self) -> EndpointStats {
        EndpointStats {
            transactions_in_use: self.transaction_count(),
            calls_in_use: self.calls.len(),
            ..self.stats
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<SipEvent> {
        self.events.pop_front()
    }

    /// The dialog of a call, while the endpoint has it.
    pub fn dialog(&self, call: CallKey) -> Option<&Dialog> {
        self.calls.get(&call).map(|c| &c.dialog)
    }

    /// Ends a dialog a previous run of the bridge left up (known from the
    /// store, not to this endpoint) with a BYE in a transaction of its own;
    /// its outcome is reported to nobody.
    pub fn bye_orphan(&mut self, now: Instant, mut dialog: Dialog) {
        self.send_bye(now, &mut dialog, None);
    }

    /// The earliest instant at which `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let servers = self
            .server_txns
            .values()
            .filter_map(|e| e.txn.poll_timeout());
        let clients = self
            .client_txns
            .values()
            .filter_map(|e| e.txn.poll_timeout());
        let invites = self
            .invite_txns
            .values()
            .filter_map(|e| e.txn.poll_timeout());
        let calls = self.calls.values().flat_map(|c| {
            let retransmit = c
                .pending_2xx
                .as_ref()
                .map(|p| p.retransmission.poll_timeout());
            let cancel_give_up = c.outgoing.as_ref().and_then(|o| match o.hangup {
                Hangup::CancelSent { give_up_at } => Some(give_up_at),
                _ => None,
            });
            retransmit
                .into_iter()
                .chain(c.answer_due)
                .chain(cancel_give_up)
                .chain(
                    c.session
                        .filter(|_| c.phase != CallPhase::Terminating)
                        .map(|timer| timer.next_wake()),
                )
        });
        let registrations = self.registrations.iter().filter_map(Registration::due);
        servers
            .chain(clients)
            .chain(invites)
            .chain(calls)
            .chain(registrations)
            .min()
    }

    fn random_token(&mut self) -> String {
        format!("{:016x}", self.rng.random::<u64>())
    }

    fn transmit(&mut self, transport: Transport, destination: SocketAddr, bytes: Bytes) {
        self.transmits.push_back(Transmit {
            transport,
            destination,
            bytes,
        });
    }

    // ==== input ====

    /// One datagram (UDP) or one complete framed message (TCP) from `source`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        transport: Transport,
        source: SocketAddr,
        bytes: &[u8],
    ) {
        match message::parse(bytes, source) {
            Err(malformed) => {
                self.stats.malformed_total += 1;
                tracing::debug!(%source, error = %malformed.error, "malformed SIP message");
                // Answer requests (never an ACK) whose Via we could read, when
                // their source is within its limits; drop the rest.
                if let Some(echo) = malformed.echo {
                    if malformed.method != Some(Method::ACK)
                        && self.may_answer_malformed(now, source)
                    {
                        let reason = malformed.error.to_string();
                        let tag = self.random_token();
                        let bytes = message::write_response(
                            &echo,
                            malformed.error.status_code(),
                            &reason,
                            Some(&tag),
                            &[],
                            None,
                            &self.config.user_agent,
                        );
                        self.transmit(transport, source, bytes);
                    }
                }
            }
            Ok(Message::Response(response)) => {
                self.stats.responses_total += 1;
                self.handle_response(now, *response);
            }
            Ok(Message::Request(request)) => {
                self.stats.requests_total += 1;
                self.handle_request(now, Origin { transport, source }, *request);
            }
        }
    }

    fn handle_request(&mut self, now: Instant, origin: Origin, request: Request) {
        if request.method == Method::ACK {
            self.handle_ack(now, &request);
            return;
        }
        let Some(admission) = self.screen(now, &origin, &request) else {
            return;
        };
        let key = ServerKey::new(
            &request.branch,
            &request.sent_by,
            &request.method,
            &request.call_id,
            request.cseq,
            request.from_tag.as_deref(),
        );
        self.serve_request(now, origin, key.clone(), request);
        if let Admission::Screened(source) = admission {
            self.charge(&key, source);
        }
    }

    fn serve_request(&mut self, now: Instant, origin: Origin, key: ServerKey, request: Request) {
        // A retransmission belongs to its transaction (RFC 3261 17.2.3).
        if let Some(entry) = self.server_txns.get(&key) {
            if let Some(bytes) = entry.txn.on_request_retransmission() {
                let (transport, peer) = (entry.txn.transport, entry.txn.peer);
                self.transmit(transport, peer, bytes);
            }
            return;
        }
        if !self.has_room_for(&request) {
            self.stats.overload_rejections_total += 1;
            self.respond_stateless(&origin, &request, 503, "Service Unavailable");
            return;
        }
        let method = request.method.clone();
        if method != Method::CANCEL {
            if let Some(unsupported) = required_extensions(&request) {
                let extra = [("Unsupported", unsupported.as_str())];
                self.respond(
                    now,
                    &origin,
                    key,
                    &request,
                    None,
                    Reply::new(420, "Bad Extension").extra(&extra),
                );
                return;
            }
        }
        if method == Method::INVITE {
            self.handle_invite(now, origin, key, request);
        } else if method == Method::CANCEL {
            self.handle_cancel(now, origin, key, &request);
        } else if method == Method::BYE {
            self.handle_bye(now, origin, key, &request);
        } else if method == Method::UPDATE {
            self.handle_update(now, origin, key, request);
        } else if method == Method::OPTIONS {
            let extra = [
                ("Allow", ALLOW),
                ("Accept", SDP_CONTENT_TYPE),
                ("Supported", SUPPORTED),
            ];
            self.respond(
                now,
                &origin,
                key,
                &request,
                None,
                Reply::new(200, "OK").extra(&extra),
            );
        } else if KNOWN_NOT_ALLOWED
            .iter()
            .any(|known| method.to_string().eq_ignore_ascii_case(known))
        {
            let extra = [("Allow", ALLOW)];
            self.respond(
                now,
                &origin,
                key,
                &request,
                None,
                Reply::new(405, "Method Not Allowed").extra(&extra),
            );
        } else {
            let extra = [("Allow", ALLOW)];
            self.respond(
                now,
                &origin,
                key,
                &request,
                None,
                Reply::new(501, "Not Implemented").extra(&extra),
            );
        }
    }

    /// Create a server transaction for `request` and send one final response in it.
    /// `to_tag` defaults to a fresh tag (RFC 3261 8.2.6.2).
    fn respond(
        &mut self,
        now: Instant,
        origin: &Origin,
        key: ServerKey,
        request: &Request,
        to_tag: Option<&str>,
        reply: Reply<'_>,
    ) {
        let Reply {
            code,
            reason,
            extra,
            body,
        } = reply;
        let tag = match to_tag {
            Some(tag) => tag.to_owned(),
            None => self.random_token(),
        };
        let bytes = message::write_response(
            &request.echo,
            code,
            reason,
            Some(&tag),
            extra,
            body,
            &self.config.user_agent,
        );
        let mut txn = ServerTransaction::new(
            request.method == Method::INVITE,
            origin.transport,
            origin.source,
            self.timers,
        );
        let bytes = txn.send_response(now, code, bytes);
        self.insert_server_txn(key, txn);
        self.transmit(origin.transport, origin.source, bytes);
    }

    /// Send a response inside an existing server transaction.
    fn respond_in(
        &mut self,
        now: Instant,
        key: &ServerKey,
        echo: &EchoHeaders,
        to_tag: &str,
        reply: Reply<'_>,
    ) -> Option<Bytes> {
        let Reply {
            code,
            reason,
            extra,
            body,
        } = reply;
        let bytes = message::write_response(
            echo,
            code,
            reason,
            Some(to_tag),
            extra,
            body,
            &self.config.user_agent,
        );
        let entry = self.server_txns.get_mut(key)?;
        if entry.txn.state != ServerState::Proceeding {
            return None;
        }
        let bytes = entry.txn.send_response(now, code, bytes);
        let (transport, peer) = (entry.txn.transport, entry.txn.peer);
        self.transmit(transport, peer, bytes.clone());
        Some(bytes)
    }

    fn open_server_txn(&mut self, key: ServerKey, origin: &Origin, is_invite: bool) {
        let txn = ServerTransaction::new(is_invite, origin.transport, origin.source, self.timers);
        self.insert_server_txn(key, txn);
    }

    fn handle_response(&mut self, now: Instant, response: Response) {
        if response.cseq_method == Method::INVITE {
            self.handle_invite_response(now, response);
            return;
        }
        let Some(entry) = self.client_txns.get_mut(&response.branch) else {
            return;
        };
        let expected = match entry.job {
            ClientJob::Bye { .. } => Method::BYE,
            ClientJob::Cancel => Method::CANCEL,
            ClientJob::Refresh(_) => Method::UPDATE,
            ClientJob::Register(_) => Method::REGISTER,
        };
        if response.cseq_method != expected {
            return;
        }
        if let ClientOutcome::Finished(_) = entry.txn.on_response(response.code) {
            let job = entry.job;
            self.client_txns.remove(&response.branch);
            match job {
                ClientJob::Bye {
                    report: Some(call_key),
                } => self.end_call(call_key, EndReason::LocalBye),
                ClientJob::Refresh(call_key) => self.on_refresh_response(now, call_key, &response),
                ClientJob::Register(index) => {
                    self.on_register_response(now, index, Some(&response))
                }
                ClientJob::Bye { report: None } | ClientJob::Cancel => {}
            }
        }
    }

    /// Send a BYE in `call`'s dialog (RFC 3261 15.1.1) in a new client transaction.
    /// `report` is the call to end when the BYE completes (`None` if already ended).
    fn send_bye(&mut self, now: Instant, dialog: &mut Dialog, report: Option<CallKey>) {
        let branch = format!("{}{}", message::BRANCH_MAGIC_COOKIE, self.random_token());
        let via = format!(
            "SIP/2.0/{} {};branch={branch};rport",
            dialog.transport.via_token(),
            self.config.local_addr_for(dialog.transport)
        );
        let cseq = dialog.next_local_cseq();
        let target = dialog.request_target();
        let bytes = message::write_request(&OutgoingRequest {
            method: "BYE",
            request_uri: &target.request_uri,
            via: &via,
            routes: &target.routes,
            from: &dialog.local_party,
            to: &dialog.remote_party,
            call_id: &dialog.id.call_id,
            cseq,
            extra: &[],
            body: None,
            user_agent: &self.config.user_agent,
        });
        let txn = ClientTransaction::new(
            now,
            dialog.transport,
            dialog.peer,
            bytes.clone(),
            self.timers,
        );
        self.client_txns.insert(
            branch,
            ClientEntry {
                txn,
                job: ClientJob::Bye { report },
            },
        );
        self.transmit(dialog.transport, dialog.peer, bytes);
    }

    // ==== timers ====

    pub fn handle_timeout(&mut self, now: Instant) {
        let mut finished_servers = Vec::new();
        let mut resend = Vec::new();
        for (key, entry) in self.server_txns.iter_mut() {
            if entry.txn.poll_timeout().is_none_or(|at| at > now) {
                continue;
            }
            match entry.txn.handle_timeout(now) {
                ServerTimeout::Nothing => {}
                ServerTimeout::Resend(bytes) => {
                    resend.push((entry.txn.transport, entry.txn.peer, bytes));
                }
                ServerTimeout::AckTimeout | ServerTimeout::Terminated => {
                    finished_servers.push(key.clone());
                }
            }
        }
        for key in finished_servers {
            self.remove_server_txn(&key);
        }

        let mut finished_clients = Vec::new();
        for (branch, entry) in self.client_txns.iter_mut() {
            if entry.txn.poll_timeout().is_none_or(|at| at > now) {
                continue;
            }
            match entry.txn.handle_timeout(now) {
                ClientOutcome::Nothing => {}
                ClientOutcome::Resend(bytes) => {
                    resend.push((entry.txn.transport, entry.txn.peer, bytes));
                }
                ClientOutcome::Finished(_) => finished_clients.push((branch.clone(), entry.job)),
            }
        }
        for (branch, job) in finished_clients {
            self.client_txns.remove(&branch);
            match job {
                // Timer F: the far end never answered our BYE; the call is over anyway.
                ClientJob::Bye {
                    report: Some(call_key),
                } => self.end_call(call_key, EndReason::LocalBye),
                ClientJob::Refresh(call_key) => self.refresh_failed(now, call_key, &branch),
                ClientJob::Register(index) => self.on_register_response(now, index, None),
                ClientJob::Bye { report: None } | ClientJob::Cancel => {}
            }
        }
        self.handle_invite_timeouts(now, &mut resend);

        let mut ack_timeouts = Vec::new();
        let mut unanswered = Vec::new();
        for (call_key, call) in self.calls.iter_mut() {
            if call.answer_due.is_some_and(|at| at <= now) {
                call.answer_due = None;
                unanswered.push(*call_key);
            }
            let Some(pending) = call.pending_2xx.as_mut() else {
                continue;
            };
            if pending.retransmission.poll_timeout() > now {
                continue;
            }
            match pending.retransmission.handle_timeout(now) {
                RetransmitStep::Nothing => {}
                RetransmitStep::Resend(bytes) => {
                    resend.push((pending.transport, pending.destination, bytes));
                }
                RetransmitStep::GiveUp => ack_timeouts.push(*call_key),
            }
        }
        for (transport, peer, bytes) in resend {
            self.transmit(transport, peer, bytes);
        }
        // RFC 3261 13.3.1.4: no ACK within 64*T1 -> the session ends with a BYE.
        for call_key in ack_timeouts {
            if let Some(mut call) = self.calls.get(&call_key).cloned() {
                self.send_bye(now, &mut call.dialog, None);
                self.end_call(call_key, EndReason::AckTimeout);
            }
        }
        // The call layer never answered: refuse so the caller is not left waiting.
        for call_key in unanswered {
            self.reject(now, call_key, 480, "Temporarily Unavailable");
            self.reject_reoffer(now, call_key, 500, "Offer Not Answered");
        }
        self.handle_session_timers(now);
        self.handle_registration_timers(now);
    }

    // ==== commands from the call layer ====
}

/// Our Contact for a call reached at `user` (RFC 3261 12.1.1: a SIP URI we can be reached at).
pub(crate) fn contact_header(local_addr: SocketAddr, user: &str, transport: Transport) -> String {
    let transport_param = match transport {
        Transport::Udp => "",
        Transport::Tcp => ";transport=tcp",
        // RFC 3261 19.1.1 (a `sips:` Contact would forbid any hop without
        // TLS; desk phones set to TLS take either).
        Transport::Tls => ";transport=tls",
    };
    if user.is_empty() {
        format!("<sip:{local_addr}{transport_param}>")
    } else {
        format!("<sip:{user}@{local_addr}{transport_param}>")
    }
}

#[path = "endpoint_timer.rs"]
mod timer;
use timer::{timer_headers, RefreshInFlight};

#[path = "endpoint_uac.rs"]
mod uac;

#[path = "endpoint_uas.rs"]
mod uas;

#[path = "endpoint_reg.rs"]
mod reg;
pub use reg::RegistrationKey;

#[path = "endpoint_limits.rs"]
mod limits;
use limits::Admission;
use uas::required_extensions;

#[cfg(test)]
#[path = "endpoint_limits_tests.rs"]
mod limits_tests;
#[cfg(test)]
#[path = "endpoint_reg_tests.rs"]
mod reg_tests;
#[cfg(test)]
#[path = "endpoint_tests.rs"]
mod tests;
#[cfg(test)]
#[path = "endpoint_timer_tests.rs"]
mod timer_tests;
#[cfg(test)]
#[path = "endpoint_uac_tests.rs"]
mod uac_tests;
