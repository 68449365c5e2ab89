//! RFC 4028 session timers in the endpoint: the 422 and the headers of our
//! answers, the dialog's timer restarted by every 2xx to an INVITE or UPDATE,
//! our refreshes (UPDATE when the far end allows it, else a re-INVITE with our
//! last SDP) along the dialog's route set, and the BYE of a session whose
//! refresh never came. The negotiation rules are `session_timer.rs`'s; like the
//! rest of the endpoint this takes the time as an argument and never touches a
//! socket.

use super::*;
use crate::sip::session_timer::timer_after_our_request;

/// Our session refresh (RFC 4028) waiting for its final response.
#[derive(Clone, Debug)]
pub(super) struct RefreshInFlight {
    pub(super) branch: String,
    /// Via of a re-INVITE, for the ACK of a non-2xx (RFC 3261 17.1.1.3).
    pub(super) via: String,
    pub(super) cseq: u32,
    /// A re-INVITE with our last SDP; otherwise an UPDATE without a body.
    pub(super) is_invite: bool,
    pub(super) asked_s: u32,
}

/// `Session-Expires` and `Require` of a 2xx that carries `answer`.
pub(super) fn timer_headers(answer: TimerAnswer) -> Vec<(&'static str, String)> {
    match answer {
        TimerAnswer::On {
            session_expires,
            require,
        } => {
            let mut headers = vec![("Session-Expires", session_expires.value())];
            if require {
                headers.push(("Require", session_timer::OPTION_TAG.to_owned()));
            }
            headers
        }
        TimerAnswer::Off | TimerAnswer::TooSmall { .. } => Vec::new(),
    }
}

/// A refresh re-INVITE due while the far end's own INVITE is still open waits this long.
const REFRESH_BUSY_WAIT: Duration = Duration::from_secs(2);

/// After a glare (491) we try again after a random wait: 2.1 to 4 s when we
/// placed the call (own the Call-ID), up to 2 s otherwise (RFC 3261 14.1).
fn glare_wait(rng: &mut StdRng, own_call_id: bool) -> Duration {
    let ms = if own_call_id {
        rng.random_range(2100..=4000)
    } else {
        rng.random_range(10..=2000)
    };
    Duration::from_millis(ms)
}

impl Endpoint {
    /// 422 Session Interval Too Small with our Min-SE (RFC 4028 section 6).
    pub(super) fn refuse_too_small(
        &mut self,
        now: Instant,
        origin: &Origin,
        key: ServerKey,
        request: &Request,
        to_tag: Option<&str>,
        min_se_s: u32,
    ) {
        let min_se = min_se_s.to_string();
        let extra = [("Min-SE", min_se.as_str())];
        self.respond(
            now,
            origin,
            key,
            request,
            to_tag,
            Reply::new(422, "Session Interval Too Small").extra(&extra),
        );
    }

    /// The session timer of a re-INVITE or UPDATE; answers 422 itself and returns
    /// `None` when the interval it asks for is too short.
    pub(super) fn in_dialog_timer(
        &mut self,
        now: Instant,
        origin: &Origin,
        key: &ServerKey,
        request: &Request,
    ) -> Option<TimerAnswer> {
        let answer =
            TimerAnswer::decide(self.config.session_timer, TimerHeaders::of_request(request));
        if let TimerAnswer::TooSmall { min_se_s } = answer {
            self.refuse_too_small(
                now,
                origin,
                key.clone(),
                request,
                request.to_tag.as_deref(),
                min_se_s,
            );
            return None;
        }
        Some(answer)
    }

    /// Our 2xx to an INVITE or UPDATE of `call` went out with `answer`: the
    /// session timer starts again (or stops, if this one asked for none). Within
    /// a call that is a refresh, and a sign of life of the far end.
    pub(super) fn session_refreshed(
        &mut self,
        now: Instant,
        call_key: CallKey,
        answer: TimerAnswer,
        within_call: bool,
    ) {
        let Some(call) = self.calls.get_mut(&call_key) else {
            return;
        };
        call.session = answer.start(now);
        if within_call {
            self.events
                .push_back(SipEvent::Refreshed { call: call_key });
        }
    }

    /// Refreshes that are due, and sessions whose refresh never came.
    pub(super) fn handle_session_timers(&mut self, now: Instant) {
        let mut due = Vec::new();
        let mut expired = Vec::new();
        for (call_key, call) in &self.calls {
            let Some(timer) = call.session else {
                continue;
            };
            if call.phase == CallPhase::Terminating {
                continue;
            }
            if timer.expires_at <= now {
                expired.push(*call_key);
            } else if timer.refresh_at.is_some_and(|at| at <= now) {
                due.push(*call_key);
            }
        }
        for call_key in due {
            self.send_refresh(now, call_key);
        }
        // RFC 4028 section 10: no refresh before the session expired: BYE.
        for call_key in expired {
            tracing::info!(?call_key, "session expired without a refresh: BYE");
            self.end_session(now, call_key, EndReason::SessionExpired);
        }
    }

