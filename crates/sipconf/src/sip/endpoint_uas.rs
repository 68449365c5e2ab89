//! The UAS half of the endpoint: calls placed to the bridge. Answers an INVITE
//! for the call layer (ring, accept, reject), re-INVITEs and UPDATEs within a
//! call, ACK, CANCEL and BYE, and hangs calls up (RFC 3261 sections 12, 13.3,
//! 14, 15 and 17.2; RFC 3311 for UPDATE; RFC 4028 for the session timer each
//! INVITE and UPDATE negotiates). Like the rest of the endpoint it takes the
//! time as an argument and never touches a socket.

use super::*;

impl Endpoint {
    pub(super) fn handle_invite(
        &mut self,
        now: Instant,
        origin: Origin,
        key: ServerKey,
        request: Request,
    ) {
        if request.to_tag.is_some() {
            self.handle_reinvite(now, origin, key, request);
            return;
        }
        if self.calls.len() >= self.config.max_dialogs {
            self.stats.overload_rejections_total += 1;
            self.respond_stateless(&origin, &request, 503, "Service Unavailable");
            return;
        }
        if self.too_many_pending_invites(origin.source.ip()) {
            self.refuse_pending_invite(&origin, &request);
            return;
        }
        let offer = match parse_sdp_body(&request) {
            Ok(Some(offer)) => offer,
            Ok(None) => {
                // We need the caller's offer to pick a codec (offerless INVITE unsupported).
                self.respond(
                    now,
                    &origin,
                    key,
                    &request,
                    None,
                    Reply::new(488, "SDP Offer Required"),
                );
                return;
            }
            Err(refusal) => {
                let extra = [("Accept", SDP_CONTENT_TYPE)];
                self.respond(
                    now,
                    &origin,
                    key,
                    &request,
                    None,
                    Reply::new(refusal.code, &refusal.reason).extra(&extra),
                );
                return;
            }
        };

        let timer = TimerAnswer::decide(
            self.config.session_timer,
            TimerHeaders::of_request(&request),
        );
        if let TimerAnswer::TooSmall { min_se_s } = timer {
            self.refuse_too_small(now, &origin, key, &request, None, min_se_s);
            return;
        }
        let call_key = CallKey(self.next_call);
        self.next_call += 1;
        let local_tag = self.random_token();
        let dialog = Dialog::from_invite(&request, local_tag, origin.transport, origin.source);
        self.open_invite_txn(now, &key, &origin, call_key, &request);
        self.dialogs.insert(dialog.id.clone(), call_key);
        self.calls.insert(
            call_key,
            Call {
                dialog,
                phase: CallPhase::Offered,
                uas_invite: Some(UasInvite {
                    source: origin.source.ip(),
                    key,
                    echo: request.echo.clone(),
                    cseq: request.cseq,
                    timer,
                }),
                outgoing: None,
                local_user: request.uri_user.clone(),
                pending_2xx: None,
                reoffer: None,
                local_sdp: None,
                answer_due: Some(now + UNANSWERED_CALL_TIMEOUT),
                session: None,
                peer_allows_update: message::allows(&request.headers, "UPDATE"),
                refresh: None,
                link: None,
            },
        );
        self.events.push_back(SipEvent::IncomingCall {
            link: message::link_value(&request.headers),
            call: call_key,
            user: request.uri_user,
            from: request.from_uri,
            to: request.to_uri,
            offer,
            source: origin.source,
            transport: origin.transport,
        });
    }

    /// Opens the server transaction of an INVITE (initial or re-INVITE) for
    /// `call` and answers 100 Trying at once, so the caller stops
    /// retransmitting (RFC 3261 17.2.1). The 100 carries no To tag: it creates
    /// no dialog.
    pub(super) fn open_invite_txn(
        &mut self,
        now: Instant,
        key: &ServerKey,
        origin: &Origin,
        call: CallKey,
        request: &Request,
    ) {
        self.open_server_txn(key.clone(), origin, true);
        let trying = message::write_response(
            &request.echo,
            100,
            "Trying",
            None,
            &[],
            None,
            &self.config.user_agent,
        );
        if let Some(entry) = self.server_txns.get_mut(key) {
            entry.call = Some(call);
            let bytes = entry.txn.send_response(now, 100, trying);
            self.transmit(origin.transport, origin.source, bytes);
        }
    }

