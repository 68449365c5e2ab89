//! The media plane: RTP in and out, jitter buffers, codecs and the conference
//! mixer, run by one dedicated thread on a 20 ms clock (see DESIGN.md, "One 20 ms tick").

pub mod codec;
pub mod jitter;
pub mod mixer;
pub mod rtp;

pub use codec::Codec;
