//! The scenario file format: a system, processes, and a list of operations with expectations.
//!
//! The format is documented for users in `docs/scenario.md`; this module is
//! its one implementation. Names (GPUs, processes, mappings, queues) are
//! resolved here, so a reference to an unknown name is an error that points
//! at its line before anything runs. Attribute values become raw uAPI
//! numbers here too, so the run goes through the same ioctl edge as user
//! space.

use std::collections::BTreeMap;

use serde::Deserialize;
use svm_core::Errno;
use svm_core::config::Config;
use svm_core::gpu::GpuId;
use svm_core::topology::{GpuDesc, Topology};
use svm_core::uapi::{SvmAttribute, attr_type};
use svm_sim::mm::{Backing, Mark, Prot};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::de;
use super::doc::{ScenarioError, Source};

pub use super::de::{EVENT_COUNTERS, GPU_COUNTERS, HW_COUNTERS};

/// The machine a scenario runs on.
#[derive(Clone, Debug)]
pub struct SystemSpec {
    /// The GPUs.
    pub topology: Topology,
    /// Boot-time XNACK default (amdgpu's `noretry = 0`).
    pub xnack: bool,
    /// System memory in bytes.
    pub sysmem_bytes: u64,
    /// The SVM system-memory limit in bytes.
    pub mem_limit_bytes: u64,
    /// Every knob of the run: the `[config]` table, and the knobs
    /// `[system]` may name too (`policy`, `bulk_dma_unmap`, ...).
    pub config: Config,
    /// The scheduler's seed: with one, concurrent work (in-flight faults,
    /// deferred and restore work) interleaves with the operations in a
    /// seeded order; without, kernel work runs at once.
    pub seed: Option<u64>,
    /// The built-in profile that prices every action (its timing and
    /// compute shape; the GPUs stay the scenario's). None: untimed.
    pub profile: Option<svm_sim::timing::Profile>,
}

/// A place in the address space: a mapping's label plus an offset, or a number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrExpr {
    /// The mapping whose start the offset counts from.
    pub label: Option<String>,
    /// Bytes from the label's start (or from 0).
    pub offset: i128,
}

/// An expected range of a `ranges` check.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeExpect {
    /// Its start.
    #[serde(deserialize_with = "de::addr")]
    pub addr: AddrExpr,
    /// Its size in bytes.
    #[serde(deserialize_with = "de::size")]
    pub size: u64,
    /// Whether it is mapped to a GPU, if the check cares.
    pub mapped: Option<bool>,
}

