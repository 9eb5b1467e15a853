//! A progress bar for the command line's long runs (`kiln check`, `kiln bench`): on stderr,
//! drawn only when stderr is a terminal and once the run has taken a second, so piped output,
//! logs and short runs stay exactly as they were. Rows still go to stdout, printed around the
//! bar without tearing it.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long a run goes before its bar appears.
pub const SHOW_AFTER: Duration = Duration::from_secs(1);

/// A count of steps (ops, or cases) with the current one's name.
pub struct Progress {
    bar: ProgressBar,
    start: Instant,
    terminal: bool,
    shown: bool,
}

impl Progress {
    /// A bar over `steps` steps, named `what` (`check`, `bench`), for stderr.
    pub fn new(steps: u64, what: &str) -> Progress {
        Progress::for_terminal(steps, what, std::io::stderr().is_terminal())
    }

    /// As [`Progress::new`], saying whether stderr is a terminal (tests).
    pub fn for_terminal(steps: u64, what: &str, terminal: bool) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}") {
            bar.set_style(style);
        }
        bar.set_prefix(what.to_string());
        Progress { bar, start: Instant::now(), terminal, shown: false }
    }

    /// Names the step now running.
    pub fn start_step(&mut self, name: &str) {
        self.bar.set_message(name.to_string());
        self.reveal();
    }

    /// Counts a step done.
    pub fn finish_step(&mut self) {
        self.bar.inc(1);
        self.reveal();
    }

    /// Prints `line` on stdout, the bar (if drawn) cleared and redrawn around it.
    pub fn println(&self, line: &str) {
        self.bar.suspend(|| println!("{line}"));
    }

    /// Whether the bar is drawn: a terminal, and the run older than [`SHOW_AFTER`].
    pub fn shown(&self) -> bool {
        self.shown
    }

    /// Steps counted done.
    pub fn done(&self) -> u64 {
        self.bar.position()
    }

    /// Clears the bar.
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }

    fn reveal(&mut self) {
        if !self.shown && self.terminal && self.start.elapsed() >= SHOW_AFTER {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            // Elapsed time keeps moving while one long step runs.
            self.bar.enable_steady_tick(Duration::from_millis(250));
            self.shown = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_stays_hidden_off_a_terminal_and_for_the_first_second() {
        let mut piped = Progress::for_terminal(3, "check", false);
        let mut tty = Progress::for_terminal(3, "check", true);
        tty.start_step("norm/layernorm");
        assert!(!tty.shown(), "drawn before a second passed");
        std::thread::sleep(SHOW_AFTER + Duration::from_millis(50));
        for p in [&mut piped, &mut tty] {
            p.start_step("norm/rmsnorm");
            p.finish_step();
        }
        assert!(!piped.shown(), "drawn off a terminal");
        assert!(tty.shown(), "a terminal's run past a second has its bar");
        assert_eq!((piped.done(), tty.done()), (1, 1));
        piped.finish();
        tty.finish();
    }
}
