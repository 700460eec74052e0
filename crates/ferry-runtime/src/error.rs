//! The crate's error type and the exit codes the CLI derives from it.

use std::io;
use std::path::PathBuf;

/// Exit code of a container that could not be started (docker's convention).
pub const EXIT_START_FAILED: i32 = 125;

/// Exit code when the command exists but cannot be executed (POSIX shell convention, docker).
pub const EXIT_NOT_EXECUTABLE: i32 = 126;

/// Exit code when the command is not found (POSIX shell convention, docker).
pub const EXIT_NOT_FOUND: i32 = 127;

/// Everything that can go wrong while preparing or running a container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither the image nor the user gave a command to run.
    #[error("no command specified")]
    NoCommand,

    /// An environment entry is malformed (empty name).
    #[error("invalid environment variable {entry:?}: the name is empty")]
    InvalidEnv {
        /// The entry as given.
        entry: String,
    },

    /// An environment variable named by `-e NAME` holds bytes that are not UTF-8.
    #[error("environment variable {name} is not valid utf-8")]
    EnvNotUtf8 {
        /// The variable's name.
        name: String,
    },

    /// The working directory is not an absolute path.
    #[error("working directory {path:?} is invalid: it must be an absolute path")]
    InvalidWorkingDir {
        /// The directory as given.
        path: String,
    },

    /// The user specification cannot be parsed (`a:b:c`, a uid out of range).
    #[error("invalid user {spec:?}: {reason}")]
    InvalidUser {
        /// The specification as given.
        spec: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A user name is not in the rootfs's passwd file.
    #[error("unable to find user {name}: no matching entry in {}", path.display())]
    UnknownUser {
        /// The name that was looked up.
        name: String,
        /// The passwd file that was searched.
        path: PathBuf,
    },

    /// A group name is not in the rootfs's group file.
    #[error("unable to find group {name}: no matching entry in {}", path.display())]
    UnknownGroup {
        /// The name that was looked up.
        name: String,
        /// The group file that was searched.
        path: PathBuf,
    },

    /// A file of the rootfs (passwd, group) cannot be used.
    #[error("cannot read {}: {reason}", path.display())]
    RootfsFile {
        /// The file, inside the rootfs.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },

    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// The runtime configuration could not be built.
    #[error("cannot build runtime config for {}: {reason}", bundle.display())]
    Config {
        /// The bundle being written.
        bundle: PathBuf,
        /// What oci-spec refused.
        reason: String,
    },

    /// The runc binary could not be started.
    #[error("cannot run {}: {source}", binary.display())]
    Spawn {
        /// The runc binary.
        binary: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// Waiting for runc failed.
    #[error("waiting for runc of container {id}: {source}")]
    Wait {
        /// The container.
        id: String,
        /// The underlying error.
        source: io::Error,
    },

    /// Signal handlers for forwarding could not be installed.
    #[error("cannot install signal forwarding: {0}")]
    Signals(nix::Error),

    /// runc could not start the container (docker exits 125).
    #[error("container {id} failed to start: {reason}")]
    Start {
        /// The container.
        id: String,
        /// runc's last error message.
        reason: String,
    },

    /// The container's command was not found (docker exits 127).
    #[error("container {id} failed to start: {reason}")]
    CommandNotFound {
        /// The container.
        id: String,
        /// runc's last error message.
        reason: String,
    },

    /// The container's command could not be executed (docker exits 126).
    #[error("container {id} failed to start: {reason}")]
    CommandNotExecutable {
        /// The container.
        id: String,
        /// runc's last error message.
        reason: String,
    },

    /// `runc kill` failed.
    #[error("cannot signal container {id}: {reason}")]
    Kill {
        /// The container.
        id: String,
        /// runc's message.
        reason: String,
    },

    /// `runc delete` failed for a reason other than a missing container.
    #[error("cannot delete container {id}: {reason}")]
    Delete {
        /// The container.
        id: String,
        /// runc's message.
        reason: String,
    },
}

impl Error {
    /// The exit code `ferry run` ends with for this error, as docker: 126 when the command
    /// cannot be executed, 127 when it is not found, 125 for every other failure to start.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::CommandNotFound { .. } => EXIT_NOT_FOUND,
            Error::CommandNotExecutable { .. } => EXIT_NOT_EXECUTABLE,
            _ => EXIT_START_FAILED,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
