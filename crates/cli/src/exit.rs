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

/// What each command exits with, and why: the one table behind each command's
/// `--help` and the one in docs/operations.md (a test compares them). Every command
/// also exits 2 when clap rejects its flags.
pub const BY_COMMAND: &[(&str, &[(Code, &str)])] = &[
    (
        "export",
        &[
            (Code::Ok, "exported (or restored, raised)"),
            (Code::Failure, "failed, e.g. table not ACTIVE, no capacity decrease left"),
            (Code::Usage, "bad flags, or another live export holds the table's capacity lease"),
            (Code::NotFound, "table or bucket not found"),
            (Code::CapacityNotRestored, "capacity NOT restored: run `crossdock export restore`"),
            (Code::Partial, "interrupted, or S3/DynamoDB failing beyond the retries: rerun with --resume"),
        ],
    ),
    (
        "relay",
        &[
            (Code::Ok, "drained (signal, spot notice) or idle for --until-idle"),
            (Code::Failure, "failed, e.g. SQS unreachable"),
            (Code::Usage, "bad flags or pipeline"),
            (Code::NotFound, "queue not found"),
        ],
    ),
    (
        "load",
        &[
            (Code::Ok, "loaded, already loaded, or this shard's files done"),
            (Code::Failure, "failed"),
            (Code::Usage, "bad flags, pipeline or routing; a schema the target table cannot take"),
            (Code::NotFound, "marker or data file not found"),
            (Code::Partial, "interrupted: rerun to continue"),
            (Code::Mismatch, "the target's row count differs from the marker's"),
        ],
    ),
    (
        "verify",
        &[
            (Code::Ok, "the target equals the export"),
            (Code::Failure, "failed"),
            (Code::Usage, "bad flags or pipeline; the export is not loaded"),
            (Code::NotFound, "marker not found"),
            (Code::Mismatch, "a difference was found"),
        ],
    ),
    (
        "sync",
        &[
            (Code::Ok, "caught up (--until-lag) or stopped by a signal"),
            (Code::Failure, "failed, e.g. a checkpoint beyond the stream's retention: re-export"),
            (Code::Usage, "bad flags, no usable stream, or the export is not loaded"),
            (Code::NotFound, "marker not found"),
            (Code::Partial, "interrupted before --until-lag was reached: rerun to continue"),
        ],
    ),
    (
        "audit",
        &[
            (Code::Ok, "the target equals the live table"),
            (Code::Failure, "failed"),
            (Code::Usage, "bad flags or pipeline; an on-demand table without --max-rcu"),
            (Code::NotFound, "table or marker not found"),
            (Code::Partial, "interrupted (nothing was written): rerun"),
            (Code::Mismatch, "a difference was found"),
        ],
    ),
    (
        "status",
        &[
            (Code::Ok, "listed (or --watch stopped by a signal)"),
            (Code::Failure, "failed, e.g. a bucket unreachable"),
            (Code::Usage, "bad flags or pipeline; nothing matches --batch/--table"),
        ],
    ),
    ("plan", &[(Code::Ok, "planned"), (Code::Failure, "failed"), (Code::Usage, "bad flags or pipeline"), (Code::NotFound, "a table not found")]),
    (
        "pipeline",
        &[
            (Code::Ok, "valid"),
            (Code::Failure, "failed, e.g. the file cannot be read"),
            (Code::Usage, "invalid file"),
            (Code::NotFound, "--online: an endpoint not reachable"),
        ],
    ),
];

/// The "Exit codes" paragraph of `command`'s `--help`.
pub fn help(command: &str) -> Option<String> {
    let (_, codes) = BY_COMMAND.iter().find(|(c, _)| *c == command)?;
    let lines: Vec<String> = codes.iter().map(|(code, why)| format!("  {}  {why}", *code as u8)).collect();
    Some(format!("Exit codes:\n{}", lines.join("\n")))
}

/// `cmd` with each command's exit codes at the end of its `--help`.
pub fn with_codes(mut cmd: clap::Command) -> clap::Command {
    for (name, _) in BY_COMMAND {
        cmd = cmd.mut_subcommand(*name, |sub| {
            let codes = help(name).unwrap_or_default();
            let text = match sub.get_after_long_help() {
                Some(before) => format!("{before}\n\n{codes}"),
                None => codes,
            };
            sub.after_long_help(text)
        });
    }
    cmd
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
    /// The library error this one reports, kept so that its own causes are printed.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// An error with an explicit exit code.
pub fn fail(code: Code, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Coded { code, message: message.into(), source: None })
}

/// A library error with an explicit exit code, its causes kept for the printed chain.
pub fn coded(code: Code, e: impl std::error::Error + Send + Sync + 'static) -> anyhow::Error {
    anyhow::Error::new(Coded { code, message: e.to_string(), source: Some(Box::new(e)) })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/operations.md has one row per command and code of [`BY_COMMAND`], and no other.
    #[test]
    fn the_documented_exit_codes_are_the_table() {
        let docs = include_str!("../../../docs/operations.md");
        let section = docs.split("### Exit codes by command").nth(1).expect("docs/operations.md has the exit code section");
        let section = section.split("\n#").next().unwrap_or(section);
        let mut documented: Vec<(String, u8)> = Vec::new();
        for line in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let command = cells[1].trim_matches('`').trim_start_matches("crossdock ").to_string();
            let code: u8 = cells[2].parse().unwrap_or_else(|_| panic!("code cell of {line:?}"));
            documented.push((command, code));
        }
        let table: Vec<(String, u8)> = BY_COMMAND.iter().flat_map(|(c, codes)| codes.iter().map(move |(code, _)| (c.to_string(), *code as u8))).collect();
        assert_eq!(documented, table, "docs/operations.md, Exit codes by command, differs from exit::BY_COMMAND");
    }

    #[test]
    fn a_library_error_keeps_its_causes_in_the_printed_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("scan failed")]
        struct Scan;
        #[derive(Debug, thiserror::Error)]
        #[error("capacity NOT restored")]
        struct Restore(#[source] Scan);
        let e = coded(Code::CapacityNotRestored, Restore(Scan));
        assert_eq!(code_of(&e), Code::CapacityNotRestored);
        assert_eq!(message(&e), "capacity NOT restored: scan failed");
    }
}
