//! `crossdock load` (issue #5).

use crate::exit::{fail, Code};

/// Flags of `crossdock load`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Arguments, accepted for forward compatibility until the subcommand lands.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub async fn run(_args: Args) -> anyhow::Result<Code> {
    Err(fail(Code::NotImplemented, "`crossdock load` is not built yet (issue #5); nothing was done"))
}