    /// BYE along the dialog and report the end.
    fn end_session(&mut self, now: Instant, call_key: CallKey, reason: EndReason) {
        self.abort_pending(now, call_key);
        if let Some(mut call) = self.calls.get(&call_key).cloned() {
            self.send_bye(now, &mut call.dialog, None);
        }
        self.end_call(call_key, reason);
    }

    /// Send a session refresh (RFC 4028 section 7.4): an UPDATE without a body when
    /// the far end allows UPDATE, else a re-INVITE offering our last SDP again
    /// (unchanged, so the same `o=` version: RFC 3264 section 8). It goes to the
    /// remote target along the route set, with the interval we hold and us as
    /// refresher.
    pub(super) fn send_refresh(&mut self, now: Instant, call_key: CallKey) {
        let branch = format!("{}{}", message::BRANCH_MAGIC_COOKIE, self.random_token());
        let (local_addr, tls_port) = (self.config.local_addr, self.config.tls_port);
        let min_se = self.config.session_timer.min_se_s.to_string();
        let (user_agent, timers) = (self.config.user_agent.clone(), self.timers);
        let Some(call) = self.calls.get_mut(&call_key) else {
            return;
        };
        let Some(timer) = call.session.as_mut() else {
            return;
        };
        timer.refresh_at = None;
        if call.refresh.is_some() {
            return;
        }
        let sdp_text = call.local_sdp.clone().filter(|_| !call.peer_allows_update);
        let is_invite = sdp_text.is_some();
        // RFC 3261 14.1: no re-INVITE while an INVITE of the far end is still open.
        if is_invite && (call.reoffer.is_some() || call.pending_2xx.is_some()) {
            timer.refresh_at = Some(now + REFRESH_BUSY_WAIT);
            return;
        }
        let session_expires = timer.refresh_header().value();
        let asked_s = timer.interval_s;
        let dialog = &mut call.dialog;
        let local_addr = super::local_addr_for(local_addr, tls_port, dialog.transport);
        let via = format!(
            "SIP/2.0/{} {local_addr};branch={branch};rport",
            dialog.transport.via_token()
        );
        let cseq = dialog.next_local_cseq();
        let target = dialog.request_target();
        let contact = contact_header(local_addr, &call.local_user, dialog.transport);
        let extra = [
            ("Contact", contact.as_str()),
            ("Allow", ALLOW),
            ("Supported", SUPPORTED),
            ("Session-Expires", session_expires.as_str()),
            ("Min-SE", min_se.as_str()),
        ];
        let bytes = message::write_request(&OutgoingRequest {
            method: if is_invite { "INVITE" } else { "UPDATE" },
            request_uri: &target.request_uri,
            via: &via,
            routes: &target.routes,
            from: &dialog.local_party,
            to: &dialog.remote_party,
            call_id: &dialog.id.call_id,
            cseq,
            extra: &extra,
            body: sdp_text.as_deref().map(|text| Body {
                content_type: SDP_CONTENT_TYPE,
                text,
            }),
            user_agent: &user_agent,
        });
        let (transport, peer) = (dialog.transport, dialog.peer);
        call.refresh = Some(RefreshInFlight {
            branch: branch.clone(),
            via,
            cseq,
            is_invite,
            asked_s,
        });
        if is_invite {
            let txn = InviteClientTransaction::new(now, transport, peer, bytes.clone(), timers);
            self.invite_txns.insert(
                branch,
                InviteClientEntry {
                    txn,
                    call: call_key,
                    ack_2xx: None,
                    refresh: true,
                },
            );
        } else {
            let txn = ClientTransaction::new(now, transport, peer, bytes.clone(), timers);
            self.client_txns.insert(
                branch,
                ClientEntry {
                    txn,
                    job: ClientJob::Refresh(call_key),
                },
            );
        }
        self.transmit(transport, peer, bytes);
    }

