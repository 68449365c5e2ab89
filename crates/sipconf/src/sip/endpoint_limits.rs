//! The endpoint's limits: the transaction table's reserve for calls that are
//! up, and the per-source limits (docs/security.md, "Per-source limits"):
//! which requests are screened by the `SourceGuard` (all but ACKs and
//! requests within a call we know), what a refusal sends, the table's share
//! per source, and the cap on INVITEs not yet answered or ACKed, which hold
//! the RTP ports of calls that may never be real.

use super::*;
use crate::sip::source_guard::{RequestKind, Verdict};

/// `max_transactions / IN_DIALOG_RESERVE_DIVISOR` transactions are kept for
/// requests within a call (see `Endpoint::has_room_for`).
const IN_DIALOG_RESERVE_DIVISOR: usize = 8;

/// How a request that goes on was let in.
pub(super) enum Admission {
    /// Within a call we know (BYE, re-INVITE, UPDATE of a call that is up):
    /// never limited, whatever its source sends besides.
    KnownCall,
    /// Screened and passed: a transaction it opens outside a call takes a
    /// share of the table from this source.
    Screened(IpAddr),
}

impl Endpoint {
    pub(super) fn transaction_count(&self) -> usize {
        self.server_txns.len() + self.client_txns.len() + self.invite_txns.len()
    }

    /// Whether the transaction table takes `request`. The last eighth is kept
    /// for requests within a call (BYE, re-INVITE) and CANCEL: under a burst
    /// of new calls (a finished transaction stays 64 x T1, so a room that
    /// hangs up and dials again fills the table twice over), the calls that
    /// are up can still hang up, rather than be refused and left sending
    /// RTP to phones that are gone until their RTP times out.
    pub(super) fn has_room_for(&self, request: &Request) -> bool {
        let max = self.config.max_transactions;
        let continues_a_call = request.to_tag.is_some() || request.method == Method::CANCEL;
        let limit = if continues_a_call {
            max
        } else {
            max - max / IN_DIALOG_RESERVE_DIVISOR
        };
        self.transaction_count() < limit
    }

    /// Answer without keeping state: only for refusals under overload.
    pub(super) fn respond_stateless(
        &mut self,
        origin: &Origin,
        request: &Request,
        code: u16,
        reason: &str,
    ) {
        let tag = self.random_token();
        let bytes = message::write_response(
            &request.echo,
            code,
            reason,
            Some(&tag),
            &[("Retry-After", "5")],
            None,
            &self.config.user_agent,
        );
        self.transmit(origin.transport, origin.source, bytes);
    }

    /// Screens a request (never an ACK); `None` when it was dropped or
    /// refused here.
    pub(super) fn screen(
        &mut self,
        now: Instant,
        origin: &Origin,
        request: &Request,
    ) -> Option<Admission> {
        let known_call = request.to_tag.is_some()
            && DialogId::of_request(request).is_some_and(|id| self.dialogs.contains_key(&id));
        if known_call {
            return Some(Admission::KnownCall);
        }
        let source = origin.source.ip();
        let kind = if request.method == Method::OPTIONS {
            RequestKind::Options
        } else {
            RequestKind::Other
        };
        match self.guard.screen(now, source, kind) {
            Verdict::Pass => Some(Admission::Screened(source)),
            Verdict::Drop => None,
            Verdict::Refuse => {
                self.respond_stateless(origin, request, 503, "Service Unavailable");
                None
            }
        }
    }

    /// Whether a request that could not be parsed may be answered 400: not
    /// from a denied source nor one over its rate (garbage is what scanners
    /// and fuzzers send); it is screened like OPTIONS and takes a token.
    pub(super) fn may_answer_malformed(&mut self, now: Instant, source: SocketAddr) -> bool {
        self.guard.screen(now, source.ip(), RequestKind::Options) == Verdict::Pass
    }

    /// Charges the transaction `key` opened for a screened request to its
    /// source, unless it belongs to a call (the pending-INVITE cap covers
    /// those) or is charged already (a retransmission).
    pub(super) fn charge(&mut self, key: &ServerKey, source: IpAddr) {
        if let Some(entry) = self.server_txns.get_mut(key) {
            if entry.call.is_none() && entry.charged_to.is_none() {
                entry.charged_to = Some(source);
                self.guard.transaction_opened(source);
            }
        }
    }

    pub(super) fn insert_server_txn(&mut self, key: ServerKey, txn: ServerTransaction) {
        let entry = ServerEntry {
            txn,
            call: None,
            charged_to: None,
        };
        if let Some(replaced) = self.server_txns.insert(key, entry) {
            if let Some(source) = replaced.charged_to {
                self.guard.transaction_closed(source);
            }
        }
    }

    pub(super) fn remove_server_txn(&mut self, key: &ServerKey) {
        if let Some(source) = self.server_txns.remove(key).and_then(|e| e.charged_to) {
            self.guard.transaction_closed(source);
        }
    }

    /// Whether a new INVITE from `source` must wait: its source, or all
    /// sources together, have as many INVITEs unanswered or unACKed as the
    /// limits allow. Each holds an RTP port pair until its ACK (or 64 x T1
    /// without one), so a flood of INVITEs never ACKed holds at most
    /// `pending_invites` pairs, and one source at most
    /// `pending_invites_per_ip`, leaving the rest to callers that ACK.
    pub(super) fn too_many_pending_invites(&self, source: IpAddr) -> bool {
        let limits = self.guard.limits();
        let (mut from_source, mut in_all) = (0, 0);
        for call in self.calls.values() {
            let Some(invite) = &call.uas_invite else {
                continue;
            };
            if matches!(call.phase, CallPhase::Offered | CallPhase::Answered) {
                in_all += 1;
                from_source += usize::from(invite.source == source);
            }
        }
        from_source >= limits.pending_invites_per_ip || in_all >= limits.pending_invites
    }

    /// Refuses a new INVITE over the pending cap: 503 with Retry-After, no state.
    pub(super) fn refuse_pending_invite(&mut self, origin: &Origin, request: &Request) {
        self.guard.refused_pending_invite();
        self.respond_stateless(origin, request, 503, "Service Unavailable");
    }

    /// Whether a call runs over the connection of `transport` to `peer`: an
    /// idle TCP connection that carries one is kept (the phone's BYE, or
    /// ours, may be half an hour away and a phone behind NAT cannot be
    /// reached on a new one).
    pub fn has_call_over(&self, transport: Transport, peer: SocketAddr) -> bool {
        self.calls
            .values()
            .any(|call| call.dialog.transport == transport && call.dialog.peer == peer)
    }
}
