//! kubedrill's exit codes, in one place (the README's table says the same).

use std::process::ExitCode;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done.
    Ok = 0,
    /// The input has errors or could not be read, or a question was not confirmed; nothing was
    /// done.
    Invalid = 1,
    /// A phase failed on some host (`apply`, `reset`), or a drill's verdict is `fail`. (clap
    /// also exits 2 on a bad command line.)
    Failed = 2,
    /// Something differs from what was asked: a requested feature is blocked (`check`), a node
    /// is not as the inventory says (`status`).
    Differs = 3,
    /// Some host could not be checked (`check`; takes precedence over [`Exit::Differs`]).
    Unreachable = 4,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}
