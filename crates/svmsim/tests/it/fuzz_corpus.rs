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
/// svmsim keeps on purpose: under kfd's rule up to 7.2 each of those
/// inputs breaks the PTE invariant, and with every mapped GPU unmapped it
/// holds. 7.3's `bitmap_mapped` (unmap every GPU that mapped the range)
/// closes it too, except where kfd skips a GPU outside the hive of the
/// GPU holding the VRAM when it remaps (`svm_range_map_to_gpus`: "cannot
/// map to device"), which 7.3 still does: that input stays broken.
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
        let run = |kernel: &str, every: bool| {
            let config = svm_core::config::Config {
                kernel: kernel.parse().unwrap(),
                unmap_every_mapped_gpu: every,
                ..Default::default()
            };
            svmsim::fuzz::attr_api_as(&bytes, &config)
        };
        let kfd = run("7.2", false).unwrap_err();
        assert!(kfd.contains("invariant gpu_pt broken"), "{name}: {kfd}");
        run("7.2", true).unwrap();
        run("7.3", true).unwrap_or_else(|e| panic!("{name} under 7.3 + every: {e}"));
        let hive_skip = name == "kfd-stale-pte-3e577b95af81d5c71fb83a9b42dc3aa8fe8ac286";
        match run("7.3", false) {
            Ok(()) => assert!(!hive_skip, "{name}: 7.3 closed the hive skip too"),
            Err(e) => assert!(
                hive_skip && e.contains("invariant gpu_pt broken"),
                "{name} under 7.3: {e}"
            ),
        }
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
