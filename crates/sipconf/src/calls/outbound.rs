//! Where an outbound call (`POST /calls`) goes and what it says it is from:
//! the `to` of the request as a Request-URI and a next hop, and our From URI.
//! It owns the rules for those strings and the one name lookup they need; it
//! never places the call (the switchboard does, through the SIP endpoint).

use crate::sip::Transport;
use std::net::{IpAddr, SocketAddr};

/// The telephone-event payload type we offer on outbound calls.
pub const OFFERED_TELEPHONE_EVENT_PT: u8 = 101;

/// Where an outbound INVITE goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundTarget {
    pub request_uri: String,
    pub destination: SocketAddr,
    pub transport: Transport,
}

/// What `to` names, before the name lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Named {
    request_uri: String,
    /// The host (and port) as written.
    host: String,
    /// `host` with the default port 5060 when it gives none.
    with_port: String,
    transport: Transport,
}

/// `to` as a Request-URI, the `host:port` to look up, and the transport: a
/// `sip:` URI goes to its own host (`;transport=tcp` or `tls` honoured), a
/// `sips:` URI too over TLS (RFC 3261 26.2), a number goes to
/// `sip.outbound.proxy`.
fn parse_target(to: &str, proxy: Option<&str>) -> Result<Named, String> {
    let to = to.trim();
    let sips = to.starts_with("sips:");
    let (request_uri, hostport, params) = match to.strip_prefix("sip:").or(to.strip_prefix("sips:"))
    {
        Some(rest) => {
            let (address, params) = rest.split_once(';').unwrap_or((rest, ""));
            let hostport = address.rsplit_once('@').map_or(address, |(_, h)| h);
            (to.to_string(), hostport.to_string(), params.to_string())
        }
        None => {
            let Some(proxy) = proxy else {
                return Err(format!(
                    "{to} is not a sip: URI and no sip.outbound.proxy is configured"
                ));
            };
            if to.is_empty()
                || !to
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-_.*#".contains(c))
            {
                return Err(format!("{to} is neither a sip: URI nor a number"));
            }
            (
                format!("sip:{to}@{proxy}"),
                proxy.to_string(),
                String::new(),
            )
        }
    };
    let named_transport = params.split(';').find_map(|p| {
        let (name, value) = p.trim().split_once('=')?;
        name.eq_ignore_ascii_case("transport")
            .then(|| Transport::from_param(value))
            .flatten()
    });
    let transport = match named_transport {
        _ if sips => Transport::Tls,
        Some(transport) => transport,
        None => Transport::Udp,
    };
    let has_port = if hostport.starts_with('[') {
        hostport.contains("]:")
    } else {
        hostport.contains(':')
    };
    let with_port = match (has_port, transport) {
        (true, _) => hostport.clone(),
        (false, Transport::Tls) => format!("{hostport}:5061"),
        (false, _) => format!("{hostport}:5060"),
    };
    Ok(Named {
        request_uri,
        host: hostport,
        with_port,
        transport,
    })
}

/// `to` as a Request-URI and a resolved next hop; the error says why it cannot be called.
pub async fn outbound_target(to: &str, proxy: Option<&str>) -> Result<OutboundTarget, String> {
    let named = parse_target(to, proxy)?;
    let destination = tokio::net::lookup_host(&named.with_port)
        .await
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| format!("cannot resolve {}", named.host))?;
    Ok(OutboundTarget {
        request_uri: named.request_uri,
        destination,
        transport: named.transport,
    })
}

/// The From URI of an outbound call: `from` as given when it is a SIP URI,
/// else a number at our address (an IPv6 host in brackets, RFC 3261 25.1).
pub fn outbound_from_uri(from: &str, host: IpAddr) -> String {
    if from.starts_with("sip:") {
        return from.to_string();
    }
    format!("sip:{from}@{}", crate::sip::uri_host(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outbound_from_is_a_number_at_our_address_or_the_uri_given() {
        let v4 = IpAddr::from([192, 0, 2, 7]);
        let v6 = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 7]);
        assert_eq!(
            outbound_from_uri("+15551234", v4),
            "sip:+15551234@192.0.2.7"
        );
        assert_eq!(
            outbound_from_uri("+15551234", v6),
            "sip:+15551234@[2001:db8::7]"
        );
        assert_eq!(
            outbound_from_uri("sip:desk@example.com", v6),
            "sip:desk@example.com"
        );
    }

    fn named(request_uri: &str, host: &str, with_port: &str, transport: Transport) -> Named {
        Named {
            request_uri: request_uri.into(),
            host: host.into(),
            with_port: with_port.into(),
            transport,
        }
    }

    #[test]
    fn a_uri_goes_to_its_host_and_a_number_to_the_proxy() {
        let uri = "sip:alice@192.0.2.9:5070;transport=TCP";
        assert_eq!(
            parse_target(uri, None),
            Ok(named(
                uri,
                "192.0.2.9:5070",
                "192.0.2.9:5070",
                Transport::Tcp
            ))
        );
        let uri = "sip:bob@[2001:db8::9]";
        assert_eq!(
            parse_target(uri, None),
            Ok(named(
                uri,
                "[2001:db8::9]",
                "[2001:db8::9]:5060",
                Transport::Udp
            ))
        );
        assert_eq!(
            parse_target("+15551234", Some("pbx.example")),
            Ok(named(
                "sip:+15551234@pbx.example",
                "pbx.example",
                "pbx.example:5060",
                Transport::Udp
            ))
        );
    }

    #[test]
    fn a_number_without_a_proxy_or_with_strange_characters_is_refused() {
        assert!(parse_target("+15551234", None)
            .unwrap_err()
            .contains("no sip.outbound.proxy"));
        assert!(parse_target("555 1234", Some("pbx"))
            .unwrap_err()
            .contains("neither a sip: URI nor a number"));
    }
}
