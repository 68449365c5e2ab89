//! The kit the tests share: a scriptable SIP test phone, the one Goertzel
//! level meter, WAV builders, and a harness that runs the real `sipconf`
//! program on loopback with the helpers its tests need (the API client and
//! callback server, rooms of phones, audio files served over HTTP).
//!
//! It sees the bridge only from outside, as a phone, an HTTP client or a
//! parent process would; from the library it borrows the G.711, G.722 and Opus
//! codecs and the keypad table. The load generator uses its phone's SIP reader and its meter.

pub mod api; // a daemon with the API on, an HTTP client with Basic auth, a callback server
pub mod audio; // the audio tests' signal, a loopback file server, phones in room 1000
pub mod daemon; // runs the `sipconf` program on loopback; free ports, addresses
pub mod meter; // the Goertzel level meter, dB ratios, peaks
pub mod room; // several phones streaming into one room, and what each must hear
mod sip_text; // SIP messages as plain text: parse, headers, responses
pub mod tempdir; // directories removed on drop
pub mod testphone; // a scriptable SIP phone: calls, G.711, G.722 or Opus RTP at real pace, keys, recording
pub mod voice; // the phone's codecs: G.711, G.722 and Opus offers, reading answers, encode and decode
pub mod wav; // WAV files of any format, made at test time
