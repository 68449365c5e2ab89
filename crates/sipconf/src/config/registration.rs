//! `[[registration]]`: the bridge registers with a PBX or registrar as an
//! extension would, and calls to that extension go to a room
//! (docs/pbx.md, "A PBX that wants an extension to register").
//!
//! Only the file's rules live here; the REGISTER itself is `sip/registration.rs`.

use super::{in_range, invalid, Invalid, Room};
use crate::sip::registration::{MAX_EXPIRES_S, MIN_EXPIRES_S};
use crate::sip::Transport;
use serde::Deserialize;
use toml::Spanned;

/// One registration, validated; the registrar's host is looked up at start.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistrationEntry {
    /// The registrar's host as written (a name or an address, IPv6 in brackets).
    pub host: String,
    /// The registrar's port; 5060 when the URI gives none.
    pub port: u16,
    /// The Request-URI of the REGISTER, `sip:host[:port]`.
    pub registrar_uri: String,
    /// The address of record: `sip:user@host[:port]`, our From and To.
    pub aor: String,
    pub user: String,
    /// The user name in the digest answer; `user` unless set.
    pub auth_user: String,
    pub password: String,
    /// Answer challenges of this realm only; `None`: any.
    pub realm: Option<String>,
    pub expiry_s: u32,
    pub transport: Transport,
    /// Our Contact's user part: INVITEs whose Request-URI user is this go to `room`.
    pub contact_user: String,
    /// The number of the room calls on this registration join.
    pub room: String,
}

impl std::fmt::Debug for RegistrationEntry {
    // The password must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationEntry")
            .field("aor", &self.aor)
            .field("registrar_uri", &self.registrar_uri)
            .field("auth_user", &self.auth_user)
            .field("realm", &self.realm)
            .field("expiry_s", &self.expiry_s)
            .field("transport", &self.transport)
            .field("contact_user", &self.contact_user)
            .field("room", &self.room)
            .finish_non_exhaustive()
    }
}

/// `registration.expiry` when the file does not set it: an hour, what desk
/// phones ask for.
pub const DEFAULT_EXPIRY_S: i64 = 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistration {
    registrar: Spanned<String>,
    user: Spanned<String>,
    password: Spanned<String>,
    room: Spanned<String>,
    #[serde(default)]
    auth_user: Option<Spanned<String>>,
    #[serde(default)]
    realm: Option<Spanned<String>>,
    #[serde(default)]
    expiry: Option<Spanned<i64>>,
    #[serde(default)]
    transport: Option<Spanned<String>>,
    #[serde(default)]
    contact_user: Option<Spanned<String>>,
}

/// Characters of a SIP user part we accept in the file: the unreserved and
/// user-unreserved characters of RFC 3261 25.1 that need no escaping and
/// cannot be read as a URI's parameter or header separators.
fn is_user_part(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$".contains(c))
}

/// `sip:host[:port]` (or `host[:port]`) as host and port; no user part, no
/// parameters (the transport is `registration.transport`).
fn registrar(value: &Spanned<String>) -> Result<(String, u16), Invalid> {
    const KEY: &str = "registration.registrar";
    let text = value.get_ref().trim();
    if text.starts_with("sips:") {
        return Err(invalid(
            value,
            KEY,
            format!("`{text}`: sips: needs TLS, which registrations do not support yet; use sip: with transport \"udp\" or \"tcp\""),
        ));
    }
    let rest = text.strip_prefix("sip:").unwrap_or(text);
    let bad = |why: &str| {
        invalid(
            value,
            KEY,
            format!("`{text}` is not a registrar like \"sip:pbx.example.com\" or \"sip:192.0.2.10:5060\": {why}"),
        )
    };
    let (hostport, params) = rest.split_once(';').unwrap_or((rest, ""));
    if !params.is_empty() {
        return Err(bad(
            "no URI parameters; the transport is registration.transport",
        ));
    }
    if hostport.contains('@') {
        return Err(bad("give the host only; the user is registration.user"));
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (address, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("not an IPv6 address in brackets"));
        }
        (format!("[{address}]"), after.strip_prefix(':'))
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (hostport.to_string(), None),
        }
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
    if !host_ok {
        return Err(bad("no usable host"));
    }
    let port = match port {
        None => 5060,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(bad("the port must be 1..=65535")),
        },
    };
    Ok((host, port))
}

/// `udp` or `tcp`, named here rather than by `Transport::from_param` so a
/// transport the endpoint learns later (TLS) is not taken before the
/// registration supports it.
fn transport(value: &Option<Spanned<String>>) -> Result<Transport, Invalid> {
    let Some(value) = value else {
        return Ok(Transport::Udp);
    };
    let text = value.get_ref().trim().to_ascii_lowercase();
    match text.as_str() {
        "udp" => Ok(Transport::Udp),
        "tcp" => Ok(Transport::Tcp),
        "tls" => Err(invalid(
            value,
            "registration.transport",
            "\"tls\" is not supported for registrations yet: use \"udp\" or \"tcp\"",
        )),
        _ => Err(invalid(
            value,
            "registration.transport",
            format!("`{text}` is not a transport: use \"udp\" or \"tcp\""),
        )),
    }
}

