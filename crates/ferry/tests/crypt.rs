//! Encrypted images (ocicrypt) against the real Go implementation in skopeo and the independent
//! Python checker: both directions, damaged input, keys, and IPFS.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    busybox_root, ferry, fixture, is_root, ok, output, sha256sum, skopeo, tool_installed, Daemon,
};
use serde_json::{json, Value};

/// RSA and EC (P-256) key pairs made by openssl, a certificate for the RSA key (`rsa.crt`), private keys in PKCS#8 (Go ocicrypt in
/// skopeo 1.9 reads EC keys only in that form), mode 600.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let sh = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        sh(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.pem",
        ]);
        sh(&["pkey", "-in", "rsa.pem", "-pubout", "-out", "rsa.pub.pem"]);
        sh(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ec.pem",
        ]);
        sh(&["pkey", "-in", "ec.pem", "-pubout", "-out", "ec.pub.pem"]);
        sh(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "other.pem",
        ]);
        // The pkcs7 recipient: a self-signed certificate for the RSA key.
        sh(&[
            "req",
            "-x509",
            "-new",
            "-key",
            "rsa.pem",
            "-subj",
            "/CN=ferry test recipient",
            "-days",
            "2",
            "-out",
            "rsa.crt",
        ]);
        for name in ["rsa.pem", "ec.pem", "other.pem"] {
            chmod(&d.join(name), 0o600);
        }
        Keys { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn tools_installed(test: &str) -> bool {
    tool_installed(test, "skopeo") && tool_installed(test, "openssl")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The manifest of the first entry of an OCI layout's index.
fn layout_manifest(layout: &Path) -> Value {
    let index = read_json(&layout.join("index.json"));
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    read_json(&layout.join("blobs/sha256").join(&digest[7..]))
}

fn layer_digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// A manifest stored in a ferry root, by the digest a command printed.
fn stored_manifest(root: &Path, digest: &str) -> Value {
    read_json(
        &root
            .join("blobs/sha256")
            .join(digest.trim().trim_start_matches("sha256:")),
    )
}

/// Writes the image whose manifest is `digest` in `root` as an OCI layout at `out` (tag
/// `latest`), letting `edit` change the manifest and layer bytes first; blobs are renamed to
/// their new digests as sha256sum computes them.
fn export_layout(root: &Path, digest: &str, out: &Path, edit: impl Fn(&mut Value, &mut Vec<u8>)) {
    let blobs = out.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut manifest = stored_manifest(root, digest);
    let config = manifest["config"]["digest"].as_str().unwrap()[7..].to_string();
    std::fs::copy(root.join("blobs/sha256").join(&config), blobs.join(&config)).unwrap();
    for i in 0..manifest["layers"].as_array().unwrap().len() {
        let hex = manifest["layers"][i]["digest"].as_str().unwrap()[7..].to_string();
        let mut bytes = std::fs::read(root.join("blobs/sha256").join(&hex)).unwrap();
        edit(&mut manifest["layers"][i], &mut bytes);
        put_blob(&blobs, &bytes, &mut manifest["layers"][i]);
    }
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let mut desc = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "annotations": {"org.opencontainers.image.ref.name": "latest"}});
    put_blob(&blobs, &bytes, &mut desc);
    std::fs::write(
        out.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [desc]}).to_string(),
    )
    .unwrap();
    std::fs::write(out.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Stores `bytes` under `blobs` and sets the descriptor's digest and size.
fn put_blob(blobs: &Path, bytes: &[u8], desc: &mut Value) {
    let tmp = blobs.join("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    let hex = sha256sum(&tmp);
    std::fs::rename(&tmp, blobs.join(&hex)).unwrap();
    desc["digest"] = format!("sha256:{hex}").into();
    desc["size"] = bytes.len().into();
}

fn busybox_layers() -> Vec<String> {
    layer_digests(&layout_manifest(&fixture("busybox")))
}

#[test]
fn skopeo_encrypted_image_for_one_and_two_recipients_decrypts_and_runs() {
    let test = "skopeo_encrypted_image_for_one_and_two_recipients_decrypts_and_runs";
    if !tools_installed(test) {
        return;
    }
    let keys = Keys::new();
    let work = tempfile::tempdir().unwrap();
    let src = format!("oci:{}", fixture("busybox").display());
    let one = work.path().join("one");
    let two = work.path().join("two");
    let rsa_pub = format!("jwe:{}", keys.path("rsa.pub.pem"));
    let ec_pub = format!("jwe:{}", keys.path("ec.pub.pem"));
    skopeo(&[
        "copy",
        "--encryption-key",
        &rsa_pub,
        &src,
        &format!("oci:{}:one", one.display()),
    ]);
    skopeo(&[
        "copy",
        "--encryption-key",
        &rsa_pub,
        "--encryption-key",
        &ec_pub,
        &src,
        &format!("oci:{}:two", two.display()),
    ]);
    assert!(layout_manifest(&two)["layers"][0]["mediaType"]
        .as_str()
        .unwrap()
        .ends_with("+encrypted"));

    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    ok(ferry(r).args(["load", "-i"]).arg(&one));
    ok(ferry(r).args(["load", "-i"]).arg(&two));
    let dec = ok(ferry(r).args([
        "image",
        "decrypt",
        "--key",
        &keys.path("rsa.pem"),
        "one:one",
        "dec1",
    ]));
    assert_eq!(layer_digests(&stored_manifest(r, &dec)), busybox_layers());
    let dec = ok(ferry(r).args([
        "image",
        "decrypt",
        "--key",
        &keys.path("ec.pem"),
        "two:two",
        "dec2",
    ]));
    assert_eq!(layer_digests(&stored_manifest(r, &dec)), busybox_layers());

    // The key that is not a recipient of `one` is named in the error, with the layer.
    let (code, _, stderr) = output(ferry(r).args([
        "image",
        "decrypt",
        "--key",
        &keys.path("ec.pem"),
        "one:one",
        "x",
    ]));
    assert_eq!(code, 1);
    let layer = &layer_digests(&layout_manifest(&one))[0];
    assert_eq!(
        stderr.trim(),
        format!("ferry: decrypt one:one: layer {layer} is encrypted and no key opens it (tried 1 key(s): EC P-256 (jwe); the layer has jwe recipients (RSA-OAEP))")
    );

    if !is_root() {
        eprintln!("SKIP the run part of {test}: needs root");
        return;
    }
    let stdout = ok(ferry(r).args([
        "run",
        "--rm",
        "--key",
        &keys.path("ec.pem"),
        "two:two",
        "sh",
        "-c",
        "echo $((6*7))",
    ]));
    assert_eq!(stdout, "42\n");
}

#[test]
fn ferry_encrypted_image_decrypts_in_skopeo_and_the_python_checker() {
    let test = "ferry_encrypted_image_decrypts_in_skopeo_and_the_python_checker";
    if !tools_installed(test) || !tool_installed(test, "python3") {
        return;
    }
    let keys = Keys::new();
    let root = busybox_root();
    let r = root.path();
    let rsa_pub = format!("jwe:{}", keys.path("rsa.pub.pem"));
    let ec_pub = format!("jwe:{}", keys.path("ec.pub.pem"));
    let enc = ok(ferry(r).args([
        "image",
        "encrypt",
        "--recipient",
        &rsa_pub,
        "--recipient",
        &ec_pub,
        "busybox",
        "busybox:enc",
    ]));
    let manifest = stored_manifest(r, &enc);
    let layer = &manifest["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"
    );
    assert_ne!(layer_digests(&manifest), busybox_layers());
    let original = layout_manifest(&fixture("busybox"));
    assert_eq!(
        manifest["config"], original["config"],
        "the config stays as it was"
    );

    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("enc");
    export_layout(r, &enc, &layout, |_, _| {});
    for key in ["rsa.pem", "ec.pem"] {
        let out = work.path().join(format!("dec-{key}"));
        skopeo(&[
            "copy",
            "--decryption-key",
            &keys.path(key),
            &format!("oci:{}:latest", layout.display()),
            &format!("oci:{}:latest", out.display()),
        ]);
        assert_eq!(
            layer_digests(&layout_manifest(&out)),
            busybox_layers(),
            "skopeo with {key}"
        );
    }

    let checker = common::workspace().join("../shared/peers/ocicrypt-decode.py");
    let out = Command::new("python3")
        .arg(&checker)
        .arg(&layout)
        .arg(keys.path("rsa.pem"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ocicrypt-decode.py refused: {report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains(&format!(
            "\"plaintext_digest\": \"{}\"",
            busybox_layers()[0]
        )),
        "{report}"
    );
}

/// One encrypted busybox image, exported with `edit` applied, loaded into a fresh root.
fn damaged(keys: &Keys, edit: impl Fn(&mut Value, &mut Vec<u8>)) -> tempfile::TempDir {
    let src = busybox_root();
    let rsa_pub = format!("jwe:{}", keys.path("rsa.pub.pem"));
    let enc = ok(ferry(src.path()).args([
        "image",
        "encrypt",
        "--recipient",
        &rsa_pub,
        "busybox",
        "enc",
    ]));
    let work = tempfile::tempdir().unwrap();
    export_layout(src.path(), &enc, &work.path().join("l"), edit);
    let root = tempfile::tempdir().unwrap();
    ok(ferry(root.path())
        .args(["load", "-i"])
        .arg(work.path().join("l")));
    root
}

/// Decrypting fails with `want` in the error, and leaves neither an image nor the plaintext.
fn assert_refused(root: &Path, key: &str, want: &str) {
    let (code, stdout, stderr) =
        output(ferry(root).args(["image", "decrypt", "--key", key, "l:latest", "dec"]));
    assert_eq!(code, 1, "stdout: {stdout}");
    assert!(stderr.contains(want), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    let (code, _, stderr) = output(ferry(root).args(["image", "inspect", "dec"]));
    assert_eq!(code, 1, "an image named dec was left: {stderr}");
    let plain = &busybox_layers()[0][7..];
    assert!(
        !common::blobs(root).iter().any(|b| b == plain),
        "plaintext stored"
    );
}

#[test]
fn altered_truncated_or_retagged_layers_fail_the_hmac_and_unpack_nothing() {
    let test = "altered_truncated_or_retagged_layers_fail_the_hmac_and_unpack_nothing";
    if !tools_installed(test) {
        return;
    }
    let keys = Keys::new();
    let key = keys.path("rsa.pem");
    let hmac =
        "integrity check failed: HMAC mismatch: the encrypted layer was altered or truncated";

    let flipped = damaged(&keys, |_, bytes| bytes[1000] ^= 0x01);
    assert_refused(flipped.path(), &key, hmac);
    let truncated = damaged(&keys, |_, bytes| bytes.truncate(bytes.len() - 100));
    assert_refused(truncated.path(), &key, hmac);
    let retagged = damaged(&keys, |layer, _| {
        let fake = "eyJjaXBoZXIiOiJBRVNfMjU2X0NUUl9ITUFDX1NIQTI1NiIsImhtYWMiOiJBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBPSIsImNpcGhlcm9wdGlvbnMiOnt9fQ==";
        layer["annotations"]["org.opencontainers.image.enc.pubopts"] = fake.into();
    });
    assert_refused(retagged.path(), &key, hmac);
    let wrong = damaged(&keys, |_, _| {});
    assert_refused(wrong.path(), &keys.path("other.pem"), "is encrypted and no key opens it (tried 1 key(s): RSA (jwe, pkcs7); the layer has jwe recipients (RSA-OAEP))");

    if !is_root() {
        eprintln!("SKIP the run part of {test}: needs root");
        return;
    }
    let (code, _, stderr) =
        output(ferry(flipped.path()).args(["run", "--rm", "--key", &key, "l:latest", "true"]));
    assert_eq!(code, 125);
    assert!(stderr.contains(hmac), "{stderr}");
    let committed = flipped.path().join("snapshots/committed");
    let left: Vec<_> = std::fs::read_dir(&committed)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "a snapshot of the damaged layer was kept: {left:?}"
    );
}

#[test]
fn private_key_readable_by_others_is_refused() {
    if !tool_installed("private_key_readable_by_others_is_refused", "openssl") {
        return;
    }
    let keys = Keys::new();
    let root = busybox_root();
    let key = keys.path("rsa.pem");
    chmod(Path::new(&key), 0o644);
    let (code, _, stderr) =
        output(ferry(root.path()).args(["image", "decrypt", "--key", &key, "busybox", "x"]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        format!("ferry: key {key}: permissions 0644 are too open: a private key must not be readable by group or others (chmod 600)")
    );
}

/// busybox with a second, uncompressed layer holding /secret.txt = `marker`, as an OCI layout.
fn marker_image(dir: &Path, marker: &str) -> PathBuf {
    let layout = dir.join("marker");
    let src = fixture("busybox");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut manifest = layout_manifest(&src);
    let config_hex = &manifest["config"]["digest"].as_str().unwrap()[7..];
    let mut config = read_json(&src.join("blobs/sha256").join(config_hex));
    for l in busybox_layers() {
        std::fs::copy(src.join("blobs/sha256").join(&l[7..]), blobs.join(&l[7..])).unwrap();
    }
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("secret.txt"), marker).unwrap();
    let tar = dir.join("layer.tar");
    let status = Command::new("tar")
        .args(["--owner=0", "--group=0", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&files)
        .arg("secret.txt")
        .status()
        .unwrap();
    assert!(status.success());
    let mut layer = json!({"mediaType": "application/vnd.oci.image.layer.v1.tar"});
    put_blob(&blobs, &std::fs::read(&tar).unwrap(), &mut layer);
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(layer["digest"].clone());
    manifest["layers"].as_array_mut().unwrap().push(layer);
    put_blob(
        &blobs,
        &serde_json::to_vec(&config).unwrap(),
        &mut manifest["config"],
    );
    let mut desc = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "annotations": {"org.opencontainers.image.ref.name": "marker"}});
    put_blob(&blobs, &serde_json::to_vec(&manifest).unwrap(), &mut desc);
    std::fs::write(
        layout.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [desc]}).to_string(),
    )
    .unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    layout
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let ty = entry.file_type().unwrap();
        if ty.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if ty.is_file() {
            let bytes = std::fs::read(&path).unwrap_or_default();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn encrypted_image_on_ipfs_leaks_no_plaintext_and_runs_only_with_the_key() {
    let test = "encrypted_image_on_ipfs_leaks_no_plaintext_and_runs_only_with_the_key";
    if !tool_installed(test, "openssl") {
        return;
    }
    if !is_root() {
        eprintln!("SKIP {test}: needs root (mounts and runc)");
        return;
    }
    let keys = Keys::new();
    let work = tempfile::tempdir().unwrap();
    let marker = format!("ferry-secret-marker-{}", std::process::id());
    let layout = marker_image(work.path(), &marker);

    let a = tempfile::tempdir().unwrap();
    ok(ferry(a.path()).args(["load", "-i"]).arg(&layout));
    let rsa_pub = format!("jwe:{}", keys.path("rsa.pub.pem"));
    let enc = ok(ferry(a.path()).args([
        "image",
        "encrypt",
        "--recipient",
        &rsa_pub,
        "marker:marker",
        "marker:enc",
    ]));
    let cid = ok(ferry(a.path()).args(["push", "-q", "ipfs://marker:enc"]))
        .trim()
        .to_string();
    let daemon = Daemon::start(a.path(), "/ip4/127.0.0.1/tcp/0", &[]);

    // B has no key: it pulls and keeps the whole image, and learns nothing of the secret.
    let b = tempfile::tempdir().unwrap();
    ok(ferry(b.path()).args(["pull", "-q", "--peer", &daemon.addr, &cid]));
    for layer in layer_digests(&stored_manifest(a.path(), &enc)) {
        assert!(
            common::blobs(b.path()).contains(&layer[7..].to_string()),
            "B lacks {layer}"
        );
    }
    assert_eq!(
        files_containing(b.path(), marker.as_bytes()),
        Vec::<PathBuf>::new()
    );
    let (code, _, stderr) =
        output(ferry(b.path()).args(["run", "--rm", &cid, "cat", "/secret.txt"]));
    assert_eq!(code, 125);
    assert!(
        stderr.contains("is encrypted and no key opens it (tried no key: none given with --key"),
        "{stderr}"
    );
    drop(daemon);

    let stdout = ok(ferry(b.path()).args([
        "run",
        "--rm",
        "--key",
        &keys.path("rsa.pem"),
        &cid,
        "cat",
        "/secret.txt",
    ]));
    assert_eq!(stdout, marker);
}

#[test]
fn password_protected_key_opens_with_its_password_only() {
    if !tool_installed(
        "password_protected_key_opens_with_its_password_only",
        "openssl",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let public = dir.path().join("key.pub.pem");
    let sh = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let k = key.to_str().unwrap();
    sh(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-aes-256-cbc",
        "-pass",
        "pass:hunter2",
        "-out",
        k,
    ]);
    sh(&[
        "pkey",
        "-in",
        k,
        "-passin",
        "pass:hunter2",
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    chmod(&key, 0o600);
    let root = busybox_root();
    let r = root.path();
    let recipient = format!("jwe:{}", public.display());
    ok(ferry(r).args([
        "image",
        "encrypt",
        "--recipient",
        &recipient,
        "busybox",
        "enc",
    ]));

    let (code, _, stderr) = output(ferry(r).args(["image", "decrypt", "--key", k, "enc", "dec"]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        format!("ferry: key {k}: the key is encrypted: give its password (FILE:PASSWORD)")
    );
    let (_, _, stderr) = output(ferry(r).args([
        "image",
        "decrypt",
        "--key",
        &format!("{k}:wrong"),
        "enc",
        "dec",
    ]));
    assert_eq!(
        stderr.trim(),
        format!("ferry: key {k}: cannot decrypt the key: wrong password?")
    );
    let dec = ok(ferry(r).args([
        "image",
        "decrypt",
        "--key",
        &format!("{k}:hunter2"),
        "enc",
        "dec",
    ]));
    assert_eq!(layer_digests(&stored_manifest(r, &dec)), busybox_layers());
}

#[test]
fn pkcs7_images_from_skopeo_decrypt_in_ferry_and_from_ferry_in_skopeo() {
    let test = "pkcs7_images_from_skopeo_decrypt_in_ferry_and_from_ferry_in_skopeo";
    if !tools_installed(test) {
        return;
    }
    let keys = Keys::new();
    let work = tempfile::tempdir().unwrap();
    let src = format!("oci:{}", fixture("busybox").display());
    let theirs = work.path().join("theirs");
    let cert = format!("pkcs7:{}", keys.path("rsa.crt"));
    skopeo(&[
        "copy",
        "--encryption-key",
        &cert,
        &src,
        &format!("oci:{}:theirs", theirs.display()),
    ]);
    let layer = &layout_manifest(&theirs)["layers"][0];
    assert!(layer["annotations"]["org.opencontainers.image.enc.keys.pkcs7"].is_string());

    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    ok(ferry(r).args(["load", "-i"]).arg(&theirs));
    // The key alone, the key with its certificate as nerdctl takes it, and as skopeo takes it.
    let forms: [&[&str]; 3] = [
        &["--key", &keys.path("rsa.pem")],
        &["--key", &keys.path("rsa.pem"), "--dec-recipient", &cert],
        &[
            "--key",
            &keys.path("rsa.pem"),
            "--key",
            &keys.path("rsa.crt"),
        ],
    ];
    for (i, form) in forms.iter().enumerate() {
        let dec = ok(ferry(r)
            .args(["image", "decrypt"])
            .args(*form)
            .args(["theirs:theirs", &format!("dec{i}")]));
        assert_eq!(
            layer_digests(&stored_manifest(r, &dec)),
            busybox_layers(),
            "{form:?}"
        );
    }
    // The key and its certificate in ROOT/keys are found without --key.
    std::fs::create_dir(r.join("keys")).unwrap();
    for name in ["rsa.pem", "rsa.crt"] {
        std::fs::copy(keys.path(name), r.join("keys").join(name)).unwrap();
    }
    chmod(&r.join("keys/rsa.pem"), 0o600);
    let dec = ok(ferry(r).args(["image", "decrypt", "theirs:theirs", "dec-dir"]));
    assert_eq!(layer_digests(&stored_manifest(r, &dec)), busybox_layers());
    std::fs::remove_dir_all(r.join("keys")).unwrap();

    let (code, _, stderr) = output(ferry(r).args([
        "image",
        "decrypt",
        "--key",
        &keys.path("other.pem"),
        "theirs:theirs",
        "x",
    ]));
    assert_eq!(code, 1);
    let digest = layer["digest"].as_str().unwrap();
    assert_eq!(
        stderr.trim(),
        format!("ferry: decrypt theirs:theirs: layer {digest} is encrypted and no key opens it (tried 1 key(s): RSA (jwe, pkcs7); the layer has pkcs7 recipients (1 RSA certificate(s)))")
    );

    // ferry's pkcs7 (and jwe, in the same layer) open in skopeo.
    let ours = busybox_root();
    let o = ours.path();
    let ec = format!("jwe:{}", keys.path("ec.pub.pem"));
    let enc = ok(ferry(o).args([
        "image",
        "encrypt",
        "--recipient",
        &format!("{cert},{ec}"),
        "busybox",
        "busybox:enc",
    ]));
    let manifest = stored_manifest(o, &enc);
    let annotations = manifest["layers"][0]["annotations"].as_object().unwrap();
    let mut names: Vec<&str> = annotations.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "org.opencontainers.image.enc.keys.jwe",
            "org.opencontainers.image.enc.keys.pkcs7",
            "org.opencontainers.image.enc.pubopts"
        ]
    );
    let layout = work.path().join("ours");
    export_layout(o, &enc, &layout, |_, _| {});
    let by_pkcs7 = work.path().join("by-pkcs7");
    skopeo(&[
        "copy",
        "--decryption-key",
        &keys.path("rsa.pem"),
        "--decryption-key",
        &keys.path("rsa.crt"),
        &format!("oci:{}:latest", layout.display()),
        &format!("oci:{}:latest", by_pkcs7.display()),
    ]);
    assert_eq!(layer_digests(&layout_manifest(&by_pkcs7)), busybox_layers());
    // Only the pkcs7 wrapping: skopeo must have used it, not the jwe one.
    let only_pkcs7 = work.path().join("only-pkcs7");
    export_layout(o, &enc, &only_pkcs7, |layer, _| {
        layer["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("org.opencontainers.image.enc.keys.jwe");
    });
    let out = work.path().join("dec-only-pkcs7");
    skopeo(&[
        "copy",
        "--decryption-key",
        &keys.path("rsa.pem"),
        "--decryption-key",
        &keys.path("rsa.crt"),
        &format!("oci:{}:latest", only_pkcs7.display()),
        &format!("oci:{}:latest", out.display()),
    ]);
    assert_eq!(layer_digests(&layout_manifest(&out)), busybox_layers());
}

/// An OpenPGP key made by gpg in a throwaway home: an RSA signing primary key with an RSA
/// encryption subkey, no passphrase. Exports `pub.asc` (armored), `sec.gpg` (binary) and
/// `sec.asc` (armored) beside the home.
struct GpgKey {
    dir: tempfile::TempDir,
}

impl GpgKey {
    fn new(uid: &str) -> GpgKey {
        let dir = tempfile::tempdir().unwrap();
        let key = GpgKey { dir };
        std::fs::create_dir(key.home()).unwrap();
        chmod(&key.home(), 0o700);
        key.gpg(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            uid,
            "rsa2048",
            "sign",
            "never",
        ]);
        let listing = key.gpg(&["--with-colons", "--list-keys", uid]);
        let fpr = listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:::::::::"))
            .unwrap()
            .trim_end_matches(':')
            .to_string();
        key.gpg(&[
            "--passphrase",
            "",
            "--quick-add-key",
            &fpr,
            "rsa2048",
            "encr",
            "never",
        ]);
        let export = |args: &[&str], name: &str| {
            let bytes = key.gpg_bytes(args);
            let path = key.dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            chmod(&path, 0o600);
        };
        export(&["--armor", "--export", uid], "pub.asc");
        export(&["--export-secret-keys", uid], "sec.gpg");
        export(&["--armor", "--export-secret-keys", uid], "sec.asc");
        key
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    fn gpg_bytes(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(self.home())
            .arg("--batch")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn gpg(&self, args: &[&str]) -> String {
        String::from_utf8(self.gpg_bytes(args)).unwrap()
    }

    /// The encryption subkey's ID, as ocicrypt's PKESK packets name it.
    fn subkey_id(&self) -> String {
        let listing = self.gpg(&["--with-colons", "--list-keys"]);
        listing
            .lines()
            .find(|l| l.starts_with("sub:"))
            .map(|l| l.split(':').nth(4).unwrap().to_string())
            .unwrap()
    }

    /// The primary key's ID.
    fn key_id(&self) -> String {
        let listing = self.gpg(&["--with-colons", "--list-keys"]);
        listing
            .lines()
            .find(|l| l.starts_with("pub:"))
            .map(|l| l.split(':').nth(4).unwrap().to_string())
            .unwrap()
    }
}

#[test]
fn pgp_images_from_skopeo_decrypt_in_ferry_and_from_ferry_in_skopeo_and_gpg() {
    let test = "pgp_images_from_skopeo_decrypt_in_ferry_and_from_ferry_in_skopeo_and_gpg";
    if !tools_installed(test) || !tool_installed(test, "gpg") {
        return;
    }
    let alice = GpgKey::new("Alice <alice@example.org>");
    let mallory = GpgKey::new("Mallory <mallory@example.org>");
    let work = tempfile::tempdir().unwrap();
    let theirs = work.path().join("theirs");
    // skopeo's ocicrypt finds pgp recipients with gpg, in GNUPGHOME.
    let out = Command::new("skopeo")
        .env("GNUPGHOME", alice.home())
        .args(["copy", "--encryption-key", "pgp:alice@example.org"])
        .arg(format!("oci:{}", fixture("busybox").display()))
        .arg(format!("oci:{}:theirs", theirs.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layer = layout_manifest(&theirs)["layers"][0].clone();
    assert!(layer["annotations"]["org.opencontainers.image.enc.keys.pgp"].is_string());

    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    ok(ferry(r).args(["load", "-i"]).arg(&theirs));
    for (i, key) in ["sec.gpg", "sec.asc"].iter().enumerate() {
        let dec = ok(ferry(r).args([
            "image",
            "decrypt",
            "--key",
            &alice.path(key),
            "theirs:theirs",
            &format!("dec{i}"),
        ]));
        assert_eq!(
            layer_digests(&stored_manifest(r, &dec)),
            busybox_layers(),
            "{key}"
        );
    }
    let (code, _, stderr) = output(ferry(r).args([
        "image",
        "decrypt",
        "--key",
        &mallory.path("sec.gpg"),
        "theirs:theirs",
        "x",
    ]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        format!(
            "ferry: decrypt theirs:theirs: layer {} is encrypted and no key opens it (tried 1 key(s): OpenPGP {} (pgp); the layer has pgp recipients ({}))",
            layer["digest"].as_str().unwrap(),
            mallory.key_id(),
            alice.subkey_id()
        )
    );

    // An OpenPGP secret key in ROOT/keys is found without --key.
    std::fs::create_dir(r.join("keys")).unwrap();
    std::fs::copy(alice.path("sec.asc"), r.join("keys/alice.asc")).unwrap();
    chmod(&r.join("keys/alice.asc"), 0o600);
    let dec = ok(ferry(r).args(["image", "decrypt", "theirs:theirs", "dec-dir"]));
    assert_eq!(layer_digests(&stored_manifest(r, &dec)), busybox_layers());

    // ferry's OpenPGP message: skopeo decrypts the image, gpg the wrapped options.
    let ours = busybox_root();
    let o = ours.path();
    for (recipient, gpg_home) in [
        (format!("pgp:{}", alice.path("pub.asc")), None),
        ("pgp:alice@example.org".to_string(), Some(alice.home())),
    ] {
        let mut cmd = ferry(o);
        cmd.args(["image", "encrypt", "--recipient", &recipient]);
        if let Some(home) = &gpg_home {
            cmd.arg("--gpg-homedir").arg(home);
        }
        let enc = ok(cmd.args(["busybox", "busybox:enc"]));
        let manifest = stored_manifest(o, &enc);
        let wrapped = manifest["layers"][0]["annotations"]["org.opencontainers.image.enc.keys.pgp"]
            .as_str()
            .unwrap()
            .to_string();
        let message = work.path().join("message.pgp");
        let der = base64_decode(&wrapped);
        std::fs::write(&message, der).unwrap();
        let options: Value =
            serde_json::from_str(&alice.gpg(&["--decrypt", &message.to_string_lossy()])).unwrap();
        assert_eq!(options["digest"], busybox_layers()[0], "{recipient}");

        let layout = work.path().join("ours");
        let _ = std::fs::remove_dir_all(&layout);
        export_layout(o, &enc, &layout, |_, _| {});
        let out = work.path().join("dec");
        let _ = std::fs::remove_dir_all(&out);
        skopeo(&[
            "copy",
            "--decryption-key",
            &alice.path("sec.gpg"),
            &format!("oci:{}:latest", layout.display()),
            &format!("oci:{}:latest", out.display()),
        ]);
        assert_eq!(
            layer_digests(&layout_manifest(&out)),
            busybox_layers(),
            "{recipient}"
        );
    }
}

/// Standard base64 with padding, as the annotations hold it.
fn base64_decode(text: &str) -> Vec<u8> {
    let out = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// The host's architecture in Go's words and another one.
fn host_and_other_arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "aarch64" => ("arm64", "amd64"),
        _ => ("amd64", "arm64"),
    }
}

/// busybox as a two-platform image: an OCI index (tag `multi`) of the busybox manifest for the
/// host's architecture and a copy whose config names the other architecture.
fn two_platform_image(dir: &Path) -> PathBuf {
    let (host, other) = host_and_other_arch();
    let layout = dir.join("multi");
    let src = fixture("busybox");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let manifest = layout_manifest(&src);
    let config_hex = &manifest["config"]["digest"].as_str().unwrap()[7..];
    let config = read_json(&src.join("blobs/sha256").join(config_hex));
    for l in busybox_layers() {
        std::fs::copy(src.join("blobs/sha256").join(&l[7..]), blobs.join(&l[7..])).unwrap();
    }
    let mut descs = Vec::new();
    for arch in [host, other] {
        let mut config = config.clone();
        config["architecture"] = arch.into();
        let mut manifest = manifest.clone();
        put_blob(
            &blobs,
            &serde_json::to_vec(&config).unwrap(),
            &mut manifest["config"],
        );
        let mut desc = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "platform": {"os": "linux", "architecture": arch}});
        put_blob(&blobs, &serde_json::to_vec(&manifest).unwrap(), &mut desc);
        descs.push(desc);
    }
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": descs});
    let mut desc = json!({"mediaType": "application/vnd.oci.image.index.v1+json",
        "annotations": {"org.opencontainers.image.ref.name": "multi"}});
    put_blob(&blobs, &serde_json::to_vec(&index).unwrap(), &mut desc);
    std::fs::write(
        layout.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [desc]}).to_string(),
    )
    .unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    layout
}

/// The platforms of a stored index and whether each manifest's layers are all encrypted.
fn index_platforms(root: &Path, digest: &str) -> Vec<(String, bool)> {
    let index = stored_manifest(root, digest);
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let manifest = stored_manifest(root, m["digest"].as_str().unwrap());
            let encrypted = manifest["layers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["mediaType"].as_str().unwrap().ends_with("+encrypted"));
            let arch = m["platform"]["architecture"].as_str().unwrap();
            (format!("linux/{arch}"), encrypted)
        })
        .collect()
}

#[test]
fn platform_flags_choose_the_manifests_as_nerdctl_does() {
    let test = "platform_flags_choose_the_manifests_as_nerdctl_does";
    if !tools_installed(test) {
        return;
    }
    let (host, other) = host_and_other_arch();
    let (host, other) = (format!("linux/{host}"), format!("linux/{other}"));
    let keys = Keys::new();
    let work = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    ok(ferry(r)
        .args(["load", "-i"])
        .arg(two_platform_image(work.path())));
    let recipient = format!("jwe:{}", keys.path("rsa.pub.pem"));
    let encrypt = |flags: &[&str], dst: &str| {
        ok(ferry(r)
            .args(["image", "encrypt", "--recipient", &recipient])
            .args(flags)
            .args(["multi:multi", dst]))
    };

    // The default is the host's platform only; the others are left out.
    let enc = encrypt(&[], "host");
    assert_eq!(index_platforms(r, &enc), [(host.clone(), true)]);
    let enc = encrypt(&["--platform", &other], "other");
    assert_eq!(index_platforms(r, &enc), [(other.clone(), true)]);
    let all = encrypt(&["--all-platforms"], "all");
    assert_eq!(
        index_platforms(r, &all),
        [(host.clone(), true), (other.clone(), true)]
    );
    let both = encrypt(&["--platform", &format!("{host},{other}")], "both");
    assert_eq!(
        index_platforms(r, &both),
        [(host.clone(), true), (other.clone(), true)]
    );

    let (code, _, stderr) = output(ferry(r).args([
        "image",
        "encrypt",
        "--recipient",
        &recipient,
        "--platform",
        "linux/s390x",
        "multi:multi",
        "x",
    ]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        "ferry: encrypt multi:multi: the image has no manifest for linux/s390x"
    );

    // Decrypt takes the same flags: the other platform only, then all.
    let dec = ok(ferry(r).args([
        "image",
        "decrypt",
        "--key",
        &keys.path("rsa.pem"),
        "--platform",
        &other,
        "all",
        "dec-other",
    ]));
    assert_eq!(index_platforms(r, &dec), [(other.clone(), false)]);
    let dec = ok(ferry(r).args([
        "image",
        "decrypt",
        "--key",
        &keys.path("rsa.pem"),
        "--all-platforms",
        "all",
        "dec-all",
    ]));
    assert_eq!(
        index_platforms(r, &dec),
        [(host.clone(), false), (other.clone(), false)]
    );
    let index = stored_manifest(r, &dec);
    for m in index["manifests"].as_array().unwrap() {
        let manifest = stored_manifest(r, m["digest"].as_str().unwrap());
        assert_eq!(layer_digests(&manifest), busybox_layers());
    }

    // Nothing to decrypt is an error, not a copy.
    let (code, _, stderr) = output(ferry(r).args([
        "image",
        "decrypt",
        "--key",
        &keys.path("rsa.pem"),
        "multi:multi",
        "x",
    ]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        format!("ferry: decrypt multi:multi: the image has no encrypted layers for {host}")
    );
}

#[test]
fn keyless_node_stores_and_serves_an_encrypted_image_but_cannot_unpack_or_run_it() {
    let test = "keyless_node_stores_and_serves_an_encrypted_image_but_cannot_unpack_or_run_it";
    if !tool_installed(test, "openssl") {
        return;
    }
    if !is_root() {
        eprintln!("SKIP {test}: needs root (snapshots and runc)");
        return;
    }
    let keys = Keys::new();
    let work = tempfile::tempdir().unwrap();
    let marker = format!("ferry-keyless-marker-{}", std::process::id());
    let layout = marker_image(work.path(), &marker);

    let a = tempfile::tempdir().unwrap();
    ok(ferry(a.path()).args(["load", "-i"]).arg(&layout));
    let recipients = format!(
        "jwe:{},pkcs7:{}",
        keys.path("ec.pub.pem"),
        keys.path("rsa.crt")
    );
    let enc = ok(ferry(a.path()).args([
        "image",
        "encrypt",
        "--recipient",
        &recipients,
        "marker:marker",
        "marker:enc",
    ]));
    let layers = layer_digests(&stored_manifest(a.path(), &enc));
    let cid = ok(ferry(a.path()).args(["push", "-q", "ipfs://marker:enc"]))
        .trim()
        .to_string();
    let daemon_a = Daemon::start(a.path(), "/ip4/127.0.0.1/tcp/0", &[]);

    // B has no key: pull --unpack stores the image, then refuses to unpack its first layer.
    let b = tempfile::tempdir().unwrap();
    let (code, _, stderr) =
        output(ferry(b.path()).args(["pull", "-q", "--unpack", "--peer", &daemon_a.addr, &cid]));
    assert_eq!(code, 1);
    let no_key = format!(
        "layer {} is encrypted and no key opens it (tried no key: none given with --key, none found in /etc/ferry/ocicrypt/keys or {}/keys; the layer has jwe recipients (ECDH-ES+A256KW), pkcs7 recipients (1 RSA certificate(s)))",
        layers[0],
        b.path().display()
    );
    assert_eq!(stderr.trim(), format!("ferry: unpack {cid}: {no_key}"));
    for layer in &layers {
        assert!(
            common::blobs(b.path()).contains(&layer[7..].to_string()),
            "B lacks {layer}"
        );
    }
    assert_eq!(
        files_containing(b.path(), marker.as_bytes()),
        Vec::<PathBuf>::new()
    );
    drop(daemon_a);

    // C fetches the image from B alone (A is gone), and with the key unpacks and runs it.
    let daemon_b = Daemon::start(b.path(), "/ip4/127.0.0.1/tcp/0", &[]);
    let c = tempfile::tempdir().unwrap();
    ok(ferry(c.path()).args([
        "pull",
        "-q",
        "--unpack",
        "--key",
        &keys.path("rsa.pem"),
        "--peer",
        &daemon_b.addr,
        &cid,
    ]));
    let committed = std::fs::read_dir(c.path().join("snapshots/committed"))
        .unwrap()
        .count();
    assert_eq!(committed, layers.len(), "one snapshot per layer");
    drop(daemon_b);
    // The snapshots are there, but running still needs the key.
    let (code, _, stderr) =
        output(ferry(c.path()).args(["run", "--rm", &cid, "cat", "/secret.txt"]));
    assert_eq!(code, 125);
    assert_eq!(
        stderr.trim(),
        format!(
            "ferry: run: {}",
            no_key.replace(
                &b.path().display().to_string(),
                &c.path().display().to_string()
            )
        )
    );
    let stdout = ok(ferry(c.path()).args([
        "run",
        "--rm",
        "--key",
        &keys.path("rsa.pem"),
        &cid,
        "cat",
        "/secret.txt",
    ]));
    assert_eq!(stdout, marker);

    // B still cannot run it.
    let (code, _, stderr) =
        output(ferry(b.path()).args(["run", "--rm", &cid, "cat", "/secret.txt"]));
    assert_eq!(code, 125);
    assert_eq!(stderr.trim(), format!("ferry: run: {no_key}"));
}
