//! The `svmsim` binary: argument parsing and the subcommands' plumbing.
//! What the subcommands run lives in the library (`svmsim::*`).
//!
//! Exit codes: 0 success; 1 a scenario expectation or a workload's result
//! check failed; 2 a usage error (bad flag, value, file or TOML); 3 an
//! invariant broke (a bug in svmsim); 4 an internal or I/O error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use svm_core::config::{Config, Driver};
use svmsim::exec::{self, Capture, Outcome, RunSpec, Status};
use svmsim::explain;
use svmsim::smi::{self, EventsFormat, RunEvents};
use svmsim::{
    chrome, demo, html, input, output, progress::Progress, report, runs, scenario, size, sweep,
};

/// Writes to stdout; a reader that went away (`svmsim run | head`) ends
/// the program quietly rather than as an error.
fn write_out(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write as _;
    let mut o = std::io::stdout().lock();
    let r = o
        .write_fmt(args)
        .and_then(|()| if newline { o.write_all(b"\n") } else { Ok(()) })
        .and_then(|()| o.flush());
    if let Err(e) = r {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(i32::from(EXIT_INTERNAL));
    }
}

macro_rules! outln {
    () => { write_out(format_args!(""), true) };
    ($($t:tt)*) => { write_out(format_args!($($t)*), true) };
}

macro_rules! outp {
    ($($t:tt)*) => { write_out(format_args!($($t)*), false) };
}

const EXIT_EXPECT: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_INVARIANT: u8 = 3;
const EXIT_INTERNAL: u8 = 4;