    /// The final response to our refresh. A 2xx restarts the timer on the
    /// answer's terms; 422 asks again with the far end's Min-SE; 491 tries again
    /// shortly; 405/501 to UPDATE falls back to re-INVITE; 408 and 481 mean the
    /// far end is gone (RFC 3261 12.2.1.2): the call ends. Anything else leaves
    /// the session to expire unless a later try succeeds.
    pub(super) fn on_refresh_response(
        &mut self,
        now: Instant,
        call_key: CallKey,
        response: &Response,
    ) {
        if response.code < 200 {
            return;
        }
        let Some(call) = self.calls.get_mut(&call_key) else {
            return;
        };
        let Some(refresh) = call
            .refresh
            .take_if(|refresh| refresh.branch == response.branch)
        else {
            return;
        };
        if refresh.is_invite {
            self.ack_refresh(call_key, &refresh, response);
        }
        let Some((own_call_id, interval_s, expires_at)) =
            self.calls.get(&call_key).and_then(|call| {
                let timer = call.session?;
                Some((
                    call.uas_invite.is_none(),
                    timer.interval_s,
                    timer.expires_at,
                ))
            })
        else {
            return;
        };
        match response.code {
            200..=299 => {
                if let Some(call) = self.calls.get_mut(&call_key) {
                    call.dialog.refresh_target(response.contact_uri());
                    call.session = Some(timer_after_our_request(
                        now,
                        refresh.asked_s,
                        TimerHeaders::of_response(response),
                    ));
                }
                self.events
                    .push_back(SipEvent::Refreshed { call: call_key });
            }
            422 => {
                let their_min = TimerHeaders::of_response(response).min_se_s;
                match their_min.filter(|&min| min > interval_s) {
                    Some(min) => {
                        if let Some(timer) = self.timer_mut(call_key) {
                            timer.interval_s = min;
                        }
                        self.send_refresh(now, call_key);
                    }
                    None => self.schedule_refresh(call_key, self.retry_at(now, expires_at)),
                }
            }
            491 => {
                let at = now + glare_wait(&mut self.rng, own_call_id);
                self.schedule_refresh(call_key, Some(at));
            }
            405 | 501 if !refresh.is_invite => {
                if let Some(call) = self.calls.get_mut(&call_key) {
                    call.peer_allows_update = false;
                }
                self.send_refresh(now, call_key);
            }
            408 | 481 => {
                tracing::info!(?call_key, code = response.code, "session refresh failed");
                self.end_session(now, call_key, EndReason::RefreshFailed);
            }
            _ => self.schedule_refresh(call_key, self.retry_at(now, expires_at)),
        }
    }

    fn timer_mut(&mut self, call_key: CallKey) -> Option<&mut SessionTimer> {
        self.calls.get_mut(&call_key)?.session.as_mut()
    }

    fn schedule_refresh(&mut self, call_key: CallKey, at: Option<Instant>) {
        if let Some(timer) = self.timer_mut(call_key) {
            timer.refresh_at = at;
        }
    }

    /// A refresh that failed for a passing reason is tried again halfway to the
    /// session's end, while that is more than a transaction's lifetime away.
    fn retry_at(&self, now: Instant, expires_at: Instant) -> Option<Instant> {
        let half = expires_at.saturating_duration_since(now) / 2;
        (half > self.timers.timeout()).then(|| now + half)
    }

    /// ACK the final response to our refresh re-INVITE: a new transaction along
    /// the dialog for a 2xx (kept for its retransmissions), the INVITE's own for
    /// anything else (RFC 3261 13.2.2.4, 17.1.1.3).
    fn ack_refresh(&mut self, call_key: CallKey, refresh: &RefreshInFlight, response: &Response) {
        let Some(dialog) = self.calls.get(&call_key).map(|call| call.dialog.clone()) else {
            return;
        };
        if response.code < 300 {
            let ack = self.ack_2xx(&dialog, refresh.cseq);
            if let Some(entry) = self.invite_txns.get_mut(&refresh.branch) {
                entry.ack_2xx = Some(ack.clone());
            }
            self.transmits.push_back(ack);
            return;
        }
        let target = dialog.request_target();
        let ack = message::write_request(&OutgoingRequest {
            method: "ACK",
            request_uri: &target.request_uri,
            via: &refresh.via,
            routes: &target.routes,
            from: &dialog.local_party,
            to: &response.to,
            call_id: &dialog.id.call_id,
            cseq: refresh.cseq,
            extra: &[],
            body: None,
            user_agent: &self.config.user_agent,
        });
        if let Some(entry) = self.invite_txns.get_mut(&refresh.branch) {
            entry.txn.ack_final(ack.clone());
            let (transport, peer) = (entry.txn.transport, entry.txn.peer);
            self.transmit(transport, peer, ack);
        }
    }

    /// Our refresh got no answer at all (timer B or F): as a 408, the call ends.
    pub(super) fn refresh_failed(&mut self, now: Instant, call_key: CallKey, branch: &str) {
        let ours = self
            .calls
            .get(&call_key)
            .and_then(|call| call.refresh.as_ref())
            .is_some_and(|refresh| refresh.branch == branch);
        if ours {
            tracing::info!(?call_key, "session refresh unanswered");
            self.end_session(now, call_key, EndReason::RefreshFailed);
        }
    }
}
