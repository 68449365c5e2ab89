//! Digest authentication of the requests we send (RFC 2617, RFC 7616 with MD5, as SIP
//! uses it in RFC 3261 22.4): read a `WWW-Authenticate` / `Proxy-Authenticate` challenge
//! and compute the matching `Authorization` / `Proxy-Authorization` value.
//!
//! Only MD5 with `qop=auth` or without qop is implemented; other challenges are refused
//! with a precise error so the call fails with the far end's code. It keeps no state
//! and sends nothing: the UAC asks it for one header value per challenge.

use ezk_sip_types::header::typed::{
    Algorithm, AlgorithmValue, AuthChallenge, DigestResponse, QopOption, QopResponse, Username,
};
use ezk_sip_types::header::HeaderParse;
use ezk_sip_types::print::AppendCtx;
use md5::{Digest, Md5};
use std::fmt::Write as _;

/// The parts of a Digest challenge we answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    /// The server offered `qop=auth`; we then answer with qop, cnonce and nc.
    pub qop_auth: bool,
    /// The nonce was stale (RFC 2617 3.2.1): the credentials were right.
    pub stale: bool,
}

/// Why a challenge cannot be answered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error("malformed authentication challenge")]
    Malformed,
    #[error("authentication scheme is not Digest")]
    NotDigest,
    #[error("unsupported digest algorithm {0}")]
    UnsupportedAlgorithm(String),
    #[error("only qop=auth is supported, offered {0}")]
    UnsupportedQop(String),
}

/// Parse one challenge header value.
pub fn parse_challenge(value: &str) -> Result<Challenge, ChallengeError> {
    let bytes = bytes::Bytes::copy_from_slice(value.trim().as_bytes());
    let text = std::str::from_utf8(&bytes).map_err(|_| ChallengeError::Malformed)?;
    let (_, challenge) =
        AuthChallenge::parse(&bytes, text).map_err(|_| ChallengeError::Malformed)?;
    let AuthChallenge::Digest(digest) = challenge else {
        return Err(ChallengeError::NotDigest);
    };
    if digest.algorithm != Algorithm::AlgorithmValue(AlgorithmValue::MD5) {
        return Err(ChallengeError::UnsupportedAlgorithm(
            digest.algorithm.to_string(),
        ));
    }
    let qop_auth = digest.qop.contains(&QopOption::Auth);
    if !digest.qop.is_empty() && !qop_auth {
        let offered: Vec<String> = digest.qop.iter().map(ToString::to_string).collect();
        return Err(ChallengeError::UnsupportedQop(offered.join(",")));
    }
    Ok(Challenge {
        realm: digest.realm.to_string(),
        nonce: digest.nonce.to_string(),
        opaque: digest.opaque.map(|o| o.to_string()),
        qop_auth,
        stale: digest.stale,
    })
}

fn md5_hex(input: &str) -> String {
    let digest = Md5::digest(input.as_bytes());
    let mut hex = String::with_capacity(32);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// `qop=auth` inputs of the response (RFC 2617 3.2.2.1).
#[derive(Clone, Copy, Debug)]
pub struct QopAuth<'a> {
    /// Eight hex digits, e.g. `00000001`.
    pub nc: &'a str,
    pub cnonce: &'a str,
}

