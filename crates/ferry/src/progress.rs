//! Progress of pulls and pushes, one row per blob, as docker shows it: on a terminal the rows
//! are redrawn in place (`sha256:0123456789ab: Downloading  12.3MB/41.9MB  8.1MB/s`, then
//! `Pull complete`); otherwise each change of state is one plain line; with `-q`, nothing.
//! Everything goes to stderr, so stdout keeps only the result.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_convert::ipfs::PullProgress;
use ferry_oci::{Descriptor, Digest};

use crate::output::human_size;

/// How often a terminal is redrawn for bytes alone (state changes redraw at once).
const REDRAW_EVERY: Duration = Duration::from_millis(100);

/// Where a blob is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Bytes are arriving.
    Downloading,
    /// Bytes are leaving.
    Pushing,
    /// Pulled and stored.
    PullComplete,
    /// The store had it: nothing was pulled.
    AlreadyExists,
    /// In the registry (or IPFS) now.
    Pushed,
    /// The registry had it: nothing was sent.
    LayerAlreadyExists,
    /// The registry took it from another of its repositories: nothing was sent.
    Mounted,
}

impl State {
    fn text(self) -> &'static str {
        match self {
            State::Downloading => "Downloading",
            State::Pushing => "Pushing",
            State::PullComplete => "Pull complete",
            State::AlreadyExists => "Already exists",
            State::Pushed => "Pushed",
            State::LayerAlreadyExists => "Layer already exists",
            State::Mounted => "Mounted from another repository",
        }
    }

    fn moving(self) -> bool {
        matches!(self, State::Downloading | State::Pushing)
    }
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Nothing (`-q`).
    Quiet,
    /// One line per change of state.
    Lines,
    /// Rows redrawn in place with ANSI cursor moves.
    Terminal,
}

impl Mode {
    /// Quiet with `-q`, else rows on a terminal (stderr), else lines.
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Terminal
        } else {
            Mode::Lines
        }
    }
}

struct Row {
    id: String,
    digest: Digest,
    state: State,
    total: u64,
    current: u64,
    started: Instant,
}

impl Row {
    fn line(&self) -> String {
        if !self.state.moving() {
            return format!("{}: {}", self.id, self.state.text());
        }
        let seconds = self.started.elapsed().as_secs_f64();
        let rate = match seconds > 0.05 {
            true => format!("{}/s", human_size((self.current as f64 / seconds) as u64)),
            false => String::new(),
        };
        format!(
            "{}: {:<12} {}/{}  {rate}",
            self.id,
            self.state.text(),
            human_size(self.current),
            human_size(self.total)
        )
        .trim_end()
        .to_string()
    }
}

#[derive(Default)]
struct Screen {
    rows: Vec<Row>,
    /// Rows drawn on the terminal so far (the cursor is below them).
    drawn: usize,
    last_draw: Option<Instant>,
    /// The blob IPFS bytes belong to (an IPFS pull fetches one blob at a time).
    current: Option<Digest>,
}

/// One pull's or push's progress display.
pub struct Progress {
    mode: Mode,
    screen: Mutex<Screen>,
}

/// The id a row is shown under: `sha256:` and 12 hex digits.
pub fn row_id(digest: &Digest) -> String {
    format!("sha256:{}", digest.short())
}

impl Progress {
    /// A display in `mode`.
    pub fn new(mode: Mode) -> Progress {
        Progress {
            mode,
            screen: Mutex::new(Screen::default()),
        }
    }

