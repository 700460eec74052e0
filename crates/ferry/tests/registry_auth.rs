//! Registry credentials and TLS: a docker-registry with htpasswd basic auth behind TLS with a
//! certificate from a CA the test makes with openssl. `ferry login` / `logout`, Docker's
//! config.json and credential helpers, skopeo as the second client both ways, the errors users
//! meet (wrong password, unknown CA, registry down, unknown tag, disk full) and a store that
//! still works after each.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ferry, fixture, ok, output, sha256sum, tool_installed};

const USER: &str = "ferry";
const PASSWORD: &str = "s3cret pass";

/// A token service for docker-registry's `auth: token` (Python, with the `cryptography`
/// package): checks the user and password given as basic auth, then issues an ES256 JWT
/// carrying its signing certificate (x5c) and granting the scope asked for; logs each request
/// as `ok SCOPE` or `refused SCOPE`. Prints its port on start.
const TOKEN_SERVICE: &str = r#"# A token service for docker-registry's `auth: token`: checks basic credentials, then issues an
# ES256 JWT with the signing certificate in x5c, granting the scope asked for.
import base64, json, sys, time, os
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlparse, parse_qs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

key_file, cert_file, user, password, log = sys.argv[1:6]
key = serialization.load_pem_private_key(open(key_file, "rb").read(), None)
cert = x509.load_pem_x509_certificate(open(cert_file, "rb").read())
der = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        q = parse_qs(urlparse(self.path).query)
        want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        ok = self.headers.get("Authorization") == want
        scope = q.get("scope", [""])[0]
        with open(log, "a") as f:
            f.write(f"{'ok' if ok else 'refused'} {scope}\n")
        if not ok:
            self.send_response(401); self.end_headers(); return
        access = []
        if scope:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": "ferry-test-issuer", "sub": user, "aud": q["service"][0], "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        header = {"alg": "ES256", "typ": "JWT", "x5c": [der]}
        signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
        r, s = decode_dss_signature(key.sign(signing.encode(), ec.ECDSA(hashes.SHA256())))
        token = signing + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

server = HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

fn tools(test: &str) -> bool {
    ["docker-registry", "skopeo", "openssl", "htpasswd"]
        .iter()
        .all(|tool| tool_installed(test, tool))
}

