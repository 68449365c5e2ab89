//! The UAC half of the endpoint: calls the bridge places. Sends the INVITE, answers
//! digest challenges, reports progress, ACKs the final response, and CANCELs when the
//! call layer hangs up first (RFC 3261 sections 9.1, 13.2, 17.1.1 and 22); asks for a
//! session timer and answers a 422 (RFC 4028 section 7). Like the rest of the
//! endpoint it takes the time as an argument and never touches a socket.

use super::*;
use crate::sip::auth;
use crate::sip::transaction::{InviteClientTimeout, InviteResponse};

/// The status codes that carry a challenge, with the header that holds it and the one
/// that answers it (RFC 3261 22.2, 22.3).
fn challenge_headers(code: u16) -> Option<(Name, &'static str)> {
    match code {
        401 => Some((Name::WWW_AUTHENTICATE, "Authorization")),
        407 => Some((Name::PROXY_AUTHENTICATE, "Proxy-Authorization")),
        _ => None,
    }
}

/// The user part of a SIP URI (`sip:1000@bridge` -> `1000`), empty if none.
fn uri_user(uri: &str) -> &str {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
        .unwrap_or(uri);
    rest.split_once('@').map_or("", |(user, _)| user)
}

/// A display name safe inside a quoted-string (RFC 3261 25.1): no quotes, backslashes or
/// control characters.
fn quoted_display(display: &str) -> String {
    display
        .chars()
        .filter(|c| !matches!(c, '"' | '\\') && !c.is_control())
        .collect()
}

impl Endpoint {
    /// Place a call: send the INVITE and return its key. Events follow: `Progress`, then
    /// `Answered` or `Failed` + `Ended`.
    pub fn invite(&mut self, now: Instant, call: OutgoingCall) -> Result<CallKey, InviteError> {
        if self.calls.len() >= self.config.max_dialogs
            || self.transaction_count() >= self.config.max_transactions
        {
            return Err(InviteError::TableFull);
        }
        let call_key = CallKey(self.next_call);
        self.next_call += 1;
        let local_tag = self.random_token();
        let call_id = format!("{}@{}", self.random_token(), self.config.local_addr.ip());
        let local_party = match &call.from_display {
            Some(display) => format!(
                "\"{}\" <{}>;tag={local_tag}",
                quoted_display(display),
                call.from_uri
            ),
            None => format!("<{}>;tag={local_tag}", call.from_uri),
        };
        let dialog = Dialog::for_outgoing(
            call_id,
            local_tag,
            local_party,
            format!("<{}>", call.request_uri),
            call.request_uri.clone(),
            call.transport,
            call.destination,
        );
        self.calls.insert(
            call_key,
            Call {
                dialog,
                phase: CallPhase::Calling,
                uas_invite: None,
                outgoing: Some(Outgoing {
                    destination: call.destination,
                    credentials: call.credentials,
                    via: String::new(),
                    branch: String::new(),
                    invite_cseq: 0,
                    authorizations: Vec::new(),
                    challenges_answered: Vec::new(),
                    stale_retried: false,
                    provisional_received: false,
                    progress_reported: Vec::new(),
                    hangup: Hangup::NotWanted,
                    session_expires_s: self.config.session_timer.session_expires_s,
                    min_se_s: self.config.session_timer.min_se_s,
                }),
                local_user: uri_user(&call.from_uri).to_owned(),
                pending_2xx: None,
                reoffer: None,
                local_sdp: Some(call.offer_sdp),
                answer_due: None,
                session: None,
                peer_allows_update: false,
                refresh: None,
                link: call.link,
            },
        );
        self.send_invite(now, call_key);
        Ok(call_key)
    }

