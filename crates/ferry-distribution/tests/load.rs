//! `load_archive` on archives skopeo writes from the busybox layout, and on hostile ones.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};

use common::{busybox_layout, have, sha256, skopeo, store};
use ferry_distribution::{load_archive, ErrorKind, LoadedImage};
use ferry_oci::{media, Descriptor, Digest};

const BUSYBOX: &str = "docker.io/library/busybox:latest";

fn tools() -> bool {
    have(&["skopeo", "umoci", "busybox"])
}

/// The busybox manifest as skopeo reads it from the layout (the outside reference).
fn layout_manifest() -> Vec<u8> {
    let src = format!("oci:{}:latest", busybox_layout().display());
    skopeo(&["inspect", "--raw", &src])
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

fn digest_at(v: &serde_json::Value) -> Digest {
    v["digest"].as_str().unwrap().parse().unwrap()
}

/// Writes the busybox layout with skopeo to `dest` (`oci-archive:` or `docker-archive:`).
fn skopeo_archive(dest: &str) {
    let src = format!("oci:{}:latest", busybox_layout().display());
    skopeo(&["copy", "-q", &src, dest]);
}

fn assert_nothing_bound(store: &ferry_content::Store) {
    assert!(store.list_images().unwrap().is_empty());
}

#[test]
fn load_oci_archive_names_a_tag_after_the_file() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("busybox.tar");
    skopeo_archive(&format!("oci-archive:{}:latest", archive.display()));
    let manifest = layout_manifest();
    let (_dir, store) = store();

    let loaded = load_archive(&store, &archive).unwrap();

    let mut want = Descriptor::new(
        media::OCI_MANIFEST,
        Digest::of(&manifest),
        manifest.len() as u64,
    );
    want.annotations
        .insert("org.opencontainers.image.ref.name".into(), "latest".into());
    assert_eq!(
        loaded,
        vec![LoadedImage {
            name: Some(BUSYBOX.into()),
            target: want.clone()
        }]
    );
    assert_eq!(loaded[0].target.digest.to_string(), sha256(&manifest));
    assert_eq!(store.get_image(BUSYBOX).unwrap().unwrap().target, want);
    assert_eq!(store.read_blob(&want.digest).unwrap(), manifest);
    let m = json(&manifest);
    for d in [&m["config"], &m["layers"][0]] {
        let bytes = store.read_blob(&digest_at(d)).unwrap();
        assert_eq!(sha256(&bytes), d["digest"].as_str().unwrap());
    }
    // The extraction directory is gone; the blobs were moved out of it, not copied.
    assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
}

#[test]
fn load_docker_archive_writes_a_schema2_manifest_over_the_stored_layers() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("saved.tar");
    skopeo_archive(&format!(
        "docker-archive:{}:busybox:latest",
        archive.display()
    ));
    let oci = json(&layout_manifest());
    let (_dir, store) = store();

    let loaded = load_archive(&store, &archive).unwrap();

    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].name.as_deref(), Some(BUSYBOX));
    let target = &loaded[0].target;
    assert_eq!(target.media_type, media::DOCKER_MANIFEST);
    let platform = target.platform.as_ref().unwrap();
    assert_eq!(
        (platform.os.as_str(), platform.architecture.as_str()),
        ("linux", "amd64")
    );
    assert_eq!(
        target.annotations.get("io.containerd.image.name").unwrap(),
        BUSYBOX
    );
    assert_eq!(
        target
            .annotations
            .get("org.opencontainers.image.ref.name")
            .unwrap(),
        "latest"
    );

    // The config is the OCI image's config, byte for byte; the layer is stored uncompressed
    // (skopeo's docker-archive decompresses), so its digest is the config's diff ID.
    let config_digest = digest_at(&oci["config"]);
    let config = json(&store.read_blob(&config_digest).unwrap());
    let diff_id: Digest = config["rootfs"]["diff_ids"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let layer = store.read_blob(&diff_id).unwrap();
    assert_eq!(sha256(&layer), diff_id.to_string());
    let manifest = store.read_blob(&target.digest).unwrap();
    assert_eq!(sha256(&manifest), target.digest.to_string());
    assert_eq!(
        String::from_utf8(manifest).unwrap(),
        format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{}\",\"config\":{{\"mediaType\":\"{}\",\
             \"digest\":\"{config_digest}\",\"size\":{}}},\"layers\":[{{\"mediaType\":\"{}\",\
             \"digest\":\"{diff_id}\",\"size\":{}}}]}}",
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG,
            oci["config"]["size"],
            media::DOCKER_LAYER_TAR,
            layer.len()
        )
    );
    assert_eq!(store.get_image(BUSYBOX).unwrap().unwrap().target, *target);
}

