//! The `hyperlet` binary: parses the command line, sets up logging and hands over to the library.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = hyperlet::cli::Cli::parse();
    hyperlet::cli::run(cli)
}
