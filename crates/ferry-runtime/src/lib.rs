//! Containers run by runc from OCI bundles.
//!
//! Given a directory that is a container's root filesystem (assembled by the snapshotter) and
//! the image's process settings, this crate
//!
//! 1. resolves the process ([`resolve_process`]): arguments by docker's entrypoint and cmd
//!    rules, environment, working directory, and user and group names looked up in the
//!    rootfs's own `/etc/passwd` and `/etc/group`;
//! 2. writes the OCI runtime bundle's `config.json` ([`write_bundle`]);
//! 3. runs it with runc in the foreground ([`Runc::run`]), with runc's state kept under ferry's
//!    root, and returns the container's exit code.
//!
//! Lifecycle of one container: [`new_container_id`] → [`resolve_process`] → [`write_bundle`]
//! → [`Runc::run`] (creates, starts, waits for and deletes the runc container) → the caller
//! removes the bundle. [`Runc::delete`] cleans up after a ferry that died mid-run.
//!
//! Errors map to docker's exit codes through [`Error::exit_code`]: 125 when the container could
//! not be started, 126 when its command is not executable, 127 when it is not found.
#![warn(missing_docs)]

mod bundle;
mod error;
mod process;
mod runc;
mod signals;
mod user;

pub use bundle::{write_bundle, Bind, ContainerSpec, Network, Resources};
pub use error::{Error, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_START_FAILED};
pub use process::{resolve_process, Process, ProcessRequest, DEFAULT_PATH};
pub use runc::{RunStdio, Runc, RUNC_ENV};

/// A new random container ID: 32 random bytes as 64 lowercase hex characters, like docker's.
pub fn new_container_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_64_hex_chars_and_differ() {
        let a = new_container_id();
        let b = new_container_id();
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }
}