/// What one operation does: `do = "mmap"` picks the variant, and the
/// other keys of its `[[op]]` table are the variant's fields (`process` is
/// common to all and read apart). Each field names its grammar in `de.rs`.
/// Adding an operation is one variant here and one arm in `run.rs`'s
/// executor (and [`OpKind::name`], [`OpKind::expect`]).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum OpKind {
    /// `mmap`; `label` names the mapping for later address expressions.
    Mmap {
        #[serde(rename = "name", default, deserialize_with = "de::opt_label")]
        label: Option<String>,
        #[serde(default, deserialize_with = "de::opt_addr")]
        addr: Option<AddrExpr>,
        #[serde(deserialize_with = "de::size")]
        size: u64,
        #[serde(default = "de::rw", deserialize_with = "de::prot")]
        prot: Prot,
        #[serde(default)]
        backing: BackingKind,
        /// The file of a `backing = "file"` mapping.
        file: Option<String>,
        #[serde(default)]
        mark: MarkKind,
        #[serde(default, deserialize_with = "de::outcome")]
        expect: Option<Expect>,
    },
    /// `munmap`.
    Munmap {
        #[serde(deserialize_with = "de::addr")]
        addr: AddrExpr,
        #[serde(deserialize_with = "de::size")]
        size: u64,
        #[serde(default, deserialize_with = "de::outcome")]
        expect: Option<Expect>,
    },
    /// `mprotect`.
    Mprotect {
        #[serde(deserialize_with = "de::addr")]
        addr: AddrExpr,
        #[serde(deserialize_with = "de::size")]
        size: u64,
        #[serde(deserialize_with = "de::prot")]
        prot: Prot,
        #[serde(default, deserialize_with = "de::outcome")]
        expect: Option<Expect>,
    },
    /// `madvise(MADV_DONTNEED)`.
    #[serde(rename = "madvise_dontneed")]
    DontNeed {
        #[serde(deserialize_with = "de::addr")]
        addr: AddrExpr,
        #[serde(deserialize_with = "de::size")]
        size: u64,
        #[serde(default, deserialize_with = "de::outcome")]
        expect: Option<Expect>,
    },
    /// SVM SET_ATTR with raw attributes.
    SetAttr {
        #[serde(deserialize_with = "de::addr")]
        addr: AddrExpr,
        #[serde(deserialize_with = "de::size")]
        size: u64,
        #[serde(deserialize_with = "de::attrs")]
        attrs: Vec<SvmAttribute>,
        #[serde(default, deserialize_with = "de::outcome")]
        expect: Option<Expect>,
    },
    /// SVM GET_ATTR with raw queries; without `query`, what `expect`
    /// names, or everything (filled in by the parser).
    GetAttr {
        #[serde(deserialize_with = "de::addr")]
        addr: AddrExpr,
        #[serde(deserialize_with = "de::size")]
        size: u64,
        #[serde(default, deserialize_with = "de::query")]
        query: Option<Vec<SvmAttribute>>,
        #[serde(default, deserialize_with = "de::attr_outcome")]
        expect: Option<Expect>,
    },
    /// SET_XNACK_MODE with a raw value (negative queries).
    SetXnack {
        #[serde(
            rename = "enable",
            default = "de::xnack_query",
            deserialize_with = "de::xnack_value"
        )]
        value: i32,
        #[serde(default, deserialize_with = "de::xnack_outcome")]
        expect: Option<Expect>,
    },
    /// Create a user queue on a GPU.
    QueueCreate {
        #[serde(rename = "name", default, deserialize_with = "de::opt_label")]
        label: Option<String>,
        #[serde(rename = "gpu", deserialize_with = "de::gpu")]
        gpu_id: u32,
        #[serde(default, deserialize_with = "de::outcome")]
        expect: Option<Expect>,
    },
    /// Allocate a KFD VRAM buffer on a GPU, as hipMalloc does
    /// (`AMDKFD_IOC_ALLOC_MEMORY_OF_GPU` with the VRAM flag): it holds the
    /// KFD VRAM limit and shares the GPU's LRU with SVM's buffers.
    AllocBo {
        #[serde(rename = "name")]
        label: String,
        #[serde(rename = "gpu", deserialize_with = "de::gpu")]
        gpu_id: u32,
        #[serde(deserialize_with = "de::size")]
        size: u64,
        #[serde(default, deserialize_with = "de::outcome")]
        expect: Option<Expect>,
    },
    /// Free a KFD VRAM buffer allocated earlier.
    FreeBo {
        #[serde(rename = "buffer")]
        label: String,
        #[serde(default, deserialize_with = "de::outcome")]
        expect: Option<Expect>,
    },
    /// Destroy a user queue created earlier.
    QueueDestroy {
        #[serde(rename = "queue")]
        label: String,
        #[serde(default, deserialize_with = "de::outcome")]
        expect: Option<Expect>,
    },
    /// Compare the process's ranges (inside the window `addr`, `size`, if
    /// given: both or neither).
    Ranges {
        #[serde(default, deserialize_with = "de::opt_addr")]
        addr: Option<AddrExpr>,
        #[serde(default, deserialize_with = "de::opt_size")]
        size: Option<u64>,
        expect: Vec<RangeExpect>,
    },
    /// A GPU reads or writes memory.
    GpuAccess {
        #[serde(rename = "gpu", deserialize_with = "de::gpu")]
        gpu_id: u32,
        #[serde(deserialize_with = "de::addr")]
        addr: AddrExpr,
        #[serde(deserialize_with = "de::size")]
        size: u64,
        #[serde(default)]
        write: bool,
        /// Write this pattern (a write has one, a read none).
        #[serde(default, deserialize_with = "de::fill")]
        fill: Option<Fill>,
        /// On a read, every word must hold this pattern.
        #[serde(default, deserialize_with = "de::fill")]
        check_fill: Option<Fill>,
        /// Add this to every 32-bit word, atomically (the access returns
        /// the old words, which `check_fill` checks).
        atomic_add: Option<u32>,
        /// Leave the access in flight under this name; a later `wait`
        /// collects it.
        launch: Option<String>,
        /// Walk the buffer this many times (with `until`, at most).
        #[serde(default = "one")]
        repeat: u32,
        /// End the passes once a 32-bit word holds a value.
        until: Option<Until>,
        /// Wait this long (simulated) before the first access.
        #[serde(default, deserialize_with = "de::duration")]
        start: u64,
        /// Waves of the kernel, each an equal page-aligned slice.
        #[serde(default = "one")]
        waves: u32,
        #[serde(default, deserialize_with = "de::outcome")]
        expect: Option<Expect>,
    },
    /// The CPU reads or writes memory.
    CpuAccess {
        #[serde(deserialize_with = "de::addr")]
        addr: AddrExpr,
        #[serde(deserialize_with = "de::size")]
        size: u64,
        #[serde(default)]
        write: bool,
        /// Write this pattern (a write has one, a read none).
        #[serde(default, deserialize_with = "de::fill")]
        fill: Option<Fill>,
        /// On a read, every word must hold this pattern.
        #[serde(default, deserialize_with = "de::fill")]
        check_fill: Option<Fill>,
        /// Add this to every 32-bit word, atomically (the access returns
        /// the old words, which `check_fill` checks).
        atomic_add: Option<u32>,
        /// Leave the access in flight under this name (CPU threads running
        /// alongside what follows); a later `wait` collects it.
        launch: Option<String>,
        /// CPU threads sharing the access, each an equal page-aligned slice.
        #[serde(default = "one")]
        threads: u32,
        /// Walk the buffer this many times (with `until`, at most).
        #[serde(default = "one")]
        repeat: u32,
        /// End the passes once a 32-bit word holds a value.
        until: Option<Until>,
        /// Wait this long (simulated) before the first access.
        #[serde(default, deserialize_with = "de::duration")]
        start: u64,
        #[serde(default, deserialize_with = "de::outcome")]
        expect: Option<Expect>,
    },
    /// Wait for a launched access and check its result.
    Wait {
        #[serde(rename = "access")]
        label: String,
        #[serde(default, deserialize_with = "de::outcome")]
        expect: Option<Expect>,
    },
    /// SET_ATTR with PREFETCH_LOC alone: move the range to `loc`.
    Prefetch {
        #[serde(deserialize_with = "de::addr")]
        addr: AddrExpr,
        #[serde(deserialize_with = "de::size")]
        size: u64,
        #[serde(deserialize_with = "de::location")]
        loc: u32,
        #[serde(default, deserialize_with = "de::outcome")]
        expect: Option<Expect>,
    },
    /// Force VRAM pressure on a GPU until `need` bytes are free (every SVM
    /// buffer there when `None`).
    EvictVram {
        #[serde(rename = "gpu", deserialize_with = "de::gpu")]
        gpu_id: u32,
        #[serde(default, deserialize_with = "de::opt_size")]
        need: Option<u64>,
        #[serde(default, deserialize_with = "de::outcome")]
        expect: Option<Expect>,
    },
    /// The process exits. It cannot fail, so it takes no `expect`.
    Exit {},
    /// Let simulated time pass; deferred and restore work falls due. It
    /// cannot fail, so it takes no `expect`.
    #[serde(alias = "sleep")]
    AdvanceTime {
        #[serde(rename = "time", deserialize_with = "de::duration")]
        ns: u64,
    },
    /// Compare where the pages of a window live.
    Residency {
        #[serde(deserialize_with = "de::addr")]
        addr: AddrExpr,
        #[serde(deserialize_with = "de::size")]
        size: u64,
        expect: Vec<ResidencyExpect>,
    },
    /// Compare counters: per-GPU fault and migration counts, stale DMA
    /// entries, hardware counters and SMI events seen ([`GPU_COUNTERS`]
    /// and friends).
    Counters {
        #[serde(deserialize_with = "de::counters")]
        expect: Vec<CounterExpect>,
    },
    /// `fork()`: a new process `child` gets a copy of this one's address
    /// space, anonymous pages shared copy-on-write.
    Fork {
        /// The child's name, new in the file.
        child: String,
    },
    /// Compare the SMI lines this process raised since its last `smi` op
    /// (on one GPU's stream, or all of them in time order) with a list of
    /// events, in order, as kfd's tests scan lines.
    Smi {
        #[serde(default, deserialize_with = "de::opt_gpu")]
        gpu: Option<u32>,
        #[serde(deserialize_with = "de::smi_expect")]
        expect: Vec<SmiExpect>,
    },
}

/// One event a `smi` op expects: its kfd id and the fields to compare
/// (by the names [`svm_core::events::scan`] gives them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmiExpect {
    /// The kfd event id.
    pub event: u32,
    /// The fields to compare.
    pub fields: Vec<(&'static str, SmiValue)>,
}

/// A field's expected value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmiValue {
    /// An address, compared as the page number the line prints.
    Addr(AddrExpr),
    /// A number as the line prints it (pages, gpu_ids, triggers, errors).
    Num(i64),
    /// A character flag.
    Char(char),
}

impl OpKind {
    /// The pages this op may move, map or access, one by one: an access's,
    /// a prefetch's, a SET_ATTR's that prefetches, or that grants access
    /// when XNACK may be off (it then maps every page at once).
    pub fn page_touches(&self, xnack_may_be_off: bool) -> u64 {
        use attr_type as t;
        let pages = |size: &u64| size.div_ceil(svm_core::addr::PAGE_SIZE);
        match self {
            OpKind::GpuAccess { size, .. }
            | OpKind::CpuAccess { size, .. }
            | OpKind::Prefetch { size, .. } => pages(size),
            OpKind::SetAttr { size, attrs, .. }
                if attrs.iter().any(|a| {
                    a.ty == t::PREFETCH_LOC
                        || (xnack_may_be_off && matches!(a.ty, t::ACCESS | t::ACCESS_IN_PLACE))
                }) =>
            {
                pages(size)
            }
            _ => 0,
        }
    }

