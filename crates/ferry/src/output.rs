//! What the user reads: progress lines (stderr) and result formatting.

use std::sync::atomic::{AtomicU64, Ordering};

use ferry_convert::ipfs::PullProgress;
use ferry_oci::Descriptor;

use crate::progress::row_id;

/// Pull progress as plain lines handed to a sink (the control socket, for the daemon's pulls):
/// one line when a blob starts, one when it is stored, as [`crate::progress`] writes them.
pub struct ProgressLines<F: Fn(String) + Send + Sync> {
    sink: F,
    bytes: AtomicU64,
}

impl<F: Fn(String) + Send + Sync> ProgressLines<F> {
    pub fn new(sink: F) -> Self {
        ProgressLines {
            sink,
            bytes: AtomicU64::new(0),
        }
    }
}

impl<F: Fn(String) + Send + Sync> PullProgress for ProgressLines<F> {
    fn blob_started(&self, desc: &Descriptor) {
        (self.sink)(format!(
            "{}: Downloading {}",
            row_id(&desc.digest),
            human_size(desc.size)
        ));
    }

    fn bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    fn blob_done(&self, desc: &Descriptor) {
        (self.sink)(format!("{}: Pull complete", row_id(&desc.digest)));
    }

    fn blob_cached(&self, desc: &Descriptor) {
        (self.sink)(format!("{}: Already exists", row_id(&desc.digest)));
    }
}

/// Writes one line of results to stdout; a reader that went away (a closed pipe) ends the
/// process with status 0, as `head` expects of the commands it reads.
pub fn write_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|_| out.write_all(b"\n"));
    if written.is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) {
        std::process::exit(0);
    }
}

/// Sizes as docker prints them (decimal units).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + UNITS[unit]
    }
}

/// "3 days ago", as docker prints creation times.
pub fn ago(seconds: i64) -> String {
    let s = seconds.max(0);
    let (n, unit) = match s {
        0..=59 => return "Less than a minute ago".to_string(),
        60..=3599 => (s / 60, "minute"),
        3600..=86399 => (s / 3600, "hour"),
        86400..=2_591_999 => (s / 86400, "day"),
        2_592_000..=31_535_999 => (s / 2_592_000, "month"),
        _ => (s / 31_536_000, "year"),
    };
    if n == 1 {
        format!("{} {unit} ago", if unit == "hour" { "An" } else { "1" })
    } else {
        format!("{n} {unit}s ago")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_and_ages_read_like_docker() {
        assert_eq!(super::human_size(999), "999B");
        assert_eq!(super::human_size(41_900_000), "41.9MB");
        assert_eq!(super::human_size(1_000_000), "1MB");
        assert_eq!(super::ago(30), "Less than a minute ago");
        assert_eq!(super::ago(7200), "2 hours ago");
        assert_eq!(super::ago(3 * 31_536_000), "3 years ago");
    }
}
