//! The SIP user agent: a sans-IO protocol core (message, transaction, dialog, sdp,
//! endpoint) and its tokio shell (transport).

pub mod auth;
pub mod dialog;
pub mod endpoint;
pub mod message;
pub mod sdp;
pub mod transaction;
pub mod transport;

pub use endpoint::*;