/// Runs a tool and panics with its stderr unless it succeeds; stdout.
fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A docker-registry with TLS (a certificate for 127.0.0.1 and localhost signed by a fresh
/// CA) and htpasswd basic auth, on a free loopback port; killed when dropped.
struct SecureRegistry {
    child: Child,
    /// The token service, with `auth: token`.
    tokens: Option<Child>,
    addr: String,
    dir: tempfile::TempDir,
}

impl SecureRegistry {
    /// With htpasswd basic auth.
    fn start() -> SecureRegistry {
        SecureRegistry::start_with(false)
    }

    /// With basic auth (`token` false) or bearer tokens from [`TOKEN_SERVICE`] (true), which
    /// takes the same user and password.
    fn start_with(token: bool) -> SecureRegistry {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(d));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=ferry test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            d.join("ext.cnf"),
            "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n\
             extendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ]);
        let htpasswd = run(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]));
        std::fs::write(d.join("htpasswd"), htpasswd).unwrap();
        // skopeo's --cert-dir wants the CA as *.crt in a directory of its own
        std::fs::create_dir(d.join("certs")).unwrap();
        std::fs::copy(d.join("ca.crt"), d.join("certs/ca.crt")).unwrap();

        let (auth, tokens) = match token {
            false => (
                format!(
                    "  htpasswd:\n    realm: ferry-test\n    path: {}/htpasswd\n",
                    d.display()
                ),
                None,
            ),
            true => {
                openssl(&[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=ferry test tokens",
                    "-keyout",
                    "token.key",
                    "-out",
                    "token.crt",
                ]);
                std::fs::write(d.join("token_service.py"), TOKEN_SERVICE).unwrap();
                let mut child = Command::new("python3")
                    .arg(d.join("token_service.py"))
                    .args([d.join("token.key"), d.join("token.crt")])
                    .args([USER, PASSWORD])
                    .arg(d.join("token.log"))
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("start the token service");
                let mut line = String::new();
                let stdout = child.stdout.take().unwrap();
                std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
                    .unwrap();
                let port = line.trim().to_string();
                let auth = format!(
                    "  token:\n    realm: http://127.0.0.1:{port}/token\n    service: ferry-test\n\
                     \x20   issuer: ferry-test-issuer\n    rootcertbundle: {}/token.crt\n",
                    d.display()
                );
                (auth, Some(child))
            }
        };
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\n\
             http:\n  addr: {addr}\n  tls:\n    certificate: {d}/server.crt\n    key: {d}/server.key\n\
             auth:\n{auth}",
            d = d.display()
        );
        std::fs::write(d.join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        SecureRegistry {
            child,
            tokens,
            addr,
            dir,
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn cert_dir(&self) -> String {
        self.dir.path().join("certs").display().to_string()
    }
}

impl Drop for SecureRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(tokens) = &mut self.tokens {
            let _ = tokens.kill();
            let _ = tokens.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A ferry root and a Docker config directory of its own.
struct Client {
    root: tempfile::TempDir,
    docker: tempfile::TempDir,
    path: Option<String>,
}

impl Client {
    fn new() -> Client {
        Client {
            root: tempfile::tempdir().unwrap(),
            docker: tempfile::tempdir().unwrap(),
            path: None,
        }
    }

    fn ferry(&self) -> Command {
        let mut cmd = ferry(self.root.path());
        cmd.env("DOCKER_CONFIG", self.docker.path());
        if let Some(path) = &self.path {
            cmd.env("PATH", path);
        }
        cmd
    }

    fn config_file(&self) -> PathBuf {
        self.docker.path().join("config.json")
    }

    fn login(&self, registry: &SecureRegistry) {
        let stdout = ok(self
            .ferry()
            .args(["login", "-u", USER, "--password-stdin", "--ca-cert"])
            .arg(registry.ca())
            .arg(&registry.addr)
            .stdin(password_stdin()));
        assert_eq!(stdout, "Login Succeeded\n");
    }

    /// `ferry pull --ca-cert CA NAME`: (exit code, stdout, stderr).
    fn pull(&self, registry: &SecureRegistry, name: &str) -> (i32, String, String) {
        output(
            self.ferry()
                .arg("pull")
                .arg("--ca-cert")
                .arg(registry.ca())
                .arg(name),
        )
    }

    /// The digest `ferry images --digests` shows for `name`.
    fn digest_of(&self, name: &str) -> String {
        let images = common::listed_images(self.ferry());
        let found = images.iter().find(|(listed, _)| listed == name);
        found
            .map(|(_, digest)| digest.clone())
            .unwrap_or_else(|| panic!("{name} not in ferry images: {images:?}"))
    }
}

fn password_stdin() -> Stdio {
    let mut file = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut file, format!("{PASSWORD}\n").as_bytes()).unwrap();
    std::io::Seek::rewind(&mut file).unwrap();
    Stdio::from(file)
}

/// Loads the busybox fixture and names it `name`; returns its manifest digest.
fn busybox_as(client: &Client, name: &str) -> String {
    let loaded = ok(client
        .ferry()
        .args(["load", "-i"])
        .arg(fixture("busybox.tar")));
    let loaded = loaded
        .trim()
        .trim_start_matches("Loaded image: ")
        .to_string();
    ok(client.ferry().args(["tag", &loaded, name]));
    client.digest_of(name)
}

/// The sha256 digest of `bytes`.
fn sha256_of(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b");
    std::fs::write(&file, bytes).unwrap();
    format!("sha256:{}", sha256sum(&file))
}

/// `ferry images` still lists the store's images and exits 0.
fn store_still_works(client: &Client) {
    ok(client.ferry().arg("images"));
    ok(client.ferry().args(["image", "prune"]));
}

#[test]
fn login_then_push_then_pull_back_over_tls_with_basic_auth() {
    if !tools("login_then_push_then_pull_back_over_tls_with_basic_auth") {
        return;
    }
    let registry = SecureRegistry::start();
    let a = Client::new();
    // settings of other tools in config.json stay as they were
    std::fs::write(a.config_file(), r#"{"psFormat": "table {{.ID}}"}"#).unwrap();
    a.login(&registry);

    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(a.config_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.config_file()).unwrap()).unwrap();
    assert_eq!(
        config,
        serde_json::json!({
            "psFormat": "table {{.ID}}",
            // base64 of "ferry:s3cret pass"
            "auths": {registry.addr.clone(): {"auth": "ZmVycnk6czNjcmV0IHBhc3M="}},
        })
    );

    let name = format!("{}/auth/busybox:1", registry.addr);
    let digest = busybox_as(&a, &name);
    let stdout = ok(a
        .ferry()
        .args(["push", "--ca-cert"])
        .arg(registry.ca())
        .arg(&name));
    assert!(
        stdout.starts_with(&format!("1: digest: {digest} size: ")),
        "{stdout}"
    );

    // another root, same credentials: pulls the same manifest back
    let b = Client::new();
    std::fs::copy(a.config_file(), b.config_file()).unwrap();
    let (code, stdout, stderr) = b.pull(&registry, &name);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, format!("{name}\n"));
    assert_eq!(b.digest_of(&name), digest);

    // the CA from ROOT/certs.d/HOST:PORT/ (Docker's layout) instead of --ca-cert
    let certs_d = b.root.path().join("certs.d").join(&registry.addr);
    std::fs::create_dir_all(&certs_d).unwrap();
    std::fs::copy(registry.ca(), certs_d.join("ca.crt")).unwrap();
    let stdout = ok(b.ferry().args(["pull", "-q", &name]));
    assert_eq!(stdout, format!("{name}\n"));

    // logged out, the registry turns the pull away
    let stdout = ok(b.ferry().args(["logout", &registry.addr]));
    assert_eq!(
        stdout,
        format!("Removing login credentials for {}\n", registry.addr)
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.config_file()).unwrap()).unwrap();
    assert_eq!(
        config,
        serde_json::json!({"psFormat": "table {{.ID}}", "auths": {}})
    );
    let (code, _, stderr) = b.pull(&registry, &name);
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        format!("ferry: pull {name}: unauthorized: authentication required (see `ferry login`)\n")
    );
    store_still_works(&b);
    assert_eq!(b.digest_of(&name), digest);
}

