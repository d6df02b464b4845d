//! Progress of long-running commands: a bar on a terminal, a plain line every
//! few seconds otherwise (CI logs, pipes).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Progress of one phase with a known total.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: &'static str,
    unit: &'static str,
    total: u64,
    started: Instant,
    last_line: Instant,
}

/// How often a plain progress line is printed.
const LINE_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    /// Starts a phase of `total` `unit`s.
    pub fn new(label: &'static str, unit: &'static str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12} [{bar:30}] {human_pos}/{human_len} {msg} ({per_sec}, eta {eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(label);
            bar.set_message(unit);
            bar
        });
        let now = Instant::now();
        Self {
            bar,
            label,
            unit,
            total,
            started: now,
            last_line: now,
        }
    }

    /// Sets the position.
    pub fn set(&mut self, position: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(position),
            None => {
                if self.last_line.elapsed() >= LINE_EVERY {
                    self.last_line = Instant::now();
                    let secs = self.started.elapsed().as_secs_f64().max(1e-9);
                    eprintln!(
                        "{}: {position}/{} {} ({:.0}/s)",
                        self.label,
                        self.total,
                        self.unit,
                        position as f64 / secs
                    );
                }
            }
        }
    }

    /// Ends the phase with a summary line.
    pub fn finish(self, summary: &str) {
        match self.bar {
            Some(bar) => bar.finish_with_message(summary.to_owned()),
            None => eprintln!("{}: {summary}", self.label),
        }
    }
}