    /// Send the call's INVITE in a new transaction: a new branch and the next CSeq, with
    /// every credential collected so far. It asks for a session timer with us as the
    /// refresher (RFC 4028 section 7.1).
    fn send_invite(&mut self, now: Instant, call_key: CallKey) {
        let branch = format!("{}{}", message::BRANCH_MAGIC_COOKIE, self.random_token());
        let (local_addr, tls_port) = (self.config.local_addr, self.config.tls_port);
        let Some(call) = self.calls.get_mut(&call_key) else {
            return;
        };
        let Some(outgoing) = call.outgoing.as_mut() else {
            return;
        };
        let dialog = &mut call.dialog;
        let local_addr = super::local_addr_for(local_addr, tls_port, dialog.transport);
        let via = format!(
            "SIP/2.0/{} {local_addr};branch={branch};rport",
            dialog.transport.via_token()
        );
        let cseq = dialog.next_local_cseq();
        let contact = contact_header(local_addr, &call.local_user, dialog.transport);
        let session_expires = session_timer::SessionExpires {
            interval_s: outgoing.session_expires_s,
            refresher: Some(session_timer::Refresher::Uac),
        }
        .value();
        let min_se = outgoing.min_se_s.to_string();
        let mut extra: Vec<(&str, &str)> = vec![
            ("Contact", contact.as_str()),
            ("Allow", ALLOW),
            ("Supported", SUPPORTED),
            ("Session-Expires", session_expires.as_str()),
            ("Min-SE", min_se.as_str()),
        ];
        if let Some(link) = &call.link {
            extra.push((message::LINK_HEADER, link.as_str()));
        }
        extra.extend(
            outgoing
                .authorizations
                .iter()
                .map(|a| (a.header, a.value.as_str())),
        );
        let sdp_text = call.local_sdp.as_deref().unwrap_or_default();
        let bytes = message::write_request(&OutgoingRequest {
            method: "INVITE",
            request_uri: &dialog.remote_target,
            via: &via,
            routes: &dialog.route_set,
            from: &dialog.local_party,
            to: &dialog.remote_party,
            call_id: &dialog.id.call_id,
            cseq,
            extra: &extra,
            body: Some(Body {
                content_type: SDP_CONTENT_TYPE,
                text: sdp_text,
            }),
            user_agent: &self.config.user_agent,
        });
        outgoing.via = via;
        outgoing.branch = branch.clone();
        outgoing.invite_cseq = cseq;
        outgoing.provisional_received = false;
        let (transport, destination) = (dialog.transport, outgoing.destination);
        let txn =
            InviteClientTransaction::new(now, transport, destination, bytes.clone(), self.timers);
        self.invite_txns.insert(
            branch,
            InviteClientEntry {
                txn,
                call: call_key,
                ack_2xx: None,
                refresh: false,
            },
        );
        self.transmit(transport, destination, bytes);
    }

    pub(super) fn handle_invite_response(&mut self, now: Instant, response: Response) {
        let Some(entry) = self.invite_txns.get_mut(&response.branch) else {
            return;
        };
        let call_key = entry.call;
        let refresh = entry.refresh;
        match entry.txn.on_response(now, response.code) {
            InviteResponse::Provisional if refresh => {}
            InviteResponse::Final if refresh => self.on_refresh_response(now, call_key, &response),
            InviteResponse::Provisional => self.on_provisional(now, call_key, &response),
            InviteResponse::Final if response.code < 300 => {
                self.on_invite_2xx(now, call_key, &response)
            }
            InviteResponse::Final => self.on_invite_failure(now, call_key, &response),
            InviteResponse::Retransmitted2xx => {
                let ack = entry.ack_2xx.clone();
                let other_fork = self.calls.get(&call_key).is_some_and(|call| {
                    Some(&call.dialog.id.remote_tag) != response.to_tag.as_ref()
                });
                if other_fork {
                    self.end_other_fork(now, call_key, &response);
                } else if let Some(ack) = ack {
                    self.transmits.push_back(ack);
                }
            }
            InviteResponse::ResendAck(bytes) => {
                let (transport, peer) = (entry.txn.transport, entry.txn.peer);
                self.transmit(transport, peer, bytes);
            }
            InviteResponse::Ignore => {}
        }
    }

    /// The call's INVITE, if `call_key` is still waiting for the final response to it.
    fn calling(&mut self, call_key: CallKey) -> Option<(&mut Dialog, &mut Outgoing)> {
        let call = self.calls.get_mut(&call_key)?;
        if call.phase != CallPhase::Calling {
            return None;
        }
        Some((&mut call.dialog, call.outgoing.as_mut()?))
    }

    fn on_provisional(&mut self, now: Instant, call_key: CallKey, response: &Response) {
        let Some((_, outgoing)) = self.calling(call_key) else {
            return;
        };
        if outgoing.branch != response.branch {
            return;
        }
        outgoing.provisional_received = true;
        let code = response.code;
        let report = code != 100 && !outgoing.progress_reported.contains(&code);
        if report {
            outgoing.progress_reported.push(code);
        }
        let cancel_now = outgoing.hangup == Hangup::Wanted;
        if report {
            self.events.push_back(SipEvent::Progress {
                call: call_key,
                code,
            });
        }
        if cancel_now {
            self.send_cancel(now, call_key);
        }
    }

