//! Every flag can be set by an environment variable, so a Job, a unit file or CI can
//! configure a command without building its command line.
//!
//! `--FLAG` of `crossdock CMD [SUB …]` reads `CROSSDOCK_CMD_[SUB_…]FLAG` (upper case,
//! dashes as underscores): `export --raise-to` reads `CROSSDOCK_EXPORT_RAISE_TO`,
//! `export capacity raise --run-id` reads `CROSSDOCK_EXPORT_CAPACITY_RAISE_RUN_ID`, the
//! global `--profile` reads `CROSSDOCK_PROFILE`. A flag declared with its own `env` keeps
//! it: names several commands share on purpose (`CROSSDOCK_NOTIFY_URL`,
//! `CROSSDOCK_LOG_FORMAT`, `CROSSDOCK_GCP_PROJECT`, …).
//!
//! The command is part of the name so that a variable meant for one command never
//! becomes a flag of another: a pod's settings for `export` (`--raise-to`) must not turn
//! into a conflicting flag of the shard step beside it, and the loose `CROSSDOCK_TABLE`
//! or `CROSSDOCK_BATCH` of a Job's settings or a test harness are no flag's variable.
//!
//! Precedence, as clap applies it and the commands fill from `--pipeline`: a flag on the
//! command line, then its variable, then the pipeline file, then the default.

use clap::Command;

/// The start of every variable crossdock reads for a flag.
pub const PREFIX: &str = "CROSSDOCK";

/// `cmd` with a variable on every flag of it and of its subcommands, at any depth.
pub fn with_variables(cmd: Command) -> Command {
    add(cmd, PREFIX)
}

fn add(cmd: Command, prefix: &str) -> Command {
    let cmd = cmd.mut_args(|arg| {
        let name = arg.get_long().filter(|_| arg.get_env().is_none()).map(|long| variable(prefix, long));
        match name {
            Some(name) => arg.env(name),
            None => arg,
        }
    });
    let subcommands: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
    subcommands.into_iter().fold(cmd, |cmd, name| {
        let prefix = variable(prefix, &name);
        cmd.mut_subcommand(name, |sub| add(sub, &prefix))
    })
}

/// `PREFIX_NAME` with `NAME` upper-cased and its dashes as underscores.
pub fn variable(prefix: &str, name: &str) -> String {
    format!("{prefix}_{}", name.to_uppercase().replace('-', "_"))
}

