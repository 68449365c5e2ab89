//! The configuration file: TOML in, a typed and validated [`Config`] out.
//!
//! Every key has a default (documented in `config/sipconf.toml`), unknown keys are
//! refused, and every error names the key and the line it is on. It opens nothing but
//! the file and starts nothing: `app.rs` turns a `Config` into running planes.

use crate::net::connections::ConnectionLimits;
use crate::sip::source_guard::SourceLimits;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

mod media;
mod registration;
mod sip;
pub use media::MediaSettings;
use media::RawMedia;
pub use registration::RegistrationEntry;
use sip::RawSip;

/// The path `sipconf` reads when `--config` is not given.
pub const DEFAULT_PATH: &str = "config/sipconf.toml";

/// A configuration error that names the key and the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the error is in (or `<string>` when parsed from memory).
    pub file: String,
    /// 1-based line number, when the error could be placed.
    pub line: Option<usize>,
    /// The dotted key (`media.rtp_ports`), when the error is about one key.
    pub key: Option<String>,
    /// What is wrong, in words.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub sip: SipConfig,
    pub media: MediaSettings,
    pub log: LogConfig,
    pub rooms: Vec<Room>,
    pub api: ApiConfig,
    pub store: StoreConfig,
    pub application: ApplicationConfig,
    pub events: EventsConfig,
    pub audio: crate::audio::AudioSettings,
    pub pin: PinLimits,
    /// `[[registration]]`: registrars the bridge registers with.
    pub registrations: Vec<RegistrationEntry>,
}

/// PIN guessing per source address (`[pin]`, docs/security.md): each wrong
/// PIN makes the address wait before its next try, `first_delay` and twice
/// as long each time; `max_failures` wrong PINs lock it out for `lockout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinLimits {
    pub first_delay: Duration,
    pub max_failures: u32,
    pub lockout: Duration,
}

/// The HTTP control API (docs/api.md). It is served only when `token` is set: an
/// appliance ships with no default credentials.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// Absolute URLs (Location, `memberUri`, `call`) start with this; no trailing slash.
    pub public_base_url: String,
    /// The one user (`u-...`) whose resources this bridge serves.
    pub user_id: String,
    /// Basic auth user name.
    pub token: String,
    /// Basic auth password.
    pub secret: String,
    /// `api.max_connections`, `api.max_connections_per_ip`, `api.idle_timeout_s`.
    pub connections: ConnectionLimits,
}

impl ApiConfig {
    pub fn enabled(&self) -> bool {
        !self.token.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The SQLite database of conferences, members, calls and the callback outbox.
    pub path: PathBuf,
    /// Completed conferences (with their members) and ended calls kept in
    /// memory as well as in the file, each; older ones are read from the file.
    pub completed_in_memory: usize,
}

/// `store.completed_in_memory` when the file does not set it.
pub const DEFAULT_COMPLETED_IN_MEMORY: i64 = 1000;

/// The application that handles calls to numbers that match no room.
#[derive(Debug, Clone)]
pub struct ApplicationConfig {
    /// Where `incomingcall` events go; `None`: such calls get 404.
    pub incoming_call_url: Option<String>,
    /// A call nobody answers (or rejects) through the API within this gets 480.
    pub answer_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// Tries of one callback (each try: the URL, then the fallback URL once).
    pub max_attempts: u32,
}

/// How outbound calls (`POST /calls`) reach numbers that are not SIP URIs.
#[derive(Debug, Clone, Default)]
pub struct OutboundConfig {
    /// `host[:port]` of the proxy; `None`: only `sip:` URIs can be called.
    pub proxy: Option<String>,
    /// Digest credentials for when the far end challenges.
    pub username: String,
    pub password: String,
}

/// `[sip.tls]`: SIP over TLS. The files are read when the bridge starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Where TLS is accepted (5061 by convention).
    pub listen: SocketAddr,
    /// PEM: the bridge's certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM: CAs that phones' client certificates, and the servers of
    /// outbound TLS calls, must chain to; `None`: outbound calls trust the
    /// Mozilla roots and phones need no certificate.
    pub ca: Option<PathBuf>,
    /// Phones must present a certificate that chains to `ca`.
    pub require_client_certificate: bool,
}

#[derive(Debug, Clone)]
pub struct SipConfig {
    /// Address for both UDP and TCP.
    pub listen: SocketAddr,
    /// Address written in Via and Contact; `None`: the listen address, or, when listening
    /// on a wildcard address, the address of the interface with the default route.
    pub advertised_address: Option<IpAddr>,
    pub max_transactions: usize,
    pub t1: Duration,
    pub t2: Duration,
    pub user_agent: String,
    pub outbound: OutboundConfig,
    /// RFC 4028 session timers: `sip.session_expires` and `sip.min_se`.
    pub session_timer: crate::sip::session_timer::TimerSettings,
    /// Per-source limits on requests (docs/security.md).
    pub limits: SourceLimits,
    /// SIP over TCP: `sip.tcp_max_connections`, `..._per_ip`, `sip.tcp_idle_timeout_s`.
    pub tcp: ConnectionLimits,
    /// `[sip.tls]`; `None` when `sip.tls.listen` is empty.
    pub tls: Option<TlsConfig>,
    /// `sip.bridge_id`: this bridge's name in a cascade's `X-Sipconf-Link`;
    /// `None`: derived from its SIP address (`SipConfig::bridge_id`).
    pub bridge_id: Option<String>,
}