    /// A line that is not a blob's (`REF: resolved DIGEST`); printed above the rows.
    pub fn note(&self, line: &str) {
        if self.mode == Mode::Quiet {
            return;
        }
        let mut screen = self.lock();
        if self.mode == Mode::Terminal {
            // Printed once, above rows drawn later; rows already drawn stay under it.
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "{}", up(screen.drawn));
            let _ = writeln!(err, "\r\x1b[2K{line}");
            screen.drawn = 0;
            self.draw(&mut screen, true);
        } else {
            eprintln!("{line}");
        }
    }

    /// A blob of `size` bytes starts moving (or is found where it was going: a final `state`).
    pub fn state(&self, digest: &Digest, size: u64, state: State) {
        if self.mode == Mode::Quiet {
            return;
        }
        let mut screen = self.lock();
        let index = match screen.rows.iter().position(|r| r.digest == *digest) {
            Some(i) if screen.rows[i].state == state => return,
            Some(i) => i,
            None => {
                screen.rows.push(Row {
                    id: row_id(digest),
                    digest: digest.clone(),
                    state,
                    total: size,
                    current: 0,
                    started: Instant::now(),
                });
                screen.rows.len() - 1
            }
        };
        let row = &mut screen.rows[index];
        row.state = state;
        if !state.moving() {
            row.current = row.total;
        } else if row.current == 0 {
            row.started = Instant::now();
        }
        if state.moving() {
            screen.current = Some(digest.clone());
        }
        match self.mode {
            Mode::Terminal => self.draw(&mut screen, true),
            _ => {
                let row = &screen.rows[index];
                match state.moving() {
                    true => eprintln!("{}: {} {}", row.id, state.text(), human_size(row.total)),
                    false => eprintln!("{}: {}", row.id, state.text()),
                }
            }
        }
    }

    /// `current` bytes of a blob have moved so far.
    pub fn bytes(&self, digest: &Digest, current: u64) {
        if self.mode != Mode::Terminal {
            return;
        }
        let mut screen = self.lock();
        if let Some(row) = screen.rows.iter_mut().find(|r| r.digest == *digest) {
            row.current = current.min(row.total);
        }
        self.draw(&mut screen, false);
    }

    /// `n` more bytes of the blob moving now (for sources that do not say which blob).
    pub fn more_bytes(&self, n: u64) {
        if self.mode != Mode::Terminal {
            return;
        }
        let mut screen = self.lock();
        let Some(digest) = screen.current.clone() else {
            return;
        };
        if let Some(row) = screen.rows.iter_mut().find(|r| r.digest == digest) {
            row.current = (row.current + n).min(row.total);
        }
        self.draw(&mut screen, false);
    }

    /// Draws the rows a last time (a terminal shows their final states).
    pub fn finish(&self) {
        if self.mode == Mode::Terminal {
            let mut screen = self.lock();
            self.draw(&mut screen, true);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Screen> {
        self.screen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Redraws every row in place: up to the first row, then each row on a cleared line.
    fn draw(&self, screen: &mut Screen, force: bool) {
        let now = Instant::now();
        if !force && screen.last_draw.is_some_and(|t| now - t < REDRAW_EVERY) {
            return;
        }
        screen.last_draw = Some(now);
        let mut text = up(screen.drawn);
        for row in &screen.rows {
            text.push_str("\r\x1b[2K");
            text.push_str(&row.line());
            text.push('\n');
        }
        screen.drawn = screen.rows.len();
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes());
        let _ = err.flush();
    }
}

/// The ANSI sequence that moves the cursor up `n` lines (nothing for 0).
fn up(n: usize) -> String {
    match n {
        0 => String::new(),
        n => format!("\x1b[{n}A"),
    }
}

impl PullProgress for Progress {
    fn blob_started(&self, desc: &Descriptor) {
        self.state(&desc.digest, desc.size, State::Downloading);
    }

    fn bytes(&self, n: u64) {
        self.more_bytes(n);
    }

    fn blob_done(&self, desc: &Descriptor) {
        self.state(&desc.digest, desc.size, State::PullComplete);
    }

    fn blob_cached(&self, desc: &Descriptor) {
        self.state(&desc.digest, desc.size, State::AlreadyExists);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_like_docker() {
        let digest = Digest::of(b"layer");
        let mut row = Row {
            id: row_id(&digest),
            digest: digest.clone(),
            state: State::Downloading,
            total: 41_900_000,
            current: 12_300_000,
            started: Instant::now() - Duration::from_secs(2),
        };
        let line = row.line();
        let prefix = format!("sha256:{}: Downloading  12.3MB/41.9MB  6.", digest.short());
        assert!(line.starts_with(&prefix), "{line}");
        assert!(line.ends_with("MB/s"), "{line}");
        row.state = State::PullComplete;
        assert_eq!(
            row.line(),
            format!("sha256:{}: Pull complete", digest.short())
        );
        assert_eq!(up(3), "\x1b[3A");
    }
}
