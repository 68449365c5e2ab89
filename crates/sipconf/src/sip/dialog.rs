//! The INVITE dialog (RFC 3261 section 12) on either side: identity, the parties, the
//! remote target and route set of the requests we send inside it (ACK, BYE, session
//! refreshes) and where they go first, and the CSeq spaces of both sides.
//! It sends and times nothing: the endpoint does.

use super::message::{Request, Response};
use super::Transport;
use std::net::SocketAddr;

/// Dialog identity: Call-ID plus both tags (RFC 3261 12 and 12.2.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

impl DialogId {
    /// The dialog a request inside a dialog belongs to, seen from our side.
    /// `None` when the request carries no To tag (so it is not in a dialog).
    pub fn of_request(request: &Request) -> Option<DialogId> {
        Some(DialogId {
            call_id: request.call_id.clone(),
            local_tag: request.to_tag.clone()?,
            remote_tag: request.from_tag.clone().unwrap_or_default(),
        })
    }
}

/// Why a request in a dialog is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CSeqError {
    /// RFC 3261 12.2.2: a lower CSeq than the last one is out of order (answer 500).
    #[error("CSeq out of order")]
    OutOfOrder,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dialog {
    pub id: DialogId,
    /// Our side written as a From value: the INVITE's To plus our tag.
    pub local_party: String,
    /// Their side written as a To value: the INVITE's From, with their tag.
    pub remote_party: String,
    /// Request-URI for our requests: the far end's Contact (RFC 3261 12.1.1, 12.1.2).
    pub remote_target: String,
    /// Route headers of our requests: Record-Route of the INVITE in order as UAS, of the
    /// 2xx reversed as UAC (RFC 3261 12.1.1, 12.1.2).
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    pub remote_cseq: u32,
    /// Next hop of our requests (RFC 3261 12.2.1.1, 8.1.2): the first route when the
    /// route set names an IP address; otherwise where the caller's INVITE came from
    /// (UAS), or the callee's Contact or our outbound next hop (UAC).
    pub transport: Transport,
    pub peer: SocketAddr,
}

/// The Request-URI and Route headers of a request inside a dialog (RFC 3261 12.2.1.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestTarget {
    pub request_uri: String,
    pub routes: Vec<String>,
}

impl Dialog {
    /// Build the UAS side of a dialog from the INVITE that creates it.
    pub fn from_invite(
        invite: &Request,
        local_tag: String,
        transport: Transport,
        peer: SocketAddr,
    ) -> Dialog {
        let to = invite.echo.to.clone().unwrap_or_default();
        let mut dialog = Dialog {
            local_party: format!("{to};tag={local_tag}"),
            id: DialogId {
                call_id: invite.call_id.clone(),
                local_tag,
                remote_tag: invite.from_tag.clone().unwrap_or_default(),
            },
            remote_party: invite.echo.from.clone().unwrap_or_default(),
            remote_target: invite
                .contact_uri()
                .unwrap_or_else(|| invite.from_uri.clone()),
            route_set: invite.record_routes(),
            local_cseq: 0,
            remote_cseq: invite.cseq,
            transport,
            peer,
        };
        dialog.follow_route_set();
        dialog
    }

    /// The UAC side before any answer: our From (with our tag) and To (no tag yet),
    /// the Request-URI as target. The INVITE takes the first [`Dialog::next_local_cseq`].
    pub fn for_outgoing(
        call_id: String,
        local_tag: String,
        local_party: String,
        remote_party: String,
        request_uri: String,
        transport: Transport,
        peer: SocketAddr,
    ) -> Dialog {
        Dialog {
            id: DialogId {
                call_id,
                local_tag,
                remote_tag: String::new(),
            },
            local_party,
            remote_party,
            remote_target: request_uri,
            route_set: Vec::new(),
            local_cseq: 0,
            remote_cseq: 0,
            transport,
            peer,
        }
    }

    /// Complete the UAC side from the 2xx that establishes it (RFC 3261 12.1.2): the
    /// callee's tag and To, its Contact as remote target, Record-Route reversed.
    /// Requests go straight to the Contact when it names an IP address and there is no
    /// route set; otherwise to the next hop we sent the INVITE to.
    pub fn establish_from_2xx(&mut self, ok: &Response) {
        self.id.remote_tag = ok.to_tag.clone().unwrap_or_default();
        self.remote_party = ok.to.clone();
        if let Some(contact) = ok.contact_uri() {
            self.remote_target = contact;
        }
        self.route_set = ok.record_routes();
        self.route_set.reverse();
        if self.route_set.is_empty() {
            if let Some(addr) = literal_addr(&self.remote_target) {
                self.peer = addr;
            }
        }
        self.follow_route_set();
    }

