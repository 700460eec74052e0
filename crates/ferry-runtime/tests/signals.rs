//! SIGTERM sent to ferry while a container runs reaches the container (root only).
//!
//! In a test binary of its own: the signal goes to the whole test process, and would reach the
//! containers of other tests too.

mod common;

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{shell, Fixture};
use ferry_runtime::{resolve_process, write_bundle, ContainerSpec, RunStdio};
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::getpid;

#[test]
fn sigterm_to_ferry_is_forwarded_to_the_container() {
    require_runc!();
    let fx = Fixture::new();
    // pid 1 ignores signals it has no handler for, so the container traps SIGTERM itself.
    let req = shell("trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done");
    let id = ferry_runtime::new_container_id();
    let process = resolve_process(&req, &fx.rootfs(), "box").unwrap();
    let spec = ContainerSpec {
        id: id.clone(),
        hostname: "box".to_string(),
        process,
        read_only: false,
        terminal: false,
        binds: Vec::new(),
        resources: Default::default(),
        network: Default::default(),
    };
    let bundle = fx.dir.path().join("bundle");
    write_bundle(&bundle, &fx.rootfs(), &spec).unwrap();
    let out_path = fx.dir.path().join("stdout");
    let stdio = RunStdio {
        stdin: Stdio::null(),
        stdout: fs::File::create(&out_path).unwrap().into(),
        stderr: Stdio::inherit(),
    };

    let runc = fx.runc.clone();
    let run = std::thread::spawn(move || runc.run_with(&bundle, &id, stdio));
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs::read_to_string(&out_path).unwrap() != "ready\n" {
        assert!(
            Instant::now() < deadline,
            "container did not print ready within 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(getpid(), Signal::SIGTERM).unwrap();

    let code = run.join().unwrap().unwrap();
    assert_eq!(code, 7);
    assert_eq!(fs::read_to_string(&out_path).unwrap(), "ready\ngot TERM\n");
    assert_eq!(fx.runc_list(), "");

    // The forwarding handler is gone once the run is over: the default disposition is back.
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: installs the default disposition, which it reads back as the previous one.
    let previous = unsafe { sigaction(Signal::SIGTERM, &default) }.unwrap();
    assert_eq!(previous.handler(), SigHandler::SigDfl);
}