    /// Find the call of an in-dialog request and check its CSeq; answers 481 or 500
    /// itself and returns `None` when the request cannot go on.
    pub(super) fn in_dialog_call(
        &mut self,
        now: Instant,
        origin: &Origin,
        key: &ServerKey,
        request: &Request,
    ) -> Option<CallKey> {
        let call_key = DialogId::of_request(request).and_then(|id| self.dialogs.get(&id).copied());
        let Some(call_key) = call_key else {
            self.respond(
                now,
                origin,
                key.clone(),
                request,
                None,
                Reply::new(481, "Call/Transaction Does Not Exist"),
            );
            return None;
        };
        let local_tag = request.to_tag.clone().unwrap_or_default();
        let in_order = self
            .calls
            .get_mut(&call_key)
            .map(|call| call.dialog.check_remote_cseq(request.cseq).is_ok())
            .unwrap_or(false);
        if !in_order {
            self.respond(
                now,
                origin,
                key.clone(),
                request,
                Some(&local_tag),
                Reply::new(500, "CSeq Out Of Order"),
            );
            return None;
        }
        Some(call_key)
    }

    pub(super) fn handle_reinvite(
        &mut self,
        now: Instant,
        origin: Origin,
        key: ServerKey,
        request: Request,
    ) {
        let Some(call_key) = self.in_dialog_call(now, &origin, &key, &request) else {
            return;
        };
        let local_tag = request.to_tag.clone().unwrap_or_default();
        let Some(call) = self.calls.get(&call_key) else {
            return;
        };
        // RFC 3261 14.1: our own re-INVITE is on its way (a session refresh).
        if call.refresh.as_ref().is_some_and(|r| r.is_invite) {
            self.respond(
                now,
                &origin,
                key,
                &request,
                Some(&local_tag),
                Reply::new(491, "Request Pending"),
            );
            return;
        }
        // RFC 3261 14.2: one offer at a time.
        let busy = call.reoffer.is_some()
            || call.pending_2xx.is_some()
            || call.phase != CallPhase::Confirmed;
        let local_sdp = call.local_sdp.clone();
        if busy {
            self.refuse_offer_pending(now, &origin, key, &request, &local_tag);
            return;
        }
        let Some(timer) = self.in_dialog_timer(now, &origin, &key, &request) else {
            return;
        };
        match parse_sdp_body(&request) {
            Ok(Some(offer)) => {
                self.open_invite_txn(now, &key, &origin, call_key, &request);
                self.await_reoffer_answer(now, call_key, key, request, true, offer, timer);
            }
            Ok(None) => {
                // Offerless re-INVITE (e.g. a session refresh): offer our current SDP again;
                // the answer comes in the ACK and changes nothing we need.
                let Some(sdp_text) = local_sdp else {
                    self.respond(
                        now,
                        &origin,
                        key,
                        &request,
                        Some(&local_tag),
                        Reply::new(488, "Not Acceptable Here"),
                    );
                    return;
                };
                self.open_server_txn(key.clone(), &origin, true);
                if let Some(call) = self.calls.get_mut(&call_key) {
                    call.dialog.refresh_target(request.contact_uri());
                }
                self.send_invite_2xx(
                    now,
                    call_key,
                    &key,
                    &request.echo,
                    request.cseq,
                    &sdp_text,
                    timer,
                );
            }
            Err(refusal) => {
                self.respond(
                    now,
                    &origin,
                    key,
                    &request,
                    Some(&local_tag),
                    Reply::new(refusal.code, &refusal.reason),
                );
            }
        }
    }