    /// With a route set, requests go first to its first URI (RFC 3261 12.2.1.1 and
    /// 8.1.2), on the transport it names; a host name (which we do not resolve) keeps
    /// the next hop we have, which is the proxy that sent us the INVITE or the one we
    /// sent ours to.
    fn follow_route_set(&mut self) {
        let Some(first) = self.route_set.first() else {
            return;
        };
        let uri = route_uri(first);
        if let Some(addr) = literal_addr(uri) {
            self.peer = addr;
        }
        if let Some(transport) = uri_transport(uri) {
            self.transport = transport;
        }
    }

    /// A target refresh (re-INVITE, UPDATE, or their 2xx) names a new Contact: our
    /// later requests go there (RFC 3261 12.2.2, 12.2.1.2). The route set stays.
    pub fn refresh_target(&mut self, contact: Option<String>) {
        let Some(contact) = contact else {
            return;
        };
        if self.route_set.is_empty() {
            if let Some(addr) = literal_addr(&contact) {
                self.peer = addr;
            }
        }
        self.remote_target = contact;
    }

    /// Request-URI and Route headers for our next request (RFC 3261 12.2.1.1): with a
    /// loose router first (`;lr`) the remote target and the whole route set; with a
    /// strict router first, its URI as the Request-URI and the remote target last.
    pub fn request_target(&self) -> RequestTarget {
        match self.route_set.split_first() {
            Some((first, rest)) if !is_loose(route_uri(first)) => {
                let mut routes = rest.to_vec();
                routes.push(format!("<{}>", self.remote_target));
                RequestTarget {
                    request_uri: route_uri(first).to_owned(),
                    routes,
                }
            }
            _ => RequestTarget {
                request_uri: self.remote_target.clone(),
                routes: self.route_set.clone(),
            },
        }
    }

    /// Check and record the CSeq of a new request from the far end.
    pub fn check_remote_cseq(&mut self, cseq: u32) -> Result<(), CSeqError> {
        if cseq < self.remote_cseq {
            return Err(CSeqError::OutOfOrder);
        }
        self.remote_cseq = cseq;
        Ok(())
    }

    /// CSeq for the next request we send in this dialog.
    pub fn next_local_cseq(&mut self) -> u32 {
        self.local_cseq = self.local_cseq.wrapping_add(1);
        self.local_cseq
    }
}

/// The URI of a Route or Record-Route value: inside `<...>` when bracketed.
pub fn route_uri(route: &str) -> &str {
    match (route.find('<'), route.find('>')) {
        (Some(open), Some(close)) if open < close => &route[open + 1..close],
        _ => route.split(';').next().unwrap_or(route).trim(),
    }
}

/// The URI parameters of `uri` (after the host, before any headers).
fn uri_params(uri: &str) -> impl Iterator<Item = &str> {
    let after_user = uri.rsplit_once('@').map_or(uri, |(_, host)| host);
    let without_headers = after_user.split('?').next().unwrap_or_default();
    without_headers.split(';').skip(1).map(str::trim)
}

/// A loose router (RFC 3261 16.12.1.1) puts `lr` in its Record-Route URI.
fn is_loose(uri: &str) -> bool {
    uri_params(uri)
        .any(|p| p.eq_ignore_ascii_case("lr") || p.to_ascii_lowercase().starts_with("lr="))
}

/// The transport a URI asks for with `;transport=`, when it is one we speak.
pub fn uri_transport(uri: &str) -> Option<Transport> {
    uri_params(uri)
        .filter_map(|p| p.split_once('='))
        .find(|(name, _)| name.eq_ignore_ascii_case("transport"))
        .and_then(|(_, value)| Transport::from_param(value))
}

/// The socket address of a SIP URI whose host is an IP literal (`sip:u@192.0.2.1:5062`,
/// `sip:[2001:db8::1]`), port 5060 when absent (5061 for `sips:`); `None` for names,
/// which we do not resolve.
pub fn literal_addr(uri: &str) -> Option<SocketAddr> {
    let (rest, default_port) = match uri.strip_prefix("sip:") {
        Some(rest) => (rest, 5060),
        None => (uri.strip_prefix("sips:")?, 5061),
    };
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host_port = host_port.split([';', '?', '>']).next().unwrap_or_default();
    if let Ok(addr) = host_port.parse::<SocketAddr>() {
        return Some(addr);
    }
    let host = host_port.trim_start_matches('[').trim_end_matches(']');
    host.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, default_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_addresses_are_read_and_names_are_not() {
        let cases = [
            ("sip:alice@192.0.2.7:5062", Some("192.0.2.7:5062")),
            ("sip:alice@192.0.2.7;transport=udp", Some("192.0.2.7:5060")),
            ("sip:[2001:db8::1]:5070", Some("[2001:db8::1]:5070")),
            ("sip:bob@[2001:db8::1]", Some("[2001:db8::1]:5060")),
            ("sips:bob@192.0.2.7", Some("192.0.2.7:5061")),
            ("sip:alice@pbx.example.com", None),
            ("tel:+15551234", None),
        ];
        for (uri, expected) in cases {
            let expected = expected.map(|a| a.parse::<SocketAddr>().expect("addr"));
            assert_eq!(literal_addr(uri), expected, "{uri}");
        }
    }
}
