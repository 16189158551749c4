//! The suite benchmark as a cargo bench target: `svmsim bench` (every
//! built-in workload, each in a process of its own, beside baselines
//! measured in the same run; see `svmsim::suite` and
//! `docs/performance.md`), at the sizes in `SVMSIM_BENCH_SIZES`
//! (default `64MiB,1GiB`). Extra words after `--` go to `svmsim bench`:
//!
//! ```sh
//! cargo bench -p svmsim --bench suite
//! SVMSIM_BENCH_SIZES=64MiB cargo bench -p svmsim --bench suite -- --workloads stream,bfs
//! ```

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let sizes = std::env::var("SVMSIM_BENCH_SIZES").unwrap_or_else(|_| "64MiB,1GiB".into());
    // cargo passes `--bench` (and a filter, if given): not ours.
    let extra: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let status = Command::new(env!("CARGO_BIN_EXE_svmsim"))
        .args(["bench", "--sizes", &sizes])
        .args(&extra)
        .status();
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("svmsim bench: {s}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("cannot run svmsim bench: {e}");
            ExitCode::FAILURE
        }
    }
}
