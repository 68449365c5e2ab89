//! What the bridge keeps of an answered call's SIP dialog in the store, so
//! that after a crash the next run can still hang the caller up with a BYE
//! (docs/security.md, "After a crash"): the dialog written as JSON, and read
//! back. It owns that text and nothing else; the SIP endpoint sends the BYE.

use crate::sip::dialog::{Dialog, DialogId};
use crate::sip::Transport;
use serde_json::{json, Value};

/// Added to the stored CSeq of our side before the BYE: requests we sent in
/// the dialog after it was stored (session refreshes) took higher numbers,
/// and a BYE whose CSeq is not above them is refused (RFC 3261 12.2.2).
const CSEQ_MARGIN: u32 = 100_000;

/// `dialog` as the store keeps it.
pub fn stored(dialog: &Dialog) -> String {
    json!({
        "callId": dialog.id.call_id,
        "localTag": dialog.id.local_tag,
        "remoteTag": dialog.id.remote_tag,
        "localParty": dialog.local_party,
        "remoteParty": dialog.remote_party,
        "remoteTarget": dialog.remote_target,
        "routeSet": dialog.route_set,
        "localCseq": dialog.local_cseq,
        "remoteCseq": dialog.remote_cseq,
        "transport": match dialog.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        },
        "peer": dialog.peer.to_string(),
    })
    .to_string()
}

/// A stored dialog, ready for a BYE from a new run (its CSeq moved past any
/// the old run may have used since); `None` when the text is not one.
pub fn restored(text: &str) -> Option<Dialog> {
    let value: Value = serde_json::from_str(text).ok()?;
    let string = |name: &str| value.get(name)?.as_str().map(str::to_string);
    let number = |name: &str| u32::try_from(value.get(name)?.as_u64()?).ok();
    let transport = match value.get("transport")?.as_str()? {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        "tls" => Transport::Tls,
        _ => return None,
    };
    let route_set = value
        .get("routeSet")?
        .as_array()?
        .iter()
        .map(|route| route.as_str().map(str::to_string))
        .collect::<Option<Vec<String>>>()?;
    Some(Dialog {
        id: DialogId {
            call_id: string("callId")?,
            local_tag: string("localTag")?,
            remote_tag: string("remoteTag")?,
        },
        local_party: string("localParty")?,
        remote_party: string("remoteParty")?,
        remote_target: string("remoteTarget")?,
        route_set,
        local_cseq: number("localCseq")?.saturating_add(CSEQ_MARGIN),
        remote_cseq: number("remoteCseq")?,
        transport,
        peer: string("peer")?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialog() -> Dialog {
        Dialog {
            id: DialogId {
                call_id: "call-1@192.0.2.7".into(),
                local_tag: "ours".into(),
                remote_tag: "theirs".into(),
            },
            local_party: "<sip:1000@192.0.2.1>;tag=ours".into(),
            remote_party: "\"Alice\" <sip:alice@192.0.2.7>;tag=theirs".into(),
            remote_target: "sip:alice@192.0.2.7:5062".into(),
            route_set: vec!["<sip:proxy.example;lr>".into()],
            local_cseq: 2,
            remote_cseq: 7,
            transport: Transport::Tcp,
            peer: "192.0.2.7:5062".parse().expect("address"),
        }
    }

    #[test]
    fn a_stored_dialog_reads_back_with_its_cseq_moved_on() {
        let restored = restored(&stored(&dialog())).expect("a dialog");
        assert_eq!(
            restored,
            Dialog {
                local_cseq: 2 + CSEQ_MARGIN,
                ..dialog()
            }
        );
    }

    #[test]
    fn a_restored_dialog_is_ended_with_a_bye_the_caller_can_match() {
        use crate::sip::{Endpoint, EndpointConfig};
        let mut endpoint = Endpoint::new(EndpointConfig::new(
            "192.0.2.1:5060".parse().expect("address"),
        ));
        let restored = restored(&stored(&dialog())).expect("a dialog");
        endpoint.bye_orphan(std::time::Instant::now(), restored);
        let bye = endpoint.poll_transmit().expect("a BYE");
        assert_eq!(bye.destination, dialog().peer);
        assert_eq!(bye.transport, Transport::Tcp);
        let text = String::from_utf8(bye.bytes.to_vec()).expect("text");
        assert!(
            text.starts_with("BYE sip:alice@192.0.2.7:5062 SIP/2.0\r\n"),
            "{text}"
        );
        for line in [
            "Route: <sip:proxy.example;lr>",
            "Call-ID: call-1@192.0.2.7",
            "From: <sip:1000@192.0.2.1>;tag=ours",
            "To: \"Alice\" <sip:alice@192.0.2.7>;tag=theirs",
            "CSeq: 100003 BYE",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert_eq!(endpoint.poll_event(), None, "reported to nobody");
    }

    #[test]
    fn text_that_is_not_a_stored_dialog_is_none() {
        assert_eq!(restored(""), None);
        assert_eq!(restored("{}"), None);
        let bad_peer = stored(&dialog()).replace("\"peer\":\"192.0.2.7:5062\"", "\"peer\":\"x\"");
        assert_ne!(bad_peer, stored(&dialog()));
        assert_eq!(restored(&bad_peer), None);
    }
}
