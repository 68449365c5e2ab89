//! RFC 4028 session timers, without IO: what a request or response says
//! (`Session-Expires`, `Min-SE`, `Supported: timer`), what we answer as the UAS
//! of an INVITE or UPDATE (the interval, who refreshes, or 422), and a dialog's
//! running timer (when we refresh, when the session is over).
//!
//! Owns: the negotiation rules and the arithmetic of the timer. Never touches:
//! messages on the wire, transactions or the clock (the endpoint passes `now`).

use super::message::{Request, Response};
use ezk_sip_types::{Headers, Name};
use std::time::{Duration, Instant};

/// The option tag of RFC 4028 (in Supported and Require).
pub const OPTION_TAG: &str = "timer";
/// No session interval may be shorter (RFC 4028 section 4 and 5).
pub const MIN_SE_FLOOR_S: u32 = 90;
/// The non-refresher ends the session this long before it expires, at most
/// (RFC 4028 section 10: the smaller of 32 s and a third of the interval).
const BYE_MARGIN_MAX: Duration = Duration::from_secs(32);

/// Which side of a transaction refreshes (the `refresher` parameter): the one
/// that sent the request (`uac`) or the one that answered it (`uas`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

impl Refresher {
    pub fn token(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }
}

/// Our side's settings: `sip.session_expires` and `sip.min_se`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerSettings {
    /// The interval we ask for, and the longest we accept: a longer one asked
    /// of us is cut to this (never below the asker's Min-SE).
    pub session_expires_s: u32,
    /// The shortest interval we accept; shorter is refused with 422.
    pub min_se_s: u32,
}

impl Default for TimerSettings {
    /// RFC 4028's recommended 1800 s and its floor of 90 s.
    fn default() -> Self {
        TimerSettings {
            session_expires_s: 1800,
            min_se_s: MIN_SE_FLOOR_S,
        }
    }
}

/// A `Session-Expires` value: `1800;refresher=uac`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionExpires {
    pub interval_s: u32,
    pub refresher: Option<Refresher>,
}

impl SessionExpires {
    /// Reads `delta-seconds *(;param)`; `None` when the number is missing or zero.
    pub fn parse(value: &str) -> Option<SessionExpires> {
        let mut parts = value.split(';');
        let interval_s: u32 = parts.next()?.trim().parse().ok()?;
        if interval_s == 0 {
            return None;
        }
        let refresher = parts
            .filter_map(|p| p.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("refresher"))
            .and_then(
                |(_, value)| match value.trim().to_ascii_lowercase().as_str() {
                    "uac" => Some(Refresher::Uac),
                    "uas" => Some(Refresher::Uas),
                    _ => None,
                },
            );
        Some(SessionExpires {
            interval_s,
            refresher,
        })
    }

    /// The header value.
    pub fn value(self) -> String {
        match self.refresher {
            Some(refresher) => format!("{};refresher={}", self.interval_s, refresher.token()),
            None => self.interval_s.to_string(),
        }
    }
}

/// What an INVITE or UPDATE (or its 2xx) says about session timers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerHeaders {
    /// `timer` in Supported or Require.
    pub supported: bool,
    pub session_expires: Option<SessionExpires>,
    pub min_se_s: Option<u32>,
}

impl TimerHeaders {
    fn read(headers: &Headers) -> TimerHeaders {
        let has_tag = |name: &Name| {
            headers
                .get_raw(name)
                .flat_map(|v| v.split(','))
                .any(|tag| tag.trim().eq_ignore_ascii_case(OPTION_TAG))
        };
        TimerHeaders {
            supported: has_tag(&Name::SUPPORTED) || has_tag(&Name::REQUIRE),
            session_expires: headers
                .get_raw(&Name::SESSION_EXPIRES)
                .next()
                .and_then(|v| SessionExpires::parse(v.as_str())),
            min_se_s: headers
                .get_raw(&Name::MIN_SE)
                .next()
                .and_then(|v| v.split(';').next()?.trim().parse().ok()),
        }
    }

    pub fn of_request(request: &Request) -> TimerHeaders {
        TimerHeaders::read(&request.headers)
    }

    pub fn of_response(response: &Response) -> TimerHeaders {
        TimerHeaders::read(&response.headers)
    }
}

/// Our answer, as the UAS of one INVITE or UPDATE transaction, to what it asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerAnswer {
    /// No session timer: the request neither asked for one nor said it supports them.
    Off,
    /// The 2xx carries `Session-Expires` (and `Require: timer` when the requester
    /// supports it), and the dialog's timer restarts when it is sent.
    On {
        session_expires: SessionExpires,
        require: bool,
    },
    /// 422 Session Interval Too Small, with our `Min-SE`.
    TooSmall { min_se_s: u32 },
}