    /// The name the file uses for this operation.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Mmap { .. } => "mmap",
            OpKind::Munmap { .. } => "munmap",
            OpKind::Mprotect { .. } => "mprotect",
            OpKind::DontNeed { .. } => "madvise_dontneed",
            OpKind::SetAttr { .. } => "set_attr",
            OpKind::GetAttr { .. } => "get_attr",
            OpKind::SetXnack { .. } => "set_xnack",
            OpKind::QueueCreate { .. } => "queue_create",
            OpKind::QueueDestroy { .. } => "queue_destroy",
            OpKind::AllocBo { .. } => "alloc_bo",
            OpKind::FreeBo { .. } => "free_bo",
            OpKind::Ranges { .. } => "ranges",
            OpKind::GpuAccess { .. } => "gpu_access",
            OpKind::Wait { .. } => "wait",
            OpKind::CpuAccess { .. } => "cpu_access",
            OpKind::Prefetch { .. } => "prefetch",
            OpKind::EvictVram { .. } => "evict_vram",
            OpKind::Exit {} => "exit",
            OpKind::AdvanceTime { .. } => "advance_time",
            OpKind::Residency { .. } => "residency",
            OpKind::Counters { .. } => "counters",
            OpKind::Smi { .. } => "smi",
            OpKind::Fork { .. } => "fork",
        }
    }

    /// The result the operation is expected to return, if stated. The
    /// checks (`ranges`, `residency`, `counters`) compare inside their arm
    /// instead, and `exit` and `advance_time` cannot fail.
    pub fn expect(&self) -> Option<&Expect> {
        match self {
            OpKind::Mmap { expect, .. }
            | OpKind::Munmap { expect, .. }
            | OpKind::Mprotect { expect, .. }
            | OpKind::DontNeed { expect, .. }
            | OpKind::SetAttr { expect, .. }
            | OpKind::GetAttr { expect, .. }
            | OpKind::SetXnack { expect, .. }
            | OpKind::QueueCreate { expect, .. }
            | OpKind::QueueDestroy { expect, .. }
            | OpKind::AllocBo { expect, .. }
            | OpKind::FreeBo { expect, .. }
            | OpKind::GpuAccess { expect, .. }
            | OpKind::CpuAccess { expect, .. }
            | OpKind::Wait { expect, .. }
            | OpKind::Prefetch { expect, .. }
            | OpKind::EvictVram { expect, .. } => expect.as_ref(),
            OpKind::Smi { .. } | OpKind::Fork { .. } => None,
            OpKind::Ranges { .. }
            | OpKind::Residency { .. }
            | OpKind::Counters { .. }
            | OpKind::Exit {}
            | OpKind::AdvanceTime { .. } => None,
        }
    }
}

/// One counter of a `counters` check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterExpect {
    /// The counter's name.
    pub name: String,
    /// The GPU of a per-GPU counter.
    pub gpu: Option<u32>,
    /// Its expected value.
    pub want: u64,
}

/// What backs a mapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackingKind {
    /// Anonymous memory.
    #[default]
    Anon,
    /// A file (named by `file`, or "file").
    File,
    /// An I/O mapping (VM_IO).
    Io,
}

impl BackingKind {
    /// The mapping's backing, with the file name of a file mapping.
    pub fn backing(self, file: Option<&str>) -> Backing {
        match self {
            BackingKind::Anon => Backing::Anon,
            BackingKind::Io => Backing::Io,
            BackingKind::File => Backing::File(file.unwrap_or("file").to_owned()),
        }
    }
}

/// What the process uses a mapping for, as the kernel sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkKind {
    /// An ordinary mapping.
    #[default]
    None,
    /// The heap (`[heap]`).
    Heap,
    /// A stack (`[stack]`).
    Stack,
}

impl From<MarkKind> for Mark {
    fn from(m: MarkKind) -> Mark {
        match m {
            MarkKind::None => Mark::None,
            MarkKind::Heap => Mark::Heap,
            MarkKind::Stack => Mark::Stack,
        }
    }
}

/// An expected run of pages of a `residency` check.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResidencyExpect {
    /// Its start.
    #[serde(deserialize_with = "de::addr")]
    pub addr: AddrExpr,
    /// Its size in bytes.
    #[serde(deserialize_with = "de::size")]
    pub size: u64,
    /// Where its pages live.
    #[serde(deserialize_with = "de::location")]
    pub loc: u32,
}

/// Expected GET_ATTR answers; only the listed ones are compared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttrExpect {
    /// PREFERRED_LOC value.
    pub preferred_loc: Option<u32>,
    /// PREFETCH_LOC value.
    pub prefetch_loc: Option<u32>,
    /// SET_FLAGS value.
    pub set_flags: Option<u32>,
    /// CLR_FLAGS value.
    pub clr_flags: Option<u32>,
    /// GRANULARITY value.
    pub granularity: Option<u32>,
    /// For each gpu_id, the attribute type the ACCESS query must come back as.
    pub access: BTreeMap<u32, u32>,
}

/// What an operation is expected to return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Success.
    Ok,
    /// This errno.
    Errno(Errno),
    /// Success with these GET_ATTR answers.
    Attrs(AttrExpect),
    /// Success with this XNACK mode afterwards.
    Xnack(bool),
}

/// One operation of the scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpSpec {
    /// 0-based position in the file.
    pub index: usize,
    /// Line of its `[[op]]` header.
    pub line: usize,
    /// Index into [`Scenario::processes`].
    pub process: usize,
    /// What it does, and what it should return.
    pub kind: OpKind,
}

/// A parsed scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The file name as given.
    pub file: String,
    /// Its `name`, or the file name.
    pub name: String,
    /// Its `description`.
    pub description: String,
    /// The machine.
    pub system: SystemSpec,
    /// Process names, in spawn order.
    pub processes: Vec<String>,
    /// Per process, the XNACK mode it sets as it starts, with the error
    /// to give (placed at its `xnack` key) if the kernel refuses it.
    pub process_xnack: Vec<Option<(bool, ScenarioError)>>,
    /// Per process, whether a `fork` op makes it (rather than the start).
    pub forked: Vec<bool>,
    /// The operations.
    pub ops: Vec<OpSpec>,
}

impl Scenario {
    /// Runs the file in one XNACK mode: the driver boots so and every
    /// process starts so (`svmsim scenario --xnack`).
    pub fn set_xnack(&mut self, on: bool) {
        self.system.xnack = on;
        for (i, x) in self.process_xnack.iter_mut().enumerate() {
            let refused = ScenarioError {
                file: self.file.clone(),
                line: 0,
                column: 0,
                field: "--xnack".into(),
                message: format!(
                    "process {:?}: the kernel refuses XNACK {} (EPERM: a GPU cannot run it so)",
                    self.processes[i],
                    if on { "on" } else { "off" }
                ),
            };
            *x = Some((on, refused));
        }
    }

    /// The host memory a run of it needs, estimated before it runs: every
    /// page its writes can fill (no more than it maps) twice (the page and
    /// the checker's shadow) with 64 bytes of bookkeeping; every page
    /// mapping may fault in (no more than it maps) once, with its
    /// bookkeeping: what its accesses, prefetches and XNACK-off
    /// registrations touch, and a GPU access's granularity window on both
    /// sides; its largest access twice (the bytes and their copy); and
    /// 64 MiB.
    pub fn host_bytes(&self) -> u64 {
        let page = svm_core::addr::PAGE_SIZE;
        let (mut mapped, mut written, mut largest) = (0u64, 0u64, 0u64);
        // The widest granularity the file can give a fault window.
        let granularity = self
            .ops
            .iter()
            .filter_map(|op| match &op.kind {
                OpKind::SetAttr { attrs, .. } => attrs
                    .iter()
                    .filter(|a| a.ty == attr_type::GRANULARITY)
                    .map(|a| a.value)
                    .max(),
                _ => None,
            })
            .fold(u32::from(self.system.config.default_granularity), u32::max);
        let window = 1u64.checked_shl(granularity).unwrap_or(u64::MAX);
        let mut faulted = 0u64;
        for op in &self.ops {
            faulted = faulted.saturating_add(op.kind.page_touches(true));
            if matches!(op.kind, OpKind::GpuAccess { .. }) {
                faulted = faulted.saturating_add(window.saturating_mul(2));
            }
            match &op.kind {
                OpKind::Mmap { size, .. } => mapped = mapped.saturating_add(size.div_ceil(page)),
                OpKind::GpuAccess {
                    size,
                    write,
                    atomic_add,
                    ..
                }
                | OpKind::CpuAccess {
                    size,
                    write,
                    atomic_add,
                    ..
                } => {
                    largest = largest.max(*size);
                    if *write || atomic_add.is_some() {
                        // One more page when it straddles a boundary.
                        written = written.saturating_add(size.div_ceil(page) + 1);
                    }
                }
                _ => {}
            }
        }
        mapped
            .min(written)
            .saturating_mul(2 * page + 64)
            .saturating_add(mapped.min(faulted).saturating_mul(page + 64))
            .saturating_add(largest.saturating_mul(2))
            .saturating_add(64 << 20)
    }
}

