//! Progress for downloads and build steps: indicatif bars and spinners on a terminal, plain
//! lines otherwise (indicatif hides bars when stderr is not a terminal), nothing when quiet.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::{Duration, Instant};

/// Where image progress goes.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bars,
    Plain,
    Quiet,
}

impl Progress {
    /// Bars on a terminal stderr, plain lines otherwise.
    pub fn stderr() -> Self {
        let hidden = ProgressDrawTarget::stderr().is_hidden()
            || std::env::var("TERM").is_ok_and(|t| t == "dumb");
        Progress {
            mode: if hidden { Mode::Plain } else { Mode::Bars },
        }
    }

    /// No output (library use, tests).
    pub fn quiet() -> Self {
        Progress { mode: Mode::Quiet }
    }

    /// Print one line.
    pub fn line(&self, text: &str) {
        if self.mode != Mode::Quiet {
            eprintln!("{text}");
        }
    }

    /// A download of `total` bytes (when known).
    pub fn download(&self, url: &str, total: Option<u64>) -> Transfer {
        let bar = (self.mode == Mode::Bars).then(|| {
            let b = match total {
                Some(t) => ProgressBar::new(t),
                None => ProgressBar::new_spinner(),
            };
            b.set_style(
                ProgressStyle::with_template(
                    "{msg} {wide_bar:.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_message(short_url(url));
            b
        });
        if self.mode == Mode::Plain {
            match total {
                Some(t) => eprintln!("downloading {url} ({})", mib(t)),
                None => eprintln!("downloading {url}"),
            }
        }
        Transfer {
            bar,
            plain: self.mode == Mode::Plain,
            total,
            done: 0,
            next_report: 1,
            start: Instant::now(),
        }
    }

    /// A long step (spinner with elapsed time on a terminal; start and end lines otherwise).
    pub fn step(&self, what: &str) -> Step {
        let bar = (self.mode == Mode::Bars).then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner:.cyan} {wide_msg} {elapsed:>4}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.set_message(what.to_owned());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        if self.mode == Mode::Plain {
            eprintln!("{what} …");
        }
        Step {
            bar,
            mode: self.mode,
            what: what.to_owned(),
            start: Instant::now(),
        }
    }
}

/// One download's progress.
pub struct Transfer {
    bar: Option<ProgressBar>,
    plain: bool,
    total: Option<u64>,
    done: u64,
    next_report: u64,
    start: Instant,
}

impl Transfer {
    /// `n` more bytes arrived.
    pub fn advance(&mut self, n: u64) {
        self.done += n;
        if let Some(b) = &self.bar {
            b.set_position(self.done);
        } else if self.plain
            && let Some(t) = self.total.filter(|t| *t > 0)
        {
            // A line at each quarter.
            let quarter = self.done.saturating_mul(4) / t;
            if quarter >= self.next_report && quarter < 4 {
                eprintln!("  {}% ({} of {})", quarter * 25, mib(self.done), mib(t));
                self.next_report = quarter + 1;
            }
        }
    }

    /// The download ended (either way).
    pub fn finish(self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if self.plain {
            eprintln!(
                "  received {} in {:.1} s",
                mib(self.done),
                self.start.elapsed().as_secs_f64()
            );
        }
    }
}

/// One long step's progress.
pub struct Step {
    bar: Option<ProgressBar>,
    mode: Mode,
    what: String,
    start: Instant,
}

impl Step {
    /// The step succeeded.
    pub fn done(self) {
        let secs = self.start.elapsed().as_secs_f64();
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if self.mode != Mode::Quiet {
            eprintln!("{}: done in {secs:.1} s", self.what);
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Bytes as MiB text.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn short_url(url: &str) -> String {
    url.rsplit('/').next().unwrap_or(url).to_owned()
}