impl TimerAnswer {
    /// RFC 4028 section 9. A requester that supports timers gets one even when it
    /// did not ask, and when it leaves the refresher open we refresh (so a dead far
    /// end is found by our own refresh failing, whatever its timer does); one that
    /// does not support them gets one only if a proxy asked, with us refreshing.
    pub fn decide(settings: TimerSettings, asked: TimerHeaders) -> TimerAnswer {
        let their_min_s = asked.min_se_s.unwrap_or(0).max(MIN_SE_FLOOR_S);
        let interval_s = match asked.session_expires {
            Some(se) if se.interval_s < settings.min_se_s => {
                return TimerAnswer::TooSmall {
                    min_se_s: settings.min_se_s,
                }
            }
            Some(se) => se
                .interval_s
                .min(settings.session_expires_s.max(their_min_s)),
            None if asked.supported => settings.session_expires_s.max(their_min_s),
            None => return TimerAnswer::Off,
        };
        let refresher = match asked.session_expires.and_then(|se| se.refresher) {
            Some(Refresher::Uac) if asked.supported => Refresher::Uac,
            _ => Refresher::Uas,
        };
        TimerAnswer::On {
            session_expires: SessionExpires {
                interval_s,
                refresher: Some(refresher),
            },
            require: asked.supported,
        }
    }

    /// The dialog's timer once our 2xx is sent at `now`.
    pub fn start(self, now: Instant) -> Option<SessionTimer> {
        match self {
            TimerAnswer::On {
                session_expires, ..
            } => Some(SessionTimer::start(
                now,
                session_expires.interval_s,
                session_expires.refresher == Some(Refresher::Uas),
            )),
            TimerAnswer::Off | TimerAnswer::TooSmall { .. } => None,
        }
    }
}

/// The dialog's timer after a 2xx to a request we sent (our INVITE or refresh)
/// that asked for `asked_s` (RFC 4028 section 7.2). A 2xx without
/// `Session-Expires` comes from a UAS without timers: we still refresh at our
/// interval, which keeps both ends and every proxy between them honest.
pub fn timer_after_our_request(now: Instant, asked_s: u32, response: TimerHeaders) -> SessionTimer {
    match response.session_expires {
        Some(se) => SessionTimer::start(
            now,
            se.interval_s.max(MIN_SE_FLOOR_S),
            se.refresher != Some(Refresher::Uas),
        ),
        None => SessionTimer::start(now, asked_s, true),
    }
}

/// A dialog's running session timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionTimer {
    pub interval_s: u32,
    /// We send the refreshes; otherwise we wait for the far end's.
    pub we_refresh: bool,
    /// When we send our next refresh; `None` when the far end refreshes or ours
    /// is on its way.
    pub refresh_at: Option<Instant>,
    /// When the session is over without a refresh: we send BYE.
    pub expires_at: Instant,
}

impl SessionTimer {
    /// A refresh just completed at `now`. The refresher refreshes at half the
    /// interval; the other side gives up a little before the end (RFC 4028
    /// sections 7.2 and 10).
    pub fn start(now: Instant, interval_s: u32, we_refresh: bool) -> SessionTimer {
        let interval = Duration::from_secs(u64::from(interval_s));
        let (refresh_at, expires_at) = if we_refresh {
            (Some(now + interval / 2), now + interval)
        } else {
            (None, now + interval - BYE_MARGIN_MAX.min(interval / 3))
        };
        SessionTimer {
            interval_s,
            we_refresh,
            refresh_at,
            expires_at,
        }
    }

    /// When the endpoint must look at this timer next.
    pub fn next_wake(&self) -> Instant {
        self.refresh_at
            .map_or(self.expires_at, |at| at.min(self.expires_at))
    }