/// An executable model of amdkfd shared virtual memory: run GPU workloads
/// on simulated GPUs and compare SVM migration policies.
#[derive(Debug, Parser)]
#[command(
    name = "svmsim",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SVMSIM_REVISION"), ")"),
    about,
    after_help = "Start with `svmsim run`: the built-in demo compares the three fault policies on two GPUs.\n\
                  Exit codes: 0 ok, 1 expectation or result check failed, 2 usage error, 3 invariant broken, 4 internal or I/O error."
)]
struct Cli {
    /// Print only errors and the names of files written.
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Print per-GPU state, counters and wall time too.
    #[arg(long, short, global = true)]
    verbose: bool,
    /// Host memory runs may take at once [default: half of this machine's];
    /// a run estimated above it is refused before it starts.
    #[arg(long, global = true, value_name = "SIZE", value_parser = size::parse)]
    max_host_mem: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one workload (or a scenario .toml file) under one configuration; with neither, the demo.
    #[command(after_help = "Examples:\n  \
        svmsim run                                   # the demo: shared buffer, 2 GPUs, three policies\n  \
        svmsim run stream --size 1GiB --policy whole-range\n  \
        svmsim run gups --xnack off                  # eager mapping: no retry faults\n  \
        svmsim run stream --xnack off --prefetch --oversubscribe 1.25   # eviction stops the queues\n  \
        svmsim run stencil2d --oversubscribe 1.25 --report out/\n  \
        svmsim run bfs --timeline bfs.json --events bfs-smi --record bfs.trace   # bfs-smi/gpu-0x1002.smi\n  \
        svmsim run stream --set victim_policy=largest --set default_granularity=4\n  \
        svmsim run examples/munmap-race.toml --seed 3  # a scenario file, as `svmsim scenario` runs it")]
    Run {
        /// The workload (`svmsim workloads`) or a scenario file (FILE.toml); without it, the demo runs.
        workload: Option<String>,
        /// The fault policy [default: partial] (the same as --set policy=NAME).
        #[arg(long, value_name = "NAME", value_parser = policy_names())]
        policy: Option<String>,
        #[command(flatten)]
        opts: RunOpts,
        #[command(flatten)]
        out: OutOpts,
        /// Record the run's access trace to this file (replay it with `svmsim replay`).
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
        /// Write the run's host cost to this file as JSON: wall seconds and peak RSS bytes (what `svmsim bench` reads).
        #[arg(long, value_name = "FILE")]
        host_stats: Option<PathBuf>,
    },
    /// Run one workload under several policies, granularities or XNACK modes; one table, with ratios.
    #[command(after_help = "Examples:\n  \
        svmsim compare stream                         # kfd's three policies\n  \
        svmsim compare gemm --size 4MiB --granularities 0,4,9   # policies x granularities\n  \
        svmsim compare ping-pong --xnack-modes on,off --policies partial\n  \
        svmsim compare bfs --baseline partial --csv > bfs.csv")]
    Compare {
        /// The workload (`svmsim workloads`).
        workload: String,
        /// Policies, comma separated; `kfd` (kfd's three), or `all` (every registered policy: `svmsim config` lists them); `--set policy=X` alone compares X; each replaces a --config file's.
        #[arg(long, default_value = "kfd", value_name = "LIST")]
        policies: String,
        /// Drivers, comma separated (kfd,uvm,xe), or `all`: each with its own policy,
        /// defaults and profile family (a --profile puts them all on one machine);
        /// the ratios divide by the first.
        #[arg(long, value_name = "LIST", conflicts_with = "driver")]
        drivers: Option<String>,
        /// Granularities (log2 pages), comma separated.
        #[arg(long, value_name = "LIST")]
        granularities: Option<String>,
        /// XNACK modes to compare, comma separated: on,off (default: --xnack's).
        #[arg(long, value_name = "LIST", value_enum, value_delimiter = ',')]
        xnack_modes: Option<Vec<OnOff>>,
        /// The run the ratios divide by: its label or its row number (1-based).
        #[arg(long, value_name = "RUN")]
        baseline: Option<String>,
        #[command(flatten)]
        opts: RunOpts,
        #[command(flatten)]
        out: OutOpts,
        /// Runs at once (default: the machine's cores).
        #[arg(long, short = 'j', value_name = "N")]
        jobs: Option<usize>,
    },
    /// Run a parameter grid from a TOML file, in parallel; optionally one shard of it.
    #[command(after_help = "Examples:\n  \
        svmsim sweep examples/sweeps/policies.toml\n  \
        svmsim sweep grid.toml --shard 3/8 --out shard-3.json    # one job of a cluster array\n  \
        svmsim merge shard-*.json --csv > all.csv\n\n\
        On Slurm: #SBATCH --array=1-8, then\n  \
        svmsim sweep grid.toml --shard ${SLURM_ARRAY_TASK_ID}/8 --out shard-${SLURM_ARRAY_TASK_ID}.json")]
    Sweep {
        /// The sweep file (docs/sweep.md).
        file: PathBuf,
        /// Run only shard K of N (1-based), for a job array.
        #[arg(long, value_name = "K/N")]
        shard: Option<String>,
        /// Write this shard's results here, for `svmsim merge`.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Runs at once (default: the machine's cores).
        #[arg(long, short = 'j', value_name = "N")]
        jobs: Option<usize>,
        #[command(flatten)]
        config: ConfigOpts,
        #[command(flatten)]
        output: OutOpts,
    },
    /// Join the result files of a sweep's shards into one table.
    #[command(
        after_help = "Example:\n  svmsim merge shard-1.json shard-2.json --json > sweep.json"
    )]
    Merge {
        /// The shards' `--out` files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        out: OutOpts,
    },
    /// What changed between two result files (--json output): settings,
    /// and every metric with its ratio. Exit 0: the same; 1: they differ.
    #[command(after_help = "Example:\n  \
        svmsim run stream --json > a.json\n  \
        svmsim run stream --set default_granularity=6 --json > b.json\n  \
        svmsim diff a.json b.json")]
    Diff {
        /// The result file taken as the base.
        a: PathBuf,
        /// The result file compared with it.
        b: PathBuf,
        /// Print the diff as JSON (`svmsim.diff/1`).
        #[arg(long)]
        json: bool,
    },
    /// Import a real run (kfd SMI messages, rocprofv3's KFD trace as JSON
    /// or rocpd, an Nsight Systems SQLite export) as a trace to replay under
    /// any driver and policy (docs/import.md).
    #[command(after_help = "Examples:\n  \
        svmsim import smi-dir -o app.trace && svmsim replay app.trace --driver uvm\n  \
        svmsim import gpu-0x1002.smi -o app.trace --json\n  \
        svmsim import out/run_results.json -o app.trace      # rocprofv3 --kfd-trace\n  \
        svmsim import report.sqlite -o app.trace             # nsys export --type sqlite\n  \
        svmsim replay app.trace --against out/run_results.json   # real against simulated")]
    Import {
        /// A directory of per-GPU files (gpu-0x<gpu_id>.smi, kfd's form of
        /// --events), one such file, a file of lines prefixed by their
        /// gpu_id (the prefixed form), a rocprofv3 results JSON, a rocpd
        /// database, or an Nsight Systems SQLite export.
        input: PathBuf,
        /// The trace to write (docs/trace.md).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// The input's format.
        #[arg(long, value_enum, default_value = "auto")]
        format: ImportFormat,
        /// The gpu_id of a per-GPU file whose name does not give it.
        #[arg(long, value_name = "HEX", value_parser = gpu_id_hex)]
        gpu_id: Option<u32>,
        /// The application's buffers, a CSV file (`address,bytes` header,
        /// then one allocation a line): taken as the trace's buffers
        /// instead of clustering the pages the messages name.
        #[arg(long, value_name = "FILE")]
        allocations: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replay a recorded access trace (binary, or CSV with --csv-input).
    #[command(
        after_help = "Examples:\n  \
        svmsim run bfs --record bfs.trace && svmsim replay bfs.trace --policy whole-range\n  \
        svmsim replay accesses.csv --csv-input --profile mi300x --gpus 2",
        // A trace fixes what its workload's flags would choose: they are
        // refused if given (below), and not listed.
        mut_arg("size", |a| a.hide(true)),
        mut_arg("iters", |a| a.hide(true)),
        mut_arg("oversubscribe", |a| a.hide(true)),
        mut_arg("prefetch", |a| a.hide(true))
    )]
    Replay {
        /// The trace file (docs/trace.md).
        trace: PathBuf,
        /// The file is the CSV form.
        #[arg(long)]
        csv_input: bool,
        /// The fault policy [default: partial] (the same as --set policy=NAME).
        #[arg(long, value_name = "NAME", value_parser = policy_names())]
        policy: Option<String>,
        /// Compare with the real run: what the trace was imported from
        /// (any input `svmsim import` reads), row by row.
        #[arg(long, value_name = "SOURCE")]
        against: Option<PathBuf>,
        /// The gpu_id of a --against file whose name does not give it.
        #[arg(long, value_name = "HEX", value_parser = gpu_id_hex, requires = "against")]
        against_gpu_id: Option<u32>,
        #[command(flatten)]
        opts: RunOpts,
        #[command(flatten)]
        out: OutOpts,
    },
    /// Run a scenario file (or the built-in default) and print what happened.
    #[command(after_help = "Examples:\n  \
        svmsim scenario                                    # KFDTest's SplitSystemRangeTest cases\n  \
        svmsim scenario examples/munmap-race.toml --seed 7 --events race-smi   # one file per GPU\n  \
        svmsim scenario examples/vram-pressure.toml --events all.smi --events-format prefixed")]
    Scenario {
        /// The scenario TOML file; without it, the built-in default runs.
        file: Option<PathBuf>,
        /// Print the per-op results and the final state as JSON (docs/scenario-json.md).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        smi: SmiOpts,
        /// Run under this policy instead of the scenario's.
        #[arg(long, value_name = "NAME", value_parser = policy_names())]
        policy: Option<String>,
        /// Interleave concurrent work in the order this seed picks (overrides the scenario's).
        #[arg(long, value_name = "N")]
        seed: Option<u64>,
        /// Run the file in this XNACK mode: the driver boots so, and every
        /// process starts so (overrides `[system] xnack` and each
        /// `[[process]] xnack`; `set_xnack` ops still run).
        #[arg(long, value_enum, value_name = "on|off")]
        xnack: Option<OnOff>,
        /// Check the invariants after every op, however large the state. By
        /// default they are checked after every op while the state is small
        /// and less often beyond, so that checking stays linear in the ops.
        #[arg(long)]
        check_every_op: bool,
        #[command(flatten)]
        config: ConfigOpts,
    },
    /// List every knob of a run (`--set KEY=VALUE`, `--config FILE`, a scenario's `[config]`, a sweep's fields).
    #[command(after_help = "Examples:\n  \
        svmsim config                                      # every key, its default, unit and meaning\n  \
        svmsim config --set victim_policy=largest --toml > my.toml   # a config file to start from\n  \
        svmsim run stream --config my.toml")]
    Config {
        /// Print the resolved values as a TOML config file instead of the table.
        #[arg(long)]
        toml: bool,
        #[command(flatten)]
        config: ConfigOpts,
    },
    /// List every failure injection site: its kernel function, default errno and what kfd does when it fails (`--inject`).
    #[command(after_help = "Examples:\n  \
        svmsim inject-sites\n  \
        svmsim run stream --inject vram_alloc=0.2 --inject hmm_busy@3   # a table of what each site did\n  \
        svmsim scenario f.toml --seed 7 --inject copy_to_ram=0.5:EIO    # the same seed fails the same calls")]
    InjectSites {
        /// JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// List the built-in profiles, one line each.
    #[command(
        after_help = "Examples:\n  svmsim profiles\n  svmsim run stream --profile mi300x\n  \
        svmsim run stream --profile my-gpu.toml    # a profile file of your own (docs/profiles.md)"
    )]
    Profiles,
    /// List the built-in workloads, one line each.
    #[command(
        after_help = "Examples:\n  svmsim workloads\n  svmsim run gemm --size 16MiB --iters 3\n  \
        svmsim compare bfs --granularities 0,9"
    )]
    Workloads,
    /// The suite benchmark: every built-in workload at each size, each in a process of its own, with baselines measured in the same run.
    #[command(
        after_help = "Prints per run: simulated accesses, faults, bytes migrated, host wall time, accesses per         host second and its ratio to the TLB-hit kernel's rate, peak RSS and RSS / footprint; then how each         workload's host time grew with its data. Baselines (same run, same machine): the TLB-hit kernel,         host memcpy, and the simulator's migration of the same bytes. Runs go one at a time, so that they         do not share the cores they are timed on. docs/performance.md has the targets and a table.

        Examples:
          svmsim bench                                  # every workload at 64MiB and 1GiB (gemm at 64MiB)
          svmsim bench --sizes 64MiB --workloads stream,bfs
          svmsim bench --all --json > suite.json        # gemm at 1GiB too (64x the work of 64MiB)"
    )]
    Bench {
        /// Sizes, comma separated.
        #[arg(long, default_value = "64MiB,1GiB", value_name = "LIST")]
        sizes: String,
        /// Workloads, comma separated [default: all of them].
        #[arg(long, value_name = "LIST")]
        workloads: Option<String>,
        /// Iterations of each run.
        #[arg(long, default_value_t = 2)]
        iters: u32,
        /// Run gemm above 64MiB too (its work is O(n^3): 1GiB is 64x the accesses, about an hour here).
        #[arg(long)]
        all: bool,
        /// Print the baselines and rows as JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// What one run is, besides its workload and policy.
#[derive(Debug, Args)]
struct RunOpts {
    /// Data size: 4096, 512KiB, 64MiB, 1GiB.
    #[arg(long, default_value = "64MiB", value_parser = size::parse)]
    size: u64,
    /// Iterations (launches, time steps, rounds).
    #[arg(long, default_value_t = 2)]
    iters: u32,
    /// A built-in profile (`svmsim profiles`) or a profile .toml file
    /// [default: mi210, or mi250x for two GPUs or more (the workload's or --gpus)].
    #[arg(long)]
    profile: Option<String>,
    /// GPUs in the machine (default: what the workload needs).
    #[arg(long)]
    gpus: Option<usize>,
    /// VRAM per GPU (default: the profile's).
    #[arg(long, value_parser = size::parse)]
    vram: Option<u64>,
    /// Size VRAM so the footprint is this share of it: 1.10, 1.25, 2.
    #[arg(long, value_name = "FACTOR")]
    oversubscribe: Option<f64>,
    /// Migration granularity for every SET_ATTR, log2 pages (9 = 2MiB).
    #[arg(long, value_name = "LOG2")]
    granularity: Option<u32>,
    /// Boot with XNACK (retry faults) on or off.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    xnack: OnOff,
    /// Prefetch every buffer to the GPU it is registered for (PREFETCH_LOC), as
    /// XNACK-off applications do; with --oversubscribe, VRAM eviction then stops
    /// and restores the queues.
    #[arg(long)]
    prefetch: bool,
    /// Keep no bytes (phantom mode): faults, migrations, mappings and timing run as
    /// with real data, results are not checked (status `ok, unchecked`), and the
    /// footprint may be far beyond the host's memory (first-touch, stream, ...).
    #[arg(long)]
    phantom: bool,
    /// The seed of the workload's choices and of the interleaving.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    config: ConfigOpts,
}

/// What `svmsim import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ImportFormat {
    /// Told from the content: a directory is SMI files, a rocprofiler
    /// JSON document and an SQLite database are theirs, anything else
    /// SMI lines.
    Auto,
    /// kfd SMI event lines (`AMDKFD_IOC_SMI_EVENTS`), per GPU or prefixed.
    KfdSmi,
    /// rocprofv3 --kfd-trace JSON (rocprofiler-sdk 1.2+), or the 2024
    /// rocprofiler-sdk-json-tool's PAGE_MIGRATION records.
    Rocprofv3Json,
    /// Nsight Systems' SQLite export (nsys export --type sqlite) with
    /// unified-memory fault tracing.
    NsysSqlite,
    /// rocprofv3's SQLite output (--output-format rocpd) with its KFD
    /// records (rocprofiler-sdk 1.3+).
    Rocpd,
}

