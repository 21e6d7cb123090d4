//! crossdock's one integration-test binary. Needs the local stack
//! (`scripts/local-stack up && eval "$(scripts/local-stack env)"`); `scripts/test` does both.

mod audit;
mod cli;
mod exit_codes;
mod export;
mod faults;
mod gauth;
mod load;
mod native;
mod nul;
mod numbers;
mod pgtls;
mod pipeline;
mod progress;
mod relay;
mod secrets;
mod stack;
mod stored_checksum;
mod sync;
mod watch;