    /// The ACK of a 2xx: a new transaction sent along the dialog (RFC 3261 13.2.2.4),
    /// with the INVITE's CSeq number.
    pub(super) fn ack_2xx(&mut self, dialog: &Dialog, invite_cseq: u32) -> Transmit {
        let branch = format!("{}{}", message::BRANCH_MAGIC_COOKIE, self.random_token());
        let via = format!(
            "SIP/2.0/{} {};branch={branch};rport",
            dialog.transport.via_token(),
            self.config.local_addr_for(dialog.transport)
        );
        let target = dialog.request_target();
        let bytes = message::write_request(&OutgoingRequest {
            method: "ACK",
            request_uri: &target.request_uri,
            via: &via,
            routes: &target.routes,
            from: &dialog.local_party,
            to: &dialog.remote_party,
            call_id: &dialog.id.call_id,
            cseq: invite_cseq,
            extra: &[],
            body: None,
            user_agent: &self.config.user_agent,
        });
        Transmit {
            transport: dialog.transport,
            destination: dialog.peer,
            bytes,
        }
    }

    /// A 2xx from a second fork of a forking proxy: we keep one dialog per call, so this
    /// one is ACKed and ended at once (RFC 3261 13.2.2.4).
    fn end_other_fork(&mut self, now: Instant, call_key: CallKey, response: &Response) {
        let Some(mut fork) = self.calls.get(&call_key).map(|call| call.dialog.clone()) else {
            return;
        };
        fork.establish_from_2xx(response);
        fork.local_cseq = response.cseq;
        let ack = self.ack_2xx(&fork, response.cseq);
        self.transmits.push_back(ack);
        self.send_bye(now, &mut fork, None);
    }

    fn on_invite_2xx(&mut self, now: Instant, call_key: CallKey, response: &Response) {
        let Some((dialog, outgoing)) = self.calling(call_key) else {
            return;
        };
        let hung_up = outgoing.hangup != Hangup::NotWanted;
        let invite_cseq = outgoing.invite_cseq;
        dialog.establish_from_2xx(response);
        let dialog = dialog.clone();
        let ack = self.ack_2xx(&dialog, invite_cseq);
        let dialog_id = dialog.id;
        if let Some(entry) = self.invite_txns.get_mut(&response.branch) {
            entry.ack_2xx = Some(ack.clone());
        }
        self.transmits.push_back(ack);
        self.dialogs.insert(dialog_id, call_key);

        if let Some(call) = self.calls.get_mut(&call_key) {
            let asked_s = call
                .outgoing
                .as_ref()
                .map_or(self.config.session_timer.session_expires_s, |o| {
                    o.session_expires_s
                });
            call.session = Some(session_timer::timer_after_our_request(
                now,
                asked_s,
                TimerHeaders::of_response(response),
            ));
            call.peer_allows_update = message::allows(&response.headers, "UPDATE");
        }
        let answer = if response.body.is_empty() {
            Err("Answer Without SDP".to_owned())
        } else if response.content_type().as_deref() != Some(SDP_CONTENT_TYPE) {
            Err("Answer Not SDP".to_owned())
        } else {
            sdp::parse_answer(&response.body).map_err(|error| format!("Bad SDP Answer ({error})"))
        };
        let Some(mut call) = self.calls.get(&call_key).cloned() else {
            return;
        };
        call.outgoing = None;
        if hung_up {
            // The 2xx crossed our CANCEL (or came before any provisional): the call
            // layer no longer wants it, so end the session we just got (RFC 3261 9.1).
            call.phase = CallPhase::Terminating;
            self.send_bye(now, &mut call.dialog, Some(call_key));
            self.calls.insert(call_key, call);
            return;
        }
        match answer {
            Ok(answer) => {
                call.phase = CallPhase::Confirmed;
                self.calls.insert(call_key, call);
                self.events.push_back(SipEvent::Answered {
                    call: call_key,
                    answer,
                    link: message::link_value(&response.headers),
                });
            }
            Err(reason) => {
                // We cannot use the session: ACK (sent) then BYE it (RFC 3261 13.2.2.4).
                self.send_bye(now, &mut call.dialog, None);
                self.calls.insert(call_key, call);
                self.fail(call_key, 488, reason);
            }
        }
    }