    /// Send 200 with SDP to an INVITE of `call` and retransmit it until ACK. The
    /// 2xx that creates the dialog copies the INVITE's Record-Route (RFC 3261
    /// 12.1.1); every 2xx carries the session timer `timer` and restarts it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_invite_2xx(
        &mut self,
        now: Instant,
        call_key: CallKey,
        key: &ServerKey,
        echo: &EchoHeaders,
        cseq: u32,
        sdp_text: &str,
        timer: TimerAnswer,
    ) {
        let Some(call) = self.calls.get(&call_key) else {
            return;
        };
        let contact = contact_header(
            self.config.local_addr_for(call.dialog.transport),
            &call.local_user,
            call.dialog.transport,
        );
        let local_tag = call.dialog.id.local_tag.clone();
        let creates_dialog = call.phase == CallPhase::Answered;
        let record_routes = if creates_dialog {
            call.dialog.route_set.clone()
        } else {
            Vec::new()
        };
        let timer_headers = timer_headers(timer);
        let link = call.link.clone();
        let mut extra = vec![
            ("Contact", contact.as_str()),
            ("Allow", ALLOW),
            ("Supported", SUPPORTED),
        ];
        extra.extend(record_routes.iter().map(|rr| ("Record-Route", rr.as_str())));
        extra.extend(timer_headers.iter().map(|(n, v)| (*n, v.as_str())));
        if let Some(link) = &link {
            extra.push((message::LINK_HEADER, link.as_str()));
        }
        let body = Body {
            content_type: SDP_CONTENT_TYPE,
            text: sdp_text,
        };
        let Some(bytes) = self.respond_in(
            now,
            key,
            echo,
            &local_tag,
            Reply::new(200, "OK").extra(&extra).body(body),
        ) else {
            return;
        };
        let Some((transport, destination)) = self
            .server_txns
            .get(key)
            .map(|entry| (entry.txn.transport, entry.txn.peer))
        else {
            return;
        };
        if let Some(call) = self.calls.get_mut(&call_key) {
            // The 2xx is retransmitted on every transport: proxies may drop it (13.3.1.4).
            call.pending_2xx = Some(Pending2xx {
                cseq,
                retransmission: Retransmission::new(now, bytes, self.timers, true),
                transport,
                destination,
            });
            call.local_sdp = Some(sdp_text.to_owned());
        }
        self.session_refreshed(now, call_key, timer, !creates_dialog);
    }

    /// One offer at a time (RFC 3261 14.2, RFC 3311 5.2): 500 with Retry-After.
    pub(super) fn refuse_offer_pending(
        &mut self,
        now: Instant,
        origin: &Origin,
        key: ServerKey,
        request: &Request,
        local_tag: &str,
    ) {
        let extra = [("Retry-After", "1")];
        self.respond(
            now,
            origin,
            key,
            request,
            Some(local_tag),
            Reply::new(500, "Offer Pending").extra(&extra),
        );
    }

    /// Hands a re-INVITE's or UPDATE's offer to the call layer and waits (at
    /// most the transaction timeout) for its answer.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn await_reoffer_answer(
        &mut self,
        now: Instant,
        call_key: CallKey,
        key: ServerKey,
        request: Request,
        is_invite: bool,
        offer: sdp::Offer,
        timer: TimerAnswer,
    ) {
        if let Some(call) = self.calls.get_mut(&call_key) {
            call.reoffer = Some(PendingReoffer {
                contact: request.contact_uri(),
                key,
                echo: request.echo,
                is_invite,
                cseq: request.cseq,
                timer,
            });
            call.answer_due = Some(now + self.timers.timeout());
        }
        self.events.push_back(SipEvent::Reoffer {
            call: call_key,
            offer,
        });
    }

    pub(super) fn handle_update(
        &mut self,
        now: Instant,
        origin: Origin,
        key: ServerKey,
        request: Request,
    ) {
        let Some(call_key) = self.in_dialog_call(now, &origin, &key, &request) else {
            return;
        };
        let local_tag = request.to_tag.clone().unwrap_or_default();
        let busy = self
            .calls
            .get(&call_key)
            .is_none_or(|call| call.reoffer.is_some());
        if busy {
            self.refuse_offer_pending(now, &origin, key, &request, &local_tag);
            return;
        }
        let Some(timer) = self.in_dialog_timer(now, &origin, &key, &request) else {
            return;
        };
        match parse_sdp_body(&request) {
            Ok(Some(offer)) => {
                self.open_server_txn(key.clone(), &origin, false);
                self.await_reoffer_answer(now, call_key, key, request, false, offer, timer);
            }
            // UPDATE without a body refreshes the session (RFC 3311, RFC 4028).
            Ok(None) => {
                let contact = match self.calls.get_mut(&call_key) {
                    Some(call) => {
                        call.dialog.refresh_target(request.contact_uri());
                        contact_header(
                            self.config.local_addr_for(call.dialog.transport),
                            &call.local_user,
                            call.dialog.transport,
                        )
                    }
                    None => return,
                };
                let timer_headers = timer_headers(timer);
                let mut extra = vec![("Contact", contact.as_str()), ("Supported", SUPPORTED)];
                extra.extend(timer_headers.iter().map(|(n, v)| (*n, v.as_str())));
                self.respond(
                    now,
                    &origin,
                    key,
                    &request,
                    Some(&local_tag),
                    Reply::new(200, "OK").extra(&extra),
                );
                self.session_refreshed(now, call_key, timer, true);
            }
            Err(refusal) => {
                self.respond(
                    now,
                    &origin,
                    key,
                    &request,
                    Some(&local_tag),
                    Reply::new(refusal.code, &refusal.reason),
                );
            }
        }
    }

    pub(super) fn handle_ack(&mut self, now: Instant, request: &Request) {
        let key = ServerKey::new(
            &request.branch,
            &request.sent_by,
            &Method::INVITE,
            &request.call_id,
            request.cseq,
            request.from_tag.as_deref(),
        );
        // ACK for a non-2xx final response: same branch as the INVITE (17.2.1).
        if let Some(entry) = self.server_txns.get_mut(&key) {
            if entry.txn.state == ServerState::Completed {
                entry.txn.on_ack(now);
                return;
            }
        }
        // ACK for a 2xx: its own transaction, matched to the dialog (13.3.1.4).
        let Some(call_key) =
            DialogId::of_request(request).and_then(|id| self.dialogs.get(&id).copied())
        else {
            return;
        };
        let Some(call) = self.calls.get_mut(&call_key) else {
            return;
        };
        if call
            .pending_2xx
            .as_ref()
            .is_some_and(|pending| pending.cseq == request.cseq)
        {
            call.pending_2xx = None;
            if call.phase == CallPhase::Answered {
                call.phase = CallPhase::Confirmed;
                self.events
                    .push_back(SipEvent::Confirmed { call: call_key });
            }
        }
    }

    pub(super) fn handle_cancel(
        &mut self,
        now: Instant,
        origin: Origin,
        key: ServerKey,
        request: &Request,
    ) {
        // CANCEL matches the INVITE's server transaction (RFC 3261 9.2).
        let invite_key = ServerKey::new(
            &request.branch,
            &request.sent_by,
            &Method::INVITE,
            &request.call_id,
            request.cseq,
            request.from_tag.as_deref(),
        );
        let Some(entry) = self.server_txns.get(&invite_key) else {
            self.respond(
                now,
                &origin,
                key,
                request,
                None,
                Reply::new(481, "Call/Transaction Does Not Exist"),
            );
            return;
        };
        let call_key = entry.call;
        let unanswered = entry.txn.state == ServerState::Proceeding;
        let local_tag = call_key
            .and_then(|k| self.calls.get(&k))
            .map(|call| call.dialog.id.local_tag.clone());
        self.respond(
            now,
            &origin,
            key,
            request,
            local_tag.as_deref(),
            Reply::new(200, "OK"),
        );
        let Some(call_key) = call_key else {
            return;
        };
        if !unanswered {
            return;
        }
        let Some(call) = self.calls.get_mut(&call_key) else {
            return;
        };
        if call.phase != CallPhase::Offered {
            // A cancelled re-INVITE fails and leaves the session as it was (RFC 3261 14.2);
            // the call layer's later answer to its Reoffer is then ignored.
            let cancelled = call.reoffer.take_if(|pending| pending.key == invite_key);
            if let Some(pending) = cancelled {
                let tag = call.dialog.id.local_tag.clone();
                self.respond_in(
                    now,
                    &pending.key,
                    &pending.echo,
                    &tag,
                    Reply::new(487, "Request Terminated"),
                );
            }
            return;
        }
        let Some(echo) = call.uas_invite.as_ref().map(|uas| uas.echo.clone()) else {
            return;
        };
        let tag = call.dialog.id.local_tag.clone();
        self.respond_in(
            now,
            &invite_key,
            &echo,
            &tag,
            Reply::new(487, "Request Terminated"),
        );
        self.events
            .push_back(SipEvent::Cancelled { call: call_key });
        self.end_call(call_key, EndReason::Cancelled);
    }

    pub(super) fn handle_bye(
        &mut self,
        now: Instant,
        origin: Origin,
        key: ServerKey,
        request: &Request,
    ) {
        let Some(call_key) = self.in_dialog_call(now, &origin, &key, request) else {
            return;
        };
        let local_tag = request.to_tag.clone().unwrap_or_default();
        self.respond(
            now,
            &origin,
            key,
            request,
            Some(&local_tag),
            Reply::new(200, "OK"),
        );
        self.abort_pending(now, call_key);
        self.end_call(call_key, EndReason::RemoteBye);
    }

    /// Answer any INVITE or re-offer of `call` still waiting for the call layer with 487.
    pub(super) fn abort_pending(&mut self, now: Instant, call_key: CallKey) {
        let Some(call) = self.calls.get_mut(&call_key) else {
            return;
        };
        let tag = call.dialog.id.local_tag.clone();
        let reoffer = call.reoffer.take();
        let invite = call
            .uas_invite
            .as_ref()
            .filter(|_| call.phase == CallPhase::Offered)
            .map(|uas| (uas.key.clone(), uas.echo.clone()));
        if let Some(pending) = reoffer {
            self.respond_in(
                now,
                &pending.key,
                &pending.echo,
                &tag,
                Reply::new(487, "Request Terminated"),
            );
        }
        if let Some((key, echo)) = invite {
            self.respond_in(
                now,
                &key,
                &echo,
                &tag,
                Reply::new(487, "Request Terminated"),
            );
        }
    }

    /// Forget a call and report its end (exactly once per call).
    pub(super) fn end_call(&mut self, call_key: CallKey, reason: EndReason) {
        if let Some(call) = self.calls.remove(&call_key) {
            self.dialogs.remove(&call.dialog.id);
            // An INVITE of ours that got a 1xx has no timer of its own (RFC 3261
            // 17.1.1.2): with its call gone nothing would ever end it. Those
            // still sending (timer B) or absorbing a final answer's
            // retransmissions (timers D, M) end by their timers.
            self.invite_txns.retain(|_, entry| {
                entry.call != call_key
                    || entry.txn.state != crate::sip::transaction::InviteClientState::Proceeding
            });
            self.events.push_back(SipEvent::Ended {
                call: call_key,
                reason,
            });
        }
    }

    /// 180 Ringing for an INVITE not answered yet.
    pub fn ring(&mut self, now: Instant, call: CallKey) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let Some(uas) = c
            .uas_invite
            .as_ref()
            .filter(|_| c.phase == CallPhase::Offered)
        else {
            return;
        };
        let (key, echo, tag) = (
            uas.key.clone(),
            uas.echo.clone(),
            c.dialog.id.local_tag.clone(),
        );
        let contact = contact_header(
            self.config.local_addr_for(c.dialog.transport),
            &c.local_user,
            c.dialog.transport,
        );
        // A provisional response with a tag creates an early dialog: it carries the
        // Record-Route too (RFC 3261 12.1.1).
        let record_routes = c.dialog.route_set.clone();
        let mut extra = vec![("Contact", contact.as_str())];
        extra.extend(record_routes.iter().map(|rr| ("Record-Route", rr.as_str())));
        self.respond_in(
            now,
            &key,
            &echo,
            &tag,
            Reply::new(180, "Ringing").extra(&extra),
        );
    }

    /// 200 OK with our SDP answer; retransmitted until ACK.
    pub fn accept(&mut self, now: Instant, call: CallKey, answer_sdp: String) {
        self.accept_link(now, call, answer_sdp, None);
    }

    /// Answers like `accept`, marking the 2xx with `X-Sipconf-Link: link`
    /// when given (a cascade link answered).
    pub fn accept_link(
        &mut self,
        now: Instant,
        call: CallKey,
        answer_sdp: String,
        link: Option<String>,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        c.link = link;
        let Some(uas) = c
            .uas_invite
            .as_ref()
            .filter(|_| c.phase == CallPhase::Offered)
        else {
            return;
        };
        let (key, echo, cseq, timer) = (uas.key.clone(), uas.echo.clone(), uas.cseq, uas.timer);
        c.phase = CallPhase::Answered;
        c.answer_due = None;
        self.send_invite_2xx(now, call, &key, &echo, cseq, &answer_sdp, timer);
    }

    /// Final refusal of an INVITE not answered yet (404, 486, 488, 603...).
    pub fn reject(&mut self, now: Instant, call: CallKey, code: u16, reason: &str) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let Some(uas) = c
            .uas_invite
            .as_ref()
            .filter(|_| c.phase == CallPhase::Offered)
        else {
            return;
        };
        let code = final_failure_code(code);
        let (key, echo, tag) = (
            uas.key.clone(),
            uas.echo.clone(),
            c.dialog.id.local_tag.clone(),
        );
        self.respond_in(now, &key, &echo, &tag, Reply::new(code, reason));
        self.end_call(call, EndReason::Rejected);
    }

    /// Answer the pending re-INVITE or UPDATE offer with our SDP.
    pub fn accept_reoffer(&mut self, now: Instant, call: CallKey, answer_sdp: String) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(pending) = c.reoffer.take() else {
            return;
        };
        c.answer_due = None;
        c.dialog.refresh_target(pending.contact.clone());
        if pending.is_invite {
            self.send_invite_2xx(
                now,
                call,
                &pending.key,
                &pending.echo,
                pending.cseq,
                &answer_sdp,
                pending.timer,
            );
            return;
        }
        c.local_sdp = Some(answer_sdp.clone());
        let contact = contact_header(
            self.config.local_addr_for(c.dialog.transport),
            &c.local_user,
            c.dialog.transport,
        );
        let tag = c.dialog.id.local_tag.clone();
        let timer_headers = timer_headers(pending.timer);
        let mut extra = vec![("Contact", contact.as_str()), ("Supported", SUPPORTED)];
        extra.extend(timer_headers.iter().map(|(n, v)| (*n, v.as_str())));
        let body = Body {
            content_type: SDP_CONTENT_TYPE,
            text: &answer_sdp,
        };
        let sent = self.respond_in(
            now,
            &pending.key,
            &pending.echo,
            &tag,
            Reply::new(200, "OK").extra(&extra).body(body),
        );
        if sent.is_some() {
            self.session_refreshed(now, call, pending.timer, true);
        }
    }

    /// Refuse the pending re-offer; the session stays as it was (RFC 3261 14.2).
    pub fn reject_reoffer(&mut self, now: Instant, call: CallKey, code: u16, reason: &str) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(pending) = c.reoffer.take() else {
            return;
        };
        c.answer_due = None;
        let tag = c.dialog.id.local_tag.clone();
        let code = final_failure_code(code);
        self.respond_in(
            now,
            &pending.key,
            &pending.echo,
            &tag,
            Reply::new(code, reason),
        );
    }

    /// End the call from our side: BYE once answered; before that 487 to an INVITE we
    /// received, or CANCEL of one we sent.
    pub fn hangup(&mut self, now: Instant, call: CallKey) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        match c.phase {
            CallPhase::Offered => {
                self.abort_pending(now, call);
                self.end_call(call, EndReason::LocalBye);
            }
            CallPhase::Answered | CallPhase::Confirmed => {
                self.abort_pending(now, call);
                let Some(mut c) = self.calls.get(&call).cloned() else {
                    return;
                };
                // Sending BYE before the ACK stops our 2xx retransmissions early; the
                // caller's ACK, if it comes, finds no dialog and is ignored.
                c.pending_2xx = None;
                c.phase = CallPhase::Terminating;
                self.send_bye(now, &mut c.dialog, Some(call));
                self.calls.insert(call, c);
            }
            CallPhase::Calling => self.cancel_outgoing(now, call),
            CallPhase::Terminating => {}
        }
    }
}

