//! Bad input never panics: random text, and example files with lines cut or tokens swapped.
//!
//! The seeds are fixed, so a failure reproduces by running the test again.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use svmsim::scenario;

use crate::root;

/// Parses and, if that succeeds, runs; any panic fails the test.
fn parse_and_run(text: &str) {
    if let Ok(sc) = scenario::parse("fuzz.toml", text) {
        // A run may fail on a label whose mmap failed; it must not panic.
        let _ = scenario::run(&sc, svm_sim::check::Schedule::every_step());
    }
}

fn runner(seed: u64) -> TestRunner {
    let config = Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    };
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

#[test]
fn random_text_never_panics() {
    let mut r = runner(0x5eed_0002);
    let strat = "[\\[\\]a-z_=\"{}, 0-9+\\-\n.]{0,200}";
    r.run(&strat, |s| {
        parse_and_run(&s);
        Ok(())
    })
    .unwrap_or_else(|e| {
        panic!("SEED=0x5eed0002: {e}\nnote: reproduce with `cargo nextest run -p svmsim random_text_never_panics`")
    });
}

/// Tokens that change meaning in interesting ways.
const SWAPS: &[&str] = &[
    "0",
    "-1",
    "0xffffffff",
    "4294967296",
    "\"\"",
    "\"gpu9\"",
    "\"1 page\"",
    "\"0x1001\"",
    "true",
    "[]",
    "{}",
    "\"buf-1MiB\"",
    "\"EFAULT\"",
    "99999999999999999999",
    "\"c1+0x7fffffffffffffff\"",
];

#[test]
fn mutated_examples_never_panic() {
    let files: Vec<String> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let mut r = runner(0x5eed_0003);
    let strat = (
        0..files.len(),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        0..3u8,
    );
    r.run(&strat, |(f, line, swap, how)| {
        let lines: Vec<&str> = files[f].lines().collect();
        let at = line.index(lines.len());
        let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        match how {
            // Cut a line.
            0 => {
                out.remove(at);
            }
            // Replace a value after `=`.
            1 => {
                if let Some(eq) = out[at].find('=') {
                    out[at] = format!("{}= {}", &out[at][..eq], swap.get(SWAPS));
                }
            }
            // Duplicate a line.
            _ => out.insert(at, out[at].clone()),
        }
        parse_and_run(&out.join("\n"));
        Ok(())
    })
    .unwrap_or_else(|e| {
        panic!("SEED=0x5eed0003: {e}\nnote: reproduce with `cargo nextest run -p svmsim mutated_examples_never_panic`")
    });
}