#[test]
fn skopeo_and_ferry_exchange_images_through_the_secure_registry() {
    if !tools("skopeo_and_ferry_exchange_images_through_the_secure_registry") {
        return;
    }
    let registry = SecureRegistry::start();
    let creds = format!("{USER}:{PASSWORD}");
    let client = Client::new();
    client.login(&registry);

    // skopeo pushes, ferry pulls
    let from_skopeo = format!("{}/skopeo/busybox:1", registry.addr);
    run(Command::new("skopeo").args([
        "copy",
        "-q",
        "--dest-creds",
        &creds,
        "--dest-cert-dir",
        &registry.cert_dir(),
        &format!("oci-archive:{}", fixture("busybox.tar").display()),
        &format!("docker://{from_skopeo}"),
    ]));
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--creds",
        &creds,
        "--cert-dir",
        &registry.cert_dir(),
        &format!("docker://{from_skopeo}"),
    ]));
    let (code, _, stderr) = client.pull(&registry, &from_skopeo);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(client.digest_of(&from_skopeo), sha256_of(&raw));

    // ferry pushes, skopeo reads
    let from_ferry = format!("{}/ferry/busybox:2", registry.addr);
    ok(client.ferry().args(["tag", &from_skopeo, &from_ferry]));
    ok(client
        .ferry()
        .args(["push", "-q", "--ca-cert"])
        .arg(registry.ca())
        .arg(&from_ferry));
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--creds",
        &creds,
        "--cert-dir",
        &registry.cert_dir(),
        &format!("docker://{from_ferry}"),
    ]));
    assert_eq!(sha256_of(&raw), client.digest_of(&from_skopeo));
}

