//! `ferry`: container images shared peer to peer over IPFS.
//!
//! `main` parses the command line, runs the command, and turns an error into one line on
//! stderr (`ferry: <what failed>: <why>`) and an exit code.

/// `println!` for results on stdout, except that a closed pipe (`ferry images | head -1`) ends
/// the process quietly instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}

mod auth;
mod cli;
mod cni;
mod commands;
mod commit;
mod container;
mod context;
mod control;
mod crypt;
mod daemon;
mod estargz;
mod images;
mod inspect;
mod ipfs;
mod lazy;
mod lifecycle;
mod login;
mod network;
mod output;
mod progress;
mod prune;
mod registry;
mod run;
mod runopts;
mod shim;

use clap::Parser;

fn main() {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => parse_failed(e),
    };
    init_tracing(cli.debug);
    let code = match commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferry: {}", one_line(&e));
            exit_code(&e)
        }
    };
    std::process::exit(code);
}

/// Prints clap's message and exits with its code, except that a bad `run` command line exits
/// 125 as `docker run` does (clap's code is 2); `--help` and `--version` still exit 0.
fn parse_failed(e: clap::Error) -> ! {
    let _ = e.print();
    let code = match e.use_stderr() && names_run(std::env::args().skip(1)) {
        true => 125,
        false => e.exit_code(),
    };
    std::process::exit(code)
}

/// Whether the command is `run`: the first word that is not a global option.
fn names_run(mut args: impl Iterator<Item = String>) -> bool {
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--root" => {
                args.next();
            }
            flag if flag.starts_with('-') => {}
            command => return command == "run",
        }
    }
    false
}

fn init_tracing(debug: bool) {
    // Quieter by default: rustls-platform-verifier logs each failed verification as an error
    // (ferry's own error line says it once); kad warns at every start of a node with no peers
    // yet, which is how most start; rPGP warns about every partial-length packet Go's OpenPGP
    // writes (ocicrypt pgp layers); fuser warns when a lazy layer it serves was unmounted by
    // someone else, which is how every lazy mount ends.
    let default = match debug {
        true => "debug",
        false => "warn,rustls_platform_verifier=off,libp2p_kad=error,pgp=error,fuser=error",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// The error chain on one line, each layer adding its part.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ").replace('\n', " ")
}

/// Docker's codes for `run` (125 ferry failed, 126 not executable, 127 not found); 1 otherwise.
fn exit_code(e: &anyhow::Error) -> i32 {
    if let Some(run::RunFailed(code)) = e.downcast_ref::<run::RunFailed>() {
        return *code;
    }
    1
}
