//! How busrig writes times and errors for a person to read.
//!
//! - Times: event times are kept as milliseconds since the Unix epoch (the
//!   JSON keeps them), and shown as a wall-clock time of day in UTC, the
//!   same clock as the tracing lines on stderr, with how long ago when the
//!   reader's "now" is known (docs/architecture.md "Output for people").
//! - Errors: a message and its causes, joined by `: `, each cause once.

use std::error::Error;
use std::fmt::Write as _;

/// `ms` (since the Unix epoch) as `HH:MM:SS.mmm`, UTC.
pub fn time_of_day(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}

/// `ms` (since the Unix epoch) as RFC 3339 in UTC with milliseconds,
/// `2026-12-02T16:43:04.120Z`, for JSON readers that want a date.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}T{}Z", time_of_day(ms))
}

/// Milliseconds since the Unix epoch, now (0 for a clock before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The inverse of [`rfc3339`]: milliseconds since the Unix epoch of a UTC
/// RFC 3339 time with optional fraction, `2026-12-02T16:43:04.120456Z`, as
/// the tracing lines of every busrig process begin (digits past the
/// millisecond are dropped).
pub fn parse_rfc3339(ts: &str) -> Option<u64> {
    let (date, time) = ts.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, dd) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, s) = (t.next()??, t.next()??, t.next()??);
    let frac_ms: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    let secs = days_from_civil(y, m, dd) * 86_400 + h * 3600 + mi * 60 + s;
    u64::try_from(secs * 1000 + frac_ms).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the "days from
/// civil" algorithm of the same source as [`civil_from_days`]).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (the
/// "days from civil" inverse in H. Hinnant's date algorithms, public
/// domain, written out here).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// How long before `now_ms` the time `ms` was: `just now`, `12 s ago`,
/// `4 min ago`, `3 h ago`, `2 d ago` (`in the future` for a clock that
/// disagrees).
pub fn ago(now_ms: u64, ms: u64) -> String {
    let Some(d) = now_ms.checked_sub(ms) else {
        return "in the future".into();
    };
    let s = d / 1000;
    match s {
        0 => "just now".into(),
        1..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        7200..=172_799 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// `HH:MM:SS.mmm (12 s ago)`, or only the time of day without a "now".
pub fn when(ms: u64, now_ms: Option<u64>) -> String {
    match now_ms {
        Some(now) => format!("{} ({})", time_of_day(ms), ago(now, ms)),
        None => time_of_day(ms),
    }
}

/// The error and its causes joined by `: `, as anyhow's `{:#}` does, but a
/// cause whose text the message before it already contains is left out,
/// so an error that writes its cause into its own message and also
/// returns it as `source()` still shows the cause once.
pub fn error_chain(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    // A message that embedded its cause contains the cause's own causes
    // too when that one embedded them, so comparing with the message just
    // before is enough.
    let mut prev = out.clone();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !text.is_empty() && !prev.contains(&text) {
            let _ = write!(out, ": {text}");
        }
        prev = text;
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse_back() {
        for ms in [0, 1_796_238_051_698, 951_782_400_123] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        }
        assert_eq!(
            parse_rfc3339("2026-11-22T00:54:08.866068Z"),
            Some(1_795_308_848_866)
        );
        assert_eq!(parse_rfc3339("2026-11-22 00:54:08Z"), None);
    }

    #[test]
    fn times_of_day_and_dates() {
        assert_eq!(time_of_day(0), "00:00:00.000");
        assert_eq!(time_of_day(86_400_000 + 3_723_004), "01:02:03.004");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        // 2026-12-02 16:43:04.120 UTC.
        assert_eq!(rfc3339(1_796_229_784_120), "2026-12-02T16:43:04.120Z");
        // A leap day.
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn relative_times() {
        let now = 1_796_229_784_120;
        assert_eq!(ago(now, now), "just now");
        assert_eq!(ago(now, now - 12_400), "12 s ago");
        assert_eq!(ago(now, now - 5 * 60_000), "5 min ago");
        assert_eq!(ago(now, now - 3 * 3_600_000), "3 h ago");
        assert_eq!(ago(now, now - 3 * 86_400_000), "3 d ago");
        assert_eq!(ago(now, now + 5000), "in the future");
        assert_eq!(when(now - 2000, Some(now)), "16:43:02.120 (2 s ago)");
        assert_eq!(when(now, None), "16:43:04.120");
    }

    /// An error that writes its cause into its message and returns it as
    /// its source too, as `thiserror`'s `"...: {source}"` does.
    #[derive(Debug)]
    struct Embeds(std::io::Error);
    impl std::fmt::Display for Embeds {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot read config busrig.toml: {}", self.0)
        }
    }
    impl Error for Embeds {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    /// A wrapper that only names the step and returns its cause.
    #[derive(Debug)]
    struct Step(&'static str, Box<dyn Error + 'static>);
    impl std::fmt::Display for Step {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for Step {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.1)
        }
    }

    fn enoent() -> std::io::Error {
        std::io::Error::from_raw_os_error(2)
    }

    #[test]
    fn each_cause_is_printed_once() {
        let e = Step("starting the bus", Box::new(Embeds(enoent())));
        let text = error_chain(&e);
        assert_eq!(
            text,
            format!(
                "starting the bus: cannot read config busrig.toml: {}",
                enoent()
            )
        );
        assert_eq!(text.matches("os error 2").count(), 1, "{text}");
        // A chain of wrappers that do not embed: every level shown.
        let e = Step("outer", Box::new(Step("middle", Box::new(enoent()))));
        assert_eq!(error_chain(&e), format!("outer: middle: {}", enoent()));
        // anyhow's own `{:#}` repeats the embedded cause; this one does not.
        let a = anyhow::Error::new(Embeds(enoent())).context("busrig target");
        assert_eq!(format!("{a:#}").matches("os error 2").count(), 2);
        let chained = error_chain(a.as_ref());
        assert_eq!(chained.matches("os error 2").count(), 1, "{chained}");
        assert!(chained.starts_with("busrig target: cannot read config"));
    }
}