/// Every flag of `cmd` and of its subcommands, at any depth, as (command path, long
/// name, variable); the variable is `None` for a flag without one.
#[cfg(test)]
pub fn flags(cmd: &Command) -> Vec<(String, String, Option<String>)> {
    fn walk(cmd: &Command, path: &str, out: &mut Vec<(String, String, Option<String>)>) {
        for arg in cmd.get_arguments() {
            if matches!(arg.get_action(), clap::ArgAction::Help | clap::ArgAction::HelpLong | clap::ArgAction::HelpShort | clap::ArgAction::Version) {
                continue;
            }
            if let Some(long) = arg.get_long() {
                out.push((path.to_string(), long.to_string(), arg.get_env().map(|e| e.to_string_lossy().into_owned())));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }
    let mut out = Vec::new();
    walk(cmd, cmd.get_name(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn built() -> Command {
        let mut cmd = crate::command();
        cmd.build();
        cmd
    }

    #[test]
    fn every_flag_of_every_command_has_a_crossdock_variable() {
        let flags = flags(&built());
        assert!(flags.len() > 100, "the walk missed commands: {} flags", flags.len());
        let missing: Vec<String> = flags
            .iter()
            .filter(|(_, _, env)| !env.as_deref().is_some_and(|e| e.starts_with("CROSSDOCK_")))
            .map(|(cmd, long, _)| format!("{cmd} --{long}"))
            .collect();
        assert!(missing.is_empty(), "flags without a CROSSDOCK_ variable: {missing:?}");
        // Spot checks of the naming rule, nested subcommands and a global flag included.
        let var = |cmd: &str, long: &str| flags.iter().find(|(c, l, _)| c == cmd && l == long).and_then(|(_, _, e)| e.clone());
        assert_eq!(var("crossdock export", "raise-to").as_deref(), Some("CROSSDOCK_EXPORT_RAISE_TO"));
        assert_eq!(var("crossdock export capacity raise", "run-id").as_deref(), Some("CROSSDOCK_EXPORT_CAPACITY_RAISE_RUN_ID"));
        assert_eq!(var("crossdock relay", "queue").as_deref(), Some("CROSSDOCK_RELAY_QUEUE"));
        assert_eq!(var("crossdock", "profile").as_deref(), Some("CROSSDOCK_PROFILE"));
        assert_eq!(var("crossdock status", "profile").as_deref(), Some("CROSSDOCK_PROFILE"), "global flags keep their one variable");
    }

    #[test]
    fn no_two_flags_of_a_command_share_a_variable() {
        let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
        for (cmd, long, env) in flags(&built()) {
            let env = env.expect("checked above");
            if let Some(other) = seen.insert((cmd.clone(), env.clone()), long.clone()) {
                panic!("{cmd}: --{other} and --{long} both read {env}");
            }
        }
    }

    /// Variables set by the deployment files, scripts and tests for their own use (a Job's
    /// settings, the local stack's endpoints, a DAG's parameters) must not be read as a
    /// flag by a command that inherits them; those that are meant as a flag's are listed.
    #[test]
    fn variables_set_elsewhere_in_the_repository_are_flags_only_on_purpose() {
        // Set for the command and flag they name (the same value is also passed as the flag,
        // or the variable is the only way it is given).
        const MEANT: &[&str] = &[
            "CROSSDOCK_LOG",
            "CROSSDOCK_LOG_FORMAT",
            "CROSSDOCK_NOTIFY_URL",
            "CROSSDOCK_GCS_ENDPOINT",
            "CROSSDOCK_GCS_EVENTS_TOPIC",
            "CROSSDOCK_GCP_PROJECT",
            "CROSSDOCK_RELAY_QUEUE",
            "CROSSDOCK_RELAY_CONCURRENCY",
            "CROSSDOCK_EXPORT_BUCKET",
            // The DAG passes the same values as --sample and --max-rcu.
            "CROSSDOCK_AUDIT_SAMPLE",
            "CROSSDOCK_AUDIT_MAX_RCU",
            // The end-to-end tests of this rule (tests/tests/integration/cli.rs).
            "CROSSDOCK_EXPORT_TABLE",
            "CROSSDOCK_EXPORT_BATCH",
            "CROSSDOCK_EXPORT_DRY_RUN",
            "CROSSDOCK_EXPORT_SEGMENTS",
            "CROSSDOCK_EXPORT_PREFIX",
            "CROSSDOCK_EXPORT_RAISE_TO",
        ];
        let flag_vars: BTreeSet<String> = flags(&built()).into_iter().filter_map(|(_, _, e)| e).collect();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut found: BTreeMap<String, String> = BTreeMap::new();
        for dir in ["infra", "scripts", "tests", ".ci", "pipelines", "Dockerfile"] {
            collect(&root.join(dir), &mut found);
        }
        assert!(found.contains_key("CROSSDOCK_PG_URL"), "the scan read no file: {found:?}");
        let accidental: Vec<String> =
            found.iter().filter(|(v, _)| flag_vars.contains(*v) && !MEANT.contains(&v.as_str())).map(|(v, file)| format!("{v} (in {file})")).collect();
        assert!(accidental.is_empty(), "variables set for another purpose that a command would read as a flag: {accidental:?}");
    }

    /// Every `CROSSDOCK_…` name in the text files under `path`, with a file naming it.
    fn collect(path: &std::path::Path, found: &mut BTreeMap<String, String>) {
        if path.is_dir() {
            let Ok(entries) = std::fs::read_dir(path) else { return };
            for e in entries.flatten() {
                let p = e.path();
                let skip = p.file_name().is_some_and(|n| n == "target" || n == "__pycache__" || n.to_string_lossy().starts_with('.') && n != ".ci");
                if !skip {
                    collect(&p, found);
                }
            }
            return;
        }
        let Ok(text) = std::fs::read_to_string(path) else { return };
        let mut rest = text.as_str();
        while let Some(i) = rest.find("CROSSDOCK_") {
            let tail = &rest[i..];
            let end = tail.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
            found.entry(tail[..end].to_string()).or_insert_with(|| path.display().to_string());
            rest = &tail[end..];
        }
    }
}
