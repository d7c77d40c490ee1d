//! The `kubedrill` command line.

use clap::Parser;
use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of stdout goes away (`| head`),
    // instead of panicking on a failed print.
    // SAFETY: called first in main, before any other thread exists; SIG_DFL is always valid.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            // Errors quote node output and inventory values: escaped for the terminal.
            let text = format!("{e:#}");
            eprintln!("error: {}", kubedrill::diag::escape_terminal(&text));
            ExitCode::from(1)
        }
    }
}
