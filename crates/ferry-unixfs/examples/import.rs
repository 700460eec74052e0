//! Imports a file with the UnixFS importer alone (no store, no copy) and prints its CID and
//! the time taken: the importer's own rate, for `scripts/bench-import.sh`.
//!
//! Usage: `cargo run -p ferry-unixfs --example import FILE`

use std::io::Read;
use std::time::Instant;

use ferry_unixfs::{Importer, Profile};

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: import FILE");
        std::process::exit(2);
    };
    let started = Instant::now();
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("import: {path}: {e}");
            std::process::exit(1);
        }
    };
    let mut importer = Importer::new(Profile::KUBO_V1);
    let mut buf = vec![0u8; 1 << 20];
    let mut blocks = 0u64;
    let mut sink = |_: ferry_unixfs::ImportedBlock<'_>| blocks += 1;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => importer.write(&buf[..n], &mut sink),
            Err(e) => {
                eprintln!("import: {path}: {e}");
                std::process::exit(1);
            }
        }
    }
    let (cid, size) = importer.finish(&mut sink);
    let secs = started.elapsed().as_secs_f64();
    println!("{cid}");
    eprintln!("{size} bytes, {blocks} blocks in {secs:.3}s");
}
