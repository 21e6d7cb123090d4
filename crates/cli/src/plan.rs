//! `crossdock plan` (issue #6).

use crate::exit::{fail, Code};

/// Flags of `crossdock plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Arguments, accepted for forward compatibility until the subcommand lands.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub async fn run(_args: Args) -> anyhow::Result<Code> {
    Err(fail(Code::NotImplemented, "`crossdock plan` is not built yet (issue #6); nothing was done"))
}
