//! The `svmsim` binary.
//!
//! Exit codes: 0 when every expectation held, 1 when one did not, 2 for a bad
//! scenario file or command line, 3 when an invariant broke (a bug in svmsim).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use svmsim::{report, scenario};

/// An executable model of amdkfd shared virtual memory.
#[derive(Debug, Parser)]
#[command(name = "svmsim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario file (or the built-in default) and print what happened.
    Scenario {
        /// The scenario TOML file; without it, the built-in default runs
        /// (KFDTest's SplitSystemRangeTest cases).
        file: Option<PathBuf>,
        /// Print the per-op results and the final state as JSON (schema in docs/scenario-json.md).
        #[arg(long)]
        json: bool,
        /// Write the SMI event stream (kfd text format) to this file.
        #[arg(long, value_name = "FILE")]
        events: Option<PathBuf>,
        /// Run under this GPU-fault policy instead of the scenario's:
        /// whole-range, partial or partial-migrate-whole-map.
        #[arg(long, value_name = "NAME")]
        policy: Option<String>,
        /// Interleave concurrent work (in-flight faults, deferred and restore
        /// work) with the ops in the order this seed picks, overriding the
        /// scenario's `seed`; the same seed replays the same run.
        #[arg(long, value_name = "N")]
        seed: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Scenario {
            file,
            json,
            events,
            policy,
            seed,
        } => run_scenario(file, json, events, policy, seed),
    }
}

fn run_scenario(
    file: Option<PathBuf>,
    json: bool,
    events: Option<PathBuf>,
    policy: Option<String>,
    seed: Option<u64>,
) -> ExitCode {
    let policy = match policy
        .as_deref()
        .map(|p| (p, svm_core::policy::Policy::from_name(p)))
    {
        None => None,
        Some((_, Some(p))) => Some(p),
        Some((name, None)) => {
            eprintln!(
                "error: unknown policy {name:?}; expected whole-range, partial or partial-migrate-whole-map"
            );
            return ExitCode::from(2);
        }
    };
    let (name, text) = match &file {
        None => (
            scenario::DEFAULT.0.to_string(),
            scenario::DEFAULT.1.to_string(),
        ),
        Some(path) => match std::fs::read_to_string(path) {
            Ok(t) => (path.display().to_string(), t),
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let result = scenario::parse(&name, &text).and_then(|mut sc| {
        if let Some(p) = policy {
            sc.system.policy = p;
        }
        if seed.is_some() {
            sc.system.seed = seed;
        }
        scenario::run(&sc)
    });
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = events
        && let Err(e) = std::fs::write(&path, report::events(&r))
    {
        eprintln!("error: cannot write {}: {e}", path.display());
        return ExitCode::from(2);
    }
    if json {
        print!("{}", report::json(&r));
    } else {
        print!("{}", report::text(&r));
    }
    if r.violation.is_some() {
        ExitCode::from(3)
    } else if r.mismatches > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