/// The request-digest of RFC 2617 3.2.2.1 for MD5: with `qop=auth`
/// `KD(H(A1), nonce:nc:cnonce:auth:H(A2))`, without qop `KD(H(A1), nonce:H(A2))`.
pub fn digest_response(
    username: &str,
    password: &str,
    realm: &str,
    nonce: &str,
    method: &str,
    uri: &str,
    qop: Option<QopAuth<'_>>,
) -> String {
    let ha1 = md5_hex(&format!("{username}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    match qop {
        Some(QopAuth { nc, cnonce }) => md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")),
        None => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

/// The `Authorization` (or `Proxy-Authorization`) value answering `challenge` for one
/// request. `cnonce` and `nonce_count` (the requests sent with this nonce so far,
/// this one included, RFC 2617 3.2.2) are used only when the challenge asked for
/// `qop=auth`.
pub fn authorization(
    challenge: &Challenge,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nonce_count: u32,
) -> String {
    let nc = format!("{nonce_count:08x}");
    let qop = challenge.qop_auth.then_some(QopAuth { nc: &nc, cnonce });
    let response = digest_response(
        username,
        password,
        &challenge.realm,
        &challenge.nonce,
        method,
        uri,
        qop,
    );
    let header = DigestResponse {
        username: Username::new(username.to_owned().into()),
        realm: challenge.realm.clone().into(),
        nonce: challenge.nonce.clone().into(),
        uri: uri.to_owned().into(),
        response: response.into(),
        algorithm: Algorithm::AlgorithmValue(AlgorithmValue::MD5),
        opaque: challenge.opaque.clone().map(Into::into),
        qop_response: challenge.qop_auth.then(|| QopResponse {
            qop: QopOption::Auth,
            cnonce: cnonce.to_owned().into(),
            nc: nonce_count,
        }),
        userhash: false,
        other: Vec::new(),
    };
    format!("{}", header.default_print_ctx())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_2617_section_3_5_example_response() {
        // The worked example of RFC 2617 3.5 (HTTP GET, qop=auth).
        let response = digest_response(
            "Mufasa",
            "Circle Of Life",
            "testrealm@host.com",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "GET",
            "/dir/index.html",
            Some(QopAuth {
                nc: "00000001",
                cnonce: "0a4f113b",
            }),
        );
        assert_eq!(response, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn md5_of_empty_input_is_the_known_value() {
        // RFC 1321 A.5 test suite.
        assert_eq!(md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex("abc"), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn challenge_with_qop_list_and_opaque_is_read() {
        let challenge = parse_challenge(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .expect("challenge");
        assert_eq!(
            challenge,
            Challenge {
                realm: "testrealm@host.com".into(),
                nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093".into(),
                opaque: Some("5ccc069c403ebaf9f0171e9517f40e41".into()),
                qop_auth: true,
                stale: false,
            }
        );
    }

    #[test]
    fn authorization_carries_every_field_the_server_checks() {
        let challenge = Challenge {
            realm: "testrealm@host.com".into(),
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093".into(),
            opaque: Some("5ccc069c403ebaf9f0171e9517f40e41".into()),
            qop_auth: true,
            stale: false,
        };
        let value = authorization(
            &challenge,
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "0a4f113b",
            1,
        );
        assert!(value.starts_with("Digest username=\"Mufasa\""), "{value}");
        for part in [
            "realm=\"testrealm@host.com\"",
            "nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\"",
            "uri=\"/dir/index.html\"",
            "response=\"6629fae49393a05397450978507c4ef1\"",
            "opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
            "qop=auth",
            "nc=00000001",
            "cnonce=\"0a4f113b\"",
            "algorithm=MD5",
        ] {
            assert!(value.contains(part), "{part} missing in {value}");
        }
    }

    #[test]
    fn a_reused_nonce_is_answered_with_its_count() {
        let challenge =
            parse_challenge(r#"Digest realm="r", nonce="n", qop="auth""#).expect("challenge");
        let value = authorization(&challenge, "u", "p", "REGISTER", "sip:r", "c2", 2);
        assert!(value.contains("nc=00000002"), "{value}");
        let expected = digest_response(
            "u",
            "p",
            "r",
            "n",
            "REGISTER",
            "sip:r",
            Some(QopAuth {
                nc: "00000002",
                cnonce: "c2",
            }),
        );
        assert!(
            value.contains(&format!("response=\"{expected}\"")),
            "{value}"
        );
    }

    #[test]
    fn no_qop_challenge_gets_the_rfc_2069_style_response() {
        let challenge =
            parse_challenge(r#"Digest realm="sip.example", nonce="abc""#).expect("challenge");
        assert!(!challenge.qop_auth);
        let value = authorization(&challenge, "alice", "secret", "INVITE", "sip:b@x", "c", 1);
        // H(A1) = MD5("alice:sip.example:secret"), H(A2) = MD5("INVITE:sip:b@x"),
        // response = MD5(HA1:abc:HA2); computed here from the definition.
        let ha1 = md5_hex("alice:sip.example:secret");
        let ha2 = md5_hex("INVITE:sip:b@x");
        let expected = md5_hex(&format!("{ha1}:abc:{ha2}"));
        assert!(
            value.contains(&format!("response=\"{expected}\"")),
            "{value}"
        );
        assert!(!value.contains("qop="), "{value}");
        assert!(!value.contains("cnonce="), "{value}");
    }

    #[test]
    fn unsupported_challenges_are_named() {
        assert_eq!(
            parse_challenge(r#"Basic realm="x""#),
            Err(ChallengeError::NotDigest)
        );
        assert_eq!(
            parse_challenge(r#"Digest realm="x", nonce="n", algorithm=SHA-256"#),
            Err(ChallengeError::UnsupportedAlgorithm("SHA-256".into()))
        );
        assert_eq!(
            parse_challenge(r#"Digest realm="x", nonce="n", qop="auth-int""#),
            Err(ChallengeError::UnsupportedQop("auth-int".into()))
        );
        assert_eq!(
            parse_challenge(r#"Digest nonce="n""#),
            Err(ChallengeError::Malformed)
        );
    }
}
