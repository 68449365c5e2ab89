//! sipconf: an embedded SIP audio conference bridge.
//!
//! The signalling plane (tokio) runs SIP, call routing and records; the media plane
//! (one dedicated thread) runs RTP, codecs and the mixer on a 20 ms clock.
//! docs/architecture.md has the whole picture.

pub mod api; // the Catapult v1 HTTP API: conferences, members, calls, health, metrics
pub mod app; // wires the planes together: start-up, sd_notify, shutdown
pub mod audio; // audio to play: files by URL, text to speech (espeak-ng), tones
pub mod calls; // call records and routing of incoming calls to rooms
pub mod conference; // conference and member records and their state machines
pub mod config; // TOML -> typed, validated Config
pub mod events; // callback events: outbox, ordered delivery, fallback, retries
pub mod media; // the media plane: RTP, jitter buffer, codecs, mixer, engine thread
pub mod net; // socket helpers over libc: batched UDP, the eventfd doorbell, epoll
pub mod sip; // sans-IO SIP user agent and its tokio transport shell
pub mod store; // SQLite records: conferences, members, calls, callback outbox