/// The document as serde reads it, less `op` (read apart, one operation at
/// a time, once the system's names are known).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHead {
    name: Option<String>,
    description: Option<String>,
    system: Spanned<SystemFile>,
    #[serde(default)]
    config: BTreeMap<Spanned<String>, Spanned<KnobText>>,
    #[serde(default, deserialize_with = "de::at_most::<_, _, MAX_PROCESSES>")]
    process: Vec<ProcessFile>,
}

/// `[system]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SystemFile {
    #[serde(default = "yes")]
    xnack: bool,
    #[serde(default, deserialize_with = "de::opt_size")]
    sysmem: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_size")]
    mem_limit: Option<u64>,
    #[serde(default, deserialize_with = "de::at_most::<_, _, 64>")]
    gpu: Vec<Spanned<GpuFile>>,
    seed: Option<u64>,
    profile: Option<Spanned<String>>,
    // The knobs `[system]` takes too, as scenario files wrote them before
    // `[config]` (each is a key of `svmsim config`).
    policy: Option<Spanned<KnobText>>,
    bulk_dma_unmap: Option<Spanned<KnobText>>,
    kernel_accounting: Option<Spanned<KnobText>>,
    unmap_every_mapped_gpu: Option<Spanned<KnobText>>,
    lazy_map_after_prefetch: Option<Spanned<KnobText>>,
    victim_policy: Option<Spanned<KnobText>>,
}

impl SystemFile {
    /// The knobs given in `[system]`, by key.
    fn knobs(&self) -> [(&'static str, Option<&Spanned<KnobText>>); 6] {
        [
            ("policy", self.policy.as_ref()),
            ("bulk_dma_unmap", self.bulk_dma_unmap.as_ref()),
            ("kernel_accounting", self.kernel_accounting.as_ref()),
            (
                "unmap_every_mapped_gpu",
                self.unmap_every_mapped_gpu.as_ref(),
            ),
            (
                "lazy_map_after_prefetch",
                self.lazy_map_after_prefetch.as_ref(),
            ),
            ("victim_policy", self.victim_policy.as_ref()),
        ]
    }
}

fn one() -> u32 {
    1
}

/// `until = { addr, value }`: a flag an access reads after each pass.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Until {
    /// The flag's address.
    #[serde(deserialize_with = "de::addr")]
    pub addr: AddrExpr,
    /// The value that ends the passes.
    pub value: u32,
}

fn yes() -> bool {
    true
}

/// `[[system.gpu]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuFile {
    name: Option<String>,
    id: Option<Spanned<u32>>,
    #[serde(default, deserialize_with = "de::opt_size")]
    vram: Option<u64>,
    #[serde(default = "yes")]
    svm: bool,
    #[serde(default = "yes")]
    xnack: bool,
    hive: Option<u64>,
    apu: Option<bool>,
    apu_prefer_gtt: Option<bool>,
    ats: Option<bool>,
    local_atomics: Option<bool>,
    gc: Option<Spanned<String>>,
}

/// What a `[[system.gpu]]` has unless it says otherwise: its profile's
/// GPUs' version and APU flags.
#[derive(Clone, Copy, Default)]
struct GpuDefaults {
    gc: svm_core::pte::GcVersion,
    apu: bool,
    prefer_gtt: bool,
    ats: bool,
    local_atomics: bool,
}

/// `[[process]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessFile {
    name: Spanned<String>,
    /// The XNACK mode the process asks for as it starts (SET_XNACK_MODE).
    xnack: Option<Spanned<bool>>,
}

/// A knob's value as [`Config::set`] reads it.
struct KnobText(String);

impl<'de> Deserialize<'de> for KnobText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::knob_text(d).map(KnobText)
    }
}

/// Parses a scenario from its text.
///
/// # Errors
/// The first problem found, placed at its file, line and field.
pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let src = Source::new(file, text);
    let doc = src.parse()?;
    let root = doc.get_ref();
    let mut head = root.clone();
    let ops = head.remove("op");
    let head: FileHead = src.deserialize(root, Spanned::new(doc.span(), DeValue::Table(head)))?;

    // The system.
    let sys_span = head.system.span();
    let sys = head.system.into_inner();
    let config = configure(&src, root, Config::default(), &sys, head.config)?;
    let profile = match &sys.profile {
        None => None,
        Some(p) => Some(
            svm_sim::timing::Profile::built_in(p.get_ref())
                .map_err(|e| src.error_in(root, p.span(), e.message))?,
        ),
    };
    // A GPU without its own `gc`, `apu`, `apu_prefer_gtt`, `ats` or
    // `local_atomics` has the profile's GPUs' value.
    let defaults = profile
        .as_ref()
        .map_or_else(GpuDefaults::default, |p| GpuDefaults {
            gc: p.gc(),
            apu: p.gpu.apu,
            prefer_gtt: p.gpu.apu_prefer_gtt,
            ats: p.gpu.ats,
            local_atomics: p.gpu.local_atomics,
        });
    let mut gpus: Vec<GpuDesc> = Vec::new();
    for (index, g) in sys.gpu.into_iter().enumerate() {
        let desc = gpu_desc(&src, root, &gpus, g, index, defaults)?;
        gpus.push(desc);
    }
    if gpus.is_empty() {
        return Err(src.error_in(root, sys_span, "a system needs at least one [[system.gpu]]"));
    }
    let topology = Topology::new(gpus.clone())
        .map_err(|e| src.error_in(root, sys_span.clone(), e.to_string()))?;
    let sysmem_bytes = sys.sysmem.unwrap_or(64 << 30);
    let system = SystemSpec {
        topology,
        xnack: sys.xnack,
        sysmem_bytes,
        mem_limit_bytes: sys.mem_limit.unwrap_or(sysmem_bytes - (sysmem_bytes >> 4)),
        config,
        seed: sys.seed,
        profile,
    };

    // The processes.
    let mut processes: Vec<String> = Vec::new();
    let mut process_xnack = Vec::new();
    for p in head.process {
        if processes.contains(p.name.get_ref()) {
            return Err(src.error_in(
                root,
                p.name.span(),
                format!("process {:?} is defined twice", p.name.get_ref()),
            ));
        }
        process_xnack.push(p.xnack.map(|x| {
            let e = src.error_in(
                root,
                x.span(),
                format!(
                    "process {:?}: the kernel refuses xnack = {} (EPERM: a GPU cannot run it so)",
                    p.name.get_ref(),
                    x.get_ref()
                ),
            );
            (x.into_inner(), e)
        }));
        processes.push(p.name.into_inner());
    }
    if processes.is_empty() {
        processes.push("p0".to_owned());
        process_xnack.push(None);
    }
    let declared = processes.len();

    // The operations.
    let mut reader = OpReader {
        src: &src,
        root,
        names: de::Names {
            gpus,
            labels: vec![std::collections::BTreeSet::new(); processes.len()],
            processes,
            current: 0,
        },
        queues: Vec::new(),
        buffers: Vec::new(),
        launches: Vec::new(),
    };
    reader.queues = vec![std::collections::BTreeSet::new(); reader.names.processes.len()];
    reader.buffers = reader.queues.clone();
    reader.launches = vec![Vec::new(); reader.names.processes.len()];
    let mut out = Vec::new();
    if let Some(list) = ops {
        let span = list.span();
        let DeValue::Array(list) = list.get_ref() else {
            return Err(src.error_in(root, span, "`op` is a list of [[op]] tables"));
        };
        if list.len() > MAX_OPS {
            return Err(src.error_in(
                root,
                span,
                format!("{} ops; a scenario holds at most {MAX_OPS}", list.len()),
            ));
        }
        // The work the ops may need, bounded as they are read.
        let mut touches = 0u64;
        let mut xnack_may_be_off = !system.xnack;
        for (index, v) in list.iter().enumerate() {
            let op = reader.op(v, index)?;
            xnack_may_be_off |= matches!(op.kind, OpKind::SetXnack { .. });
            touches = touches.saturating_add(op.kind.page_touches(xnack_may_be_off));
            if touches > svm_sim::limits::MAX_PAGE_TOUCHES {
                return Err(src.error_in(
                    root,
                    v.span(),
                    format!(
                        "the ops up to this one may move or map {touches} pages; a scenario's \
                         may move or map at most {} (hours of simulation)",
                        svm_sim::limits::MAX_PAGE_TOUCHES
                    ),
                ));
            }
            out.push(op);
        }
    }
    // An access left in flight to the end would have no result to report.
    if let Some((_, e)) = reader.launches.iter().flatten().next() {
        return Err(e.clone());
    }
    Ok(Scenario {
        file: file.to_owned(),
        name: head.name.unwrap_or_else(|| file.to_owned()),
        description: head.description.unwrap_or_default(),
        system,
        forked: (0..reader.names.processes.len())
            .map(|i| i >= declared)
            .collect(),
        process_xnack: {
            let mut x = process_xnack;
            x.resize_with(reader.names.processes.len(), || None);
            x
        },
        processes: reader.names.processes,
        ops: out,
    })
}