impl ImportFormat {
    fn chosen(self) -> Option<svmsim::import::Format> {
        match self {
            ImportFormat::Auto => None,
            ImportFormat::KfdSmi => Some(svmsim::import::Format::KfdSmi),
            ImportFormat::Rocprofv3Json => Some(svmsim::import::Format::Rocprofv3Json),
            ImportFormat::NsysSqlite => Some(svmsim::import::Format::NsysSqlite),
            ImportFormat::Rocpd => Some(svmsim::import::Format::Rocpd),
        }
    }
}

/// A gpu_id in hexadecimal, `0x` optional.
fn gpu_id_hex(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0x"), 16)
        .map_err(|_| format!("{s:?} is not a hexadecimal gpu_id"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    /// On.
    On,
    /// Off.
    Off,
}

/// The drivers, for `--driver`'s help and "did you mean".
fn driver_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(Driver::ALL.map(Driver::name))
}

/// The registered fault policies, for `--policy`'s help and "did you mean".
fn policy_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(svm_core::policy::names())
}

/// The knobs of a run, from the command line.
#[derive(Debug, Args)]
struct ConfigOpts {
    /// Whose driver the run models: kfd, uvm, xe (the same as --set driver=NAME): its
    /// policy, its tunables and its profile family, each still overridable.
    #[arg(long, value_name = "NAME", value_parser = driver_names())]
    driver: Option<String>,
    /// Set a knob (`svmsim config` lists them); repeatable, applied in order after --config and --policy.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Read knobs from a TOML file (as `svmsim config --toml` writes it).
    #[arg(long = "config", value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// Inject failures at a kernel failure point: SITE=P (each call with probability P), SITE@N (the Nth call) or SITE/N (every Nth call), optionally :ERRNO; repeatable, added to the `inject` knob's rules; draws come from the seed (`svmsim inject-sites` lists the sites).
    #[arg(long = "inject", value_name = "RULE")]
    inject: Vec<String>,
}

impl ConfigOpts {
    /// `base` with the file's knobs, then `--driver`, then `policy`, then
    /// each `--set` (a driver's defaults never replace a key given).
    fn resolve(&self, base: Config, policy: Option<&str>) -> Result<Config, Fail> {
        let mut c = base;
        if let Some(path) = &self.config_file {
            let text = input::read_text(path, input::MAX_CONFIG_BYTES, "config file")
                .map_err(|e| usage(format!("--config: {e}")))?;
            c = scenario::parse::config_file(&path.display().to_string(), &text, c)
                .map_err(|e| usage(format!("--config: {e}")))?;
        }
        if let Some(d) = &self.driver {
            c.set("driver", d)
                .map_err(|e| usage(format!("--driver: {e}")))?;
        }
        if let Some(p) = policy {
            c.set("policy", p)
                .map_err(|e| usage(format!("--policy: {e}")))?;
        }
        for kv in &self.set {
            c.assign(kv)
                .map_err(|e| usage(format!("--set {kv}: {e}")))?;
        }
        for text in &self.inject {
            let rule = svm_core::inject::Rule::parse(text)
                .map_err(|e| usage(format!("--inject {text}: {e}")))?;
            let mut rules = c.inject.clone();
            rules.push(rule);
            c.set("inject", &svm_core::inject::show_rules(&rules))
                .map_err(|_| {
                    usage(format!(
                        "--inject {text}: more than {} rules",
                        svm_core::inject::MAX_RULES
                    ))
                })?;
        }
        Ok(c)
    }

    fn given(&self) -> bool {
        !self.set.is_empty()
            || self.config_file.is_some()
            || self.driver.is_some()
            || !self.inject.is_empty()
    }

    /// The files these options read.
    fn inputs(&self) -> Vec<&Path> {
        self.config_file.iter().map(PathBuf::as_path).collect()
    }
}

impl RunOpts {
    /// The files these options read: a profile file, a config file.
    fn inputs(&self) -> Vec<&Path> {
        let mut v = self.config.inputs();
        if let Some(p) = &self.profile
            && Path::new(p).is_file()
        {
            v.push(Path::new(p));
        }
        v
    }

    /// The spec of a run of `workload` (a built-in one, or `trace:FILE` of
    /// `traces`).
    fn spec(
        &self,
        workload: &str,
        policy: Option<&str>,
        traces: &exec::Traces,
    ) -> Result<RunSpec, Fail> {
        let config = self.config.resolve(Config::default(), policy)?;
        let gpus = self
            .gpus
            .unwrap_or_else(|| exec::gpus_needed(workload, traces));
        Ok(RunSpec {
            workload: workload.into(),
            size: self.size,
            iters: self.iters,
            profile: self
                .profile
                .clone()
                .unwrap_or_else(|| exec::default_profile(config.driver, gpus).to_owned()),
            gpus: self.gpus,
            vram: self.vram,
            oversubscribe: self.oversubscribe,
            granularity: self.granularity,
            xnack: self.xnack == OnOff::On,
            prefetch: self.prefetch,
            seed: self.seed,
            config,
            phantom: self.phantom,
        })
    }
}

/// Where the SMI event log goes, for every command that writes one.
#[derive(Debug, Args)]
struct SmiOpts {
    /// Write the kfd SMI event log here: a directory with one file per GPU
    /// (docs/events.md), or one file with --events-format prefixed.
    #[arg(long, value_name = "PATH")]
    events: Option<PathBuf>,
    /// How --events lays the log out.
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        default_value_t,
        requires = "events"
    )]
    events_format: EventsFormat,
}

impl SmiOpts {
    /// The log's path and layout, when one is asked for.
    fn target(&self) -> Option<(&PathBuf, EventsFormat)> {
        self.events.as_ref().map(|p| (p, self.events_format))
    }
}

/// Where results go besides the table.
#[derive(Debug, Args)]
struct OutOpts {
    /// Print the results as JSON (schema svmsim.runs/3, docs/runs-json.md) instead of the table.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print the results as CSV (same schema) instead of the table.
    #[arg(long)]
    csv: bool,
    #[command(flatten)]
    smi: SmiOpts,
    /// Write each run's kernels as CSV to this file: a row per kernel
    /// (label, kernel, its GPU's node and gpu_id, then what it did, as the
    /// JSON's `kernels`).
    #[arg(long, value_name = "FILE")]
    kernels_csv: Option<PathBuf>,
    /// Write a Chrome trace-event timeline (opens in ui.perfetto.dev) to this file.
    #[arg(long, value_name = "FILE")]
    timeline: Option<PathBuf>,
    /// Write an HTML report with plots into this directory.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// After the results, say what happened: where the time went, the
    /// buffer that cost most, thrashing, a command to try next (default:
    /// on under the table, off for --json and --csv; JSON then carries it
    /// per run, CSV prints it on stderr).
    #[arg(long, value_name = "on|off")]
    explain: Option<OnOff>,
    /// The table's columns: keys separated by commas, each a metric's
    /// name in the JSON and CSV (faults_served, bytes_sys,
    /// fault_queued_ns, ...) or one of the table's own (status,
    /// kernel_ns, kernel_time_ratio, lock_wait, stale_dma_pages); +KEY,...
    /// adds to the default table; `all` shows every metric. A table too
    /// wide to read across is printed on its side.
    #[arg(long, value_name = "LIST", value_parser = parse_columns, conflicts_with_all = ["json", "csv"])]
    columns: Option<Columns>,
}

/// The table's columns (`--columns`).
#[derive(Clone, Debug)]
struct Columns(Vec<runs::Col>);

fn parse_columns(s: &str) -> Result<Columns, String> {
    runs::parse_columns(s).map(Columns)
}

/// Makes sure `path` can be written before hours are spent on the run;
/// creates and truncates nothing (the file is replaced whole at the end).
fn writable(path: &Path) -> Result<(), Fail> {
    output::check_file(path).map_err(usage)
}

impl OutOpts {
    /// Whether runs explain themselves (`--explain`).
    fn explains(&self) -> bool {
        self.explain
            .map_or(!self.json && !self.csv, |e| e == OnOff::On)
    }

