//! Exit codes, documented in the README; scripts and orchestrators branch on them.

use std::process::ExitCode;

/// crossdock's exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Everything done.
    Ok = 0,
    /// An error not covered below.
    Failure = 1,
    /// Bad flags or configuration (clap also exits 2).
    Usage = 2,
    /// The table, bucket, queue or marker does not exist.
    NotFound = 3,
    /// The export ended but the table's capacity could not be restored: run
    /// `crossdock export restore --table T`.
    CapacityNotRestored = 4,
    /// Some of the work was done; rerun with `--resume` to finish it.
    Partial = 5,
    /// A verification found a difference.
    Mismatch = 7,
}

impl From<Code> for ExitCode {
    fn from(c: Code) -> ExitCode {
        ExitCode::from(c as u8)
    }
}

/// An error carrying its exit code; attach with `anyhow::Error::new(Coded(..))` or
/// [`fail`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Coded {
    pub code: Code,
    pub message: String,
}

/// An error with an explicit exit code.
pub fn fail(code: Code, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Coded { code, message: message.into() })
}

/// The error and its causes on one line, each said once: library errors often repeat
/// their source's message in their own (so `to_string` alone is complete), and
/// printing the chain as well would say it twice.
pub fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// The exit code for an error: the first [`Coded`] in its chain, else `Failure`.
pub fn code_of(e: &anyhow::Error) -> Code {
    e.chain().find_map(|c| c.downcast_ref::<Coded>()).map_or(Code::Failure, |c| c.code)
}