/// A copy of the busybox layout at `<dir>/busybox`.
fn layout_copy(dir: &Path) -> PathBuf {
    let copy = dir.join("busybox");
    common::run(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(busybox_layout())
            .arg(&copy),
    );
    copy
}

#[test]
fn load_layout_directory_copies_blobs_and_leaves_it_intact() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = layout_copy(tmp.path());
    let manifest = layout_manifest();
    let files_before = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .count();
    let (_dir, store) = store();

    let loaded = load_archive(&store, &layout).unwrap();

    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].name.as_deref(), Some(BUSYBOX));
    assert_eq!(loaded[0].target.digest.to_string(), sha256(&manifest));
    let layer = digest_at(&json(&manifest)["layers"][0]);
    assert_eq!(
        store.read_blob(&layer).unwrap(),
        std::fs::read(layout.join("blobs/sha256").join(layer.hex())).unwrap()
    );
    assert_eq!(
        std::fs::read_dir(layout.join("blobs/sha256"))
            .unwrap()
            .count(),
        files_before
    );
}

/// Rewrites the tar `src` into `dst`, letting `edit` change each file's bytes by name.
fn rewrite_tar(src: &Path, dst: &Path, edit: impl Fn(&str, &mut Vec<u8>)) {
    let mut archive = tar::Archive::new(std::fs::File::open(src).unwrap());
    let mut builder = tar::Builder::new(std::fs::File::create(dst).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        edit(&name, &mut data);
        let mut header = entry.header().clone();
        if header.entry_type().is_file() {
            header.set_size(data.len() as u64);
            header.set_cksum();
        }
        builder.append(&header, data.as_slice()).unwrap();
    }
    builder.finish().unwrap();
}

#[test]
fn load_refuses_an_oci_archive_with_a_flipped_layer_byte_and_binds_nothing() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.tar");
    skopeo_archive(&format!("oci-archive:{}:latest", good.display()));
    let layer = digest_at(&json(&layout_manifest())["layers"][0]);
    let mut flipped =
        std::fs::read(busybox_layout().join("blobs/sha256").join(layer.hex())).unwrap();
    flipped[1000] ^= 0xff;
    let bad = tmp.path().join("busybox.tar");
    let layer_name = format!("blobs/sha256/{}", layer.hex());
    rewrite_tar(&good, &bad, |name, data| {
        if name == layer_name {
            data[1000] ^= 0xff;
        }
    });
    let (_dir, store) = store();

    let err = load_archive(&store, &bad).unwrap_err();

    assert_eq!(
        err.to_string(),
        format!(
            "load {}: blob {layer}: digest mismatch: archive holds {}",
            bad.display(),
            sha256(&flipped)
        )
    );
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_nothing_bound(&store);
    assert!(!store.has_blob(&layer));
}

#[test]
fn load_refuses_a_docker_archive_whose_layer_does_not_match_its_diff_id() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.tar");
    skopeo_archive(&format!("docker-archive:{}:busybox:latest", good.display()));
    let bad = tmp.path().join("bad.tar");
    rewrite_tar(&good, &bad, |name, data| {
        if name.ends_with(".tar") && !data.is_empty() {
            data[600] ^= 0xff;
        }
    });
    let (_dir, store) = store();

    let err = load_archive(&store, &bad).unwrap_err();

    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("load {}: layer ", bad.display())),
        "{text}"
    );
    assert!(text.contains("does not match diff ID sha256:"), "{text}");
    assert_nothing_bound(&store);
}

/// A tar with one file entry whose raw name is `name` (bypassing the tar crate's checks).
fn hostile_tar(path: &Path, name: &[u8]) {
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    header.set_size(5);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    builder.append(&header, &b"evil\n"[..]).unwrap();
    builder.finish().unwrap();
}

