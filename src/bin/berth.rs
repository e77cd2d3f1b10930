//! `berth`: the Berth command-line client.

use std::process::ExitCode;

fn main() -> ExitCode {
    berth::cli::main_with(std::env::args_os())
}
