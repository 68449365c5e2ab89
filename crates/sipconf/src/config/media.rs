//! `[media]`: addresses and ports for RTP, the mix's limits and gate, SRTP,
//! and the codecs calls are answered with (`media.codecs`).

use super::{in_range, invalid, optional_ip, unspanned, Invalid};
use crate::sip::sdp::SdpCodec;
use serde::Deserialize;
use std::net::IpAddr;
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// Address written in SDP answers; `None` = the local address that routes to the caller.
    pub address: Option<IpAddr>,
    /// Local address RTP sockets are bound to.
    pub bind_address: IpAddr,
    /// RTP ports (even ones carry RTP, the odd port above carries RTCP).
    pub rtp_ports: Range<u16>,
    pub max_members: usize,
    /// No RTP (nor RTCP, nor a session refresh) for this long hangs a call up;
    /// `None` (`media.rtp_timeout = 0`): never.
    pub rtp_timeout: Option<Duration>,
    pub jitter_frames: usize,
    pub gate_threshold_dbfs: f32,
    /// How long the gate stays open, and a member talking, after its voice
    /// falls under the threshold (`media.gate_hangover_ms`).
    pub gate_hangover: Duration,
    /// Every call uses one RTP/RTCP port pair (the first even port of
    /// `rtp_ports` and the next), demultiplexed by source address.
    pub shared_port: bool,
    /// `media.srtp`: whether calls may or must use SRTP (SDES keys).
    pub srtp: crate::sip::sdp::SrtpPolicy,
    /// `media.codecs`: what calls are answered with, best first; an answer
    /// takes the first of these the offer carries.
    pub codecs: Vec<SdpCodec>,
    /// `media.opus_bitrate`: what our Opus encoders send, bits per second.
    pub opus_bitrate_bps: u32,
    /// `media.opus_complexity`: libopus's encoder complexity, 0-10.
    pub opus_complexity: u8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMedia {
    address: Spanned<String>,
    bind_address: Spanned<String>,
    rtp_ports: Spanned<String>,
    max_members: Spanned<i64>,
    rtp_timeout: Spanned<i64>,
    jitter_frames: Spanned<i64>,
    gate_threshold_dbfs: Spanned<f64>,
    gate_hangover_ms: Spanned<i64>,
    shared_port: Spanned<bool>,
    srtp: Spanned<String>,
    codecs: Spanned<Vec<Spanned<String>>>,
    opus_bitrate: Spanned<i64>,
    opus_complexity: Spanned<i64>,
}

impl Default for RawMedia {
    fn default() -> Self {
        RawMedia {
            address: unspanned(String::new()),
            bind_address: unspanned("0.0.0.0".to_string()),
            rtp_ports: unspanned("20000-29999".to_string()),
            max_members: unspanned(1000),
            rtp_timeout: unspanned(30),
            jitter_frames: unspanned(1),
            gate_threshold_dbfs: unspanned(-55.0),
            gate_hangover_ms: unspanned(200),
            shared_port: unspanned(false),
            srtp: unspanned("offer".to_string()),
            codecs: unspanned(
                SdpCodec::DEFAULT_ORDER
                    .iter()
                    .map(|codec| unspanned(codec.config_name().to_string()))
                    .collect(),
            ),
            opus_bitrate: unspanned(32_000),
            opus_complexity: unspanned(5),
        }
    }
}

impl RawMedia {
    pub(super) fn max_members(&self) -> &Spanned<i64> {
        &self.max_members
    }