#[test]
fn a_credential_helper_gives_the_credentials() {
    if !tools("a_credential_helper_gives_the_credentials") {
        return;
    }
    let registry = SecureRegistry::start();
    let setup = Client::new();
    setup.login(&registry);
    let name = format!("{}/helper/busybox:1", registry.addr);
    let digest = busybox_as(&setup, &name);
    ok(setup
        .ferry()
        .args(["push", "-q", "--ca-cert"])
        .arg(registry.ca())
        .arg(&name));

    // a helper that logs what it was asked and answers with the test's credentials
    let mut client = Client::new();
    let bin = client.docker.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = client.docker.path().join("helper.log");
    let script = format!(
        "#!/bin/sh\nserver=$(cat)\necho \"$1 $server\" >> {log}\n\
         printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\n",
        log = log.display()
    );
    let helper = bin.join("docker-credential-ferrytest");
    std::fs::write(&helper, script).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    client.path = Some(format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    ));
    let config = serde_json::json!({"credHelpers": {registry.addr.clone(): "ferrytest"}});
    std::fs::write(client.config_file(), config.to_string()).unwrap();

    let (code, _, stderr) = client.pull(&registry, &name);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(client.digest_of(&name), digest);
    let asked = std::fs::read_to_string(&log).unwrap();
    assert_eq!(asked, format!("get {}\n", registry.addr));
}

#[test]
fn failures_give_one_line_and_leave_the_store_usable() {
    if !tools("failures_give_one_line_and_leave_the_store_usable") {
        return;
    }
    let registry = SecureRegistry::start();
    let client = Client::new();
    client.login(&registry);
    let name = format!("{}/errors/busybox:1", registry.addr);
    let digest = busybox_as(&client, &name);
    ok(client
        .ferry()
        .args(["push", "-q", "--ca-cert"])
        .arg(registry.ca())
        .arg(&name));
    ok(client.ferry().args(["rmi", &name]));
    let addr = &registry.addr;

    // wrong password: login refuses to store it
    let (code, stdout, stderr) = output(
        client
            .ferry()
            .args(["login", "-u", USER, "-p", "wrong", "--ca-cert"])
            .arg(registry.ca())
            .arg(addr),
    );
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert_eq!(
        stderr,
        format!(
            "WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n\
             ferry: login {addr}: incorrect username or password (the registry answered 401 \
             Unauthorized)\n"
        )
    );
    // wrong password stored by hand: the pull is refused
    let good = std::fs::read(client.config_file()).unwrap();
    let bad = serde_json::json!({"auths": {addr.clone(): {"auth": "ZmVycnk6d3Jvbmc="}}});
    std::fs::write(client.config_file(), bad.to_string()).unwrap();
    let (code, _, stderr) = client.pull(&registry, &name);
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        format!("ferry: pull {name}: unauthorized: authentication required (see `ferry login`)\n")
    );
    std::fs::write(client.config_file(), good).unwrap();
    store_still_works(&client);

    // no CA given: the certificate does not verify
    let (code, _, stderr) = output(client.ferry().args(["pull", &name]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        format!(
            "ferry: pull {name}: tls: certificate signed by an unknown authority (trust its CA \
             with --ca-cert)\n"
        )
    );
    store_still_works(&client);

    // an unknown tag
    let missing = format!("{addr}/errors/busybox:nope");
    let (code, _, stderr) = client.pull(&registry, &missing);
    assert_eq!(code, 1);
    assert_eq!(stderr, format!("ferry: pull {missing}: manifest unknown\n"));
    store_still_works(&client);

    // a registry that is not there
    let down = format!("127.0.0.1:{}/errors/busybox:1", free_port());
    let (code, _, stderr) = output(client.ferry().args(["pull", &down]));
    assert_eq!(code, 1);
    assert_eq!(stderr, format!("ferry: pull {down}: connection refused\n"));
    store_still_works(&client);

    // after all that, the pull works and gives the pushed image
    let (code, _, stderr) = client.pull(&registry, &name);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(client.digest_of(&name), digest);
}

/// A tmpfs mounted on a directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path()));
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// An OCI archive of one image whose only layer holds `size` bytes of random data.
fn random_image(dir: &Path, size: usize) -> PathBuf {
    let layout = dir.join("layout");
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    let image = format!("{}:big", layout.display());
    run(Command::new("umoci").args(["new", "--image", &image]));
    let bundle = dir.join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &image])
        .arg(&bundle));
    common::pseudo_random_file(&bundle.join("rootfs/random.bin"), size, 7);
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    let archive = dir.join("big.tar");
    run(Command::new("skopeo").args([
        "copy",
        "-q",
        &format!("oci:{image}"),
        &format!("oci-archive:{}:big", archive.display()),
    ]));
    archive
}