    /// What these options write.
    fn targets(&self) -> Vec<output::Target<'_>> {
        let mut v = Vec::new();
        if let Some((p, format)) = self.smi.target() {
            v.push(smi::target(p, format));
        }
        if let Some(p) = &self.timeline {
            v.push(output::Target::File(p));
        }
        if let Some(p) = &self.kernels_csv {
            v.push(output::Target::File(p));
        }
        if let Some(d) = &self.report {
            v.push(output::Target::Dir {
                dir: d,
                writes: html::writes,
            });
        }
        v
    }

    /// Checks every output path up front (exit 2 if one cannot be
    /// written, or would overwrite one of `inputs` or another output;
    /// `more` are the command's other outputs).
    fn preflight(&self, inputs: &[&Path], more: &[output::Target<'_>]) -> Result<(), Fail> {
        let mut targets = self.targets();
        targets.extend_from_slice(more);
        output::refuse_clashes(inputs, &targets).map_err(usage)?;
        if let Some((p, format)) = self.smi.target() {
            smi::check(p, format).map_err(usage)?;
        }
        if let Some(p) = &self.timeline {
            writable(p)?;
        }
        if let Some(p) = &self.kernels_csv {
            writable(p)?;
        }
        if let Some(d) = &self.report {
            // The directory is made when the outputs are written; its
            // parent must take it, or it must be a directory already.
            if d.exists() && !d.is_dir() {
                return Err(usage(format!(
                    "--report {}: it is a file; --report names a directory",
                    d.display()
                )));
            }
            if d.is_dir() {
                writable(&d.join("index.html"))?;
            } else {
                writable(d)?;
            }
        }
        Ok(())
    }

    fn capture(&self) -> Capture {
        let timeline = self.timeline.is_some() || self.report.is_some();
        Capture {
            events: self.smi.events.is_some() || timeline,
            timeline,
            trace: false,
        }
    }
}

/// `svmsim bench`: the baselines, then each workload at each size in a
/// child process of this binary, one at a time (see `svmsim::suite`).
fn bench(
    cli: &Cli,
    sizes: &str,
    workloads: Option<&str>,
    iters: u32,
    all: bool,
    json: bool,
) -> Result<u8, Fail> {
    let sizes: Vec<u64> = sizes
        .split(',')
        .map(|s| size::parse(s.trim()).map_err(|e| usage(format!("--sizes: {s}: {e}"))))
        .collect::<Result<_, _>>()?;
    let names: Vec<&str> = match workloads {
        None => svm_workloads::ALL.iter().map(|w| w.name()).collect(),
        Some(list) => list.split(',').map(str::trim).collect(),
    };
    if let Some(bad) = names.iter().find(|n| svm_workloads::by_name(n).is_none()) {
        return Err(usage(format!(
            "--workloads: no workload {bad} (`svmsim workloads` lists them)"
        )));
    }
    if sizes.is_empty() || iters == 0 || iters > exec::MAX_ITERS {
        return Err(usage(format!(
            "--sizes needs a size, --iters 1..={}",
            exec::MAX_ITERS
        )));
    }
    let exe = std::env::current_exe().map_err(|e| io(format!("cannot find this binary: {e}")))?;
    let scratch = std::env::temp_dir().join(format!("svmsim-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)
        .map_err(|e| io(format!("cannot create {}: {e}", scratch.display())))?;
    let say = |s: &str| {
        if !cli.quiet {
            eprintln!("{s}");
        }
    };
    say("measuring the baselines ...");
    let base = svmsim::suite::baselines().map_err(io)?;
    let mut rows = Vec::new();
    for &s in &sizes {
        for n in &names {
            // gemm's work grows as the cube of its side: above 64 MiB it
            // is the suite's whole run time.
            if *n == "gemm" && s > 64 << 20 && !all {
                say(&format!(
                    "gemm {}: skipped (O(n^3) work, {:.0}x the accesses of 64MiB; --all runs it)",
                    size::show(s),
                    (s as f64 / f64::from(64u32 << 20)).powf(1.5)
                ));
                continue;
            }
            let r = svmsim::suite::run_workload(&exe, n, s, iters, &scratch, cli.max_host_mem)
                .map_err(io)?;
            say(&format!(
                "{n} {}: {} in {:.2} s",
                size::show(s),
                r.status,
                r.wall_s
            ));
            rows.push(r);
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    if json {
        let v = serde_json::json!({ "schema": "svmsim.bench/1", "baselines": base, "rows": rows });
        outln!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| io(e.to_string()))?
        );
    } else {
        outp!("{}", svmsim::suite::table(&base, &rows));
    }
    Ok(if rows.iter().all(|r| r.status == "ok") {
        0
    } else {
        EXIT_EXPECT
    })
}

/// A failure, with its exit code.
struct Fail(u8, String);

fn usage(msg: impl Into<String>) -> Fail {
    Fail(EXIT_USAGE, msg.into())
}

fn io(msg: impl Into<String>) -> Fail {
    Fail(EXIT_INTERNAL, msg.into())
}

fn spec_fail(e: exec::SpecError) -> Fail {
    let flag = match e.field {
        "size" | "iters" | "profile" | "gpus" | "vram" | "oversubscribe" | "granularity"
        | "granularities" | "policies" | "policy" | "seed" => {
            format!("--{}", e.field)
        }
        key if svm_core::config::knob(key).is_some() => format!("--set {key}"),
        other => other.to_owned(),
    };
    usage(format!("{flag}: {}", e.message))
}

fn jobs(j: Option<usize>) -> Result<usize, Fail> {
    match j {
        Some(0) => Err(usage(
            "--jobs 0: give at least 1 (or leave it out for one per core)",
        )),
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism().map_or(1, usize::from)),
    }
}

/// Runs `specs` in parallel with a progress bar.
/// The host memory runs may take: `--max-host-mem`, or half the machine's.
fn host_budget(cli: &Cli) -> u64 {
    cli.max_host_mem.unwrap_or_else(exec::default_host_budget)
}

/// Checks that `specs` fit the host before any runs: each run's estimated
/// memory within the budget and its work within `MAX_PAGE_TOUCHES`.
/// Returns how many may run at once (at most `jobs`, fewer if the largest
/// of them together would not fit).
fn fit_host(
    specs: &[RunSpec],
    traces: &exec::Traces,
    jobs: usize,
    cli: &Cli,
) -> Result<usize, Fail> {
    let budget = host_budget(cli);
    let mut needs = Vec::with_capacity(specs.len());
    for s in specs {
        let n = exec::host_need(s, traces).map_err(spec_fail)?;
        if n.page_touches > exec::MAX_PAGE_TOUCHES {
            return Err(usage(format!(
                "--size {} --iters {}: the run would touch {} pages ({} pages of footprint, {} times), \
                 above {}; give fewer iterations or a smaller size",
                size::show(s.size),
                s.iters,
                n.page_touches,
                n.page_touches / u64::from(s.iters.max(1)),
                s.iters,
                exec::MAX_PAGE_TOUCHES
            )));
        }
        if n.bytes > budget {
            return Err(usage(format!(
                "--size {}: the run needs about {} of host memory (its footprint three times over, \
                 its page bookkeeping and TLBs), above the budget of {}{}; use a smaller --size, \
                 --phantom for footprints beyond host memory, or --max-host-mem",
                size::show(s.size),
                size::human(n.bytes),
                size::human(budget),
                if cli.max_host_mem.is_some() {
                    ""
                } else {
                    " (half of this machine's memory)"
                }
            )));
        }
        needs.push(n.bytes);
    }
    needs.sort_unstable_by(|a, b| b.cmp(a));
    let mut fit = 0;
    let mut sum = 0u64;
    for n in needs.iter().take(jobs) {
        sum = sum.saturating_add(*n);
        if sum > budget {
            break;
        }
        fit += 1;
    }
    let fit = fit.max(1);
    if fit < jobs.min(specs.len()) && !cli.quiet {
        eprintln!(
            "note: running {fit} at once, not {}, to stay within {} of host memory",
            jobs.min(specs.len()),
            size::human(budget)
        );
    }
    Ok(fit)
}

fn run_all(
    specs: &[RunSpec],
    traces: &exec::Traces,
    capture: Capture,
    jobs: usize,
    cli: &Cli,
    what: &str,
) -> Result<Vec<Outcome>, Fail> {
    let p = Progress::new(specs.len() as u64, what, cli.quiet);
    let idx: Vec<usize> = (0..specs.len()).collect();
    let r = sweep::run_points(
        specs,
        traces,
        &idx,
        jobs,
        (capture, host_budget(cli)),
        &|_| p.inc(),
    );
    p.finish();
    let mut outs = r.map_err(spec_fail)?;
    runs::relabel(&mut outs);
    Ok(outs)
}

/// Reads the trace file `path` (binary, or CSV: `csv` insists on it) for
/// the runs that replay it.
fn read_trace(path: &Path, csv: bool, cli: &Cli) -> Result<exec::Trace, Fail> {
    let bytes = input::read(path, input::MAX_TRACE_BYTES, "trace").map_err(usage)?;
    exec::Trace::parse(&path.display().to_string(), &bytes, csv, host_budget(cli))
        .map_err(spec_fail)
}

/// The trace file a workload argument names, if it is not a built-in
/// workload: `trace:FILE`, an existing file, or what looks like a path
/// (a `/`, or a `.trace` or `.csv` name), so that a missing file is said
/// to be missing.
fn trace_arg(workload: &str) -> Option<&Path> {
    if svm_workloads::by_name(workload).is_some() {
        return None;
    }
    match workload.strip_prefix(exec::TRACE_PREFIX) {
        Some(f) => Some(Path::new(f)),
        None => Some(Path::new(workload)).filter(|p| {
            p.is_file()
                || workload.contains('/')
                || workload.ends_with(".trace")
                || workload.ends_with(".csv")
        }),
    }
}

/// Refuses the flags that choose a workload's accesses, for a run whose
/// accesses are a trace's.
fn refuse_workload_flags(command: &str) -> Result<(), Fail> {
    match ["--size", "--iters", "--oversubscribe", "--prefetch"]
        .into_iter()
        .find(|f| given(f))
    {
        Some(f) => Err(usage(format!(
            "{f}: a trace's accesses are its own; {command} of a trace takes --profile, --gpus, \
             --vram, --policy, --granularity, --xnack, --seed, --set and --config"
        ))),
        None => Ok(()),
    }
}

/// What the line naming the SMI log says it is.
fn events_what(format: EventsFormat) -> &'static str {
    match format {
        EventsFormat::Kfd => "SMI events (a file per GPU)",
        EventsFormat::Prefixed => "SMI events",
    }
}

