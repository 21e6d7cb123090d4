//! Progress bars on a terminal, through indicatif: one `MultiProgress` per process, and a
//! log writer that suspends it while a line is written, so log lines appear above the
//! bars instead of through them. Bars are drawn only on a terminal, never with
//! `--output json` or `--no-progress`; elsewhere every function here is a no-op.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal as _;
use std::sync::OnceLock;
use std::time::Duration;

fn multi() -> &'static MultiProgress {
    static MULTI: OnceLock<MultiProgress> = OnceLock::new();
    MULTI.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4)))
}

/// Whether bars are drawn: stderr is a terminal and neither flag turns them off.
pub fn enabled(no_progress: bool, json: bool) -> bool {
    !no_progress && !json && std::io::stderr().is_terminal()
}

/// A bar of `len` units (`None`: a spinner with counts), `what` naming the units in
/// `{msg}` position (e.g. "items"); hidden unless `on`.
pub fn bar(on: bool, len: Option<u64>, template: &str) -> ProgressBar {
    if !on {
        return ProgressBar::hidden();
    }
    let pb = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    let style = ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ");
    pb.set_style(style);
    pb.enable_steady_tick(Duration::from_millis(250));
    multi().add(pb)
}

/// Draws the bar's final state and leaves it on its own line: what the command prints
/// next starts below it.
pub fn finish(bar: &ProgressBar) {
    if bar.is_hidden() {
        return;
    }
    bar.finish();
    multi().remove(bar);
    eprintln!();
}

/// The template of a bar with a length: `[elapsed] [bar] pos/len unit (rate, ETA) msg`.
pub fn counted(unit: &str) -> String {
    format!("{{spinner}} [{{elapsed_precise}}] [{{wide_bar}}] {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, ETA {{eta}}) {{msg}}")
}

/// The stderr writer of the log: lines go above the bars.
#[derive(Clone, Copy)]
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        multi().suspend(|| std::io::stderr().lock().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        *self
    }
}
