//! Human-readable sizes and durations for the CLI's output.

use std::time::Duration;

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A unix time in local time: date and time, with `date_sep` between the
/// date's fields, `mid` between date and time, `time_sep` in the time.
fn local(unix: u64, date_sep: &str, mid: &str, time_sep: &str) -> String {
    let t = unix as libc::time_t;
    // SAFETY: tm is plain old data; zeroed is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is reentrant.
    unsafe { libc::localtime_r(&t, &mut tm) };
    format!(
        "{:04}{date_sep}{:02}{date_sep}{:02}{mid}{:02}{time_sep}{:02}{time_sep}{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// A unix time as local `YYYY-MM-DD HH:MM:SS`.
pub fn local_time(unix: u64) -> String {
    local(unix, "-", " ", ":")
}

/// A unix time as local `YYYYMMDD-HHMMSS`, for file names.
pub fn local_stamp(unix: u64) -> String {
    local(unix, "", "-", "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(millis(Duration::from_micros(1500)), "1.5 ms");
    }
}