/// Prints and writes a set of outcomes; returns the exit code they call for.
/// Writes the command's outputs (`staged`, and those `out` asks for) and
/// prints the results. The outputs are written first, all together, once
/// the runs are done: also when a result check failed (exit 1) or an
/// invariant broke (exit 3), as the record of what happened. A command
/// refused before (exit 2) writes nothing.
fn emit(
    outs: &[Outcome],
    baseline: usize,
    out: &OutOpts,
    cli: &Cli,
    title: &str,
    mut staged: output::Staged,
    explain: bool,
) -> Result<u8, Fail> {
    // (The demo explains itself its own way: it passes `false`.)
    let explain = explain && out.explains();
    if let Some((p, format)) = out.smi.target() {
        let runs: Vec<RunEvents<'_>> = outs.iter().map(RunEvents::of_outcome).collect();
        smi::stage(p, format, &runs, &mut staged);
    }
    if let Some(p) = &out.timeline {
        let v = chrome::trace_many(outs);
        chrome::validate(&v).map_err(|e| io(format!("internal: bad timeline: {e}")))?;
        staged.file(p, serde_json::to_vec(&v).map_err(|e| io(e.to_string()))?);
    }
    if let Some(p) = &out.kernels_csv {
        staged.file(p, runs::kernels_csv(outs).into_bytes());
    }
    let page = match &out.report {
        Some(d) => {
            staged.dir(d);
            Some(html::stage(d, title, outs, baseline, &mut staged).map_err(io)?)
        }
        None => None,
    };
    staged.commit().map_err(io)?;
    if out.json {
        let mut v = runs::json(outs, baseline);
        if explain {
            v = v.explained();
        }
        outln!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| io(e.to_string()))?
        );
    } else if out.csv {
        outp!("{}", runs::csv(outs, baseline));
        if explain && !cli.quiet {
            eprint!("{}", explain::block(outs, None));
        }
    } else if outs.is_empty() {
        // An empty shard: nothing ran, and it said so on stderr.
    } else if !cli.quiet {
        let cols = out
            .columns
            .as_ref()
            .map_or_else(runs::default_columns, |c| c.0.clone());
        let (table, dropped) = runs::table_fitted(outs, baseline, &cols, terminal_width());
        outln!("{table}");
        if !dropped.is_empty() {
            outln!(
                "(left out for the terminal's width: {}; a wider terminal, --json or --csv has them)",
                dropped.join(", ")
            );
        }
        for o in outs {
            if let Status::Killed { error } = &o.status {
                outln!("{}: killed: {error}", o.label.clone());
            }
            if let Some(v) = &o.violation {
                outln!("{}: {v}", o.label.clone());
            }
        }
        if outs.iter().any(|o| o.status == Status::Unchecked) {
            outln!(
                "phantom mode: no bytes were kept, so results and memory contents were not \
                 checked (data checks off); the memory system ran as with real data"
            );
        }
        for a in outs.iter().filter_map(|o| o.against.as_ref()) {
            outln!("\n{}", svmsim::against::table(a));
        }
        let injected: Vec<(&str, &[svm_sim::inject::SiteCoverage])> = outs
            .iter()
            .filter(|o| !o.injection.is_empty())
            .map(|o| (o.label.as_str(), o.injection.as_slice()))
            .collect();
        if !injected.is_empty() {
            outln!("\n{}", svmsim::inject::coverage_tables(&injected));
        }
        if let Some(o) = outs.first() {
            outln!("seed {}; repeat with: {}", o.spec.seed, repro(o));
        }
        if cli.verbose {
            for o in outs {
                outln!(
                    "\n{} ({:.2} s of wall time, {} SMI events kept)",
                    o.label.clone(),
                    o.wall_s,
                    o.events.len()
                );
                for (i, g) in o.gpu_end.iter().enumerate() {
                    outln!(
                        "  {}: VRAM in use {}, stale DMA {} pages",
                        svmsim::exec::gpu_name(i, g.gpu_id),
                        size::human(g.vram_used_bytes),
                        g.stale_dma_pages
                    );
                    if !o.policy_counters.is_empty() && g.gpu_id == o.gpu_end[0].gpu_id {
                        let kv: Vec<String> = o
                            .policy_counters
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect();
                        outln!("  policy: {}", kv.join(" "));
                    }
                    if !g.gt_stats.is_empty() {
                        let kv: Vec<String> =
                            g.gt_stats.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        outln!("    {}", kv.join(" "));
                    }
                }
                // Per kernel, the first 16 (the JSON lists up to 256).
                for k in o.kernels.iter().take(16) {
                    let s = &k.stats;
                    outln!(
                        "  kernel {} on {}{}: {} waves, {} accesses, {} faults ({} retries), ran {}, waves parked {}",
                        k.kernel,
                        match k.node {
                            Some(n) => svmsim::exec::gpu_name(n, k.gpu_id),
                            None => "the CPU".into(),
                        },
                        if k.failed { " (failed)" } else { "" },
                        s.waves,
                        s.accesses,
                        s.faults,
                        s.retries,
                        runs::time(s.end_ns.saturating_sub(s.launch_ns)),
                        runs::time(s.fault_stall_ns)
                    );
                }
                let shown = o.kernels.len().min(16) as u64;
                let more = o.kernels.len() as u64 - shown + o.kernels_left_out;
                if more > 0 {
                    outln!("  and {more} more kernels (--json lists up to 256)");
                }
                let m = &o.metrics;
                outln!(
                    "  pages to VRAM {}, to RAM {}, queue evictions {}, TLB flushes {}, copy busy {}, end {}",
                    m.pages_to_vram,
                    m.pages_to_ram,
                    m.queue_evictions,
                    m.tlb_flushes,
                    runs::time(m.copy_busy_ns),
                    runs::time(m.end_ns)
                );
            }
        }
        if explain {
            outln!("\n{}", explain::block(outs, terminal_width()).trim_end());
        }
    }
    let say = |what: &str, p: &std::path::Path| {
        if !out.json && !out.csv {
            outln!("{what}: {}", p.display());
        } else {
            eprintln!("{what}: {}", p.display());
        }
    };
    if let Some((p, format)) = out.smi.target() {
        say(events_what(format), p);
    }
    if let Some(p) = &out.timeline {
        say("timeline (open in ui.perfetto.dev)", p);
    }
    if let Some(p) = &out.kernels_csv {
        say("kernels", p);
    }
    if let Some(page) = &page {
        say("report", page);
    }
    Ok(if outs.iter().any(|o| o.violation.is_some()) {
        EXIT_INVARIANT
    } else if outs.iter().any(|o| o.status == Status::Mismatch) {
        EXIT_EXPECT
    } else {
        0
    })
}

/// The terminal's width when the output goes to one (what the tables fit
/// themselves to); `None` when it is piped, so that a file gets the same
/// bytes every time.
fn terminal_width() -> Option<usize> {
    use std::io::IsTerminal as _;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    comfy_table::Table::new().width().map(usize::from)
}

/// Whether `flag` was given on the command line (as `--flag V` or
/// `--flag=V`).
fn given(flag: &str) -> bool {
    std::env::args().any(|a| a == flag || a.strip_prefix(flag).is_some_and(|r| r.starts_with('=')))
}

