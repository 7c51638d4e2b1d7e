//! The `fanout` binary: parse the command line, run, map the result to an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = <fanout::cli::Cli as clap::Parser>::parse();
    fanout::cli::init_logging(&cli);
    match fanout::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