    pub(super) fn validate(&self) -> Result<MediaSettings, Invalid> {
        let gate = *self.gate_threshold_dbfs.get_ref();
        if !(-96.0..=0.0).contains(&gate) {
            return Err(invalid(
                &self.gate_threshold_dbfs,
                "media.gate_threshold_dbfs",
                format!("{gate} is out of range: must be -96..=0"),
            ));
        }
        let media = MediaSettings {
            address: optional_ip(&self.address, "media.address")?,
            bind_address: optional_ip(&self.bind_address, "media.bind_address")?.ok_or_else(
                || {
                    invalid(
                        &self.bind_address,
                        "media.bind_address",
                        "must not be empty",
                    )
                },
            )?,
            rtp_ports: parse_port_range(&self.rtp_ports)?,
            max_members: in_range(&self.max_members, "media.max_members", 2, 100_000)? as usize,
            rtp_timeout: match in_range(&self.rtp_timeout, "media.rtp_timeout", 0, 3600)? {
                0 => None,
                seconds => Some(Duration::from_secs(seconds as u64)),
            },
            jitter_frames: in_range(&self.jitter_frames, "media.jitter_frames", 0, 10)? as usize,
            gate_threshold_dbfs: gate as f32,
            gate_hangover: Duration::from_millis(in_range(
                &self.gate_hangover_ms,
                "media.gate_hangover_ms",
                0,
                2000,
            )? as u64),
            shared_port: *self.shared_port.get_ref(),
            srtp: parse_srtp_policy(&self.srtp)?,
            codecs: parse_codecs(&self.codecs)?,
            // RFC 7587's range for Opus.
            opus_bitrate_bps: in_range(&self.opus_bitrate, "media.opus_bitrate", 6000, 510_000)?
                as u32,
            opus_complexity: in_range(&self.opus_complexity, "media.opus_complexity", 0, 10)? as u8,
        };
        if media.shared_port && media.rtp_ports.start.next_multiple_of(2) + 1 >= media.rtp_ports.end
        {
            return Err(invalid(
                &self.shared_port,
                "media.shared_port",
                format!(
                    "media.rtp_ports {}-{} holds no even port with the odd one above it to share",
                    media.rtp_ports.start,
                    media.rtp_ports.end - 1
                ),
            ));
        }
        Ok(media)
    }
}

fn parse_srtp_policy(value: &Spanned<String>) -> Result<crate::sip::sdp::SrtpPolicy, Invalid> {
    use crate::sip::sdp::SrtpPolicy;
    match value.get_ref().as_str() {
        "off" => Ok(SrtpPolicy::Off),
        "offer" => Ok(SrtpPolicy::Offer),
        "require" => Ok(SrtpPolicy::Require),
        other => Err(invalid(
            value,
            "media.srtp",
            format!("`{other}` is not one of \"off\", \"offer\", \"require\""),
        )),
    }
}

fn parse_port_range(value: &Spanned<String>) -> Result<Range<u16>, Invalid> {
    const KEY: &str = "media.rtp_ports";
    let text = value.get_ref().trim();
    let bad = || {
        invalid(
            value,
            KEY,
            format!("`{text}` is not a port range like \"20000-29999\""),
        )
    };
    let (low, high) = text.split_once('-').ok_or_else(bad)?;
    let low: u16 = low.trim().parse().map_err(|_| bad())?;
    let high: u16 = high.trim().parse().map_err(|_| bad())?;
    if low < 1024 || high <= low || high - low < 1 {
        return Err(invalid(
            value,
            KEY,
            format!("{text}: need 1024 <= first < last (one call takes an even port and the odd one above it)"),
        ));
    }
    Ok(low..high.saturating_add(1))
}

/// `media.codecs`: known names, each once, at least one.
fn parse_codecs(value: &Spanned<Vec<Spanned<String>>>) -> Result<Vec<SdpCodec>, Invalid> {
    const KEY: &str = "media.codecs";
    let mut codecs = Vec::new();
    for name in value.get_ref() {
        let codec = SdpCodec::from_config_name(name.get_ref().trim()).ok_or_else(|| {
            invalid(
                name,
                KEY,
                format!(
                    "`{}` is not one of \"opus\", \"g722\", \"pcmu\", \"pcma\"",
                    name.get_ref()
                ),
            )
        })?;
        if codecs.contains(&codec) {
            return Err(invalid(
                name,
                KEY,
                format!("`{}` is listed twice", name.get_ref()),
            ));
        }
        codecs.push(codec);
    }
    if codecs.is_empty() {
        return Err(invalid(value, KEY, "must name at least one codec"));
    }
    Ok(codecs)
}
