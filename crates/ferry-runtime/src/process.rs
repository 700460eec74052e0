//! From the image's process settings and the user's flags to the process runc starts.

use std::path::Path;

use crate::error::Error;
use crate::user::resolve_user;

/// PATH given to a container whose image sets none (docker's default on Linux).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The image's process settings (from the OCI image config's `config` object) and the user's
/// overrides (docker run flags), before resolution.
#[derive(Clone, Debug, Default)]
pub struct ProcessRequest {
    /// Image `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// Image `Cmd`.
    pub cmd: Vec<String>,
    /// Image `Env` (`K=V`).
    pub env: Vec<String>,
    /// Image `WorkingDir` (`""` means `/`).
    pub working_dir: String,
    /// Image `User`: `""`, `name`, `uid`, `uid:gid`, `name:group`.
    pub user: String,
    /// `--entrypoint`: as docker, a single string; `""` clears the image's entrypoint.
    pub override_entrypoint: Option<String>,
    /// Arguments after the image on the command line; replace `Cmd` when non-empty.
    pub override_cmd: Vec<String>,
    /// `-e K=V`, or `-e K` to take the value from ferry's own environment (unset there: the
    /// variable is removed, as docker does).
    pub override_env: Vec<String>,
    /// `-w`.
    pub override_working_dir: Option<String>,
    /// `-u`.
    pub override_user: Option<String>,
}

/// The process a container runs, resolved against its rootfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    /// Command and arguments.
    pub args: Vec<String>,
    /// Environment, `K=V` each.
    pub env: Vec<String>,
    /// Absolute working directory inside the container.
    pub cwd: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids.
    pub additional_gids: Vec<u32>,
}

/// Resolves `req` for a container whose root filesystem is `rootfs` and whose hostname is
/// `hostname`.
///
/// - args: entrypoint + cmd by docker's rules (`--entrypoint` drops the image's Cmd);
/// - env: image env, then overrides replacing same names; `PATH` defaulted and `HOSTNAME` set
///   when absent;
/// - user and group names are looked up in the rootfs's `/etc/passwd` and `/etc/group`, never
///   the host's.
pub fn resolve_process(
    req: &ProcessRequest,
    rootfs: &Path,
    hostname: &str,
) -> Result<Process, Error> {
    resolve_with_env(req, rootfs, hostname, |name| match std::env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::EnvNotUtf8 {
            name: name.to_string(),
        }),
    })
}

/// [`resolve_process`] with the host environment behind `lookup`, so tests need not touch the
/// process environment.
fn resolve_with_env(
    req: &ProcessRequest,
    rootfs: &Path,
    hostname: &str,
    lookup: impl Fn(&str) -> Result<Option<String>, Error>,
) -> Result<Process, Error> {
    let args = resolve_args(req)?;
    let env = resolve_env(req, hostname, lookup)?;
    let cwd = resolve_cwd(req)?;

    let user = req.override_user.as_deref().unwrap_or(&req.user);
    let ids = resolve_user(user, rootfs)?;

    Ok(Process {
        args,
        env,
        cwd,
        uid: ids.uid,
        gid: ids.gid,
        additional_gids: ids.additional_gids,
    })
}

/// Docker's rule: `--entrypoint` replaces the image's Entrypoint and drops its Cmd; otherwise
/// the command line's arguments, when there are any, replace Cmd.
fn resolve_args(req: &ProcessRequest) -> Result<Vec<String>, Error> {
    let (entrypoint, cmd) = match &req.override_entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), &req.override_cmd),
        Some(e) => (vec![e.clone()], &req.override_cmd),
        None if req.override_cmd.is_empty() => (req.entrypoint.clone(), &req.cmd),
        None => (req.entrypoint.clone(), &req.override_cmd),
    };

    let mut args = entrypoint;
    args.extend(cmd.iter().cloned());
    if args.is_empty() {
        return Err(Error::NoCommand);
    }
    Ok(args)
}

