//! Checks the fuzz targets share: what the bridge writes onto the wire must be
//! well formed whatever it was fed.

use sipconf::sip::message::{self, Message};
use std::net::SocketAddr;

/// A source address for datagrams that come from nowhere in particular.
pub fn source() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 7], 5062))
}

/// A SIP message we wrote is lexically sound: UTF-8, a head of CRLF-terminated
/// lines none of which holds a stray CR or LF (a value copied from hostile
/// input must not add a header line, RFC 3261 7.3.1), and a Content-Length
/// that is the body's length.
pub fn assert_lexically_well_formed(bytes: &[u8]) {
    let text = std::str::from_utf8(bytes).expect("what we write is UTF-8");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("a head ends with an empty line");
    for line in head.split("\r\n") {
        assert!(
            !line.contains(['\r', '\n']),
            "stray line break in {line:?} of {text:?}"
        );
    }
    let length = head
        .split("\r\n")
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .expect("we always write Content-Length");
    assert_eq!(length.parse::<usize>().ok(), Some(body.len()), "{text:?}");
}

/// A SIP message we wrote is lexically sound and our own parser reads it back.
pub fn assert_well_formed_sip(bytes: &[u8]) -> Message {
    assert_lexically_well_formed(bytes);
    match message::parse(bytes, source()) {
        Ok(parsed) => parsed,
        Err(malformed) => panic!(
            "our own message does not parse ({malformed:?}): {:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
}