    /// The `Session-Expires` of our refresh: same interval, and we go on refreshing.
    pub fn refresh_header(&self) -> SessionExpires {
        SessionExpires {
            interval_s: self.interval_s,
            refresher: Some(Refresher::Uac),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(supported: bool, se: Option<&str>, min_se_s: Option<u32>) -> TimerHeaders {
        TimerHeaders {
            supported,
            session_expires: se.and_then(SessionExpires::parse),
            min_se_s,
        }
    }

    fn on(interval_s: u32, refresher: Refresher, require: bool) -> TimerAnswer {
        TimerAnswer::On {
            session_expires: SessionExpires {
                interval_s,
                refresher: Some(refresher),
            },
            require,
        }
    }

    #[test]
    fn session_expires_values_are_read_with_their_refresher() {
        let read = SessionExpires::parse;
        assert_eq!(
            read("1800;refresher=uac"),
            Some(SessionExpires {
                interval_s: 1800,
                refresher: Some(Refresher::Uac)
            })
        );
        assert_eq!(
            read(" 90 ; Refresher = UAS ").and_then(|s| s.refresher),
            Some(Refresher::Uas)
        );
        assert_eq!(read("600;x=1").and_then(|s| s.refresher), None);
        assert_eq!(read("abc"), None);
        assert_eq!(read("0"), None);
        assert_eq!(read("-5"), None);
        assert_eq!(read("99999999999"), None);
    }

    #[test]
    fn the_uas_keeps_the_asked_refresher_and_refreshes_when_left_to_choose() {
        let ours = TimerSettings::default();
        assert_eq!(
            TimerAnswer::decide(ours, asked(true, Some("600;refresher=uac"), None)),
            on(600, Refresher::Uac, true)
        );
        assert_eq!(
            TimerAnswer::decide(ours, asked(true, Some("600;refresher=uas"), None)),
            on(600, Refresher::Uas, true)
        );
        assert_eq!(
            TimerAnswer::decide(ours, asked(true, Some("600"), None)),
            on(600, Refresher::Uas, true)
        );
    }

    #[test]
    fn a_requester_without_timer_support_never_refreshes_and_gets_no_require() {
        let ours = TimerSettings::default();
        // A proxy inserted Session-Expires: only we can refresh.
        assert_eq!(
            TimerAnswer::decide(ours, asked(false, Some("900;refresher=uac"), None)),
            on(900, Refresher::Uas, false)
        );
        assert_eq!(
            TimerAnswer::decide(ours, asked(false, None, None)),
            TimerAnswer::Off
        );
    }

    #[test]
    fn a_supporting_requester_that_asks_nothing_gets_our_interval() {
        let ours = TimerSettings {
            session_expires_s: 600,
            min_se_s: 120,
        };
        assert_eq!(
            TimerAnswer::decide(ours, asked(true, None, None)),
            on(600, Refresher::Uas, true)
        );
        // Never below what the requester said it accepts.
        assert_eq!(
            TimerAnswer::decide(ours, asked(true, None, Some(1200))),
            on(1200, Refresher::Uas, true)
        );
    }

    #[test]
    fn too_short_is_422_and_too_long_is_cut_to_ours_but_not_below_their_min_se() {
        let ours = TimerSettings {
            session_expires_s: 600,
            min_se_s: 120,
        };
        assert_eq!(
            TimerAnswer::decide(ours, asked(true, Some("100"), None)),
            TimerAnswer::TooSmall { min_se_s: 120 }
        );
        assert_eq!(
            TimerAnswer::decide(ours, asked(true, Some("120"), None)),
            on(120, Refresher::Uas, true)
        );
        assert_eq!(
            TimerAnswer::decide(ours, asked(true, Some("3600"), None)),
            on(600, Refresher::Uas, true)
        );
        assert_eq!(
            TimerAnswer::decide(ours, asked(true, Some("3600"), Some(900))),
            on(900, Refresher::Uas, true)
        );
    }

    #[test]
    fn the_refresher_refreshes_at_half_and_the_other_side_gives_up_before_the_end() {
        let now = Instant::now();
        let ours = SessionTimer::start(now, 1800, true);
        assert_eq!(ours.refresh_at, Some(now + Duration::from_secs(900)));
        assert_eq!(ours.expires_at, now + Duration::from_secs(1800));
        assert_eq!(ours.next_wake(), now + Duration::from_secs(900));
        let theirs = SessionTimer::start(now, 1800, false);
        assert_eq!(theirs.refresh_at, None);
        assert_eq!(theirs.expires_at, now + Duration::from_secs(1800 - 32));
        let short = SessionTimer::start(now, 90, false);
        assert_eq!(short.expires_at, now + Duration::from_secs(60));
    }

    #[test]
    fn after_our_request_the_answer_decides_who_refreshes() {
        let now = Instant::now();
        let said = |se: Option<&str>| asked(true, se, None);
        let uac = timer_after_our_request(now, 1800, said(Some("900;refresher=uac")));
        assert_eq!((uac.interval_s, uac.we_refresh), (900, true));
        let uas = timer_after_our_request(now, 1800, said(Some("900;refresher=uas")));
        assert_eq!((uas.interval_s, uas.we_refresh), (900, false));
        let none = timer_after_our_request(now, 1800, said(None));
        assert_eq!((none.interval_s, none.we_refresh), (1800, true));
    }
}
