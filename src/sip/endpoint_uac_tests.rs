//! Outbound calls (UAC) driven with literal SIP text and fake instants.