fn resolve_env(
    req: &ProcessRequest,
    hostname: &str,
    lookup: impl Fn(&str) -> Result<Option<String>, Error>,
) -> Result<Vec<String>, Error> {
    let mut env: Vec<String> = Vec::new();
    for entry in &req.env {
        let (name, _) = split_env(entry)?;
        set_env(&mut env, name, entry.clone());
    }

    for entry in &req.override_env {
        let (name, value) = split_env(entry)?;
        match value {
            Some(_) => set_env(&mut env, name, entry.clone()),
            None => match lookup(name)? {
                Some(value) => set_env(&mut env, name, format!("{name}={value}")),
                None => env.retain(|e| env_name(e) != name),
            },
        }
    }

    // Docker puts its defaults first; a variable from the image or the user wins.
    let mut defaults = Vec::new();
    if !env.iter().any(|e| env_name(e) == "PATH") {
        defaults.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !env.iter().any(|e| env_name(e) == "HOSTNAME") {
        defaults.push(format!("HOSTNAME={hostname}"));
    }
    defaults.extend(env);
    Ok(defaults)
}

/// `K=V` into `(K, Some(V))`, `K` into `(K, None)`; an empty name is an error.
fn split_env(entry: &str) -> Result<(&str, Option<&str>), Error> {
    let (name, value) = match entry.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (entry, None),
    };
    if name.is_empty() {
        return Err(Error::InvalidEnv {
            entry: entry.to_string(),
        });
    }
    Ok((name, value))
}

fn env_name(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(name, _)| name)
}

/// Replaces the entry named `name` in place, or appends `entry`.
fn set_env(env: &mut Vec<String>, name: &str, entry: String) {
    match env.iter_mut().find(|e| env_name(e) == name) {
        Some(existing) => *existing = entry,
        None => env.push(entry),
    }
}

