//! UTC timestamps as the API writes them: `YYYY-MM-DDTHH:MM:SSZ` on resources
//! (the Java client cannot parse fractions) and with milliseconds on events.
//! It formats; it never reads the clock.

use serde::{Serialize, Serializer};
use std::time::{SystemTime, UNIX_EPOCH};

/// A resource's instant on the wire: [`resource_time`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceTime(pub SystemTime);

/// An event's instant on the wire: [`event_time`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTime(pub SystemTime);

impl Serialize for ResourceTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&resource_time(self.0))
    }
}

impl Serialize for EventTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&event_time(self.0))
    }
}

/// `2026-11-27T01:14:00Z`.
pub fn resource_time(time: SystemTime) -> String {
    format(time, false)
}

/// `2026-11-27T01:14:00.123Z`.
pub fn event_time(time: SystemTime) -> String {
    format(time, true)
}

fn format(time: SystemTime, with_millis: bool) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    let (h, m, s) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
    if with_millis {
        format!(
            "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:03}Z",
            since.subsec_millis()
        )
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// `civil_from_days`, exact for every day a `SystemTime` here can hold).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_known_instants() {
        assert_eq!(resource_time(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day in a century leap year) 12:34:56.789
        let t = UNIX_EPOCH + Duration::from_millis(951_827_696_789);
        assert_eq!(resource_time(t), "2000-02-29T12:34:56Z");
        assert_eq!(event_time(t), "2000-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_798_761_599);
        assert_eq!(resource_time(t), "2026-12-31T23:59:59Z");
    }
}
