//! `crossdock relay` (issue #4).

use crate::exit::{fail, Code};

/// Flags of `crossdock relay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Arguments, accepted for forward compatibility until the subcommand lands.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub async fn run(_args: Args) -> anyhow::Result<Code> {
    Err(fail(Code::NotImplemented, "`crossdock relay` is not built yet (issue #4); nothing was done"))
}