fn resolve_cwd(req: &ProcessRequest) -> Result<String, Error> {
    let dir = req
        .override_working_dir
        .as_deref()
        .unwrap_or(&req.working_dir);
    if dir.is_empty() {
        return Ok("/".to_string());
    }
    if !dir.starts_with('/') {
        return Err(Error::InvalidWorkingDir {
            path: dir.to_string(),
        });
    }
    Ok(dir.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn no_host_env(_: &str) -> Result<Option<String>, Error> {
        Ok(None)
    }

    /// (image entrypoint, image cmd, --entrypoint, command-line args, expected args)
    type ArgsCase<'a> = (
        &'a [&'a str],
        &'a [&'a str],
        Option<&'a str>,
        &'a [&'a str],
        &'a [&'a str],
    );

    #[test]
    fn args_follow_docker_entrypoint_and_cmd_rules() {
        // (entrypoint, cmd, --entrypoint, command-line args, expected)
        let table: [ArgsCase; 9] = [
            (&[], &["sh"], None, &[], &["sh"]),
            (&["/init"], &["-v"], None, &[], &["/init", "-v"]),
            (
                &["/init"],
                &["-v"],
                None,
                &["-q", "x"],
                &["/init", "-q", "x"],
            ),
            (&[], &["sh"], None, &["echo", "hi"], &["echo", "hi"]),
            (&["/init"], &["-v"], Some("/bin/sh"), &[], &["/bin/sh"]),
            (
                &["/init"],
                &["-v"],
                Some("/bin/sh"),
                &["-c", "id"],
                &["/bin/sh", "-c", "id"],
            ),
            (&["/init"], &["-v"], Some(""), &["ls"], &["ls"]),
            (&["/init", "a"], &[], None, &[], &["/init", "a"]),
            (&[], &[], None, &["true"], &["true"]),
        ];
        for (entrypoint, cmd, over_ep, over_cmd, want) in table {
            let req = ProcessRequest {
                entrypoint: strings(entrypoint),
                cmd: strings(cmd),
                override_entrypoint: over_ep.map(str::to_string),
                override_cmd: strings(over_cmd),
                ..Default::default()
            };
            assert_eq!(resolve_args(&req).unwrap(), strings(want), "{req:?}");
        }
    }

    #[test]
    fn args_refuse_an_empty_command() {
        let cases = [
            ProcessRequest::default(),
            ProcessRequest {
                entrypoint: strings(&["/init"]),
                cmd: strings(&["-v"]),
                override_entrypoint: Some(String::new()),
                ..Default::default()
            },
        ];
        for req in cases {
            let err = resolve_args(&req).unwrap_err();
            assert_eq!(err.to_string(), "no command specified");
            assert_eq!(err.exit_code(), 125);
        }
    }

    #[test]
    fn env_overrides_replace_image_values_and_path_defaults() {
        let req = ProcessRequest {
            env: strings(&["A=1", "B=2", "EMPTY=", "DROP=x"]),
            override_env: strings(&["B=20", "C=3", "FROM_HOST", "DROP", "UNSET_ON_HOST"]),
            ..Default::default()
        };
        let lookup = |name: &str| Ok((name == "FROM_HOST").then(|| "h v".to_string()));
        let env = resolve_env(&req, "box", lookup).unwrap();
        let want = [
            &format!("PATH={DEFAULT_PATH}"),
            "HOSTNAME=box",
            "A=1",
            "B=20",
            "EMPTY=",
            "C=3",
            "FROM_HOST=h v",
        ];
        assert_eq!(env, want);
    }

    #[test]
    fn env_keeps_image_path_and_user_hostname() {
        let req = ProcessRequest {
            env: strings(&["PATH=/opt/bin", "X=1"]),
            override_env: strings(&["HOSTNAME=mine"]),
            ..Default::default()
        };
        let env = resolve_env(&req, "box", no_host_env).unwrap();
        assert_eq!(env, strings(&["PATH=/opt/bin", "X=1", "HOSTNAME=mine"]));
    }

    #[test]
    fn env_refuses_an_empty_name() {
        let req = ProcessRequest {
            override_env: strings(&["=v"]),
            ..Default::default()
        };
        let err = resolve_env(&req, "box", no_host_env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid environment variable \"=v\": the name is empty"
        );
    }

    #[test]
    fn cwd_defaults_to_root_and_must_be_absolute() {
        let table = [
            ("", None, "/"),
            ("/app", None, "/app"),
            ("/app", Some("/tmp"), "/tmp"),
        ];
        for (image, flag, want) in table {
            let req = ProcessRequest {
                working_dir: image.to_string(),
                override_working_dir: flag.map(str::to_string),
                ..Default::default()
            };
            assert_eq!(resolve_cwd(&req).unwrap(), want, "{req:?}");
        }
        let req = ProcessRequest {
            working_dir: "app".to_string(),
            ..Default::default()
        };
        assert_eq!(
            resolve_cwd(&req).unwrap_err().to_string(),
            "working directory \"app\" is invalid: it must be an absolute path"
        );
    }

    #[test]
    fn resolve_process_uses_the_rootfs_user_database() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd"),
            "web:x:33:33::/var/www:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(root.path().join("etc/group"), "web:x:33:\nlog:x:4:web\n").unwrap();
        let req = ProcessRequest {
            cmd: strings(&["serve"]),
            user: "root".to_string(),
            override_user: Some("web".to_string()),
            working_dir: "/srv".to_string(),
            ..Default::default()
        };
        let process = resolve_with_env(&req, root.path(), "h", no_host_env).unwrap();
        let want = Process {
            args: strings(&["serve"]),
            env: strings(&[&format!("PATH={DEFAULT_PATH}"), "HOSTNAME=h"]),
            cwd: "/srv".to_string(),
            uid: 33,
            gid: 33,
            additional_gids: vec![4],
        };
        assert_eq!(process, want);

        let req = ProcessRequest {
            user: "root".to_string(),
            ..req
        };
        let req = ProcessRequest {
            override_user: None,
            ..req
        };
        let err = resolve_with_env(&req, root.path(), "h", no_host_env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find user root: no matching entry in /etc/passwd"
        );
    }
}
