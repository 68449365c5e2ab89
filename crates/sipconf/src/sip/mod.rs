//! The SIP user agent: a sans-IO protocol core (message, transaction, dialog, sdp,
//! endpoint) and its tokio shell (transport). It knows calls only as dialogs with
//! SDP: rooms, records and media are the call layer's.

pub mod auth;
pub mod dialog;
pub mod endpoint;
pub mod message;
pub mod registration;
pub mod sdp;
pub mod session_timer;
pub mod source_guard;
pub mod tls;
pub mod transaction;
pub mod transport;

pub use endpoint::*;

/// `ip` as the host part of a SIP URI: an IPv6 address in brackets
/// (RFC 3261 25.1), so `sip:user@[2001:db8::7]` and not `sip:user@2001:db8::7`.
pub fn uri_host(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    }
}
