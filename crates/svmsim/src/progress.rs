//! A progress bar for runs longer than about a second: it appears after a
//! second, only when stderr is a terminal and `--quiet` is not given, and
//! clears itself at the end.

use std::io::IsTerminal as _;
use std::sync::mpsc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `total` runs (or a spinner for one).
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    stop: Option<mpsc::Sender<()>>,
}

impl Progress {
    /// Starts counting; shows after one second if it should show at all.
    pub fn new(total: u64, what: &str, quiet: bool) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        let template = if total > 1 {
            "{spinner} {msg} [{bar:30}] {pos}/{len} runs, {elapsed}"
        } else {
            "{spinner} {msg}, {elapsed}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_owned());
        let show = !quiet && std::io::stderr().is_terminal();
        let (tx, rx) = mpsc::channel::<()>();
        if show {
            let b = bar.clone();
            std::thread::spawn(move || {
                if rx.recv_timeout(Duration::from_secs(1)) == Err(mpsc::RecvTimeoutError::Timeout) {
                    b.set_draw_target(ProgressDrawTarget::stderr());
                    b.enable_steady_tick(Duration::from_millis(120));
                }
            });
        }
        Self {
            bar,
            stop: Some(tx),
        }
    }

    /// Shows the simulated clock of the one run it follows in its message,
    /// read from `clock` (what `exec::run_watched` publishes) while it is
    /// shown.
    pub fn watch_clock(&self, what: &str, clock: std::sync::Arc<std::sync::atomic::AtomicU64>) {
        if self.stop.is_none() {
            return;
        }
        let (b, what) = (self.bar.clone(), what.to_owned());
        std::thread::spawn(move || {
            while !b.is_finished() {
                let ns = clock.load(std::sync::atomic::Ordering::Relaxed);
                b.set_message(format!("{what}: {} simulated", crate::runs::time(ns)));
                std::thread::sleep(Duration::from_millis(200));
            }
        });
    }

    /// One more run done.
    pub fn inc(&self) {
        self.bar.inc(1);
    }

    /// Clears the bar.
    pub fn finish(mut self) {
        drop(self.stop.take());
        self.bar.finish_and_clear();
    }
}