    fn on_invite_failure(&mut self, now: Instant, call_key: CallKey, response: &Response) {
        let user_agent = self.config.user_agent.clone();
        let Some(call) = self.calls.get(&call_key) else {
            return;
        };
        let Some(outgoing) = call
            .outgoing
            .as_ref()
            .filter(|o| o.branch == response.branch)
        else {
            return;
        };
        // The ACK of a non-2xx belongs to the INVITE transaction: same Via and branch,
        // the To of the response (RFC 3261 17.1.1.3).
        let dialog = &call.dialog;
        let ack = message::write_request(&OutgoingRequest {
            method: "ACK",
            request_uri: &dialog.remote_target,
            via: &outgoing.via,
            routes: &dialog.route_set,
            from: &dialog.local_party,
            to: &response.to,
            call_id: &dialog.id.call_id,
            cseq: outgoing.invite_cseq,
            extra: &[],
            body: None,
            user_agent: &user_agent,
        });
        if let Some(entry) = self.invite_txns.get_mut(&response.branch) {
            entry.txn.ack_final(ack.clone());
            let (transport, peer) = (entry.txn.transport, entry.txn.peer);
            self.transmit(transport, peer, ack);
        }
        if self.authenticate(call_key, response) || self.accept_min_se(call_key, response) {
            self.send_invite(now, call_key);
            return;
        }
        self.fail(call_key, response.code, response.reason.clone());
    }

    /// Answer the challenge in a 401/407 for the next INVITE. `false` when we cannot: no
    /// credentials, the call layer hung up, a challenge we do not support, or a realm
    /// that already rejected our credentials.
    fn authenticate(&mut self, call_key: CallKey, response: &Response) -> bool {
        let Some((challenge_name, answer_header_name)) = challenge_headers(response.code) else {
            return false;
        };
        let cnonce = self.random_token();
        let Some((dialog, outgoing)) = self.calling(call_key) else {
            return false;
        };
        let request_uri = dialog.remote_target.clone();
        if outgoing.hangup != Hangup::NotWanted {
            return false;
        }
        let Some(credentials) = outgoing.credentials.clone() else {
            return false;
        };
        let mut answered_any = false;
        for value in response.header_values(&challenge_name) {
            let challenge = match auth::parse_challenge(&value) {
                Ok(challenge) => challenge,
                Err(error) => {
                    tracing::debug!(%error, "authentication challenge not answered");
                    continue;
                }
            };
            let seen = (response.code, challenge.realm.clone());
            if outgoing.challenges_answered.contains(&seen) {
                // Our credentials for this realm were refused: give up (RFC 3261 22.2),
                // unless only the nonce had expired (stale, RFC 2617 3.2.1); that is
                // retried once so a server that always says stale cannot loop us.
                if !challenge.stale || outgoing.stale_retried {
                    return false;
                }
                outgoing.stale_retried = true;
            } else {
                outgoing.challenges_answered.push(seen);
            }
            let value = auth::authorization(
                &challenge,
                &credentials.username,
                &credentials.password,
                "INVITE",
                &request_uri,
                &cnonce,
                // Each INVITE answers a fresh challenge: the nonce's first use.
                1,
            );
            outgoing
                .authorizations
                .retain(|a| !(a.header == answer_header_name && a.realm == challenge.realm));
            outgoing.authorizations.push(SentAuthorization {
                header: answer_header_name,
                realm: challenge.realm,
                value,
            });
            answered_any = true;
        }
        answered_any
    }

    /// A 422 names the far end's Min-SE: ask again with it, once per larger value
    /// (RFC 4028 section 7.4). `false` when there is nothing to ask for.
    fn accept_min_se(&mut self, call_key: CallKey, response: &Response) -> bool {
        if response.code != 422 {
            return false;
        }
        let their_min = TimerHeaders::of_response(response).min_se_s;
        let Some((_, outgoing)) = self.calling(call_key) else {
            return false;
        };
        match their_min {
            Some(min)
                if min > outgoing.session_expires_s && outgoing.hangup == Hangup::NotWanted =>
            {
                outgoing.session_expires_s = min;
                outgoing.min_se_s = outgoing.min_se_s.max(min);
                true
            }
            _ => false,
        }
    }

