//! `ferry run -it` and `ferry exec -it` driven through a real pseudo-terminal, as a user at a
//! terminal drives them (root only, as CI runs).

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{busybox_root, ferry, ok, open_pty, output, skip_unless_root};

/// A command whose stdin, stdout and stderr are the slave side of a new pseudo-terminal,
/// which is its controlling terminal; the test holds the master.
struct Pty {
    master: File,
    child: Child,
    seen: Arc<Mutex<Vec<u8>>>,
    /// How far `expect` has consumed `seen`.
    pos: usize,
}

impl Pty {
    fn spawn(mut cmd: Command, rows: u16, cols: u16) -> Pty {
        let (master, slave) = open_pty(rows, cols);
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        // SAFETY: setsid and ioctl are async-signal-safe; the child makes the pty (its stdin)
        // its controlling terminal, as a login shell's terminal is.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(cmd);

        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the last holder of the slave side has gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            master,
            child,
            seen,
            pos: 0,
        }
    }

    fn send(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).unwrap();
    }

    /// Waits until `needle` appears in the output after what earlier calls consumed.
    fn expect(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            {
                let seen = self.seen.lock().unwrap();
                let text = String::from_utf8_lossy(&seen[self.pos..]);
                if let Some(i) = text.find(needle) {
                    self.pos += text[..i + needle.len()].len();
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "waiting for {needle:?}; the terminal shows {text:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn resize(&self, rows: u16, cols: u16) {
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize; the kernel signals the terminal's foreground
        // process group with SIGWINCH.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        assert_eq!(rc, 0);
    }

    /// The terminal's local mode flags (the slave's, read through the master).
    fn lflag(&self) -> libc::tcflag_t {
        // SAFETY: tcgetattr fills the zeroed struct.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::tcgetattr(self.master.as_raw_fd(), &mut t) },
            0
        );
        t.c_lflag
    }

    fn wait(&mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let seen = self.seen.lock().unwrap();
                panic!(
                    "ferry did not exit; the terminal shows {:?}",
                    String::from_utf8_lossy(&seen)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn run_it_gives_an_interactive_shell_that_follows_the_terminal() {
    if skip_unless_root("run_it_gives_an_interactive_shell_that_follows_the_terminal") {
        return;
    }
    let root = busybox_root();
    let mut cmd = ferry(root.path());
    cmd.args(["run", "-it", "--rm", "busybox", "sh"]);
    let mut pty = Pty::spawn(cmd, 33, 101);
    let cooked = pty.lflag();
    assert_ne!(cooked & libc::ICANON, 0);

    pty.expect("# ");
    pty.send("echo hi\r");
    pty.expect("\nhi\r\n");
    pty.send("stty size; echo $TERM\r");
    pty.expect("\n33 101\r\nxterm\r\n");

    // the container's window follows the user's
    pty.resize(40, 120);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        pty.send("stty size\r");
        let seen = {
            std::thread::sleep(Duration::from_millis(200));
            String::from_utf8_lossy(&pty.seen.lock().unwrap()[pty.pos..]).into_owned()
        };
        if seen.contains("\n40 120\r\n") {
            pty.expect("\n40 120\r\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the size never followed: {seen:?}"
        );
    }

    // Ctrl-C interrupts the container's foreground command, not ferry
    pty.send("sleep 30\r");
    std::thread::sleep(Duration::from_millis(300));
    pty.send("\x03");
    pty.send("echo after $((40 + 2))\r");
    pty.expect("\nafter 42\r\n");

    // Ctrl-D at the prompt ends the shell, and ferry with it; the terminal is cooked again
    pty.send("\x04");
    assert_eq!(pty.wait(), 0);
    assert_eq!(
        pty.lflag() & (libc::ICANON | libc::ECHO),
        cooked & (libc::ICANON | libc::ECHO)
    );
    let left = std::fs::read_dir(root.path().join("containers"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "--rm left the container");
}

#[test]
fn run_it_passes_input_and_the_exit_code() {
    if skip_unless_root("run_it_passes_input_and_the_exit_code") {
        return;
    }
    let root = busybox_root();
    let mut cmd = ferry(root.path());
    cmd.args([
        "run",
        "-it",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo ready; read x; echo got $x; exit 3",
    ]);
    let mut pty = Pty::spawn(cmd, 24, 80);
    pty.expect("ready\r\n");
    pty.send("abc\r");
    pty.expect("got abc\r\n");
    assert_eq!(pty.wait(), 3);
}

#[test]
fn exec_it_opens_a_shell_in_a_running_container() {
    if skip_unless_root("exec_it_opens_a_shell_in_a_running_container") {
        return;
    }
    let root = busybox_root();
    let id = ok(ferry(root.path()).args([
        "run",
        "-d",
        "--name",
        "svc",
        "busybox",
        "sh",
        "-c",
        "while true; do sleep 1; done",
    ]));
    let mut cmd = ferry(root.path());
    cmd.args(["exec", "-it", "svc", "sh"]);
    let mut pty = Pty::spawn(cmd, 24, 80);
    pty.expect("# ");
    pty.send("hostname; tty\r");
    // line ends are not compared: on a loaded machine the outer terminal has been seen to
    // translate newlines once more ("\r\r\n")
    // TODO: find which side leaves the outer terminal cooked for a moment during exec -it
    pty.expect(&format!("\n{}\r", &id[..12]));
    pty.expect("/dev/pts/");
    pty.send("exit 4\r");
    assert_eq!(pty.wait(), 4);
    ok(ferry(root.path()).args(["rm", "-f", "svc"]));

    // -i -t without a terminal is refused, as docker refuses it
    let (code, _, stderr) = output(ferry(root.path()).args(["run", "-it", "busybox", "sh"]));
    assert_eq!(code, 125);
    assert_eq!(stderr, "ferry: run: the input device is not a TTY\n");
}
