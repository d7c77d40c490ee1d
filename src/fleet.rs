//! Run one step on many hosts: a concurrency bound, a progress line per host (plain log lines
//! when stderr is not a terminal), and every host's outcome kept — one failure never hides the
//! others.

use crate::diag::{escape_terminal, escape_terminal_line};
use crate::ssh::{Destination, Options, Session, SshError};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, Semaphore};
use tokio::task::JoinSet;

/// Default number of hosts worked on at once.
pub const DEFAULT_CONCURRENCY: u16 = 64;

/// Progress display for a fleet step.
#[derive(Clone)]
pub struct Progress {
    multi: MultiProgress,
    plain: bool,
    quiet: bool,
}

impl Progress {
    /// Bars on a terminal, plain lines otherwise (indicatif drops output when hidden).
    pub fn stderr() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let plain = multi.is_hidden() || std::env::var("TERM").is_ok_and(|t| t == "dumb");
        Self {
            multi,
            plain,
            quiet: false,
        }
    }

    /// No output at all (library use, tests).
    pub fn quiet() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
            plain: true,
            quiet: true,
        }
    }

    /// A line for one host.
    pub fn host(&self, step: &str, host: &str) -> HostProgress {
        let bar = if self.plain {
            None
        } else {
            let b = self.multi.add(ProgressBar::new_spinner());
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner:.cyan} {prefix:<24} {wide_msg} {elapsed:>4}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            // Host names and step texts may carry what a node printed: escaped, one line.
            b.set_prefix(escape_terminal_line(host).into_owned());
            b.set_message(escape_terminal_line(step).into_owned());
            b.enable_steady_tick(Duration::from_millis(120));
            Some(b)
        };
        HostProgress {
            bar,
            host: escape_terminal_line(host).into_owned(),
            quiet: self.quiet,
            start: Instant::now(),
        }
    }

    /// Print a line without tearing the bars.
    pub fn println(&self, line: &str) {
        if self.quiet {
            return;
        }
        let line = escape_terminal(line);
        if self.plain {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }
}

/// One host's progress line.
pub struct HostProgress {
    bar: Option<ProgressBar>,
    host: String,
    quiet: bool,
    start: Instant,
}

impl HostProgress {
    /// Show what the host is doing now.
    pub fn set(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(escape_terminal_line(msg).into_owned());
        }
    }

    /// Mark the host done (a tick or a cross) with a final message.
    pub fn finish(&self, ok: bool, msg: &str) {
        let secs = self.start.elapsed().as_secs_f64();
        let mark = if ok { "ok" } else { "FAILED" };
        // Final messages quote errors and node output (kernel release, stderr).
        let msg = escape_terminal(msg);
        match &self.bar {
            Some(b) => {
                b.set_style(
                    ProgressStyle::with_template("  {prefix:<24} {wide_msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                b.finish_with_message(format!("{mark} {msg} ({secs:.2} s)"));
            }
            None if !self.quiet => eprintln!("{}: {mark} {msg} ({secs:.2} s)", self.host),
            None => {}
        }
    }
}

/// One host's result in a fleet step.
#[derive(Debug)]
pub struct HostOutcome<T, E> {
    /// Inventory name.
    pub host: String,
    /// What happened.
    pub result: Result<T, E>,
    /// Wall time for this host.
    pub duration: Duration,
}

/// Run `work` for every `(host, input)` with at most `concurrency` at once; results come back in
/// input order. `describe_ok` turns a success into the host's final progress text.
pub async fn run<I, T, E, F, Fut>(
    step: &str,
    inputs: Vec<(String, I)>,
    concurrency: usize,
    progress: &Progress,
    describe_ok: fn(&T) -> String,
    work: F,
) -> Vec<HostOutcome<T, E>>
where
    I: Send + 'static,
    T: Send + 'static,
    E: Display + Send + 'static + From<TaskFailed>,
    F: Fn(I, Arc<HostProgress>) -> Fut,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
{
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    let n = inputs.len();
    let mut names = Vec::with_capacity(n);
    for (idx, (host, input)) in inputs.into_iter().enumerate() {
        names.push(host.clone());
        let hp = Arc::new(progress.host(step, &host));
        let sem = sem.clone();
        let fut = work(input, hp.clone());
        set.spawn(async move {
            // The semaphore is never closed, so acquire cannot fail.
            let _permit = sem.acquire_owned().await.ok();
            let start = Instant::now();
            let result = fut.await;
            match &result {
                Ok(v) => hp.finish(true, &describe_ok(v)),
                Err(e) => hp.finish(false, &first_line(&e.to_string())),
            }
            (idx, result, start.elapsed())
        });
    }
    let mut slots: Vec<Option<(Result<T, E>, Duration)>> = (0..n).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((idx, result, d)) = joined
            && let Some(slot) = slots.get_mut(idx)
        {
            *slot = Some((result, d));
        }
    }
    names
        .into_iter()
        .zip(slots)
        .map(|(host, slot)| {
            let (result, duration) =
                slot.unwrap_or_else(|| (Err(E::from(TaskFailed)), Duration::ZERO));
            HostOutcome {
                host,
                result,
                duration,
            }
        })
        .collect()
}

/// A host's task panicked or was cancelled (a bug: reported, never hidden).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("internal error: the task for this host stopped unexpectedly")]
pub struct TaskFailed;

impl From<TaskFailed> for SshError {
    fn from(_: TaskFailed) -> Self {
        SshError::Russh(russh::Error::Inconsistent)
    }
}

fn first_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or_default();
    if l.chars().count() > 160 {
        let mut t: String = l.chars().take(160).collect();
        t.push('…');
        t
    } else {
        l.to_string()
    }
}

/// Opens sessions for a run: one per host, all through one shared jump-host connection.
pub struct Connector {
    opts: Arc<Options>,
    bastion: Option<Destination>,
    jump: OnceCell<Result<Arc<Session>, String>>,
}

impl Connector {
    /// With an optional jump host.
    pub fn new(opts: Arc<Options>, bastion: Option<Destination>) -> Arc<Self> {
        Arc::new(Self {
            opts,
            bastion,
            jump: OnceCell::new(),
        })
    }

    /// The shared options.
    pub fn options(&self) -> &Arc<Options> {
        &self.opts
    }

    /// Connect to `dest` (through the jump host when there is one).
    pub async fn connect(&self, dest: Destination) -> Result<Arc<Session>, SshError> {
        let via = match &self.bastion {
            None => None,
            Some(b) => {
                let jump = self
                    .jump
                    .get_or_init(|| async {
                        Session::connect(b.clone(), None, self.opts.clone())
                            .await
                            .map_err(|e| e.to_string())
                    })
                    .await;
                match jump {
                    Ok(s) => Some(s.clone()),
                    Err(e) => {
                        return Err(SshError::Tunnel {
                            host: dest.name.clone(),
                            bastion: b.name.clone(),
                            addr: format!("{}:{}", dest.address, dest.port),
                            reason: format!("jump host unavailable: {e}"),
                        });
                    }
                }
            }
        };
        Session::connect(dest, via, self.opts.clone()).await
    }
}
