//! `crossdock export` (issue #3).

use crate::exit::{fail, Code};

/// Flags of `crossdock export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Arguments, accepted for forward compatibility until the subcommand lands.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub async fn run(_args: Args) -> anyhow::Result<Code> {
    Err(fail(Code::NotImplemented, "`crossdock export` is not built yet (issue #3); nothing was done"))
}
