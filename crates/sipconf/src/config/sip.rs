//! `[sip]`: the raw keys of the section and its parts (`[sip.outbound]`,
//! `[sip.tls]`, the per-source limits), with the rules that turn them into
//! `SipConfig`'s pieces. The public types are in config.rs.

use super::{
    default_max_transactions, in_range, invalid, non_empty, optional_ip, unspanned, Invalid,
    OutboundConfig, SipConfig, TlsConfig, DEFAULT_MIN_SE_S, DEFAULT_SESSION_EXPIRES_S,
    MAX_SESSION_EXPIRES_S,
};
use crate::net::connections::ConnectionLimits;
use crate::sip::source_guard::{Cidr, SourceLimits};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawOutbound {
    pub(super) proxy: Spanned<String>,
    pub(super) username: Spanned<String>,
    pub(super) password: Spanned<String>,
}

impl Default for RawOutbound {
    fn default() -> Self {
        RawOutbound {
            proxy: unspanned(String::new()),
            username: unspanned(String::new()),
            password: unspanned(String::new()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTls {
    pub(super) listen: Spanned<String>,
    pub(super) certificate: Spanned<String>,
    pub(super) key: Spanned<String>,
    pub(super) ca: Spanned<String>,
    pub(super) require_client_certificate: Spanned<bool>,
}

impl Default for RawTls {
    fn default() -> Self {
        RawTls {
            listen: unspanned(String::new()),
            certificate: unspanned(String::new()),
            key: unspanned(String::new()),
            ca: unspanned(String::new()),
            require_client_certificate: unspanned(false),
        }
    }
}

impl RawTls {
    pub(super) fn parse(&self, sip_listen: SocketAddr) -> Result<Option<TlsConfig>, Invalid> {
        let listen = self.listen.get_ref().trim();
        if listen.is_empty() {
            return Ok(None);
        }
        let listen: SocketAddr = listen.parse().map_err(|_| {
            invalid(
                &self.listen,
                "sip.tls.listen",
                format!("`{listen}` is not an address like \"0.0.0.0:5061\""),
            )
        })?;
        if listen.port() != 0 && listen == sip_listen {
            return Err(invalid(
                &self.listen,
                "sip.tls.listen",
                "must not be sip.listen: TLS needs a port of its own",
            ));
        }
        let file = |value: &Spanned<String>, key: &str| {
            non_empty(value)
                .map(PathBuf::from)
                .ok_or_else(|| invalid(value, key, "needed for SIP over TLS: a PEM file"))
        };
        let ca = non_empty(&self.ca).map(PathBuf::from);
        let require_client_certificate = *self.require_client_certificate.get_ref();
        if require_client_certificate && ca.is_none() {
            return Err(invalid(
                &self.require_client_certificate,
                "sip.tls.require_client_certificate",
                "needs sip.tls.ca, the CAs client certificates must chain to",
            ));
        }
        Ok(Some(TlsConfig {
            listen,
            certificate: file(&self.certificate, "sip.tls.certificate")?,
            key: file(&self.key, "sip.tls.key")?,
            ca,
            require_client_certificate,
        }))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSip {
    pub(super) listen: Spanned<String>,
    pub(super) advertised_address: Spanned<String>,
    /// None: `default_max_transactions` of `media.max_members`.
    pub(super) max_transactions: Option<Spanned<i64>>,
    pub(super) t1_ms: Spanned<i64>,
    pub(super) t2_ms: Spanned<i64>,
    pub(super) user_agent: Spanned<String>,
    pub(super) outbound: RawOutbound,
    pub(super) session_expires: Spanned<i64>,
    pub(super) min_se: Spanned<i64>,
    pub(super) allow: Vec<Spanned<String>>,
    pub(super) deny: Vec<Spanned<String>>,
    pub(super) requests_per_s: Spanned<i64>,
    pub(super) request_burst: Spanned<i64>,
    /// None: `max_transactions / 16`.
    pub(super) max_transactions_per_ip: Option<Spanned<i64>>,
    pub(super) max_pending_invites: Spanned<i64>,
    pub(super) max_pending_invites_per_ip: Spanned<i64>,
    pub(super) tcp_max_connections: Spanned<i64>,
    pub(super) tcp_max_connections_per_ip: Spanned<i64>,
    pub(super) tcp_idle_timeout_s: Spanned<i64>,
    pub(super) tls: RawTls,
    pub(super) bridge_id: Spanned<String>,
}

impl Default for RawSip {
    fn default() -> Self {
        RawSip {
            listen: unspanned("0.0.0.0:5060".to_string()),
            advertised_address: unspanned(String::new()),
            max_transactions: None,
            t1_ms: unspanned(500),
            t2_ms: unspanned(4000),
            user_agent: unspanned(format!("sipconf/{}", env!("CARGO_PKG_VERSION"))),
            outbound: RawOutbound::default(),
            session_expires: unspanned(DEFAULT_SESSION_EXPIRES_S),
            min_se: unspanned(DEFAULT_MIN_SE_S),
            allow: Vec::new(),
            deny: Vec::new(),
            requests_per_s: unspanned(200),
            request_burst: unspanned(400),
            max_transactions_per_ip: None,
            max_pending_invites: unspanned(128),
            max_pending_invites_per_ip: unspanned(32),
            tcp_max_connections: unspanned(1024),
            tcp_max_connections_per_ip: unspanned(32),
            tcp_idle_timeout_s: unspanned(300),
            tls: RawTls::default(),
            bridge_id: unspanned(String::new()),
        }
    }
}

fn cidr_list(values: &[Spanned<String>], key: &str) -> Result<Vec<Cidr>, Invalid> {
    values
        .iter()
        .map(|value| {
            value
                .get_ref()
                .trim()
                .parse::<Cidr>()
                .map_err(|e| invalid(value, key, e.to_string()))
        })
        .collect()
}

impl RawSip {
    /// The `[sip]` section, checked; `max_members` (`media.max_members`)
    /// sizes the transaction table when `sip.max_transactions` is not set.
    pub(super) fn validate(&self, max_members: &Spanned<i64>) -> Result<SipConfig, Invalid> {
        let listen: SocketAddr = self.listen.get_ref().trim().parse().map_err(|_| {
            invalid(
                &self.listen,
                "sip.listen",
                format!(
                    "`{}` is not an address:port like \"0.0.0.0:5060\"",
                    self.listen.get_ref()
                ),
            )
        })?;
        let t1_ms = in_range(&self.t1_ms, "sip.t1_ms", 50, 10_000)?;
        let t2_ms = in_range(&self.t2_ms, "sip.t2_ms", t1_ms, 60_000)?;
        let min_se_s = in_range(
            &self.min_se,
            "sip.min_se",
            DEFAULT_MIN_SE_S,
            MAX_SESSION_EXPIRES_S,
        )?;
        let session_expires_s = in_range(
            &self.session_expires,
            "sip.session_expires",
            min_se_s,
            MAX_SESSION_EXPIRES_S,
        )?;
        let max_transactions = match &self.max_transactions {
            Some(value) => in_range(value, "sip.max_transactions", 16, 1_000_000)? as usize,
            None => default_max_transactions(
                in_range(max_members, "media.max_members", 2, 100_000)? as usize,
            ),
        };
        Ok(SipConfig {
            listen,
            advertised_address: optional_ip(&self.advertised_address, "sip.advertised_address")?,
            max_transactions,
            t1: Duration::from_millis(t1_ms as u64),
            t2: Duration::from_millis(t2_ms as u64),
            user_agent: self.user_agent.get_ref().clone(),
            outbound: OutboundConfig {
                proxy: non_empty(&self.outbound.proxy),
                username: self.outbound.username.get_ref().clone(),
                password: self.outbound.password.get_ref().clone(),
            },
            session_timer: crate::sip::session_timer::TimerSettings {
                session_expires_s: session_expires_s as u32,
                min_se_s: min_se_s as u32,
            },
            limits: self.source_limits(max_transactions)?,
            tcp: ConnectionLimits {
                max_connections: in_range(
                    &self.tcp_max_connections,
                    "sip.tcp_max_connections",
                    1,
                    100_000,
                )? as usize,
                max_connections_per_ip: in_range(
                    &self.tcp_max_connections_per_ip,
                    "sip.tcp_max_connections_per_ip",
                    1,
                    *self.tcp_max_connections.get_ref(),
                )? as usize,
                idle_timeout: Duration::from_secs(in_range(
                    &self.tcp_idle_timeout_s,
                    "sip.tcp_idle_timeout_s",
                    1,
                    86_400,
                )? as u64),
            },
            tls: self.tls.parse(listen)?,
            bridge_id: bridge_id(&self.bridge_id)?,
        })
    }

    pub(super) fn source_limits(&self, max_transactions: usize) -> Result<SourceLimits, Invalid> {
        let requests_per_s = in_range(&self.requests_per_s, "sip.requests_per_s", 1, 1_000_000)?;
        let pending_invites = in_range(
            &self.max_pending_invites,
            "sip.max_pending_invites",
            1,
            100_000,
        )?;
        Ok(SourceLimits {
            allow: cidr_list(&self.allow, "sip.allow")?,
            deny: cidr_list(&self.deny, "sip.deny")?,
            requests_per_s: requests_per_s as u32,
            request_burst: in_range(&self.request_burst, "sip.request_burst", 1, 1_000_000)? as u32,
            transactions_per_ip: match &self.max_transactions_per_ip {
                Some(value) => in_range(
                    value,
                    "sip.max_transactions_per_ip",
                    1,
                    max_transactions as i64,
                )? as usize,
                None => (max_transactions / 16).max(1),
            },
            pending_invites: pending_invites as usize,
            pending_invites_per_ip: in_range(
                &self.max_pending_invites_per_ip,
                "sip.max_pending_invites_per_ip",
                1,
                pending_invites,
            )? as usize,
        })
    }
}

fn bridge_id(value: &Spanned<String>) -> Result<Option<String>, Invalid> {
    let id = value.get_ref().trim();
    if id.is_empty() {
        return Ok(None);
    }
    if id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:[]".contains(c))
    {
        return Err(invalid(
            value,
            "sip.bridge_id",
            format!("`{id}` is not a bridge id (up to 64 letters, digits and . - _ : [ ])"),
        ));
    }
    Ok(Some(id.to_string()))
}