#[test]
fn a_full_disk_fails_the_pull_with_one_line_and_the_store_recovers() {
    let test = "a_full_disk_fails_the_pull_with_one_line_and_the_store_recovers";
    if common::skip_unless_root(test) || !tools(test) || !tool_installed(test, "umoci") {
        return;
    }
    let registry = SecureRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let archive = random_image(work.path(), 24 << 20);
    let setup = Client::new();
    setup.login(&registry);
    let loaded = ok(setup.ferry().args(["load", "-i"]).arg(&archive));
    let loaded = loaded
        .trim()
        .trim_start_matches("Loaded image: ")
        .to_string();
    let name = format!("{}/big/random:1", registry.addr);
    ok(setup.ferry().args(["tag", &loaded, &name]));
    let digest = setup.digest_of(&name);
    ok(setup
        .ferry()
        .args(["push", "-q", "--ca-cert"])
        .arg(registry.ca())
        .arg(&name));

    // a root on a 16 MiB tmpfs: the 24 MiB layer does not fit
    let small = Tmpfs::mount("16m");
    let mut client = Client::new();
    std::fs::copy(setup.config_file(), client.config_file()).unwrap();
    let root = small.path().join("root");
    let on_small = || {
        let mut cmd = ferry(&root);
        cmd.env("DOCKER_CONFIG", client.docker.path());
        cmd
    };
    let mut pull = on_small();
    pull.args(["pull", "-q", "--ca-cert"]);
    let (code, _, stderr) = output(pull.arg(registry.ca()).arg(&name));
    assert_eq!(code, 1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("ferry: pull {name}: blob sha256:")),
        "{stderr}"
    );
    let full = format!(
        ": no space left on device (writing in {})\n",
        root.join("ingest").display()
    );
    assert!(stderr.ends_with(&full), "{stderr}");
    // the partial blob is gone and the store answers
    let images = ok(on_small().args(["images", "-q"]));
    assert_eq!(images, "");
    let partial = std::fs::read_dir(root.join("ingest")).map_or(0, |d| d.count());
    assert_eq!(partial, 0, "partial blobs left in ROOT/ingest");

    // with a bigger root the same pull succeeds
    let big = Tmpfs::mount("64m");
    client.root = tempfile::tempdir_in(big.path()).unwrap();
    let (code, _, stderr) = client.pull(&registry, &name);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(client.digest_of(&name), digest);
    drop(client);
}

#[test]
fn bearer_tokens_come_from_the_registrys_token_service() {
    if !tools("bearer_tokens_come_from_the_registrys_token_service") {
        return;
    }
    let registry = SecureRegistry::start_with(true);
    let log = registry.dir.path().join("token.log");
    let a = Client::new();
    let addr = registry.addr.clone();

    // login asks the token service with the credentials
    let (code, _, stderr) = output(
        a.ferry()
            .args(["login", "-u", USER, "--password-stdin", "--ca-cert"])
            .arg(registry.ca())
            .arg(&addr)
            .stdin(Stdio::null()),
    );
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        format!("ferry: login {addr}: the user name and password must not be empty\n")
    );
    a.login(&registry);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ok \n");

    let name = format!("{addr}/bearer/busybox:1");
    let digest = busybox_as(&a, &name);
    ok(a.ferry()
        .args(["push", "-q", "--ca-cert"])
        .arg(registry.ca())
        .arg(&name));
    let b = Client::new();
    std::fs::copy(a.config_file(), b.config_file()).unwrap();
    let (code, _, stderr) = b.pull(&registry, &name);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(b.digest_of(&name), digest);
    let asked = std::fs::read_to_string(&log).unwrap();
    assert!(
        asked.contains("ok repository:bearer/busybox:pull,push\n"),
        "{asked}"
    );
    assert!(
        asked.contains("ok repository:bearer/busybox:pull\n"),
        "{asked}"
    );
    assert!(!asked.contains("refused"), "{asked}");
}