/// One `[[system.gpu]]`: defaults filled in, its name and id unique.
fn gpu_desc(
    src: &Source<'_>,
    root: &DeTable<'_>,
    before: &[GpuDesc],
    g: Spanned<GpuFile>,
    index: usize,
    defaults: GpuDefaults,
) -> Result<GpuDesc, ScenarioError> {
    let span = g.span();
    let g = g.into_inner();
    let name = g.name.unwrap_or_else(|| format!("gpu{index}"));
    if before.iter().any(|b| b.name == name) {
        return Err(src.error_in(root, span, format!("GPU name {name:?} is used twice")));
    }
    let id = match &g.id {
        Some(raw) => GpuId::new(*raw.get_ref()).ok_or_else(|| {
            src.error_in(
                root,
                raw.span(),
                format!(
                    "{:#x} is reserved (0 is sysmem, 0xffffffff undefined)",
                    raw.get_ref()
                ),
            )
        })?,
        None => GpuId::new(0x1002 + 0x1000 * u32::try_from(index).expect("at most 64 GPUs"))
            .expect("non-zero"),
    };
    if let Some(other) = before.iter().find(|b| b.id == id) {
        return Err(src.error_in(
            root,
            span,
            format!("gpu_id {id} is already used by {:?}", other.name),
        ));
    }
    let gc = match &g.gc {
        None => defaults.gc,
        Some(v) => svm_core::pte::GcVersion::parse(v.get_ref()).ok_or_else(|| {
            src.error_in(
                root,
                v.span(),
                format!(
                    "{:?}: expected a graphics IP version such as \"9.4.3\"",
                    v.get_ref()
                ),
            )
        })?,
    };
    let vram_bytes = g.vram.unwrap_or(16 << 30);
    use svm_sim::limits::{MAX_VRAM_BYTES, MIN_VRAM_BYTES};
    if !(MIN_VRAM_BYTES..=MAX_VRAM_BYTES).contains(&vram_bytes) {
        return Err(src.error_in(
            root,
            span,
            format!("vram {vram_bytes}: a GPU has 2 MiB to 16 TiB of VRAM"),
        ));
    }
    Ok(GpuDesc {
        name,
        id,
        vram_bytes,
        svm: g.svm,
        xnack: g.xnack,
        hive: g.hive,
        apu: g.apu.unwrap_or(defaults.apu),
        prefer_gtt: g.apu_prefer_gtt.unwrap_or(defaults.prefer_gtt),
        ats: g.ats.unwrap_or(defaults.ats),
        local_atomics: g.local_atomics.unwrap_or(defaults.local_atomics),
        gc,
    })
}

/// The run's knobs over `base`: the few `[system]` takes (the older
/// spelling), then the `[config]` table (any key of `svmsim config`). A key
/// given in both is refused rather than one silently winning.
fn configure(
    src: &Source<'_>,
    root: &DeTable<'_>,
    base: Config,
    sys: &SystemFile,
    table: BTreeMap<Spanned<String>, Spanned<KnobText>>,
) -> Result<Config, ScenarioError> {
    let mut config = base;
    for (key, v) in sys.knobs() {
        if let Some(v) = v {
            set_knob(src, root, &mut config, key, None, v)?;
        }
    }
    for (key, v) in &table {
        let given = sys
            .knobs()
            .iter()
            .any(|(k, v)| *k == key.get_ref() && v.is_some());
        if given {
            return Err(src.error_in(
                root,
                v.span(),
                format!(
                    "`{}` is given in [system] too; keep one (`[config]` is the place for knobs)",
                    key.get_ref()
                ),
            ));
        }
        set_knob(src, root, &mut config, key.get_ref(), Some(key.span()), v)?;
    }
    Ok(config)
}

/// Sets knob `key` to `v`: an unknown key is an error at the key (when its
/// place is known), a refused value at the value.
fn set_knob(
    src: &Source<'_>,
    root: &DeTable<'_>,
    config: &mut Config,
    key: &str,
    key_span: Option<std::ops::Range<usize>>,
    v: &Spanned<KnobText>,
) -> Result<(), ScenarioError> {
    config.set(key, &v.get_ref().0).map_err(|e| match e {
        svm_core::config::ConfigError::BadValue { value, accepts, .. } => {
            src.error_in(root, v.span(), format!("{value:?} is not {accepts}"))
        }
        other => src.error_in(root, key_span.unwrap_or(v.span()), other.to_string()),
    })
}

/// Reads a configuration file (`--config FILE.toml`): a table of knobs,
/// as `svmsim config --toml` writes it, applied over `base`.
///
/// # Errors
/// TOML that does not parse, an unknown key or a refused value, at its
/// file, line and column.
pub fn config_file(file: &str, text: &str, base: Config) -> Result<Config, ScenarioError> {
    let src = Source::new(file, text);
    let doc = src.parse()?;
    let root = doc.get_ref();
    let table: BTreeMap<Spanned<String>, Spanned<KnobText>> =
        src.deserialize(root, Spanned::new(doc.span(), DeValue::Table(root.clone())))?;
    let mut config = base;
    for (key, v) in &table {
        set_knob(&src, root, &mut config, key.get_ref(), Some(key.span()), v)?;
    }
    Ok(config)
}