/// The Require option tags we do not support, if any (RFC 3261 8.2.2.3). We
/// support only `timer` (RFC 4028).
pub(super) fn required_extensions(request: &Request) -> Option<String> {
    let tags: Vec<String> = request
        .headers
        .get_raw(&Name::REQUIRE)
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case(session_timer::OPTION_TAG))
        .collect();
    (!tags.is_empty()).then(|| tags.join(", "))
}

/// Keep a refusal code in 300..=699 so the call layer cannot send a 2xx by mistake.
fn final_failure_code(code: u16) -> u16 {
    if (300..=699).contains(&code) {
        code
    } else {
        500
    }
}

/// A request body we refuse, with the response to send.
struct SdpRefusal {
    code: u16,
    reason: String,
}

/// The SDP offer in a request: `Ok(None)` without a body.
fn parse_sdp_body(request: &Request) -> Result<Option<sdp::Offer>, SdpRefusal> {
    if request.body.is_empty() {
        return Ok(None);
    }
    match request.content_type() {
        Some(content_type) if content_type == SDP_CONTENT_TYPE => {}
        _ => {
            return Err(SdpRefusal {
                code: 415,
                reason: "Unsupported Media Type".to_owned(),
            })
        }
    }
    sdp::parse_offer(&request.body)
        .map(Some)
        .map_err(|error| SdpRefusal {
            code: 488,
            reason: format!("Not Acceptable Here ({error})"),
        })
}
