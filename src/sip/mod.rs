//! The SIP user agent. Placeholder until the SIP core lands.
