//! The endpoint's registrations (RFC 3261 section 10): each REGISTER goes in a
//! non-INVITE client transaction of its own (retransmitted over UDP, timer F
//! when nothing answers), and what to send next is the `Registration`'s
//! decision (`registration.rs`). Like the rest of the endpoint it takes the
//! time as an argument and never touches a socket.

use super::*;
use crate::sip::registration::{Next, RegistrationConfig, RegistrationStats};
use std::sync::Arc;

/// Opaque handle for one registration in the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegistrationKey(pub usize);

impl Endpoint {
    /// Starts registering `config`: the first REGISTER goes now. Its state
    /// and counters are kept in `stats`.
    pub fn register(
        &mut self,
        now: Instant,
        config: RegistrationConfig,
        stats: Arc<RegistrationStats>,
    ) -> RegistrationKey {
        let call_id = format!("{}@{}", self.random_token(), self.config.local_addr.ip());
        let from_tag = self.random_token();
        let index = self.registrations.len();
        self.registrations
            .push(Registration::new(now, config, stats, call_id, from_tag));
        self.send_register(now, index);
        RegistrationKey(index)
    }

    /// The bridge stops: every binding we may hold is removed with a
    /// REGISTER of expiry 0 (one in flight is followed by it).
    pub fn unregister_all(&mut self, now: Instant) {
        for index in 0..self.registrations.len() {
            if self.registrations[index].stop() == Next::SendNow {
                self.send_register(now, index);
            }
        }
    }

    /// Whether no REGISTER is in flight (after `unregister_all`: every
    /// removal is answered or timed out).
    pub fn registrations_settled(&self) -> bool {
        !self.registrations.iter().any(Registration::in_flight)
    }

    /// Later REGISTERs of `key` go to `address` (its registrar's name now
    /// resolves there); one in flight finishes where it went.
    pub fn move_registrar(&mut self, key: RegistrationKey, address: SocketAddr) {
        if let Some(registration) = self.registrations.get_mut(key.0) {
            registration.move_to(address);
        }
    }

    /// The registration's state, for tests and the transport's shutdown.
    pub fn registration(&self, key: RegistrationKey) -> Option<&Registration> {
        self.registrations.get(key.0)
    }

    fn send_register(&mut self, now: Instant, index: usize) {
        let branch = format!("{}{}", message::BRANCH_MAGIC_COOKIE, self.random_token());
        let cnonce = self.random_token();
        let local_addr = self.config.local_addr;
        let Some(registration) = self.registrations.get_mut(index) else {
            return;
        };
        let bytes = registration.request(local_addr, &self.config.user_agent, &branch, &cnonce);
        let (transport, destination) = (
            registration.config().transport,
            registration.config().destination,
        );
        let txn = ClientTransaction::new(now, transport, destination, bytes.clone(), self.timers);
        self.client_txns.insert(
            branch,
            ClientEntry {
                txn,
                job: ClientJob::Register(index),
            },
        );
        self.transmit(transport, destination, bytes);
    }

    /// The final response to a REGISTER, or `None` when timer F fired.
    pub(super) fn on_register_response(
        &mut self,
        now: Instant,
        index: usize,
        response: Option<&Response>,
    ) {
        let local_addr = self.config.local_addr;
        let Some(registration) = self.registrations.get_mut(index) else {
            return;
        };
        let next = match response {
            Some(response) => registration.on_response(now, local_addr, response),
            None => {
                registration.on_timeout(now);
                Next::Wait
            }
        };
        if next == Next::SendNow {
            self.send_register(now, index);
        }
    }

    /// Sends the refreshes and retries that are due.
    pub(super) fn handle_registration_timers(&mut self, now: Instant) {
        for index in 0..self.registrations.len() {
            if self.registrations[index].due().is_some_and(|at| at <= now) {
                self.send_register(now, index);
            }
        }
    }
}
