//! The fuzz targets' seeds and every input that ever crashed one, replayed
//! through the same entry points (`svmsim::fuzz`) on stable Rust. With
//! `SVMSIM_FUZZ_CORPUS=1`, libFuzzer's local working corpus too.

use std::path::Path;

use crate::root;

#[test]
fn every_seed_and_regression_runs_clean() {
    let with_corpus = std::env::var_os("SVMSIM_FUZZ_CORPUS").is_some();
    let mut ran = 0;
    for (name, entry) in svmsim::fuzz::TARGETS {
        let mut dirs = vec!["seeds", "regressions"];
        if with_corpus {
            dirs.push("corpus");
        }
        for dir in dirs {
            let d = root().join("fuzz").join(dir).join(name);
            let Ok(files) = std::fs::read_dir(&d) else {
                continue;
            };
            let mut files: Vec<_> = files.map(|e| e.unwrap().path()).collect();
            files.sort();
            for f in files.iter().filter(|f| f.is_file()) {
                replay(name, entry, f);
                ran += 1;
            }
        }
    }
    // Every target has seeds: an empty directory would pass vacuously.
    assert!(
        ran >= svmsim::fuzz::TARGETS.len() * 2,
        "only {ran} inputs found"
    );
}

/// The attr_api fuzzer's first finds were kfd's stale-PTE bug, which
/// svmsim keeps on purpose: under kfd's rule each of those inputs breaks
/// the PTE invariant, and with every mapped GPU unmapped it holds.
#[test]
fn the_fuzzers_kfd_stale_pte_finds_reproduce_the_kernel_bug() {
    let d = root().join("fuzz/regressions/attr_api");
    let mut n = 0;
    for f in std::fs::read_dir(&d).unwrap() {
        let f = f.unwrap().path();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("kfd-stale-pte-") {
            continue;
        }
        let bytes = std::fs::read(&f).unwrap();
        let kfd = svmsim::fuzz::attr_api_as(&bytes, false).unwrap_err();
        assert!(kfd.contains("invariant gpu_pt broken"), "{name}: {kfd}");
        svmsim::fuzz::attr_api_as(&bytes, true).unwrap();
        n += 1;
    }
    assert!(n >= 1, "no kfd-stale-pte inputs in {}", d.display());
}

fn replay(name: &str, entry: svmsim::fuzz::Entry, f: &Path) {
    let bytes = std::fs::read(f).unwrap();
    if std::panic::catch_unwind(|| entry(&bytes)).is_err() {
        panic!(
            "fuzz target {name} fails on {}; repeat with: cargo +nightly fuzz run {name} {}",
            f.display(),
            f.display()
        );
    }
}