/// Reads the operations in order, keeping the names each defines.
struct OpReader<'a, 's> {
    src: &'a Source<'s>,
    root: &'a DeTable<'s>,
    /// GPUs, processes and the mapping labels made so far.
    names: de::Names,
    /// Queue labels per process.
    queues: Vec<std::collections::BTreeSet<String>>,
    /// KFD buffer labels per process.
    buffers: Vec<std::collections::BTreeSet<String>>,
    /// Launched accesses per process not yet waited for, with the error to
    /// give if none is.
    launches: Vec<Vec<(String, ScenarioError)>>,
}

impl OpReader<'_, '_> {
    /// An error at `span`.
    fn error(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> ScenarioError {
        self.src.error_in(self.root, span, message)
    }

    /// Reads `[[op]]` number `index`.
    fn op(&mut self, v: &Spanned<DeValue<'_>>, index: usize) -> Result<OpSpec, ScenarioError> {
        let span = v.span();
        let DeValue::Table(table) = v.get_ref() else {
            return Err(self.error(span, "an op is a table: [[op]]"));
        };
        let line = self.src.line_col(span.start).0;
        // The value of key `k`, to place what serde cannot see.
        let at = |k: &str| table.get(k).map_or(span.clone(), Spanned::span);
        let mut body = table.clone();
        let process = match body.remove("process") {
            None => 0,
            Some(p) => {
                let DeValue::String(name) = p.get_ref() else {
                    return Err(self.error(p.span(), "a process is named by a string"));
                };
                let found = self.names.processes.iter().position(|n| n == name.as_ref());
                found.ok_or_else(|| {
                    self.error(
                        p.span(),
                        format!(
                            "no process named {name:?}; declared: {}",
                            self.names.processes.join(", ")
                        ),
                    )
                })?
            }
        };
        let Some(what) = body.remove("do") else {
            return Err(self.error(
                span,
                format!("missing field `do`: the op, one of: {}", op_names()),
            ));
        };
        let DeValue::String(op_name) = what.get_ref() else {
            return Err(self.error(
                what.span(),
                format!("`do` names the op, one of: {}", op_names()),
            ));
        };
        // `{ <do> = { rest } }`: the externally tagged shape serde reads
        // without buffering, so every field keeps its span.
        let mut tagged = DeTable::new();
        tagged.insert(
            Spanned::new(what.span(), op_name.clone()),
            Spanned::new(span.clone(), DeValue::Table(body)),
        );
        self.names.current = process;
        let (src, root) = (self.src, self.root);
        let kind = de::scoped(&mut self.names, || {
            src.deserialize::<OpKind>(root, Spanned::new(span.clone(), DeValue::Table(tagged)))
        });
        let mut kind = kind.map_err(|mut e| {
            if e.field.ends_with(".do") && e.message.starts_with("unknown variant") {
                e.message = format!(
                    "unknown op {:?}; expected one of: {}",
                    op_name.as_ref(),
                    op_names()
                );
            } else if e.field.ends_with(".expect") && e.message.starts_with("unknown field") {
                // Placed at the value, as the other errors about `expect`.
                e = self.error(at("expect"), "this op cannot fail; it takes no `expect`");
            }
            e
        })?;
        self.check(&mut kind, process, &at)?;
        Ok(OpSpec {
            index,
            line,
            process,
            kind,
        })
    }

    /// What a field's grammar cannot say alone: the rules between fields,
    /// and the names an op defines or refers to (queues, launches).
    fn check(
        &mut self,
        kind: &mut OpKind,
        process: usize,
        at: &dyn Fn(&str) -> std::ops::Range<usize>,
    ) -> Result<(), ScenarioError> {
        if let OpKind::Fork { child } = kind {
            if self.names.processes.contains(child) {
                return Err(self.error(
                    at("child"),
                    format!("process {child:?} already exists; a fork makes a new one"),
                ));
            }
            if self.names.processes.len() >= MAX_PROCESSES {
                return Err(self.error(
                    at("child"),
                    format!("a scenario has at most {MAX_PROCESSES} processes"),
                ));
            }
            // The child starts with the parent's mappings (and their labels).
            self.names.processes.push(child.clone());
            let labels = self.names.labels[process].clone();
            self.names.labels.push(labels);
            self.queues.push(std::collections::BTreeSet::new());
            self.buffers.push(std::collections::BTreeSet::new());
            self.launches.push(Vec::new());
            return Ok(());
        }
        let threads = match kind {
            OpKind::CpuAccess { threads, .. } => Some((*threads, "threads")),
            OpKind::GpuAccess { waves, .. } => Some((*waves, "waves")),
            _ => None,
        };
        match kind {
            // A label names one mapping: a second would make every later
            // address ambiguous.
            OpKind::Mmap { label: Some(l), .. }
                if !self.names.labels[process].insert(l.clone()) =>
            {
                return Err(self.error(
                    at("name"),
                    format!(
                        "the name {l:?} already labels an earlier mapping of this process; \
                         give this one another name"
                    ),
                ));
            }
            OpKind::QueueCreate { label: Some(l), .. } => {
                self.queues[process].insert(l.clone());
            }
            OpKind::AllocBo { label, .. } if !self.buffers[process].insert(label.clone()) => {
                return Err(self.error(
                    at("name"),
                    format!("the name {label:?} already names a buffer of this process"),
                ));
            }
            OpKind::FreeBo { label, .. } if !self.buffers[process].remove(label) => {
                return Err(self.error(
                    at("buffer"),
                    format!(
                        "no buffer named {label:?} was allocated (and not freed) before this op"
                    ),
                ));
            }
            OpKind::QueueDestroy { label, .. } if !self.queues[process].contains(label) => {
                return Err(self.error(
                    at("queue"),
                    format!("no queue named {label:?} was created before this op"),
                ));
            }
            OpKind::GetAttr { query, expect, .. } => {
                let attrs = match expect {
                    Some(Expect::Attrs(e)) => Some(&*e),
                    _ => None,
                };
                match query {
                    Some(q) => {
                        if let Some(e) = attrs {
                            self.expect_is_queried(e, q, at("query"))?;
                        }
                    }
                    None => *query = Some(self.default_query(attrs)),
                }
            }
            OpKind::Ranges { addr, size, .. } if addr.is_some() != size.is_some() => {
                let span = at(if addr.is_some() { "addr" } else { "size" });
                return Err(self.error(span, "a ranges window needs both `addr` and `size`"));
            }
            OpKind::GpuAccess {
                write,
                fill,
                check_fill,
                atomic_add,
                launch,
                expect,
                size,
                repeat,
                start,
                ..
            }
            | OpKind::CpuAccess {
                write,
                fill,
                check_fill,
                atomic_add,
                launch,
                expect,
                size,
                repeat,
                start,
                ..
            } => {
                self.check_access(*write, *fill, *check_fill, *size, at)?;
                if atomic_add.is_some() && (*write || *size % 4 != 0) {
                    return Err(self.error(
                        at(if *write { "atomic_add" } else { "size" }),
                        "`atomic_add` adds to whole 32-bit words: it reads and writes by itself (no `write`, no `fill`), over a size that is a multiple of 4",
                    ));
                }
                if *start > MAX_START_NS {
                    return Err(self.error(
                        at("start"),
                        format!(
                            "start {start} ns: an access starts at most {MAX_START_NS} ns later"
                        ),
                    ));
                }
                if !(1..=MAX_REPEAT).contains(repeat) {
                    return Err(self.error(
                        at("repeat"),
                        format!(
                            "repeat {repeat}: an access walks its buffer 1 to {MAX_REPEAT} times"
                        ),
                    ));
                }
                if let Some((threads, key)) = threads
                    && !(1..=MAX_THREADS).contains(&threads)
                {
                    return Err(self.error(
                        at(key),
                        format!(
                            "threads {threads}: an access has 1 to {MAX_THREADS} CPU threads or GPU waves"
                        ),
                    ));
                }
                if let Some(name) = launch {
                    if self.launches[process].iter().any(|(n, _)| n == name) {
                        return Err(self.error(
                            at("launch"),
                            format!("access {name:?} is already in flight; wait for it first"),
                        ));
                    }
                    if expect.is_some() {
                        return Err(self.error(
                            at(""),
                            format!(
                                "a launched access has no result yet; put `expect` on the `wait` for {name:?}"
                            ),
                        ));
                    }
                    let never = self.error(
                        at("launch"),
                        format!(
                            "access {name:?} is launched but never waited for; add {{ do = \"wait\", access = \"{name}\" }}"
                        ),
                    );
                    self.launches[process].push((name.clone(), never));
                }
            }
            OpKind::Wait { label, .. } => {
                let Some(i) = self.launches[process].iter().position(|(n, _)| n == label) else {
                    return Err(self.error(
                        at("access"),
                        format!(
                            "no access named {label:?} is in flight in this process; launch one with `launch = \"{label}\"` on a gpu_access or cpu_access"
                        ),
                    ));
                };
                self.launches[process].remove(i);
            }
            _ => {}
        }
        Ok(())
    }

    /// The rules of an access's fields.
    fn check_access(
        &self,
        write: bool,
        fill: Option<Fill>,
        check_fill: Option<Fill>,
        size: u64,
        at: &dyn Fn(&str) -> std::ops::Range<usize>,
    ) -> Result<(), ScenarioError> {
        if write != fill.is_some() {
            return Err(self.error(
                at(""),
                "a write needs `fill` (a 32-bit pattern, \"page_index\" or \"dword_index\"), and only a write has one",
            ));
        }
        if write && check_fill.is_some() {
            return Err(self.error(
                at(""),
                "`check_fill` checks what a read returns; this is a write",
            ));
        }
        if size > MAX_OP_BYTES {
            return Err(self.error(at("size"), "one access of a scenario moves at most 1 GiB"));
        }
        Ok(())
    }

    /// Without a `query`, ask what `expect` names, or everything.
    fn default_query(&self, expect: Option<&AttrExpect>) -> Vec<SvmAttribute> {
        use attr_type::*;
        let mut q = Vec::new();
        match expect {
            Some(e) => {
                let pairs = [
                    (e.preferred_loc.is_some(), PREFERRED_LOC),
                    (e.prefetch_loc.is_some(), PREFETCH_LOC),
                    (e.set_flags.is_some(), SET_FLAGS),
                    (e.clr_flags.is_some(), CLR_FLAGS),
                    (e.granularity.is_some(), GRANULARITY),
                ];
                q.extend(
                    pairs
                        .iter()
                        .filter(|(on, _)| *on)
                        .map(|&(_, t)| SvmAttribute::new(t, 0)),
                );
                q.extend(e.access.keys().map(|&id| SvmAttribute::new(ACCESS, id)));
            }
            None => {
                q.extend([PREFERRED_LOC, PREFETCH_LOC].map(|t| SvmAttribute::new(t, 0)));
                q.extend(
                    self.names
                        .gpus
                        .iter()
                        .map(|g| SvmAttribute::new(ACCESS, g.id.raw())),
                );
                q.extend([SET_FLAGS, CLR_FLAGS, GRANULARITY].map(|t| SvmAttribute::new(t, 0)));
            }
        }
        q
    }

    /// Every answer `expect` names must be asked for by the query.
    fn expect_is_queried(
        &self,
        e: &AttrExpect,
        query: &[SvmAttribute],
        at: std::ops::Range<usize>,
    ) -> Result<(), ScenarioError> {
        use attr_type::*;
        let has = |t: u32| query.iter().any(|a| a.ty == t);
        let named = [
            (e.preferred_loc.is_some(), PREFERRED_LOC, "preferred_loc"),
            (e.prefetch_loc.is_some(), PREFETCH_LOC, "prefetch_loc"),
            (e.set_flags.is_some(), SET_FLAGS, "set_flags"),
            (e.clr_flags.is_some(), CLR_FLAGS, "clr_flags"),
            (e.granularity.is_some(), GRANULARITY, "granularity"),
        ];
        for (on, t, name) in named {
            if on && !has(t) {
                return Err(self.error(
                    at,
                    format!("`expect` names {name}, which the query does not ask for"),
                ));
            }
        }
        for id in e.access.keys() {
            if !query.iter().any(|a| a.ty == ACCESS && a.value == *id) {
                return Err(self.error(
                    at,
                    format!(
                        "`expect` names access for gpu_id {id:#x}, which the query does not ask for"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The latest an access may start, after its op: 10 s.
pub const MAX_START_NS: u64 = 10_000_000_000;
/// The most passes one access makes over its buffer.
pub const MAX_REPEAT: u32 = 10_000;
/// The most CPU threads one access runs.
pub const MAX_THREADS: u32 = 256;
/// The most processes a scenario declares.
pub const MAX_PROCESSES: usize = svm_sim::limits::MAX_PROCESSES as usize;
/// The most ops a scenario holds.
pub const MAX_OPS: usize = 1_000_000;

/// The most bytes one `gpu_access` or `cpu_access` op moves.
pub const MAX_OP_BYTES: u64 = svm_sim::limits::MAX_ACCESS_BYTES;

/// The op names, as serde reads them (with aliases), for error messages.
fn op_names() -> String {
    crate::probe::names::<OpKind>().join(", ")
}

/// What an access writes, or what a read must find, word by word: one
/// 32-bit value everywhere, or each 32-bit word holding its page's index
/// or its own index, counted from the access's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// The same word everywhere.
    Word(u32),
    /// Every word of page `n` of the access holds `n`.
    PageIndex,
    /// Word `n` of the access holds `n`.
    DwordIndex,
}

impl Fill {
    /// The word at byte offset `off` (a multiple of 4) of the access.
    pub fn word_at(self, off: u64) -> u32 {
        let n = match self {
            Fill::Word(v) => return v,
            Fill::PageIndex => off / svm_core::addr::PAGE_SIZE,
            Fill::DwordIndex => off / 4,
        };
        // An access is at most 4 GiB words long (a bound the parser keeps).
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The bytes of an access of `size` bytes.
    pub fn bytes(self, size: u64) -> Vec<u8> {
        let mut out = vec![0; usize::try_from(size).unwrap_or(0)];
        self.write_part(0, &mut out);
        out
    }

    /// Fills `part`, the bytes at offset `off` of the access.
    pub fn write_part(self, off: u64, part: &mut [u8]) {
        // Whole words where the part is word-aligned; byte by byte only at
        // its ragged ends.
        let head = usize::try_from(off.wrapping_neg() % 4)
            .unwrap_or(0)
            .min(part.len());
        let (first, rest) = part.split_at_mut(head);
        for (at, b) in (off..).zip(first.iter_mut()) {
            *b = self.word_at(at & !3).to_le_bytes()[(at % 4) as usize];
        }
        let start = off + head as u64;
        let tail_at = start + (rest.len() & !3) as u64;
        let mut words = rest.chunks_exact_mut(4);
        for (at, w) in (start..).step_by(4).zip(&mut words) {
            w.copy_from_slice(&self.word_at(at).to_le_bytes());
        }
        let tail = words.into_remainder();
        for (at, b) in (tail_at..).zip(tail.iter_mut()) {
            *b = self.word_at(at & !3).to_le_bytes()[(at % 4) as usize];
        }
    }

    /// Whether the access at `addr` holds one word throughout each page
    /// of memory: [`Fill::word_at`] of a page's first byte then gives
    /// the whole page.
    pub fn uniform_pages(self, addr: u64) -> bool {
        match self {
            Fill::Word(_) => true,
            Fill::PageIndex => addr % svm_core::addr::PAGE_SIZE == 0,
            Fill::DwordIndex => false,
        }
    }
}

/// Checks a read against a [`Fill`] as its bytes stream past, part by
/// part (parts need not end on a word): it keeps the first word that
/// differs.
#[derive(Debug)]
pub struct FillCheck {
    want: Fill,
    /// The bytes of the word being read, and how many have come.
    word: [u8; 4],
    have: usize,
    /// Offset of the word being read.
    at: u64,
    /// The first word that differs: its offset, what it held and what it
    /// should.
    mismatch: Option<(u64, u32, u32)>,
}

impl FillCheck {
    pub fn new(want: Fill) -> Self {
        Self {
            want,
            word: [0; 4],
            have: 0,
            at: 0,
            mismatch: None,
        }
    }

    /// The next bytes of the read.
    pub fn feed(&mut self, mut part: &[u8]) {
        while self.have != 0 && !part.is_empty() {
            self.word[self.have] = part[0];
            part = &part[1..];
            self.have = (self.have + 1) % 4;
            if self.have == 0 {
                self.word_done(u32::from_le_bytes(self.word));
            }
        }
        let mut words = part.chunks_exact(4);
        for w in &mut words {
            self.word_done(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        }
        for &b in words.remainder() {
            self.word[self.have] = b;
            self.have += 1;
        }
    }

    fn word_done(&mut self, got: u32) {
        let want = self.want.word_at(self.at);
        if got != want && self.mismatch.is_none() {
            self.mismatch = Some((self.at, got, want));
        }
        self.at += 4;
    }

    /// What the read was checked against, and the first word that
    /// differed (a trailing part of a word is not checked).
    pub fn finish(&self) -> (String, Option<String>) {
        let expect = match self.want {
            Fill::Word(v) => format!("every word {v:#x}"),
            p => format!("words by {p}"),
        };
        let mismatch = self
            .mismatch
            .map(|(at, got, want)| format!("word at +{at:#x} is {got:#x}, not {want:#x}"));
        (expect, mismatch)
    }
}

impl std::fmt::Display for Fill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fill::Word(v) => write!(f, "{v:#x}"),
            Fill::PageIndex => f.write_str("page_index"),
            Fill::DwordIndex => f.write_str("dword_index"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fill written in parts of any size and start gives the bytes it
    /// gives whole, and a check fed the same bytes in any parts finds the
    /// first wrong word.
    #[test]
    fn fills_and_checks_stream_in_parts_that_split_words() {
        let size = 3 * 4096 + 12;
        for fill in [Fill::Word(0xa1b2_c3d4), Fill::PageIndex, Fill::DwordIndex] {
            let whole = fill.bytes(size);
            for cut in [1usize, 3, 4, 7, 4096, 5000] {
                let mut parts = vec![0u8; whole.len()];
                let mut off = 0;
                for part in parts.chunks_mut(cut) {
                    fill.write_part(off, part);
                    off += part.len() as u64;
                }
                assert_eq!(parts, whole, "{fill} in parts of {cut}");
                let mut check = FillCheck::new(fill);
                whole.chunks(cut).for_each(|p| check.feed(p));
                assert_eq!(check.finish().1, None, "{fill} checked in parts of {cut}");
                let mut bad = whole.clone();
                bad[4097] ^= 0x10;
                bad[9000] ^= 0x10;
                let mut check = FillCheck::new(fill);
                bad.chunks(cut).for_each(|p| check.feed(p));
                let want = fill.word_at(4096);
                let got = u32::from_le_bytes([bad[4096], bad[4097], bad[4098], bad[4099]]);
                assert_eq!(
                    check.finish().1,
                    Some(format!("word at +0x1000 is {got:#x}, not {want:#x}")),
                    "{fill} in parts of {cut}"
                );
            }
        }
        assert_eq!(
            FillCheck::new(Fill::Word(1)).finish().0,
            "every word 0x1".to_string()
        );
        assert!(Fill::PageIndex.uniform_pages(0x2000));
        assert!(!Fill::PageIndex.uniform_pages(0x2004));
        assert!(!Fill::DwordIndex.uniform_pages(0));
    }

    /// A GPU's `gc` key sets its graphics IP version; without it, the
    /// profile's, or GC 9.4.2.
    #[test]
    fn gpus_carry_their_ip_version() {
        use svm_core::pte::GcVersion;
        let text = "[system]\n[[system.gpu]]\ngc = \"9.4.3\"\n[[system.gpu]]\n";
        let s = parse("t.toml", text).unwrap();
        let gcs: Vec<_> = s.system.topology.gpus().iter().map(|g| g.gc).collect();
        assert_eq!(gcs, [GcVersion(9, 4, 3), GcVersion(9, 4, 2)]);
        // With a profile, a GPU without `gc` has the profile's version.
        let text =
            "[system]\nprofile = \"mi300x\"\n[[system.gpu]]\n[[system.gpu]]\ngc = \"9.4.2\"\n";
        let s = parse("t.toml", text).unwrap();
        let gcs: Vec<_> = s.system.topology.gpus().iter().map(|g| g.gc).collect();
        assert_eq!(gcs, [GcVersion(9, 4, 3), GcVersion(9, 4, 2)]);
    }

    /// `atomic_add` reads and writes by itself over whole words: with
    /// `write`, or over a size that splits a word, the file is refused at
    /// the op's line and field; a GPU's `local_atomics` comes from its
    /// profile unless it says otherwise.
    #[test]
    fn atomics_are_checked_where_they_are_written() {
        let head =
            "[system]\n[[system.gpu]]\n[[op]]\ndo = \"mmap\"\nname = \"b\"\nsize = \"4KiB\"\n";
        let op = |extra: &str| {
            format!("{head}[[op]]\ndo = \"gpu_access\"\ngpu = \"gpu0\"\naddr = \"b\"\n{extra}")
        };
        let ok = parse("t.toml", &op("size = 16\natomic_add = 1\n")).unwrap();
        assert!(matches!(
            ok.ops[1].kind,
            OpKind::GpuAccess {
                atomic_add: Some(1),
                ..
            }
        ));
        let e = parse("t.toml", &op("size = 6\natomic_add = 1\n")).unwrap_err();
        assert!(
            e.to_string().contains("t.toml:11") && e.to_string().contains("size"),
            "{e}"
        );
        let e = parse(
            "t.toml",
            &op("size = 16\nwrite = true\nfill = 1\natomic_add = 1\n"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("atomic_add"), "{e}");
        let text =
            "[system]\nprofile = \"xe\"\n[[system.gpu]]\n[[system.gpu]]\nlocal_atomics = false\n";
        let s = parse("t.toml", text).unwrap();
        let local: Vec<bool> = s
            .system
            .topology
            .gpus()
            .iter()
            .map(|g| g.local_atomics)
            .collect();
        assert_eq!(local, [true, false]);
    }

    #[test]
    fn sizes() {
        // Table: (text, bytes)
        let cases = [
            ("4096", Some(4096)),
            ("16KiB", Some(16 << 10)),
            ("2 MiB", Some(2 << 20)),
            ("3 pages", Some(3 * 4096)),
            ("1 page", Some(4096)),
            ("0x4000", Some(0x4000)),
            ("1_024", Some(1024)),
            ("12 bananas", None),
            ("", None),
            ("99999999999999TiB", None),
        ];
        for (s, want) in cases {
            assert_eq!(svm_core::units::parse_size(s).ok(), want, "{s:?}");
        }
    }
}