#[test]
fn load_refuses_tar_entries_with_dotdot_or_absolute_names() {
    let tmp = tempfile::tempdir().unwrap();
    let (_dir, store) = store();
    for (name, why) in [
        ("../../../escaped-by-ferry-test", "contains .."),
        ("/tmp/escaped-by-ferry-test", "is absolute"),
    ] {
        let archive = tmp.path().join("hostile.tar");
        hostile_tar(&archive, name.as_bytes());

        let err = load_archive(&store, &archive).unwrap_err();

        assert_eq!(
            err.to_string(),
            format!("load {}: tar entry {name} {why}", archive.display())
        );
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
    assert!(!store.root().join("escaped-by-ferry-test").exists());
    assert!(!store
        .root()
        .parent()
        .unwrap()
        .join("escaped-by-ferry-test")
        .exists());
    assert!(!Path::new("/tmp/escaped-by-ferry-test").exists());
    assert_nothing_bound(&store);
}

#[test]
fn load_refuses_an_index_json_over_4_mib() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("big");
    std::fs::create_dir(&layout).unwrap();
    let mut index = b"{\"schemaVersion\":2,\"manifests\":[]".to_vec();
    index.resize(5 << 20, b' ');
    index.push(b'}');
    std::fs::write(layout.join("index.json"), index).unwrap();
    let (_dir, store) = store();

    let err = load_archive(&store, &layout).unwrap_err();

    assert_eq!(
        err.to_string(),
        format!(
            "load {}: index.json: larger than the 4194304 byte limit",
            layout.display()
        )
    );
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn load_names_the_missing_blob_and_binds_nothing() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = layout_copy(tmp.path());
    let config = digest_at(&json(&layout_manifest())["config"]);
    std::fs::remove_file(layout.join("blobs/sha256").join(config.hex())).unwrap();
    let (_dir, store) = store();

    let err = load_archive(&store, &layout).unwrap_err();

    assert_eq!(
        err.to_string(),
        format!(
            "load {}: blob {config} is not in the archive",
            layout.display()
        )
    );
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_nothing_bound(&store);
}

#[test]
fn load_refuses_a_missing_layer_that_only_has_ipfs_urls() {
    if !tools() {
        return;
    }
    // what `skopeo copy docker://ENDPOINT/ipfs/CID oci:DIR` writes: skopeo skips layers with
    // urls, so the layout has the manifest and config but not the layer
    let tmp = tempfile::tempdir().unwrap();
    let layout = layout_copy(tmp.path());
    let blobs = layout.join("blobs/sha256");
    let mut manifest = json(&layout_manifest());
    let layer = digest_at(&manifest["layers"][0]);
    manifest["layers"][0]["urls"] = serde_json::json!(["ipfs://bafkreiexample"]);
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = sha256(&bytes);
    std::fs::write(blobs.join(digest.strip_prefix("sha256:").unwrap()), &bytes).unwrap();
    std::fs::remove_file(blobs.join(layer.hex())).unwrap();
    let mut index = json(&std::fs::read(layout.join("index.json")).unwrap());
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = bytes.len().into();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let (_dir, store) = store();

    let err = load_archive(&store, &layout).unwrap_err();

    assert_eq!(
        err.to_string(),
        format!(
            "load {}: blob {layer} is not in the archive",
            layout.display()
        )
    );
    assert_nothing_bound(&store);
}

#[test]
fn load_docker_archive_follows_layer_symlinks_of_the_old_layout() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let direct = tmp.path().join("direct.tar");
    skopeo_archive(&format!(
        "docker-archive:{}:busybox:latest",
        direct.display()
    ));
    // skopeo also writes `<id>/layer.tar -> ../<diff id>.tar`; name the layer by that link, as
    // `docker save` before Docker 25 did.
    let linked = tmp.path().join("linked.tar");
    rewrite_tar(&direct, &linked, |name, data| {
        if name == "manifest.json" {
            let mut v = json(data);
            let layer = v[0]["Layers"][0].as_str().unwrap().to_string();
            let link = layer_link(&direct, &layer);
            v[0]["Layers"][0] = link.into();
            *data = serde_json::to_vec(&v).unwrap();
        }
    });
    let (_d1, first) = store();
    let (_d2, second) = store();

    let want = load_archive(&first, &direct).unwrap();
    let got = load_archive(&second, &linked).unwrap();

    assert_eq!(got, want);
}

/// The name of the symlink entry in `archive` that points at `target`.
fn layer_link(archive: &Path, target: &str) -> String {
    let mut archive = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let link = entry
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned());
        if link.is_some_and(|l| l.ends_with(target)) {
            return entry.path().unwrap().to_string_lossy().into_owned();
        }
    }
    panic!("no symlink to {target}");
}

#[test]
fn load_reads_a_gzip_compressed_archive() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("busybox.tar");
    skopeo_archive(&format!("oci-archive:{}:latest", plain.display()));
    let gz = tmp.path().join("busybox.tar.gz");
    let mut encoder =
        flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), Default::default());
    std::io::copy(&mut std::fs::File::open(&plain).unwrap(), &mut encoder).unwrap();
    encoder.finish().unwrap();
    let (_d1, first) = store();
    let (_d2, second) = store();

    let want = load_archive(&first, &plain).unwrap();
    let got = load_archive(&second, &gz).unwrap();

    assert_eq!(got, want);
    assert_eq!(got[0].name.as_deref(), Some(BUSYBOX));
}