    /// Report a failed outgoing call and forget it.
    fn fail(&mut self, call_key: CallKey, code: u16, reason: String) {
        self.events.push_back(SipEvent::Failed {
            call: call_key,
            code,
            reason,
        });
        self.end_call(call_key, EndReason::Rejected);
    }

    /// The call layer hung up a call we placed before its final response.
    pub(super) fn cancel_outgoing(&mut self, now: Instant, call_key: CallKey) {
        let Some((_, outgoing)) = self.calling(call_key) else {
            return;
        };
        match outgoing.hangup {
            Hangup::NotWanted if outgoing.provisional_received => self.send_cancel(now, call_key),
            // RFC 3261 9.1: no CANCEL before a provisional response; the next one sends it.
            Hangup::NotWanted => outgoing.hangup = Hangup::Wanted,
            Hangup::Wanted | Hangup::CancelSent { .. } => {}
        }
    }

    /// CANCEL the INVITE in progress (RFC 3261 9.1): same Request-URI, Call-ID, From, To,
    /// CSeq number and Via as the INVITE, in its own non-INVITE transaction.
    fn send_cancel(&mut self, now: Instant, call_key: CallKey) {
        let user_agent = self.config.user_agent.clone();
        let give_up_at = now + self.timers.timeout();
        let timers = self.timers;
        let Some((dialog, outgoing)) = self.calling(call_key) else {
            return;
        };
        let cancel = message::write_request(&OutgoingRequest {
            method: "CANCEL",
            request_uri: &dialog.remote_target,
            via: &outgoing.via,
            routes: &dialog.route_set,
            from: &dialog.local_party,
            to: &dialog.remote_party,
            call_id: &dialog.id.call_id,
            cseq: outgoing.invite_cseq,
            extra: &[],
            body: None,
            user_agent: &user_agent,
        });
        outgoing.hangup = Hangup::CancelSent { give_up_at };
        let (transport, destination) = (dialog.transport, outgoing.destination);
        let branch = outgoing.branch.clone();
        let txn = ClientTransaction::new(now, transport, destination, cancel.clone(), timers);
        self.client_txns.insert(
            branch,
            ClientEntry {
                txn,
                job: ClientJob::Cancel,
            },
        );
        self.transmit(transport, destination, cancel);
    }

    /// Timers of our INVITE transactions (A, B, D, M) and the give-up time after CANCEL.
    pub(super) fn handle_invite_timeouts(
        &mut self,
        now: Instant,
        resend: &mut Vec<(Transport, SocketAddr, Bytes)>,
    ) {
        let mut finished = Vec::new();
        let mut timed_out = Vec::new();
        for (branch, entry) in self.invite_txns.iter_mut() {
            if entry.txn.poll_timeout().is_none_or(|at| at > now) {
                continue;
            }
            match entry.txn.handle_timeout(now) {
                InviteClientTimeout::Nothing => {}
                InviteClientTimeout::Resend(bytes) => {
                    resend.push((entry.txn.transport, entry.txn.peer, bytes));
                }
                InviteClientTimeout::TimedOut => {
                    finished.push(branch.clone());
                    timed_out.push((branch.clone(), entry.call));
                }
                InviteClientTimeout::Terminated => finished.push(branch.clone()),
            }
        }
        for branch in finished {
            self.invite_txns.remove(&branch);
        }
        // Timer B: nothing at all came back (RFC 3261 17.1.1.2).
        for (branch, call_key) in timed_out {
            if self.calling(call_key).is_some() {
                self.fail(call_key, 408, "Request Timeout".to_owned());
            } else {
                self.refresh_failed(now, call_key, &branch);
            }
        }
        // RFC 3261 9.1: no final response 64*T1 after our CANCEL ends the transaction.
        let abandoned: Vec<(CallKey, String)> = self
            .calls
            .iter()
            .filter_map(|(key, call)| {
                let outgoing = call.outgoing.as_ref()?;
                match outgoing.hangup {
                    Hangup::CancelSent { give_up_at } if give_up_at <= now => {
                        Some((*key, outgoing.branch.clone()))
                    }
                    _ => None,
                }
            })
            .collect();
        for (call_key, branch) in abandoned {
            self.invite_txns.remove(&branch);
            self.fail(
                call_key,
                487,
                "Request Terminated (no final response to CANCEL)".to_owned(),
            );
        }
    }
}