fn optional_text(value: &Option<Spanned<String>>, key: &str) -> Result<Option<String>, Invalid> {
    match value {
        None => Ok(None),
        Some(v) if v.get_ref().trim().is_empty() => {
            Err(invalid(v, key, "must not be empty when set"))
        }
        Some(v) => Ok(Some(v.get_ref().trim().to_string())),
    }
}

/// Validates every `[[registration]]` against the rooms: each names a room,
/// and each contact user is its own (routing is by it, see docs/pbx.md).
pub(super) fn validate(
    raw: Vec<RawRegistration>,
    rooms: &[Room],
) -> Result<Vec<RegistrationEntry>, Invalid> {
    let mut entries: Vec<RegistrationEntry> = Vec::with_capacity(raw.len());
    for raw in raw {
        let (host, port) = registrar(&raw.registrar)?;
        let user = raw.user.get_ref().trim().to_string();
        if !is_user_part(&user) {
            return Err(invalid(
                &raw.user,
                "registration.user",
                format!("`{user}` is not a SIP user name (letters, digits and - _ . ! ~ * ' ( ) & = + $)"),
            ));
        }
        let password = raw.password.get_ref().to_string();
        if password.is_empty() {
            return Err(invalid(
                &raw.password,
                "registration.password",
                "must not be empty",
            ));
        }
        let auth_user = optional_text(&raw.auth_user, "registration.auth_user")?
            .unwrap_or_else(|| user.clone());
        let realm = optional_text(&raw.realm, "registration.realm")?;
        let expiry_s = match &raw.expiry {
            Some(v) => in_range(
                v,
                "registration.expiry",
                i64::from(MIN_EXPIRES_S),
                i64::from(MAX_EXPIRES_S),
            )? as u32,
            None => DEFAULT_EXPIRY_S as u32,
        };
        let transport = transport(&raw.transport)?;
        let room = raw.room.get_ref().trim().to_string();
        if !rooms.iter().any(|r| r.number == room) {
            return Err(invalid(
                &raw.room,
                "registration.room",
                format!("no [[room]] has the number `{room}`"),
            ));
        }
        let (contact_user, contact_span) = match &raw.contact_user {
            Some(v) => {
                let text = v.get_ref().trim().to_string();
                if !is_user_part(&text) {
                    return Err(invalid(
                        v,
                        "registration.contact_user",
                        format!("`{text}` is not a SIP user name"),
                    ));
                }
                (text, (v, "registration.contact_user"))
            }
            None => (user.clone(), (&raw.user, "registration.user")),
        };
        if entries.iter().any(|e| e.contact_user == contact_user) {
            return Err(invalid(
                contact_span.0,
                contact_span.1,
                format!("another registration already has the contact user `{contact_user}`: set registration.contact_user to tell their calls apart"),
            ));
        }
        if let Some(other) = rooms
            .iter()
            .find(|r| r.number == contact_user && r.number != room)
        {
            return Err(invalid(
                contact_span.0,
                contact_span.1,
                format!("the contact user `{contact_user}` is room {}'s number, but the registration's room is {room}: set registration.contact_user", other.number),
            ));
        }
        let hostport = if port == 5060 {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        entries.push(RegistrationEntry {
            registrar_uri: format!("sip:{hostport}"),
            aor: format!("sip:{user}@{hostport}"),
            host,
            port,
            user,
            auth_user,
            password,
            realm,
            expiry_s,
            transport,
            contact_user,
            room,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::sip::Transport;

    const ROOM: &str = "[[room]]\nnumber = \"1000\"\n";

    fn parse(registration: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(&format!("{ROOM}[[registration]]\n{registration}"), "x.toml")
    }

    #[test]
    fn a_registration_gets_its_defaults() {
        let c = parse("registrar = \"sip:pbx.example\"\nuser = \"2000\"\npassword = \"pw\"\nroom = \"1000\"\n")
            .expect("valid");
        let r = &c.registrations[0];
        assert_eq!(r.registrar_uri, "sip:pbx.example");
        assert_eq!(r.aor, "sip:2000@pbx.example");
        assert_eq!((r.host.as_str(), r.port), ("pbx.example", 5060));
        assert_eq!(r.auth_user, "2000");
        assert_eq!(r.contact_user, "2000");
        assert_eq!(r.expiry_s, 3600);
        assert_eq!(r.transport, Transport::Udp);
        assert_eq!(r.realm, None);
        assert!(
            !format!("{r:?}").contains("pw"),
            "the password stays out of logs"
        );
    }

    #[test]
    fn every_key_is_read() {
        let c = parse("registrar = \"sip:[2001:db8::5]:5080\"\nuser = \"conf\"\nauth_user = \"id77\"\npassword = \"pw\"\nrealm = \"asterisk\"\nexpiry = 600\ntransport = \"tcp\"\ncontact_user = \"bridge-conf\"\nroom = \"1000\"\n")
            .expect("valid");
        let r = &c.registrations[0];
        assert_eq!(r.aor, "sip:conf@[2001:db8::5]:5080");
        assert_eq!((r.host.as_str(), r.port), ("[2001:db8::5]", 5080));
        assert_eq!(r.auth_user, "id77");
        assert_eq!(r.realm.as_deref(), Some("asterisk"));
        assert_eq!(r.expiry_s, 600);
        assert_eq!(r.transport, Transport::Tcp);
        assert_eq!(r.contact_user, "bridge-conf");
    }

    #[test]
    fn bad_values_name_their_key_and_line() {
        let base = "registrar = \"sip:pbx\"\nuser = \"2000\"\npassword = \"pw\"\nroom = \"1000\"\n";
        for (extra, key, line, words) in [
            ("expiry = 30\n", "registration.expiry", 8, "60..=86400"),
            ("transport = \"tls\"\n", "registration.transport", 8, "tls"),
            (
                "transport = \"sctp\"\n",
                "registration.transport",
                8,
                "sctp",
            ),
            ("realm = \"\"\n", "registration.realm", 8, "empty"),
        ] {
            let e = parse(&format!("{base}{extra}")).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
            assert_eq!(e.line, Some(line), "{e}");
            assert!(e.message.contains(words), "{e}");
        }
        for (text, key, words) in [
            ("registrar = \"sips:pbx\"\nuser = \"2000\"\npassword = \"pw\"\nroom = \"1000\"\n", "registration.registrar", "TLS"),
            ("registrar = \"sip:2000@pbx\"\nuser = \"2000\"\npassword = \"pw\"\nroom = \"1000\"\n", "registration.registrar", "host only"),
            ("registrar = \"sip:pbx;transport=tcp\"\nuser = \"2000\"\npassword = \"pw\"\nroom = \"1000\"\n", "registration.registrar", "registration.transport"),
            ("registrar = \"sip:pbx:0\"\nuser = \"2000\"\npassword = \"pw\"\nroom = \"1000\"\n", "registration.registrar", "port"),
            ("registrar = \"sip:pbx\"\nuser = \"a b\"\npassword = \"pw\"\nroom = \"1000\"\n", "registration.user", "SIP user"),
            ("registrar = \"sip:pbx\"\nuser = \"2000\"\npassword = \"\"\nroom = \"1000\"\n", "registration.password", "empty"),
            ("registrar = \"sip:pbx\"\nuser = \"2000\"\npassword = \"pw\"\nroom = \"9\"\n", "registration.room", "no [[room]]"),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
            assert!(e.line.is_some(), "{e}");
            assert!(e.message.contains(words), "{e}");
        }
        let missing =
            parse("registrar = \"sip:pbx\"\nuser = \"2000\"\nroom = \"1000\"\n").unwrap_err();
        assert!(missing.message.contains("password"), "{missing}");
    }

    #[test]
    fn contact_users_tell_registrations_and_rooms_apart() {
        let two = "[[room]]\nnumber = \"1000\"\n[[room]]\nnumber = \"2000\"\n\
            [[registration]]\nregistrar = \"sip:a\"\nuser = \"conf\"\npassword = \"pw\"\nroom = \"1000\"\n\
            [[registration]]\nregistrar = \"sip:b\"\nuser = \"conf\"\npassword = \"pw\"\nroom = \"2000\"\n";
        let e = Config::parse(two, "x.toml").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("registration.user"));
        assert_eq!(e.line, Some(12));
        assert!(e.message.contains("contact_user"), "{e}");
        let fixed = two.replace(
            "user = \"conf\"\npassword = \"pw\"\nroom = \"2000\"",
            "user = \"conf\"\ncontact_user = \"conf-b\"\npassword = \"pw\"\nroom = \"2000\"",
        );
        assert_eq!(
            Config::parse(&fixed, "x.toml")
                .expect("valid")
                .registrations
                .len(),
            2
        );

        let other_room = "[[room]]\nnumber = \"1000\"\n[[room]]\nnumber = \"2000\"\n\
            [[registration]]\nregistrar = \"sip:a\"\nuser = \"2000\"\npassword = \"pw\"\nroom = \"1000\"\n";
        let e = Config::parse(other_room, "x.toml").unwrap_err();
        assert!(e.message.contains("room 2000's number"), "{e}");
        let own_room = other_room.replace("room = \"1000\"", "room = \"2000\"");
        assert!(Config::parse(&own_room, "x.toml").is_ok());
    }
}