impl SipConfig {
    /// This bridge's id in cascade links: `sip.bridge_id`, else the address
    /// it advertises with its port, else (listening on a wildcard address)
    /// the machine's host name with the port. Bridges of one cascade need
    /// different ids, so boxes that share a host name set `sip.bridge_id`.
    pub fn bridge_id(&self) -> String {
        if let Some(id) = &self.bridge_id {
            return id.clone();
        }
        let port = self.listen.port();
        let ip = self.advertised_address.unwrap_or(self.listen.ip());
        if !ip.is_unspecified() {
            return std::net::SocketAddr::new(ip, port).to_string();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}:{port}", host.trim())
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A tracing filter directive such as `info` or `sipconf=debug`.
    pub level: String,
}

/// A dial-in room: calls to `number` join this room's conference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub number: String,
    pub name: String,
    pub max_members: usize,
    /// Ring this long (180 Ringing) before answering; 0 answers at once.
    pub answer_delay: Duration,
    /// Digits a caller must enter (followed by #) before joining.
    pub pin: Option<String>,
    /// Spoken to a caller of a room with a PIN.
    pub pin_prompt: String,
    /// Tell a joining caller how many people are already in the room.
    pub announce_count: bool,
    /// `sip:` URIs of the same room on other bridges: the bridge keeps a
    /// cascade link to each (docs/scaling.md "Cascading").
    pub cascade: Vec<String>,
}

/// The prompt a room with a PIN speaks when `pin_prompt` is not set.
pub const DEFAULT_PIN_PROMPT: &str = "Please enter the conference PIN, followed by the pound key.";

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: None,
            key: None,
            message: format!("cannot read the file: {e}"),
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates configuration text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let at = |span: Option<Range<usize>>, key: Option<&str>, message: String| ConfigError {
            file: file.to_string(),
            line: span.map(|s| line_of(text, s.start)),
            key: key.map(str::to_string),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let key = e.span().and_then(|span| key_at(text, span.start));
            at(
                e.span(),
                key.as_deref(),
                e.message().trim().replace('\n', " ").to_string(),
            )
        })?;
        raw.validate()
            .map_err(|(span, key, message)| at(Some(span), Some(&key), message))
    }

    /// The configuration used when the file sets nothing.
    pub fn default_config() -> Config {
        Config::parse("", "<defaults>").expect("the built-in defaults are valid")
    }
}

/// The dotted key (`media.max_members`) written on the line holding `offset`,
/// qualified by the table header above it; `None` when the line sets no key.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default();
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('#') || key.starts_with('[') {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|header| {
            header
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string()
        });
    Some(match table {
        Some(table) if !table.is_empty() => format!("{table}.{key}"),
        _ => key.to_string(),
    })
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

type Invalid = (Range<usize>, String, String);