/// The command line that repeats this invocation: the arguments given,
/// with the seed made explicit when it was left at its default.
fn repro(o: &Outcome) -> String {
    // Without -j: results do not depend on it, so that the output of any
    // -j is the same, this line too.
    let mut args: Vec<String> = Vec::new();
    let mut all = std::env::args().skip(1);
    while let Some(a) = all.next() {
        if a == "-j" || a == "--jobs" {
            all.next();
        } else if !(a.starts_with("--jobs=")
            || a.strip_prefix("-j")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
        {
            args.push(a);
        }
    }
    let mut s = String::from("svmsim");
    for a in &args {
        s.push(' ');
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
            s += &format!("'{}'", a.replace('\'', "'\\''"));
        } else {
            s += a;
        }
    }
    let seeded = args
        .iter()
        .any(|a| a == "--seed" || a.starts_with("--seed="));
    let cmd = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .map(String::as_str);
    if !seeded && matches!(cmd, Some("run" | "compare" | "replay")) {
        s += &format!(" --seed {}", o.spec.seed);
    }
    s
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|x| x.trim().to_owned())
        .filter(|x| !x.is_empty())
        .collect()
}

fn run(cli: &Cli) -> Result<u8, Fail> {
    match &cli.command {
        Command::Run {
            workload: None,
            policy: _,
            opts,
            out,
            record,
            host_stats,
        } => {
            if host_stats.is_some() {
                return Err(usage(
                    "--host-stats: the demo is three runs; name a workload to measure one",
                ));
            }
            let fixed: Vec<&str> = [
                "--size",
                "--iters",
                "--profile",
                "--gpus",
                "--vram",
                "--oversubscribe",
                "--granularity",
                "--xnack",
                "--policy",
                "--prefetch",
                "--phantom",
                "--set",
                "--config",
            ]
            .into_iter()
            .filter(|f| given(f))
            .collect();
            if !fixed.is_empty() {
                return Err(usage(format!(
                    "{}: the demo's configuration is fixed (only --seed changes it); name a \
                     workload to choose, e.g. svmsim run shared-buffer {} ...",
                    fixed.join(", "),
                    fixed[0]
                )));
            }
            if record.is_some() {
                return Err(usage(
                    "--record: the demo is three runs; name a workload to record one",
                ));
            }
            out.preflight(&[], &[])?;
            let specs = demo::specs(opts.seed);
            let outs = run_all(&specs, &[], out.capture(), jobs(None)?, cli, "demo")?;
            if !cli.quiet && !out.json && !out.csv {
                outln!(
                    "svmsim demo: two MI250X-class GPUs with XNACK on share a {} buffer the CPU filled.\n\
                     GPU 0 updates its first half, then GPU 1 the middle half. Each fault policy runs it:\n",
                    size::show(specs[0].size)
                );
            }
            let code = emit(
                &outs,
                0,
                out,
                cli,
                "svmsim demo: one shared buffer, two GPUs, three policies",
                output::Staged::default(),
                false,
            )?;
            if !cli.quiet && !out.json && !out.csv {
                outln!("\n{}", demo::explain(&outs));
            }
            Ok(code)
        }
        Command::Run {
            workload: Some(w),
            policy,
            opts,
            out,
            record,
            host_stats,
        } => {
            // A scenario file runs as `svmsim scenario` would.
            if w.ends_with(".toml") {
                if out.csv
                    || out.timeline.is_some()
                    || out.report.is_some()
                    || out.kernels_csv.is_some()
                    || out.columns.is_some()
                    || record.is_some()
                    || host_stats.is_some()
                {
                    return Err(usage(
                        "a scenario prints its op log (or --json) and writes --events; \
                         --csv, --kernels-csv, --columns, --timeline, --report, --record and \
                         --host-stats are for workloads",
                    ));
                }
                let seed = given("--seed");
                return Ok(run_scenario(
                    Some(&PathBuf::from(w)),
                    out.json,
                    out.smi.target(),
                    (
                        policy.as_deref(),
                        seed.then_some(opts.seed),
                        given("--xnack").then_some(opts.xnack == OnOff::On),
                    ),
                    svm_sim::check::Schedule::linear(),
                    &opts.config,
                    host_budget(cli),
                ));
            }
            let spec = opts.spec(w, policy.as_deref(), &[])?;
            let policy = spec.policy().to_owned();
            spec.resolve().map_err(spec_fail)?;
            fit_host(std::slice::from_ref(&spec), &[], 1, cli)?;
            let recorded: Vec<output::Target<'_>> = record
                .iter()
                .chain(host_stats)
                .map(|p| output::Target::File(p))
                .collect();
            out.preflight(&opts.inputs(), &recorded)?;
            for p in record.iter().chain(host_stats) {
                writable(p)?;
            }
            let mut capture = out.capture();
            capture.trace = record.is_some();
            let what = format!("simulating {w} ({policy})");
            let p = Progress::new(1, &what, cli.quiet);
            let clock = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            p.watch_clock(&what, std::sync::Arc::clone(&clock));
            let o = exec::run_watched(&spec, capture, Some(clock)).map_err(spec_fail);
            p.finish();
            let o = o?;
            let mut staged = output::Staged::default();
            if let (Some(path), Some(t)) = (record, &o.trace) {
                staged.file(path, t.clone());
            }
            if let Some(path) = host_stats {
                let h = svmsim::suite::HostStats::now(o.wall_s);
                let mut bytes = serde_json::to_vec_pretty(&h).map_err(|e| io(e.to_string()))?;
                bytes.push(b'\n');
                staged.file(path, bytes);
            }
            let code = emit(
                std::slice::from_ref(&o),
                0,
                out,
                cli,
                &format!("svmsim run: {w}"),
                staged,
                true,
            )?;
            if let (Some(path), Some(t), false) = (record, &o.trace, cli.quiet) {
                eprintln!("trace: {} ({} bytes)", path.display(), t.len());
            }
            Ok(code)
        }
        Command::Compare {
            workload,
            policies,
            drivers,
            granularities,
            xnack_modes,
            baseline,
            opts,
            out,
            jobs: j,
        } => {
            // A trace file is replayed by every run; its accesses are fixed.
            let traces = match trace_arg(workload) {
                Some(path) => {
                    refuse_workload_flags("a compare")?;
                    let t = read_trace(path, false, cli)?;
                    vec![t]
                }
                None => Vec::new(),
            };
            let workload = &match traces.first() {
                Some(t) => format!("{}{}", exec::TRACE_PREFIX, t.name),
                None => workload.clone(),
            };
            let base = opts.spec(workload, None, &traces)?;
            // `--set policy=X` is a list of one, unless --policies gives one.
            let set_policy = opts
                .config
                .set
                .iter()
                .any(|kv| kv.split('=').next().is_some_and(|k| k.trim() == "policy"));
            if set_policy && given("--policies") {
                return Err(usage(
                    "--set policy and --policies: compare runs each policy of --policies; \
                     give the policies in one place",
                ));
            }
            let drivers: Vec<Option<Driver>> = match drivers {
                None => vec![None],
                Some(list) if list.trim() == "all" => Driver::ALL.map(Some).to_vec(),
                Some(list) => split_list(list)
                    .iter()
                    .map(|d| {
                        Driver::from_name(d).map(Some).ok_or_else(|| {
                            usage(format!(
                                "--drivers: {d:?} is not a driver; drivers are: {}",
                                Driver::ALL.map(Driver::name).join(", ")
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?,
            };
            if drivers.is_empty() {
                return Err(usage("--drivers: give at least one driver, or `all`"));
            }
            if let Some(d) = drivers
                .iter()
                .enumerate()
                .find_map(|(i, d)| drivers[..i].contains(d).then_some(*d))
            {
                return Err(usage(format!(
                    "--drivers: {} is given twice",
                    d.map_or("?", Driver::name)
                )));
            }
            let policies = if set_policy {
                vec![base.policy().to_owned()]
            } else if drivers[0].is_some() && !given("--policies") {
                // Each driver's own policy.
                Vec::new()
            } else if policies == "all" {
                svm_core::policy::names()
                    .into_iter()
                    .map(str::to_owned)
                    .collect()
            } else if policies == "kfd" {
                svm_core::policy::Policy::ALL
                    .iter()
                    .map(|p| p.name().to_owned())
                    .collect()
            } else {
                split_list(policies)
            };
            if policies.is_empty() && drivers[0].is_none() {
                return Err(usage("--policies: give at least one policy, or `all`"));
            }
            let grans: Vec<Option<u32>> = match granularities {
                None => vec![opts.granularity],
                Some(g) => split_list(g)
                    .iter()
                    .map(|x| {
                        x.parse::<u32>().map(Some).map_err(|_| {
                            usage(format!(
                                "--granularities: {x:?} is not a number (log2 pages, 0..=63)"
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?,
            };
            let modes = xnack_modes.clone().unwrap_or_else(|| vec![opts.xnack]);
            if modes.is_empty() {
                return Err(usage("--xnack-modes: give on, off or on,off"));
            }
            // With --drivers and no --policies, each driver runs once,
            // under its own policy.
            let own: [Option<&String>; 1] = [None];
            let policies: Vec<Option<&String>> = if policies.is_empty() {
                own.to_vec()
            } else {
                policies.iter().map(Some).collect()
            };
            // Bounded before anything is built for it, as a sweep's grid is.
            let runs = drivers.len() * modes.len() * grans.len() * policies.len();
            if runs > svmsim::sweep::MAX_POINTS {
                return Err(usage(format!(
                    "compare: {runs} runs (drivers x XNACK modes x granularities x policies); \
                     at most {}",
                    svmsim::sweep::MAX_POINTS
                )));
            }
            let mut specs = Vec::new();
            for d in &drivers {
                for m in &modes {
                    for g in &grans {
                        for p in &policies {
                            let mut s = base.clone();
                            if let Some(d) = d {
                                s.config
                                    .set("driver", d.name())
                                    .map_err(|e| usage(format!("--drivers: {e}")))?;
                                if opts.profile.is_none() {
                                    let gpus = s
                                        .gpus
                                        .unwrap_or_else(|| exec::gpus_needed(workload, &traces));
                                    exec::default_profile(*d, gpus).clone_into(&mut s.profile);
                                }
                            }
                            if let Some(p) = p {
                                (*p).clone_into(&mut s.config.policy);
                            }
                            s.granularity = *g;
                            s.xnack = *m == OnOff::On;
                            // Name compare's own list flags, not run's.
                            exec::check_any(&s, &traces).map_err(|mut e| {
                                e.field = match e.field {
                                    "policy" => "policies",
                                    "granularity" if granularities.is_some() => "granularities",
                                    f => f,
                                };
                                spec_fail(e)
                            })?;
                            specs.push(s);
                        }
                    }
                }
            }
            let base = match baseline {
                None => 0,
                Some(b) => match b.parse::<usize>() {
                    Ok(n) if (1..=specs.len()).contains(&n) => n - 1,
                    Ok(n) => {
                        return Err(usage(format!(
                            "--baseline {n}: rows are 1 to {}",
                            specs.len()
                        )));
                    }
                    Err(_) => {
                        let labels = runs::labels(&specs);
                        labels.iter().position(|l| l == b).ok_or_else(|| {
                            usage(format!(
                                "--baseline {b:?}: no such run; runs are: {}",
                                labels.join(", ")
                            ))
                        })?
                    }
                },
            };
            let mut inputs = opts.inputs();
            if let Some(path) = trace_arg(workload) {
                inputs.push(path);
            }
            out.preflight(&inputs, &[])?;
            let jobs = fit_host(&specs, &traces, jobs(*j)?, cli)?;
            let outs = run_all(&specs, &traces, out.capture(), jobs, cli, workload)?;
            let code = emit(
                &outs,
                base,
                out,
                cli,
                &format!("svmsim compare: {workload}"),
                output::Staged::default(),
                true,
            )?;
            // Runs side by side say what differed between them, whatever
            // varied (drivers, policies, granularities, XNACK).
            if outs.len() > 1 && out.explains() && !cli.quiet && !out.json && !out.csv {
                outln!("\n{}", svmsim::drivers::explain(&outs, base));
            }
            Ok(code)
        }
        Command::Sweep {
            file,
            shard,
            out: shard_out,
            jobs: j,
            config,
            output,
        } => {
            let text =
                input::read_text(file, input::MAX_SWEEP_BYTES, "sweep file").map_err(usage)?;
            let name = file.display().to_string();
            let (mut sw, traces) = sweep::parse(&name, &text, &mut |t| {
                read_trace(Path::new(t), false, cli).map_err(|Fail(_, m)| m)
            })
            .map_err(|e| usage(e.to_string()))?;
            // --set and --config apply to every point; a knob the grid
            // varies is the grid's to set.
            if config.given() {
                for point in &mut sw.points {
                    let resolved = config.resolve(point.config.clone(), None)?;
                    if let Some(axis) = sw.axes.iter().find(|a| {
                        svm_core::config::knob(a).is_some()
                            && resolved.get(a) != point.config.get(a)
                    }) {
                        return Err(usage(format!(
                            "--set {axis}: {name} varies it in [grid]; set it in one place"
                        )));
                    }
                    point.config = resolved;
                }
            }
            let shard = match shard {
                Some(s) => sweep::parse_shard(s).map_err(usage)?,
                None => (1, 1),
            };
            let idx = sweep::shard_indices(&sw.points, shard);
            if idx.is_empty() && !cli.quiet {
                eprintln!(
                    "shard {}/{}: no points (the grid has {}); its --out file lists none, \
                     so merge takes it with the others",
                    shard.0,
                    shard.1,
                    sw.points.len()
                );
            }
            // The sweep file, a --config file, and the profile files its
            // points name.
            let mut inputs: Vec<&Path> = vec![file.as_path()];
            inputs.extend(config.inputs());
            for pt in &sw.points {
                let p = Path::new(&pt.profile);
                if p.is_file() && !inputs.contains(&p) {
                    inputs.push(p);
                }
            }
            inputs.extend(traces.iter().map(|t| Path::new(&t.name)));
            let shard_target: Vec<output::Target<'_>> =
                shard_out.iter().map(|p| output::Target::File(p)).collect();
            output.preflight(&inputs, &shard_target)?;
            if let Some(p) = shard_out {
                writable(p)?;
            }
            let mine: Vec<RunSpec> = idx.iter().map(|&i| sw.points[i].clone()).collect();
            let jobs = fit_host(&mine, &traces, jobs(*j)?, cli)?;
            let p = Progress::new(idx.len() as u64, &format!("sweep {name}"), cli.quiet);
            let outs = sweep::run_points(
                &sw.points,
                &traces,
                &idx,
                jobs,
                (output.capture(), host_budget(cli)),
                &|_| p.inc(),
            );
            p.finish();
            let mut outs = outs.map_err(spec_fail)?;
            runs::relabel(&mut outs);
            let mut staged = output::Staged::default();
            if let Some(path) = shard_out {
                let f = sweep::ShardFile {
                    schema: sweep::SCHEMA.into(),
                    sweep: name.clone(),
                    grid: sw.fingerprint(),
                    total: sw.points.len(),
                    shard,
                    points: idx.iter().copied().zip(outs.iter().cloned()).collect(),
                };
                staged.file(
                    path,
                    serde_json::to_vec_pretty(&f).map_err(|e| io(e.to_string()))?,
                );
            }
            let code = emit(
                &outs,
                0,
                output,
                cli,
                &format!("svmsim sweep: {name}"),
                staged,
                true,
            )?;
            if let (Some(path), false) = (shard_out, cli.quiet) {
                eprintln!(
                    "shard {}/{}: {} written to {}",
                    shard.0,
                    shard.1,
                    if idx.len() == 1 {
                        "1 point".to_owned()
                    } else {
                        format!("{} points", idx.len())
                    },
                    path.display()
                );
            }
            Ok(code)
        }
        Command::Import {
            input,
            output: out_path,
            format,
            gpu_id,
            allocations,
            json,
        } => {
            let budget = host_budget(cli);
            let real = svmsim::import::load(
                input,
                format.chosen(),
                *gpu_id,
                exec::max_trace_events(budget),
            )
            .map_err(usage)?;
            let listed = match allocations {
                Some(p) => Some(svmsim::import::allocations(p).map_err(usage)?),
                None => None,
            };
            // The output may be none of the files read (a directory's
            // gpu-0x*.smi among them), nor the input itself.
            let mut inputs: Vec<&Path> = real.files.iter().map(PathBuf::as_path).collect();
            inputs.push(input.as_path());
            inputs.extend(allocations.as_deref());
            output::refuse_clashes(&inputs, &[output::Target::File(out_path)]).map_err(usage)?;
            writable(out_path)?;
            let imported = real
                .import(exec::max_trace_events(budget), listed.as_deref())
                .map_err(usage)?;
            let bytes = svm_workloads::trace::encode(&imported.events);
            let n = bytes.len();
            let mut staged = output::Staged::default();
            staged.file(out_path, bytes);
            staged.commit().map_err(io)?;
            let name = input.display().to_string();
            if *json {
                let v = serde_json::json!({
                    "schema": "svmsim.import.v1",
                    "input": name,
                    "format": real.format.name(),
                    "output": out_path.display().to_string(),
                    "report": imported.report,
                });
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&v).map_err(|e| io(e.to_string()))?
                );
            } else {
                outp!(
                    "{}",
                    svmsim::import::text(&name, real.format, &imported.report)
                );
                let gpus = match imported.report.gpus.len() {
                    0 | 1 => String::new(),
                    n => format!(" --gpus {n}"),
                };
                outln!(
                    "wrote {} ({n} bytes); replay it with: svmsim replay {}{gpus}",
                    out_path.display(),
                    out_path.display()
                );
            }
            Ok(0)
        }
        Command::Diff { a, b, json } => {
            let mut sides = Vec::new();
            for f in [a, b] {
                let text =
                    input::read_text(f, input::MAX_SHARD_BYTES, "result file").map_err(usage)?;
                sides.push(svmsim::diff::read(&f.display().to_string(), &text).map_err(usage)?);
            }
            let d = svmsim::diff::diff(&sides[0], &sides[1]);
            if *json {
                let v = svmsim::diff::json(&d);
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&v).map_err(|e| io(e.to_string()))?
                );
            } else {
                outp!("{}", svmsim::diff::text(&d));
            }
            Ok(if d.differs() { EXIT_EXPECT } else { 0 })
        }
        Command::Merge { files, out } => {
            let mut shards = Vec::new();
            for f in files {
                let text =
                    input::read_text(f, input::MAX_SHARD_BYTES, "shard file").map_err(usage)?;
                let s = sweep::read_shard(&f.display().to_string(), &text).map_err(usage)?;
                shards.push((f.display().to_string(), s));
            }
            if out.smi.events.is_some() || out.timeline.is_some() {
                return Err(usage(
                    "--events and --timeline need the runs themselves; pass them to `svmsim sweep`",
                ));
            }
            let inputs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
            out.preflight(&inputs, &[])?;
            let mut outs = sweep::merge(&shards).map_err(usage)?;
            runs::relabel(&mut outs);
            emit(
                &outs,
                0,
                out,
                cli,
                "svmsim sweep (merged)",
                output::Staged::default(),
                true,
            )
        }
        Command::Replay {
            trace,
            csv_input,
            policy,
            against,
            against_gpu_id,
            opts,
            out,
        } => {
            refuse_workload_flags("a replay")?;
            // The real run, read and counted before anything else.
            let real = match against {
                Some(p) => {
                    let input = svmsim::import::load(
                        p,
                        None,
                        *against_gpu_id,
                        exec::max_trace_events(host_budget(cli)),
                    )
                    .map_err(usage)?;
                    let t = input.tally();
                    Some((p.display().to_string(), input.files, t))
                }
                None => None,
            };
            let mut inputs = vec![trace.as_path()];
            inputs.extend(opts.inputs());
            if let (Some(p), Some((_, files, _))) = (against, &real) {
                inputs.push(p);
                inputs.extend(files.iter().map(PathBuf::as_path));
            }
            out.preflight(&inputs, &[])?;
            let t = read_trace(trace, *csv_input, cli)?;
            let name = t.name.clone();
            let spec = opts.spec(
                &format!("{}{name}", exec::TRACE_PREFIX),
                policy.as_deref(),
                std::slice::from_ref(&t),
            )?;
            let mut capture = out.capture();
            // The replay's own messages are what it is compared by.
            capture.events |= real.is_some();
            let mut o = exec::replay(&spec, &t, capture, host_budget(cli)).map_err(spec_fail)?;
            if let Some((name, _, real)) = real {
                let simulated = svmsim::against::tally_of(&o).map_err(io)?;
                o.against = Some(svmsim::against::compare(&name, real, simulated));
            }
            emit(
                std::slice::from_ref(&o),
                0,
                out,
                cli,
                &format!("svmsim replay: {name}"),
                output::Staged::default(),
                true,
            )
        }
        Command::Scenario {
            file,
            json,
            smi,
            policy,
            seed,
            xnack,
            check_every_op,
            config,
        } => Ok(run_scenario(
            file.as_ref(),
            *json,
            smi.target(),
            (policy.as_deref(), *seed, xnack.map(|x| x == OnOff::On)),
            if *check_every_op {
                svm_sim::check::Schedule::every_step()
            } else {
                svm_sim::check::Schedule::linear()
            },
            config,
            host_budget(cli),
        )),
        Command::Config { toml, config } => {
            let c = config.resolve(Config::default(), None)?;
            outp!(
                "{}",
                if *toml {
                    config_toml(&c)
                } else {
                    config_table(&c)
                }
            );
            Ok(0)
        }
        Command::InjectSites { json } => {
            outp!("{}", svmsim::inject::sites(*json));
            Ok(0)
        }
        Command::Profiles => {
            for (name, text) in svm_sim::timing::BUILT_IN {
                match svm_sim::timing::Profile::parse(name, text) {
                    Ok(p) => outln!("{name:<10} {}", p.description),
                    Err(e) => outln!("{name:<10} (broken: {e})"),
                }
            }
            Ok(0)
        }
        Command::Bench {
            sizes,
            workloads,
            iters,
            all,
            json,
        } => bench(cli, sizes, workloads.as_deref(), *iters, *all, *json),
        Command::Workloads => {
            for w in svm_workloads::ALL {
                let g = if w.gpus() > 1 {
                    format!(" [{} GPUs]", w.gpus())
                } else {
                    String::new()
                };
                outln!("{:<18} {}{g}", w.name(), w.describe());
            }
            Ok(0)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&cli)));
    match r {
        Ok(Ok(code)) => ExitCode::from(code),
        Ok(Err(Fail(code, msg))) => {
            eprintln!("error: {msg}");
            ExitCode::from(code)
        }
        Err(_) => {
            eprintln!("error: svmsim hit an internal error (a bug); the message above says where");
            ExitCode::from(EXIT_INTERNAL)
        }
    }
}

/// `svmsim config`: every knob with its value (the default unless set),
/// unit and meaning, and what it accepts.
fn config_table(c: &Config) -> String {
    let d = Config::default();
    let mut s = String::from(
        "Every knob of a run: --set KEY=VALUE, --config FILE.toml, a scenario's [config], a sweep's fields.\n\n",
    );
    for k in svm_core::config::KNOBS {
        let v = k.get(c);
        let mark = if v == k.get(&d) {
            ""
        } else {
            "  (set; default "
        };
        let tail = if mark.is_empty() {
            String::new()
        } else {
            format!("{mark}{})", k.get(&d))
        };
        s += &format!("{} = {v}{tail}\n", k.key);
        s += &format!("    {} [{}]\n", k.doc, k.unit);
        s += &format!("    accepts {}\n", k.accepts());
    }
    s += "\nThe fault policies (docs/policies.md):\n";
    for e in svm_core::policy::registry() {
        s += &format!("  {:<27} {}\n", e.name, e.about);
    }
    s
}

/// A TOML config file of `c`, every key with its meaning as a comment.
fn config_toml(c: &Config) -> String {
    let mut s =
        String::from("# svmsim configuration (svmsim config --toml); read it with --config FILE\n");
    for k in svm_core::config::KNOBS {
        let v = k.get(c);
        let value = match k.unit {
            "bool" | "count" | "log2 pages" => v,
            _ => format!("{v:?}"),
        };
        s += &format!("\n# {} [{}]\n{} = {value}\n", k.doc, k.unit, k.key);
    }
    s
}

fn run_scenario(
    file: Option<&PathBuf>,
    json: bool,
    events: Option<(&PathBuf, EventsFormat)>,
    (policy, seed, xnack): (Option<&str>, Option<u64>, Option<bool>),
    checks: svm_sim::check::Schedule,
    config: &ConfigOpts,
    host_budget: u64,
) -> u8 {
    let (name, text) = match file {
        None => (
            scenario::DEFAULT.0.to_string(),
            scenario::DEFAULT.1.to_string(),
        ),
        Some(path) => match input::read_text(path, input::MAX_SCENARIO_BYTES, "scenario file") {
            Ok(t) => (path.display().to_string(), t),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        },
    };
    if let Some((path, format)) = events {
        // The scenario file and a --config file are inputs.
        let mut inputs: Vec<&Path> = file.iter().map(|p| p.as_path()).collect();
        inputs.extend(config.inputs());
        if let Err(e) = output::refuse_clashes(&inputs, &[smi::target(path, format)])
            .and_then(|()| smi::check(path, format))
        {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    }
    let mut sc = match scenario::parse(&name, &text) {
        Ok(sc) => sc,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    // The command line over the scenario's own [config].
    sc.system.config = match config.resolve(sc.system.config.clone(), policy) {
        Ok(c) => c,
        Err(Fail(code, msg)) => {
            eprintln!("error: {msg}");
            return code;
        }
    };
    if seed.is_some() {
        sc.system.seed = seed;
    }
    if let Some(on) = xnack {
        sc.set_xnack(on);
    }
    let need = sc.host_bytes();
    if need > host_budget {
        eprintln!(
            "error: {name}: running it needs about {} of host memory (the pages its writes fill, \
             twice over, and its largest access), above the budget of {}; use --max-host-mem",
            size::human(need),
            size::human(host_budget)
        );
        return EXIT_USAGE;
    }
    let result = scenario::run(&sc, checks);
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    if let Some((path, format)) = events {
        let mut staged = output::Staged::default();
        smi::stage(path, format, &[RunEvents::of_scenario(&r)], &mut staged);
        if let Err(e) = staged.commit() {
            eprintln!("error: {e}");
            return EXIT_INTERNAL;
        }
    }
    if json {
        outp!("{}", report::json(&r));
    } else {
        outp!("{}", report::text(&r));
    }
    if r.violation.is_some() {
        EXIT_INVARIANT
    } else if r.mismatches > 0 {
        EXIT_EXPECT
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