fn invalid<T>(value: &Spanned<T>, key: &str, message: impl Into<String>) -> Invalid {
    (value.span(), key.to_string(), message.into())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    sip: RawSip,
    media: RawMedia,
    log: RawLog,
    room: Vec<RawRoom>,
    api: RawApi,
    store: RawStore,
    application: RawApplication,
    events: RawEvents,
    audio: RawAudio,
    pin: RawPin,
    registration: Vec<registration::RawRegistration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPin {
    delay_ms: Spanned<i64>,
    max_failures: Spanned<i64>,
    lockout_s: Spanned<i64>,
}

impl Default for RawPin {
    fn default() -> Self {
        RawPin {
            delay_ms: unspanned(1000),
            max_failures: unspanned(6),
            lockout_s: unspanned(300),
        }
    }
}

impl RawPin {
    fn validate(&self) -> Result<PinLimits, Invalid> {
        let delay_ms = in_range(&self.delay_ms, "pin.delay_ms", 0, 60_000)?;
        let lockout_s = in_range(&self.lockout_s, "pin.lockout_s", 1, 86_400)?;
        Ok(PinLimits {
            first_delay: Duration::from_millis(delay_ms as u64),
            max_failures: in_range(&self.max_failures, "pin.max_failures", 1, 1000)? as u32,
            lockout: Duration::from_secs(lockout_s as u64),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAudio {
    max_file_bytes: Spanned<i64>,
    fetch_timeout_ms: Spanned<i64>,
    max_clip_seconds: Spanned<i64>,
    file_cache_entries: Spanned<i64>,
    espeak: Spanned<String>,
    speech_timeout_ms: Spanned<i64>,
    speech_cache_entries: Spanned<i64>,
}

impl Default for RawAudio {
    fn default() -> Self {
        RawAudio {
            max_file_bytes: unspanned(16 * 1024 * 1024),
            fetch_timeout_ms: unspanned(10_000),
            max_clip_seconds: unspanned(600),
            file_cache_entries: unspanned(64),
            espeak: unspanned("espeak-ng".to_string()),
            speech_timeout_ms: unspanned(10_000),
            speech_cache_entries: unspanned(256),
        }
    }
}

impl RawAudio {
    fn validate(self) -> Result<crate::audio::AudioSettings, Invalid> {
        let espeak = self.espeak.get_ref().trim();
        if espeak.is_empty() {
            return Err(invalid(&self.espeak, "audio.espeak", "must not be empty"));
        }
        let millis = |v: i64| Duration::from_millis(v as u64);
        Ok(crate::audio::AudioSettings {
            fetch: crate::audio::FetchLimits {
                max_bytes: in_range(&self.max_file_bytes, "audio.max_file_bytes", 1024, 1 << 30)?
                    as usize,
                timeout: millis(in_range(
                    &self.fetch_timeout_ms,
                    "audio.fetch_timeout_ms",
                    100,
                    120_000,
                )?),
                max_seconds: in_range(&self.max_clip_seconds, "audio.max_clip_seconds", 1, 3600)?
                    as u64,
                cache_entries: in_range(
                    &self.file_cache_entries,
                    "audio.file_cache_entries",
                    1,
                    10_000,
                )? as usize,
            },
            espeak: PathBuf::from(espeak),
            speech_timeout: millis(in_range(
                &self.speech_timeout_ms,
                "audio.speech_timeout_ms",
                100,
                120_000,
            )?),
            speech_cache_entries: in_range(
                &self.speech_cache_entries,
                "audio.speech_cache_entries",
                1,
                100_000,
            )? as usize,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawApi {
    listen: Spanned<String>,
    public_base_url: Spanned<String>,
    user_id: Spanned<String>,
    token: Spanned<String>,
    secret: Spanned<String>,
    max_connections: Spanned<i64>,
    max_connections_per_ip: Spanned<i64>,
    idle_timeout_s: Spanned<i64>,
}

impl Default for RawApi {
    fn default() -> Self {
        RawApi {
            listen: unspanned("127.0.0.1:8088".to_string()),
            public_base_url: unspanned(String::new()),
            user_id: unspanned(String::new()),
            token: unspanned(String::new()),
            secret: unspanned(String::new()),
            max_connections: unspanned(256),
            max_connections_per_ip: unspanned(32),
            idle_timeout_s: unspanned(60),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawStore {
    path: Option<Spanned<String>>,
    completed_in_memory: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawApplication {
    incoming_call_url: Spanned<String>,
    answer_timeout: Spanned<i64>,
}

impl Default for RawApplication {
    fn default() -> Self {
        RawApplication {
            incoming_call_url: unspanned(String::new()),
            answer_timeout: unspanned(30),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawEvents {
    max_attempts: Spanned<i64>,
}

impl Default for RawEvents {
    fn default() -> Self {
        RawEvents {
            max_attempts: unspanned(6),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    level: Spanned<String>,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: unspanned("info".to_string()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoom {
    number: Spanned<String>,
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    max_members: Option<Spanned<i64>>,
    #[serde(default)]
    answer_delay_ms: Option<Spanned<i64>>,
    #[serde(default)]
    pin: Option<Spanned<String>>,
    #[serde(default)]
    pin_prompt: Option<Spanned<String>>,
    #[serde(default)]
    announce_count: bool,
    #[serde(default)]
    cascade: Vec<Spanned<String>>,
}

/// `sip.session_expires` when the file does not set it: RFC 4028's recommended
/// interval. A refresh every 15 minutes costs nothing, and a call whose far end
/// vanished without BYE or RTP timeout is cleared within half an hour.
pub const DEFAULT_SESSION_EXPIRES_S: i64 = 1800;
/// `sip.min_se` when the file does not set it: RFC 4028's floor, so no
/// PBX's interval is refused unless the RFC refuses it too.
pub const DEFAULT_MIN_SE_S: i64 = crate::sip::session_timer::MIN_SE_FLOOR_S as i64;
/// The longest session interval we accept in the file: a day.
const MAX_SESSION_EXPIRES_S: i64 = 86_400;

/// `sip.max_transactions` when the file does not set it: four per member
/// (each call's INVITE, and its BYE, stay 32 s after they end, so a full
/// room that hangs up and dials again holds four per member at once), and
/// never fewer than 4096.
pub fn default_max_transactions(max_members: usize) -> usize {
    max_members.saturating_mul(4).max(4096)
}

fn unspanned<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

fn in_range(value: &Spanned<i64>, key: &str, min: i64, max: i64) -> Result<i64, Invalid> {
    let v = *value.get_ref();
    if v < min || v > max {
        return Err(invalid(
            value,
            key,
            format!("{v} is out of range: must be {min}..={max}"),
        ));
    }
    Ok(v)
}

fn optional_ip(value: &Spanned<String>, key: &str) -> Result<Option<IpAddr>, Invalid> {
    let text = value.get_ref().trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| invalid(value, key, format!("`{text}` is not an IP address")))
}

impl RawConfig {
    fn validate(self) -> Result<Config, Invalid> {
        let sip = self.sip.validate(self.media.max_members())?;
        let media = self.media.validate()?;
        let log = LogConfig {
            level: self.log.level.get_ref().clone(),
        };
        if tracing_subscriber::EnvFilter::try_new(&log.level).is_err() {
            return Err(invalid(
                &self.log.level,
                "log.level",
                format!("`{}` is not a log filter like \"info\"", log.level),
            ));
        }
        let raw_rooms = if self.room.is_empty() {
            vec![RawRoom {
                number: unspanned("1000".to_string()),
                name: None,
                max_members: None,
                answer_delay_ms: None,
                pin: None,
                pin_prompt: None,
                announce_count: false,
                cascade: Vec::new(),
            }]
        } else {
            self.room
        };
        let mut rooms: Vec<Room> = Vec::with_capacity(raw_rooms.len());
        for raw in raw_rooms {
            let number = raw.number.get_ref().trim().to_string();
            if number.is_empty()
                || !number
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-_.*#".contains(c))
            {
                return Err(invalid(
                    &raw.number,
                    "room.number",
                    format!(
                        "`{number}` is not a dialable number (letters, digits and + - _ . * #)"
                    ),
                ));
            }
            if rooms.iter().any(|r| r.number == number) {
                return Err(invalid(
                    &raw.number,
                    "room.number",
                    format!("room `{number}` is configured twice"),
                ));
            }
            let max_members = match &raw.max_members {
                Some(v) => in_range(v, "room.max_members", 1, media.max_members as i64)? as usize,
                None => media.max_members,
            };
            let name = raw
                .name
                .map(|n| n.into_inner())
                .unwrap_or_else(|| format!("Room {number}"));
            let answer_delay = match &raw.answer_delay_ms {
                Some(v) => {
                    Duration::from_millis(in_range(v, "room.answer_delay_ms", 0, 60_000)? as u64)
                }
                None => Duration::ZERO,
            };
            let pin = match &raw.pin {
                Some(v) => {
                    let pin = v.get_ref().trim();
                    if pin.is_empty() || pin.len() > 16 || !pin.chars().all(|c| c.is_ascii_digit())
                    {
                        return Err(invalid(
                            v,
                            "room.pin",
                            format!("`{pin}` is not a PIN of 1 to 16 digits"),
                        ));
                    }
                    Some(pin.to_string())
                }
                None => None,
            };
            let pin_prompt = match &raw.pin_prompt {
                Some(v) if v.get_ref().trim().is_empty() => {
                    return Err(invalid(v, "room.pin_prompt", "must not be empty"))
                }
                Some(v) => v.get_ref().trim().to_string(),
                None => DEFAULT_PIN_PROMPT.to_string(),
            };
            let mut cascade: Vec<String> = Vec::with_capacity(raw.cascade.len());
            for target in &raw.cascade {
                let uri = cascade_target(target)?;
                if cascade.contains(&uri) {
                    return Err(invalid(
                        target,
                        "room.cascade",
                        format!("`{uri}` is listed twice"),
                    ));
                }
                cascade.push(uri);
            }
            rooms.push(Room {
                number,
                name,
                max_members,
                answer_delay,
                pin,
                pin_prompt,
                announce_count: raw.announce_count,
                cascade,
            });
        }
        let registrations = registration::validate(self.registration, &rooms)?;
        Ok(Config {
            sip,
            media,
            log,
            rooms,
            registrations,
            api: self.api.validate()?,
            store: StoreConfig {
                path: match &self.store.path {
                    Some(path) if !path.get_ref().trim().is_empty() => {
                        PathBuf::from(path.get_ref().trim())
                    }
                    _ => default_store_path(std::env::var_os("STATE_DIRECTORY")),
                },
                completed_in_memory: match &self.store.completed_in_memory {
                    Some(value) => {
                        in_range(value, "store.completed_in_memory", 0, 1_000_000)? as usize
                    }
                    None => DEFAULT_COMPLETED_IN_MEMORY as usize,
                },
            },
            application: ApplicationConfig {
                incoming_call_url: match non_empty(&self.application.incoming_call_url) {
                    Some(url) => Some(http_url(
                        &self.application.incoming_call_url,
                        "application.incoming_call_url",
                        &url,
                    )?),
                    None => None,
                },
                answer_timeout: Duration::from_secs(in_range(
                    &self.application.answer_timeout,
                    "application.answer_timeout",
                    1,
                    170,
                )? as u64),
            },
            events: EventsConfig {
                max_attempts: in_range(&self.events.max_attempts, "events.max_attempts", 1, 20)?
                    as u32,
            },
            audio: self.audio.validate()?,
            pin: self.pin.validate()?,
        })
    }
}

/// `[sip] allow` or `deny`: a list of address ranges.
impl RawApi {
    fn validate(self) -> Result<ApiConfig, Invalid> {
        let listen: SocketAddr = self.listen.get_ref().trim().parse().map_err(|_| {
            invalid(
                &self.listen,
                "api.listen",
                format!(
                    "`{}` is not an address:port like \"127.0.0.1:8088\"",
                    self.listen.get_ref()
                ),
            )
        })?;
        let public_base_url = match non_empty(&self.public_base_url) {
            Some(url) => http_url(&self.public_base_url, "api.public_base_url", &url)?,
            None => format!("http://{listen}"),
        }
        .trim_end_matches('/')
        .to_string();
        let token = self.token.get_ref().trim().to_string();
        let secret = self.secret.get_ref().to_string();
        let user_id = self.user_id.get_ref().trim().to_string();
        if !token.is_empty() {
            if secret.is_empty() {
                return Err(invalid(
                    &self.secret,
                    "api.secret",
                    "must be set when api.token is set",
                ));
            }
            let well_formed = user_id.strip_prefix("u-").is_some_and(|rest| {
                !rest.is_empty()
                    && rest
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            });
            if !well_formed {
                return Err(invalid(
                    &self.user_id,
                    "api.user_id",
                    format!("`{user_id}` is not a user id like \"u-abc123\" (required when api.token is set)"),
                ));
            }
        }
        let max_connections = in_range(&self.max_connections, "api.max_connections", 1, 100_000)?;
        Ok(ApiConfig {
            listen,
            public_base_url,
            user_id,
            token,
            secret,
            connections: ConnectionLimits {
                max_connections: max_connections as usize,
                max_connections_per_ip: in_range(
                    &self.max_connections_per_ip,
                    "api.max_connections_per_ip",
                    1,
                    max_connections,
                )? as usize,
                idle_timeout: Duration::from_secs(in_range(
                    &self.idle_timeout_s,
                    "api.idle_timeout_s",
                    1,
                    86_400,
                )? as u64),
            },
        })
    }
}

/// `$STATE_DIRECTORY/sipconf.db` under systemd (`StateDirectory=`; the first
/// of a colon-separated list), else `./data/sipconf.db`.
fn default_store_path(state_directory: Option<std::ffi::OsString>) -> PathBuf {
    let first = state_directory.and_then(|dirs| {
        dirs.to_str()
            .and_then(|d| d.split(':').next())
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
    });
    match first {
        Some(dir) => dir.join("sipconf.db"),
        None => PathBuf::from("./data/sipconf.db"),
    }
}

/// `sip.bridge_id`: empty (derived), or a name of letters, digits and
/// `. - _ : [ ]` (it is written in a comma-separated header).
/// One `[[room]] cascade` entry: a `sip:` URI with a host, and no spaces or
/// commas.
fn cascade_target(value: &Spanned<String>) -> Result<String, Invalid> {
    let uri = value.get_ref().trim();
    let host = uri
        .strip_prefix("sip:")
        .map(|rest| rest.split(';').next().unwrap_or_default())
        .map(|address| address.rsplit_once('@').map_or(address, |(_, host)| host));
    let fits = uri.chars().all(|c| c.is_ascii_graphic() && c != ',');
    match host {
        Some(host) if fits && !host.is_empty() && !host.starts_with(':') => Ok(uri.to_string()),
        _ => Err(invalid(
            value,
            "room.cascade",
            format!("`{uri}` is not a sip: URI of another bridge, like \"sip:1000@bridge-b:5060\""),
        )),
    }
}

fn non_empty(value: &Spanned<String>) -> Option<String> {
    let text = value.get_ref().trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// An absolute http or https URL.
fn http_url(value: &Spanned<String>, key: &str, text: &str) -> Result<String, Invalid> {
    match reqwest::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Ok(text.to_string())
        }
        _ => Err(invalid(
            value,
            key,
            format!("`{text}` is not an http(s) URL"),
        )),
    }
}

/// Where the configuration comes from: `--config`, or the default path.
pub fn resolve_path(explicit: Option<PathBuf>) -> PathBuf {
    explicit.unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let c = Config::parse("", "t").unwrap();
        assert_eq!(c.sip.listen, "0.0.0.0:5060".parse().unwrap());
        assert_eq!(c.media.rtp_ports, 20000..30000);
        assert_eq!(c.media.rtp_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.sip.session_timer.session_expires_s, 1800);
        assert_eq!(c.sip.session_timer.min_se_s, 90);
        assert_eq!(c.rooms.len(), 1);
        assert_eq!(c.rooms[0].number, "1000");
    }

    #[test]
    fn bad_value_names_key_and_line() {
        let text = "[sip]\nlisten = \"0.0.0.0:5060\"\n\n[media]\nrtp_ports = \"30000\"\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.line, Some(5));
        assert_eq!(e.key.as_deref(), Some("media.rtp_ports"));
        assert!(e.to_string().starts_with("x.toml:5: key `media.rtp_ports`"));
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let text = "[media]\nmax_members = 10\nmax_memberz = 10\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("max_memberz"), "{e}");
    }

    #[test]
    fn type_error_names_key_and_line() {
        let text = "[sip]\nt1_ms = 500\n\n[[room]]\nnumber = \"1\"\nmax_members = \"lots\"\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.line, Some(6));
        assert_eq!(e.key.as_deref(), Some("room.max_members"), "{e}");
    }

    #[test]
    fn sip_transactions_default_to_four_per_member_and_a_set_value_is_kept() {
        assert_eq!(Config::parse("", "t").unwrap().sip.max_transactions, 4096);
        let big = Config::parse("[media]\nmax_members = 3000\n", "t").unwrap();
        assert_eq!(big.sip.max_transactions, 12_000);
        let set = "[sip]\nmax_transactions = 2000\n[media]\nmax_members = 3000\n";
        assert_eq!(Config::parse(set, "t").unwrap().sip.max_transactions, 2000);
        let e = Config::parse("[sip]\nmax_transactions = 8\n", "x.toml").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert_eq!(e.key.as_deref(), Some("sip.max_transactions"), "{e}");
    }

    #[test]
    fn completed_records_in_memory_default_to_a_thousand_and_zero_is_allowed() {
        let default = Config::parse("", "t").unwrap();
        assert_eq!(default.store.completed_in_memory, 1000);
        let none = Config::parse("[store]\ncompleted_in_memory = 0\n", "t").unwrap();
        assert_eq!(none.store.completed_in_memory, 0);
        let text = "[store]\npath = \"x.db\"\ncompleted_in_memory = -1\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("store.completed_in_memory"), "{e}");
    }

    #[test]
    fn pin_limits_default_to_a_second_doubling_six_tries_and_five_minutes() {
        let pin = Config::parse("", "t").unwrap().pin;
        assert_eq!(pin.first_delay, Duration::from_secs(1));
        assert_eq!(pin.max_failures, 6);
        assert_eq!(pin.lockout, Duration::from_secs(300));
        let text = "[pin]\ndelay_ms = 500\nmax_failures = 0\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("pin.max_failures"), "{e}");
    }

    #[test]
    fn source_and_connection_limits_have_defaults_and_name_key_and_line() {
        let config = Config::parse("", "t").unwrap();
        let limits = &config.sip.limits;
        assert!(limits.allow.is_empty() && limits.deny.is_empty());
        assert_eq!((limits.requests_per_s, limits.request_burst), (200, 400));
        assert_eq!(limits.transactions_per_ip, 4096 / 16);
        assert_eq!(
            (limits.pending_invites_per_ip, limits.pending_invites),
            (32, 128)
        );
        assert_eq!(config.sip.tcp.max_connections, 1024);
        assert_eq!(config.sip.tcp.max_connections_per_ip, 32);
        assert_eq!(config.sip.tcp.idle_timeout, Duration::from_secs(300));
        assert_eq!(config.api.connections.max_connections, 256);
        assert_eq!(config.api.connections.max_connections_per_ip, 32);
        assert_eq!(config.api.connections.idle_timeout, Duration::from_secs(60));

        let text = "[sip]\nallow = [\"10.0.0.0/8\", \"2001:db8::/32\"]\ndeny = [\"10.9.0.0/16\"]\n";
        let limits = Config::parse(text, "t").unwrap().sip.limits;
        assert!(limits.allow[1].contains("2001:db8::1".parse().unwrap()));
        assert!(limits.deny[0].contains("10.9.1.1".parse().unwrap()));

        let text = "[sip]\nallow = [\"10.0.0.0/8\",\n  \"10.0.0.0/40\"]\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sip.allow"), "{e}");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("prefix length"), "{e}");
        let e = Config::parse("[sip]\ndeny = [\"lan\"]\n", "x.toml").unwrap_err();
        assert_eq!(
            (e.key.as_deref(), e.line),
            (Some("sip.deny"), Some(2)),
            "{e}"
        );
        let text = "[sip]\nmax_pending_invites = 10\nmax_pending_invites_per_ip = 11\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(
            e.key.as_deref(),
            Some("sip.max_pending_invites_per_ip"),
            "{e}"
        );
        assert_eq!(e.line, Some(3));
        let e = Config::parse(
            "[sip]\nmax_transactions = 100\nmax_transactions_per_ip = 101\n",
            "x",
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sip.max_transactions_per_ip"), "{e}");
        let e = Config::parse("[sip]\ntcp_idle_timeout_s = 0\n", "x").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sip.tcp_idle_timeout_s"), "{e}");
        let e = Config::parse(
            "[api]\nmax_connections = 4\nmax_connections_per_ip = 5\n",
            "x",
        )
        .unwrap_err();
        assert_eq!(
            (e.key.as_deref(), e.line),
            (Some("api.max_connections_per_ip"), Some(3))
        );
        let e = Config::parse("[sip]\nrequests_per_s = 0\n", "x").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sip.requests_per_s"), "{e}");
    }

    #[test]
    fn shared_port_is_off_by_default_and_must_be_a_bool() {
        assert!(!Config::parse("", "t").unwrap().media.shared_port);
        let on = Config::parse("[media]\nshared_port = true\n", "t").unwrap();
        assert!(on.media.shared_port);
        let text = "[media]\nmax_members = 10\nshared_port = \"yes\"\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("media.shared_port"), "{e}");
    }

    #[test]
    fn shared_port_needs_a_pair_in_the_range() {
        let text = "[media]\nrtp_ports = \"30001-30002\"\nshared_port = true\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("media.shared_port"), "{e}");
    }

    #[test]
    fn tls_is_off_by_default_and_its_keys_are_checked() {
        assert_eq!(Config::parse("", "t").unwrap().sip.tls, None);
        let text = "[sip.tls]\nlisten = \"0.0.0.0:5061\"\ncertificate = \"/etc/c.pem\"\n\
                    key = \"/etc/k.pem\"\n";
        let tls = Config::parse(text, "t").unwrap().sip.tls.expect("on");
        assert_eq!(tls.listen, "0.0.0.0:5061".parse().unwrap());
        assert_eq!(tls.certificate, PathBuf::from("/etc/c.pem"));
        assert_eq!((tls.ca, tls.require_client_certificate), (None, false));
        let refused = |text: &str| Config::parse(text, "x.toml").unwrap_err();
        let e = refused("[sip.tls]\nlisten = \"5061\"\n");
        assert_eq!(
            (e.key.as_deref(), e.line),
            (Some("sip.tls.listen"), Some(2)),
            "{e}"
        );
        let e = refused("[sip.tls]\nlisten = \"0.0.0.0:5061\"\nkey = \"k.pem\"\n");
        assert_eq!(e.key.as_deref(), Some("sip.tls.certificate"), "{e}");
        let e = refused(
            "[sip]\nlisten = \"0.0.0.0:5070\"\n[sip.tls]\nlisten = \"0.0.0.0:5070\"\n\
             certificate = \"c\"\nkey = \"k\"\n",
        );
        assert_eq!(
            (e.key.as_deref(), e.line),
            (Some("sip.tls.listen"), Some(4)),
            "{e}"
        );
        let e = refused(
            "[sip.tls]\nlisten = \"0.0.0.0:5061\"\ncertificate = \"c\"\nkey = \"k\"\n\
             require_client_certificate = true\n",
        );
        assert_eq!(
            (e.key.as_deref(), e.line),
            (Some("sip.tls.require_client_certificate"), Some(5)),
            "{e}"
        );
        let e = refused("[sip.tls]\nport = 5061\n");
        assert!(e.to_string().contains("port"), "{e}");
    }

    #[test]
    fn srtp_is_offered_by_default_and_must_be_a_known_word() {
        use crate::sip::sdp::SrtpPolicy;
        assert_eq!(
            Config::parse("", "t").unwrap().media.srtp,
            SrtpPolicy::Offer
        );
        let c = Config::parse("[media]\nsrtp = \"require\"\n", "t").unwrap();
        assert_eq!(c.media.srtp, SrtpPolicy::Require);
        let c = Config::parse("[media]\nsrtp = \"off\"\n", "t").unwrap();
        assert_eq!(c.media.srtp, SrtpPolicy::Off);
        let text = "[media]\nmax_members = 10\nsrtp = \"mandatory\"\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("media.srtp"), "{e}");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().contains("`mandatory` is not one of"), "{e}");
        let e = Config::parse("[media]\nsrtp = true\n", "x.toml").unwrap_err();
        assert!(e.to_string().contains("srtp"), "{e}");
    }

    #[test]
    fn codecs_default_to_opus_g722_pcmu_pcma_and_are_checked() {
        use crate::sip::sdp::SdpCodec;
        let c = Config::parse("", "t").unwrap();
        assert_eq!(c.media.codecs, SdpCodec::DEFAULT_ORDER.to_vec());
        assert_eq!(
            (c.media.opus_bitrate_bps, c.media.opus_complexity),
            (32_000, 5)
        );
        let c = Config::parse("[media]\ncodecs = [\"PCMA\", \"g722\"]\n", "t").unwrap();
        assert_eq!(c.media.codecs, vec![SdpCodec::Pcma, SdpCodec::G722]);
        let e = Config::parse("[media]\n\ncodecs = [\"pcmu\", \"g729\"]\n", "x.toml").unwrap_err();
        assert_eq!(
            (e.key.as_deref(), e.line),
            (Some("media.codecs"), Some(3)),
            "{e}"
        );
        assert!(e.to_string().contains("`g729` is not one of"), "{e}");
        let e = Config::parse("[media]\ncodecs = [\"pcmu\", \"PCMU\"]\n", "x").unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
        let e = Config::parse("[media]\ncodecs = []\n", "x").unwrap_err();
        assert!(e.to_string().contains("at least one codec"), "{e}");
        let e = Config::parse("[media]\nopus_bitrate = 1000\n", "x").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("media.opus_bitrate"), "{e}");
        let e = Config::parse("[media]\nopus_complexity = 11\n", "x").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("media.opus_complexity"), "{e}");
    }

    #[test]
    fn rtp_timeout_zero_means_never() {
        let c = Config::parse("[media]\nrtp_timeout = 0\n", "t").unwrap();
        assert_eq!(c.media.rtp_timeout, None);
        let e = Config::parse("[media]\nrtp_timeout = -1\n", "x").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("media.rtp_timeout"), "{e}");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn session_timer_settings_are_checked_against_rfc_4028() {
        let c = Config::parse("[sip]\nsession_expires = 600\nmin_se = 120\n", "t").unwrap();
        assert_eq!(c.sip.session_timer.session_expires_s, 600);
        assert_eq!(c.sip.session_timer.min_se_s, 120);
        // Below the RFC's floor of 90 s.
        let e = Config::parse("[sip]\nmin_se = 60\n", "x").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sip.min_se"), "{e}");
        assert_eq!(e.line, Some(2));
        // An interval we would refuse ourselves.
        let e = Config::parse("[sip]\nmin_se = 600\nsession_expires = 300\n", "x").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sip.session_expires"), "{e}");
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = Config::parse("[sip]\nlisten = \n", "x.toml").unwrap_err();
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn room_limits_are_checked() {
        let text = "[media]\nmax_members = 10\n[[room]]\nnumber = \"1\"\nmax_members = 11\n";
        let e = Config::parse(text, "x").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("room.max_members"));
        assert_eq!(e.line, Some(5));
        let dup = "[[room]]\nnumber = \"1\"\n[[room]]\nnumber = \"1\"\n";
        assert_eq!(Config::parse(dup, "x").unwrap_err().line, Some(4));
    }

    #[test]
    fn rooms_get_names_and_limits() {
        let text = "[[room]]\nnumber = \"1000\"\nname = \"Sales\"\nmax_members = 3\n[[room]]\nnumber = \"2000\"\n";
        let c = Config::parse(text, "x").unwrap();
        assert_eq!(
            c.rooms[0],
            Room {
                number: "1000".into(),
                name: "Sales".into(),
                max_members: 3,
                answer_delay: Duration::ZERO,
                pin: None,
                pin_prompt: DEFAULT_PIN_PROMPT.into(),
                announce_count: false,
                cascade: Vec::new(),
            }
        );
        assert_eq!(c.rooms[1].name, "Room 2000");
    }

    #[test]
    fn a_room_pin_is_digits_and_audio_has_limits() {
        let text = "[[room]]\nnumber = \"1\"\npin = \"4321\"\npin_prompt = \"PIN please.\"\nannounce_count = true\n[audio]\nespeak = \"/opt/espeak-ng\"\n";
        let c = Config::parse(text, "x").unwrap();
        assert_eq!(c.rooms[0].pin.as_deref(), Some("4321"));
        assert_eq!(c.rooms[0].pin_prompt, "PIN please.");
        assert!(c.rooms[0].announce_count);
        assert_eq!(c.audio.espeak, PathBuf::from("/opt/espeak-ng"));
        assert_eq!(c.audio.fetch.timeout, Duration::from_secs(10));
        let bad = "[[room]]\nnumber = \"1\"\npin = \"12a\"\n";
        assert_eq!(
            Config::parse(bad, "x").unwrap_err().key.as_deref(),
            Some("room.pin")
        );
    }

    #[test]
    fn a_room_cascades_to_sip_uris_and_the_bridge_has_an_id() {
        let text = "[sip]\nlisten = \"127.0.0.1:5070\"\n[[room]]\nnumber = \"1\"\ncascade = [\"sip:1@bridge-b:5060\", \"sip:1@192.0.2.9\"]\n";
        let c = Config::parse(text, "x").unwrap();
        assert_eq!(
            c.rooms[0].cascade,
            ["sip:1@bridge-b:5060", "sip:1@192.0.2.9"]
        );
        assert_eq!(
            c.sip.bridge_id(),
            "127.0.0.1:5070",
            "derived from the address"
        );
        let named = Config::parse("[sip]\nbridge_id = \"a-1\"\n", "x").unwrap();
        assert_eq!(named.sip.bridge_id(), "a-1");
        for (bad, key, line) in [
            (
                "[[room]]\nnumber = \"1\"\ncascade = [\"bridge-b\"]\n",
                "room.cascade",
                3,
            ),
            (
                "[[room]]\nnumber = \"1\"\ncascade = [\"sip:1@\"]\n",
                "room.cascade",
                3,
            ),
            (
                "[[room]]\nnumber = \"1\"\ncascade = [\"sip:b\", \"sip:b\"]\n",
                "room.cascade",
                3,
            ),
            ("[sip]\nbridge_id = \"a,b\"\n", "sip.bridge_id", 2),
        ] {
            let e = Config::parse(bad, "x").unwrap_err();
            assert_eq!((e.key.as_deref(), e.line), (Some(key), Some(line)), "{bad}");
        }
    }

    #[test]
    fn api_store_application_and_events_have_documented_defaults() {
        let c = Config::parse("", "t").unwrap();
        assert_eq!(c.api.listen, "127.0.0.1:8088".parse().unwrap());
        assert_eq!(c.api.public_base_url, "http://127.0.0.1:8088");
        assert!(!c.api.enabled(), "no credentials, no API");
        assert_eq!(c.application.incoming_call_url, None);
        assert_eq!(c.application.answer_timeout, Duration::from_secs(30));
        assert_eq!(c.events.max_attempts, 6);
        assert_eq!(c.sip.outbound.proxy, None);
        assert_eq!(default_store_path(None), PathBuf::from("./data/sipconf.db"));
        assert_eq!(
            default_store_path(Some("/var/lib/sipconf:/other".into())),
            PathBuf::from("/var/lib/sipconf/sipconf.db")
        );
    }

    #[test]
    fn api_token_needs_a_secret_and_a_user_id() {
        let e = Config::parse("[api]\ntoken = \"t\"\nuser_id = \"u-1\"\n", "x").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("api.secret"));
        let e = Config::parse(
            "[api]\ntoken = \"t\"\nsecret = \"s\"\nuser_id = \"bob\"\n",
            "x",
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("api.user_id"));
        assert_eq!(e.line, Some(4));
        let c = Config::parse(
            "[api]\nlisten = \"127.0.0.1:9000\"\ntoken = \"t\"\nsecret = \"s\"\nuser_id = \"u-1\"\n[sip.outbound]\nproxy = \"pbx.example:5060\"\n",
            "x",
        )
        .unwrap();
        assert!(c.api.enabled());
        assert_eq!(c.api.public_base_url, "http://127.0.0.1:9000");
        assert_eq!(c.sip.outbound.proxy.as_deref(), Some("pbx.example:5060"));
    }

    #[test]
    fn bad_urls_and_limits_name_their_key_and_line() {
        let e = Config::parse("[application]\nincoming_call_url = \"ftp://x\"\n", "x").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("application.incoming_call_url"));
        assert_eq!(e.line, Some(2));
        let e = Config::parse("[events]\nmax_attempts = 0\n", "x").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("events.max_attempts"));
        let e = Config::parse("[store]\npathh = \"x\"\n", "x").unwrap_err();
        assert_eq!(e.line, Some(2));
    }
}
