//! Random operation sequences over 1–3 GPUs under all three policies, with
//! every invariant checked after every operation, and under a chaos policy
//! (random plans, as a policy outside the engine may make them) in about a
//! third of the cases.
//!
//! Each case draws a machine (GPU count, hives, small VRAM so allocations
//! evict or fall back, XNACK mode, policy, DMA unmap mode) with two
//! processes, and up to 30 operations, each by one of them: mappings and unmappings, protection changes, SET_ATTR with
//! prefetches and access changes, GPU and CPU reads and writes (some left
//! in flight), kernels and CPU threads, and the passing of time. Operations may fail as the kernel would (fatal faults,
//! EINVAL, ENOSPC); the checkers must pass regardless, and every byte must
//! equal what was written.
//!
//! `SVM_CASES` sets the case count (default 256); `SVM_SEED` replays a run;
//! `SVM_TRACE_CASES` prints every case as it starts (to find one that
//! hangs).

use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use svm_core::Errno;
use svm_core::addr::CpuVa;
use svm_core::addr::{PageNum, PageRange};
use svm_core::attr::Location;
use svm_core::events::{Kind, MigrateTrigger};
use svm_core::gpu::GpuId;
use svm_core::inject::{Rule, Site, When};
use svm_core::policy::{FaultCtx, FaultPlan, FaultPolicy, Migration, Policy, PolicyFactory};
use svm_core::topology::{GpuDesc, Topology};
use svm_core::uapi::{SVM_OP_SET_ATTR, SvmArgs, SvmAttribute};
use svm_sim::check;
use svm_sim::machine::{Machine, MemLimit, Pid};
use svm_sim::mm::{Backing, Mark, Prot};

use crate::support::PAGE;

const WIN: u64 = 0x3f0;
const WIN_PAGES: u64 = 0x80;
const IDS: [u32; 3] = [0x1002, 0x2002, 0x3002];

#[derive(Clone, Debug)]
struct Setup {
    gpus: usize,
    hive: bool,
    vram_pages: u64,
    xnack: bool,
    policy: Policy,
    bulk: bool,
    /// The scheduler's seed; `None` orders work eagerly.
    sched: Option<u64>,
    /// Price every action with the mi210 profile (else untimed).
    timed: bool,
    /// Run a chaos policy from this seed instead of `policy`: any plan a
    /// policy outside the engine might make, which the engine must carry
    /// out without breaking an invariant.
    chaos: Option<u64>,
    /// Failures to inject (the swarm test's; none in the plain one).
    inject: Vec<Rule>,
}

/// A fault policy that plans at random: throttle now and then, serve a
/// read with read copies, migrate any part of the range to the best
/// location, to system memory or to the faulting GPU (or nothing: a
/// remote mapping), and map a window that usually holds the faulting page
/// and sometimes does not.
#[derive(Debug)]
struct Chaos(rand_pcg::Pcg64Mcg);

impl FaultPolicy for Chaos {
    fn name(&self) -> &str {
        "chaos"
    }

    fn plan(&mut self, ctx: &FaultCtx<'_>) -> FaultPlan {
        use rand::RngExt;
        CHAOS_PLANS.fetch_add(1, Ordering::Relaxed);
        let r = &mut self.0;
        if r.random_bool(0.1) {
            return FaultPlan::Retry {
                after_ns: r.random_range(0..1_000_000),
            };
        }
        let whole = ctx.range.range();
        let (lo, hi) = (whole.start().raw(), whole.end().raw());
        let sub = |r: &mut rand_pcg::Pcg64Mcg, around: Option<u64>| {
            let (a, b) = match around {
                Some(p) => (r.random_range(lo..=p), r.random_range(p + 1..=hi)),
                None => {
                    let a = r.random_range(lo..hi);
                    (a, r.random_range(a + 1..=hi))
                }
            };
            PageRange::new(PageNum::new(a), PageNum::new(b))
        };
        let page = ctx.page.raw();
        // Read copies on the faulting GPU (UVM's read duplication), for
        // a read: every later write, unmap, zap, fork and eviction must
        // leave no copy stale.
        if !ctx.write && r.random_bool(0.3) {
            return FaultPlan::duplicate(vec![sub(r, Some(page)), sub(r, None)]);
        }
        let migrate = match r.random_range(0..8) {
            0 | 1 => None,
            2 => Some(Location::Sys),
            3 => Some(Location::Vram(ctx.gpu_id)),
            _ => Some(ctx.best),
        }
        .map(|to| Migration {
            to,
            pages: if r.random_bool(0.7) {
                sub(r, Some(page))
            } else {
                sub(r, None)
            },
        });
        let map = match r.random_range(0..10) {
            0 => sub(r, None),
            1..=3 => ctx.window,
            _ => sub(r, Some(page)),
        };
        FaultPlan::serve(migrate, map)
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// fork(): a child shares the address space copy-on-write (it gets no
    /// ops of its own; the checker compares its bytes with its shadow).
    Fork,
    DontNeed {
        page: u64,
        n: u64,
    },
    Mmap {
        page: u64,
        n: u64,
        file: bool,
    },
    Munmap {
        page: u64,
        n: u64,
    },
    Mprotect {
        page: u64,
        n: u64,
        read: bool,
        write: bool,
    },
    SetAttr {
        page: u64,
        n: u64,
        attrs: Vec<(u32, u32)>,
    },
    Gpu {
        gpu: usize,
        page: u64,
        off: u64,
        len: u64,
        write: Option<u8>,
    },
    Cpu {
        page: u64,
        off: u64,
        len: u64,
        write: Option<u8>,
    },
    /// A GPU access left in flight; it completes as the scheduler lets it.
    Launch {
        gpu: usize,
        page: u64,
        len: u64,
        write: Option<u8>,
    },
    /// A kernel (GPU waves) or CPU threads left running: each of `n`
    /// waves touches a page of the span, loading or storing a byte.
    Kernel {
        /// `None`: CPU threads.
        gpu: Option<usize>,
        page: u64,
        n: u64,
        write: Option<u8>,
    },
    /// Concurrent work runs for a while (seeded order only).
    Interleave,
    Sleep(u64),
    Xnack(bool),
    /// VRAM pressure from outside SVM: free this many pages, or everything.
    EvictVram {
        gpu: usize,
        need_pages: Option<u64>,
    },
    Exit,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        1usize..=3,
        any::<bool>(),
        prop::sample::select(vec![64u64, 256, 4096]),
        any::<bool>(),
        prop::sample::select(Policy::ALL.to_vec()),
        any::<bool>(),
        (
            prop::option::weighted(0.75, any::<u64>()),
            any::<bool>(),
            prop::option::weighted(0.3, any::<u64>()),
        ),
    )
        .prop_map(
            |(gpus, hive, vram_pages, xnack, policy, bulk, (sched, timed, chaos))| Setup {
                gpus,
                hive,
                vram_pages,
                xnack,
                policy,
                bulk,
                sched,
                timed,
                chaos,
                inject: Vec::new(),
            },
        )
}

/// A swarm of failures: one to four sites, each failing with a
/// probability, on its Nth call or on every Nth call, sometimes with
/// another errno than its own (hmm_busy with EFAULT is kfd's "no VMA"
/// case; the others' alternatives are errnos their kernel functions also
/// return).
fn rules() -> impl Strategy<Value = Vec<Rule>> {
    let when = prop_oneof![
        4 => prop::sample::select(vec![10_000u32, 100_000, 300_000, 1_000_000]).prop_map(When::Probability),
        2 => (1u64..40).prop_map(When::Nth),
        1 => (1u64..6).prop_map(When::Every),
    ];
    let rule = (
        prop::sample::select(Site::ALL.to_vec()),
        when,
        prop::option::weighted(
            0.2,
            prop::sample::select(vec![Errno::Efault, Errno::Ebusy, Errno::Enomem, Errno::Eio]),
        ),
    )
        .prop_map(|(site, when, errno)| Rule { site, when, errno });
    prop::collection::vec(rule, 1..=4)
}

fn swarm_setup() -> impl Strategy<Value = Setup> {
    (setup(), rules()).prop_map(|(s, inject)| Setup { inject, ..s })
}

fn span() -> impl Strategy<Value = (u64, u64)> {
    (0..WIN_PAGES, 1..=WIN_PAGES / 2).prop_map(|(p, n)| (WIN + p, n.min(WIN_PAGES - p)))
}

fn attr() -> impl Strategy<Value = (u32, u32)> {
    let gpu = prop::sample::select(IDS.to_vec());
    prop_oneof![
        2 => (Just(1u32), prop_oneof![Just(0u32), gpu.clone()]),
        1 => (Just(0u32), prop_oneof![Just(0u32), Just(0xffff_ffff), gpu.clone()]),
        3 => (2u32..=4, gpu),
        1 => (Just(5u32), prop::sample::select(vec![0x8u32, 0x10, 0x40])),
        1 => (Just(6u32), prop::sample::select(vec![0x8u32, 0x40])),
        2 => (Just(7u32), 0u32..6),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let byte = prop::option::of(any::<u8>());
    prop_oneof![
        6 => (span(), prop::bool::weighted(0.15)).prop_map(|((page, n), file)| Op::Mmap { page, n, file }),
        3 => span().prop_map(|(page, n)| Op::Munmap { page, n }),
        3 => span().prop_map(|(page, n)| Op::DontNeed { page, n }),
        // PROT_NONE now and then: the restore work cannot map it and
        // reschedules itself.
        4 => (span(), prop::bool::weighted(0.7), any::<bool>())
            .prop_map(|((page, n), read, write)| Op::Mprotect { page, n, read, write }),
        12 => (span(), prop::collection::vec(attr(), 1..4)).prop_map(|((page, n), attrs)| Op::SetAttr { page, n, attrs }),
        15 => (0usize..3, span(), 0..PAGE, 1..3 * PAGE, byte.clone())
            .prop_map(|(gpu, (page, _), off, len, write)| Op::Gpu { gpu, page, off, len, write }),
        8 => (0usize..3, span(), byte.clone())
            .prop_map(|(gpu, (page, n), write)| Op::Launch { gpu, page, len: n * PAGE, write }),
        4 => (prop::option::weighted(0.8, 0usize..3), span(), byte.clone())
            .prop_map(|(gpu, (page, n), write)| Op::Kernel { gpu, page, n, write }),
        8 => Just(Op::Interleave),
        9 => (span(), 0..PAGE, 1..2 * PAGE, byte).prop_map(|((page, _), off, len, write)| Op::Cpu { page, off, len, write }),
        3 => prop::sample::select(vec![500_000u64, 3_000_000]).prop_map(Op::Sleep),
        3 => any::<bool>().prop_map(Op::Xnack),
        3 => (0usize..3, prop::option::of(prop::sample::select(vec![16u64, 128, 4096])))
            .prop_map(|(gpu, need_pages)| Op::EvictVram { gpu, need_pages }),
        // Rare: a process that exits early stops exercising the rest.
        1 => Just(Op::Exit),
        1 => Just(Op::Fork),
    ]
}

fn run_case(s: &Setup, ops: &[(usize, Op)]) -> Result<(), TestCaseError> {
    if std::env::var("SVM_TRACE_CASES").is_ok() {
        eprintln!("CASE {s:?} {ops:?}");
    }
    let gpus = (0..s.gpus)
        .map(|i| GpuDesc {
            name: format!("gpu{i}"),
            id: GpuId::new(IDS[i]).unwrap(),
            vram_bytes: s.vram_pages * PAGE,
            svm: true,
            xnack: true,
            hive: s.hive.then_some(7),
            apu: false,
            prefer_gtt: false,
            ats: false,
            local_atomics: false,
            gc: svm_core::pte::GcVersion::DEFAULT,
        })
        .collect();
    let mut m = Machine::new(
        Topology::new(gpus).unwrap(),
        s.xnack,
        MemLimit::for_sysmem(1 << 30),
    );
    m.set_policy(s.policy);
    m.set_seed(s.sched);
    if !s.inject.is_empty() {
        // A failed SDMA fence is silent corruption in kfd (its own test
        // is in svmsim's `inject.rs`); here it fails the chunk instead, so
        // every byte must still be there.
        let c = svm_core::config::Config {
            inject: s.inject.clone(),
            check_copy_fence: true,
            ..m.config().clone()
        };
        m.set_config(&c).unwrap();
    }
    if let Some(seed) = s.chaos {
        m.set_fault_policy(PolicyFactory::new(move || {
            Box::new(Chaos(rand::SeedableRng::seed_from_u64(seed)))
        }));
    }
    if s.timed {
        m.set_timing(svm_sim::timing::Profile::built_in("mi210").unwrap().timing);
    }
    // Two processes share the GPUs (and VRAM eviction picks across them).
    let pids = [m.spawn("p0"), m.spawn("p1")];
    for pid in pids {
        m.process_mut(pid).set_bulk_dma_unmap(s.bulk);
        // kfd's own stale-PTE cases have their own tests
        // (`fault::kernel_leaves_ptes_*`); here the sequences check
        // everything else.
        m.process_mut(pid).set_unmap_every_mapped_gpu(true);
        // Start with the whole window mapped, so most operations find memory.
        m.mmap(
            pid,
            Some(CpuVa::new(WIN * PAGE)),
            WIN_PAGES * PAGE,
            Prot::RW,
            Backing::Anon,
            Mark::None,
        )
        .unwrap();
    }
    let mut forks = 0;
    for (i, (who, op)) in ops.iter().enumerate() {
        let pid = pids[*who];
        match op {
            Op::Fork => {
                // A few children are enough to reach every sharing path.
                if forks < 3 {
                    forks += 1;
                    m.fork(pid, "child");
                }
            }
            Op::Mmap { page, n, file } => {
                let b = if *file {
                    Backing::File("f".into())
                } else {
                    Backing::Anon
                };
                m.mmap(
                    pid,
                    Some(CpuVa::new(page * PAGE)),
                    n * PAGE,
                    Prot::RW,
                    b,
                    Mark::None,
                )
                .unwrap();
            }
            Op::Munmap { page, n } => m.munmap(pid, CpuVa::new(page * PAGE), n * PAGE).unwrap(),
            Op::DontNeed { page, n } => {
                let _ = m.madvise_dontneed(pid, CpuVa::new(page * PAGE), n * PAGE);
            }
            Op::Mprotect {
                page,
                n,
                read,
                write,
            } => {
                let prot = Prot {
                    read: *read,
                    write: *write,
                    exec: false,
                };
                let _ = m.mprotect(pid, CpuVa::new(page * PAGE), n * PAGE, prot);
            }
            Op::SetAttr { page, n, attrs } => {
                let attrs = attrs
                    .iter()
                    .map(|&(t, v)| SvmAttribute::new(t, v))
                    .collect();
                let mut a = SvmArgs {
                    start_addr: page * PAGE,
                    size: n * PAGE,
                    op: SVM_OP_SET_ATTR,
                    attrs,
                };
                let returned = |m: &Machine| -> u64 {
                    m.injection()
                        .coverage()
                        .iter()
                        .filter_map(|c| c.responses.get("returned"))
                        .sum()
                };
                let before = returned(&m);
                let r = m.svm_ioctl(pid, &mut a);
                // An injected failure that reached the ioctl is its result
                // (or an error after it: SET_ATTR returns the last), with
                // the errno its rule gives, and none is made up.
                if returned(&m) > before {
                    prop_assert!(
                        r.is_err(),
                        "op {i}: an injected failure returned, and SET_ATTR succeeded"
                    );
                }
                if let Err(svm_core::Error::Injected { site, errno }) = &r {
                    prop_assert!(returned(&m) > before, "op {i}: {site} returned unreported");
                    prop_assert!(
                        s.inject
                            .iter()
                            .any(|x| x.site == *site && x.errno() == Some(*errno))
                            || *site == Site::CopyFence && *errno == Errno::Eio,
                        "op {i}: SET_ATTR returned {errno} from {site}, which no rule injects"
                    );
                }
            }
            Op::Gpu {
                gpu,
                page,
                off,
                len,
                write,
            } => {
                let id = IDS[gpu % s.gpus];
                let data = write.map(|b| vec![b; usize::try_from(*len).unwrap()]);
                let _ = m.gpu_access(
                    pid,
                    id,
                    CpuVa::new(page * PAGE + off),
                    *len,
                    data.as_deref(),
                );
            }
            Op::Cpu {
                page,
                off,
                len,
                write,
            } => {
                let data = write.map(|b| vec![b; usize::try_from(*len).unwrap()]);
                let _ = m.cpu_access(pid, CpuVa::new(page * PAGE + off), *len, data.as_deref());
            }
            Op::Launch {
                gpu,
                page,
                len,
                write,
            } => {
                let id = IDS[gpu % s.gpus];
                let data = write.map(|b| vec![b; usize::try_from(*len).unwrap()]);
                let _ = m.launch(pid, id, CpuVa::new(page * PAGE), *len, data.as_deref());
            }
            Op::Kernel {
                gpu,
                page,
                n,
                write,
            } => {
                let (base, w) = (page * PAGE, *write);
                let f: svm_sim::machine::KernelFn = std::rc::Rc::new(move |i, ctx| {
                    Box::pin(async move {
                        let at = base + u64::from(i) * PAGE + u64::from(i) % 64;
                        match w {
                            // An odd byte adds it to two words, atomically.
                            Some(b) if b & 1 == 1 => {
                                ctx.atomic_add(at & !3, vec![b; 8]).await;
                            }
                            Some(b) => {
                                ctx.store(at, vec![b; 8]).await;
                            }
                            None => {
                                ctx.load(at, 8).await;
                            }
                        }
                        ctx.compute(100).await;
                    })
                });
                let waves = u32::try_from(*n).unwrap();
                // Results are not collected: a kernel that dies (no VMA,
                // XNACK off) is fine; the checkers judge the machine.
                let _ = match gpu {
                    Some(g) => m.launch_kernel(pid, IDS[g % s.gpus], waves, f),
                    None => m.launch_cpu(pid, waves, f),
                };
            }
            Op::Interleave => m.interleave(),
            Op::Sleep(ns) => m.advance(*ns),
            Op::Xnack(on) => {
                let _ = m.set_xnack_mode(pid, i32::from(*on));
            }
            Op::EvictVram { gpu, need_pages } => {
                let _ = m.evict_vram(IDS[gpu % s.gpus], need_pages.map(|n| n * PAGE));
            }
            Op::Exit => m.exit(pid),
        }
        if let Err(v) = check::check(&m) {
            return Err(TestCaseError::fail(format!(
                "after op {i} (p{who} {op:?}): {v}"
            )));
        }
    }
    quiesce(&mut m, &pids)?;
    for site in m.injection().coverage() {
        let i = Site::from_name(site.site).unwrap().index();
        INJECTED[i].fetch_add(site.injected, Ordering::Relaxed);
        HANDLED[i].fetch_add(site.responses.values().sum(), Ordering::Relaxed);
    }
    let c = m.counters();
    ACTIVITY[0].fetch_add(c.pages_to_vram + c.pages_zero_filled, Ordering::Relaxed);
    ACTIVITY[1].fetch_add(c.pages_to_ram, Ordering::Relaxed);
    ACTIVITY[2].fetch_add(c.ptes_written, Ordering::Relaxed);
    READ_COPIES[0].fetch_add(c.pages_duplicated, Ordering::Relaxed);
    let dropped: u64 = m
        .processes()
        .map(|(_, p)| p.svm.duplicates().counts().1)
        .sum();
    READ_COPIES[1].fetch_add(dropped, Ordering::Relaxed);
    ATOMICS.fetch_add(m.access_counts().total().atomics, Ordering::Relaxed);
    let events =
        |f: &dyn Fn(&Kind) -> bool| m.events().iter().filter(|e| f(&e.event.kind)).count() as u64;
    ACTIVITY[3].fetch_add(
        events(&|k| matches!(k, Kind::PageFaultEnd { .. })),
        Ordering::Relaxed,
    );
    // TTM evictions and rescheduled restores.
    ACTIVITY[4].fetch_add(
        events(&|k| {
            matches!(
                k,
                Kind::MigrateStart {
                    trigger: MigrateTrigger::TtmEviction,
                    ..
                }
            )
        }),
        Ordering::Relaxed,
    );
    ACTIVITY[5].fetch_add(
        events(&|k| {
            matches!(
                k,
                Kind::QueueRestore {
                    rescheduled: true,
                    ..
                }
            )
        }),
        Ordering::Relaxed,
    );
    Ok(())
}

/// The end of every sequence: everything in flight runs to the end
/// (waves, fault rings, deferred work), and a restore still pending must
/// be one that cannot map (it has failed and rescheduled itself). Every
/// range is then an ordinary one. Then both processes exit, and nothing
/// may be left: no VRAM allocated, no DMA mapping, no pending work, and
/// the checkers still pass.
fn quiesce(m: &mut Machine, pids: &[Pid]) -> Result<(), TestCaseError> {
    let done = m.quiesce();
    check::check(m).map_err(|v| TestCaseError::fail(format!("after quiesce: {v}")))?;
    prop_assert!(!m.faults_pending(), "faults left in a ring");
    prop_assert!(
        done || pids
            .iter()
            .any(|&p| m.process(p).svm.restore_error().is_some()),
        "work left pending with nothing failing"
    );
    for &pid in pids {
        let svm = &m.process(pid).svm;
        prop_assert!(
            !svm.restore_pending() || svm.restore_error().is_some(),
            "{pid:?}: restore work pending with nothing failing"
        );
        prop_assert!(!svm.deferred_pending(), "{pid:?}: deferred work left");
        let (sd, ud) = svm.stats().iter().fold((0, 0), |(a, b), (_, st)| {
            (a + st.stragglers_dropped, b + st.unmapping_dropped)
        });
        ACTIVITY[6].fetch_add(sd, Ordering::Relaxed);
        ACTIVITY[7].fetch_add(ud, Ordering::Relaxed);
        prop_assert!(
            svm.ranges()
                .iter()
                .all(|r| r.invalid == 0 || svm.restore_pending())
        );
    }
    for &pid in pids {
        m.exit(pid);
    }
    prop_assert!(!m.work_pending(), "work left after exit");
    for (i, g) in m.gpus().iter().enumerate() {
        let b = g.vram.buddy();
        prop_assert_eq!(b.free_pages(), b.total_pages(), "gpu{} VRAM leaked", i);
        prop_assert!(
            g.iommu.is_empty(),
            "gpu{}: {} DMA mappings leaked",
            i,
            g.iommu.len()
        );
    }
    let c = m.counters();
    prop_assert_eq!(c.vram_allocs, c.vram_frees);
    prop_assert_eq!(c.dma_maps, c.dma_unmaps);
    for &pid in pids {
        let svm = &m.process(pid).svm;
        prop_assert!(!svm.restore_pending() && svm.ranges().iter().next().is_none());
    }
    check::check(m).map_err(|v| TestCaseError::fail(format!("after exit: {v}")))
}

/// Plans the chaos policy made, over all cases: it must have been asked.
static CHAOS_PLANS: AtomicU64 = AtomicU64::new(0);

/// Read copies the chaos policy's plans made, and copies dropped (by
/// writes, unmaps, zaps, eviction), over all cases.
static READ_COPIES: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Per site, failures injected and failures whose handling the engine
/// reported, over all swarm cases.
static INJECTED: [AtomicU64; Site::ALL.len()] = [const { AtomicU64::new(0) }; Site::ALL.len()];
static HANDLED: [AtomicU64; Site::ALL.len()] = [const { AtomicU64::new(0) }; Site::ALL.len()];

/// Atomics the kernels performed, over all cases.
static ATOMICS: AtomicU64 = AtomicU64::new(0);

/// What all cases together did: pages in, pages out, PTEs written, faults
/// served, VRAM evictions, rescheduled restores, straggler faults dropped,
/// faults on pieces being unmapped. A generator that stopped reaching one
/// of these paths would show here.
static ACTIVITY: [AtomicU64; 8] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

/// Runs `cases` sequences drawn from `setup` (the count from `cases_var`,
/// the seed from `SVM_SEED`, else `seed`), each through [`run_case`];
/// a failure panics with its seed and the command `test` that replays it.
/// Returns the case count.
fn run_sequences(
    setup: impl Strategy<Value = Setup>,
    (seed, cases_var, cases, test): (u64, &str, u64, &str),
) -> u64 {
    let env = |n: &str| {
        std::env::var(n).ok().map(|v| match v.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).expect("hex"),
            None => v.parse().expect("number"),
        })
    };
    let seed = env("SVM_SEED").unwrap_or(seed);
    let cases = env(cases_var).unwrap_or(cases);
    let config = Config {
        cases: u32::try_from(cases).unwrap(),
        failure_persistence: None,
        ..Config::default()
    };
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = runner.run(
        &(setup, prop::collection::vec((0usize..2, op()), 1..30)),
        |(s, ops)| run_case(&s, &ops),
    );
    std::panic::set_hook(hook);
    if let Err(e) = result {
        panic!(
            "SEED={seed:#x} cases={cases}: {e:#?}\n\
             note: reproduce with `SVM_SEED={seed:#x} {cases_var}={cases} cargo nextest run -p svm-sim {test}`"
        );
    }
    cases
}

#[test]
fn random_fault_sequences_keep_every_invariant() {
    let cases = run_sequences(
        setup(),
        (0x5eed_0005, "SVM_CASES", 256, "random_fault_sequences"),
    );
    let a: Vec<u64> = ACTIVITY.iter().map(|x| x.load(Ordering::Relaxed)).collect();
    let chaos = CHAOS_PLANS.load(Ordering::Relaxed);
    eprintln!("activity over {cases} cases: {a:?}; chaos plans: {chaos}");
    assert!(chaos > 0, "no case ran the chaos policy");
    let copies: Vec<u64> = READ_COPIES
        .iter()
        .map(|x| x.load(Ordering::Relaxed))
        .collect();
    eprintln!("read copies made and dropped: {copies:?}");
    assert!(
        copies.iter().all(|&x| x > 0),
        "no case made and dropped read copies: {copies:?}"
    );
    let atomics = ATOMICS.load(Ordering::Relaxed);
    assert!(atomics > 0, "no case performed an atomic");
    // The last two (stragglers, skip-recover drops) need a fault in flight
    // exactly as munmap comes; `race::munmap_during_fault_migration_*`
    // reaches them on purpose, so here they are only reported.
    assert!(
        a[..6].iter().all(|&x| x > 0),
        "the sequences never reached part of the fault path: {a:?}"
    );
}

/// The swarm: the same sequences with failures injected at random sites,
/// rates and seeds. After every step the invariants hold and every byte
/// is what was written (the checkers), an op fails only as the kernel
/// would, and at the end nothing is leaked. `SVM_SWARM_CASES` sets the
/// count (default 1000; `SVM_SWARM_CASES=100000` for a long run, about
/// eight minutes here), `SVM_SEED` replays.
#[test]
fn swarm_of_injected_failures_keeps_every_invariant() {
    let cases = run_sequences(
        swarm_setup(),
        (0x5eed_0022, "SVM_SWARM_CASES", 1000, "swarm_of_injected"),
    );
    let injected: Vec<u64> = INJECTED.iter().map(|x| x.load(Ordering::Relaxed)).collect();
    let handled: Vec<u64> = HANDLED.iter().map(|x| x.load(Ordering::Relaxed)).collect();
    eprintln!("injected per site over {cases} cases: {injected:?}; handled: {handled:?}");
    // Every site must have failed somewhere, and each failure must have
    // been handled exactly once, by the handler the kernel has for it: a
    // site the sequences never reach, a failure no handler reports (lost
    // on the way) or one two handlers report would show here.
    for (i, s) in Site::ALL.iter().enumerate() {
        assert!(injected[i] > 0, "{s}: never injected over {cases} cases");
        assert_eq!(
            handled[i], injected[i],
            "{s}: {} failures injected, {} handled",
            injected[i], handled[i]
        );
    }
}

/// The 100k-case swarm's first find (seed 0x5eed0022, no failure needed):
/// a restore work that cannot map (PROT_NONE) capped during a wait for a
/// kernel was left due at the end of time, and the next quiesce moved the
/// clock there and overflowed it.
#[test]
fn a_capped_restore_during_a_wait_does_not_move_the_clock_to_the_end_of_time() {
    let s = Setup {
        gpus: 3,
        hive: false,
        vram_pages: 64,
        xnack: false,
        policy: Policy::WholeRange,
        bulk: false,
        sched: None,
        timed: true,
        chaos: None,
        inject: Vec::new(),
    };
    let ops = vec![
        (
            1,
            Op::SetAttr {
                page: 1029,
                n: 34,
                attrs: vec![(2, 4098)],
            },
        ),
        (0, Op::Xnack(true)),
        (
            0,
            Op::SetAttr {
                page: 1069,
                n: 16,
                attrs: vec![(5, 8)],
            },
        ),
        (
            1,
            Op::Mprotect {
                page: 1008,
                n: 22,
                read: false,
                write: false,
            },
        ),
        (
            0,
            Op::Gpu {
                gpu: 0,
                page: 1067,
                off: 0,
                len: 8193,
                write: Some(0),
            },
        ),
    ];
    run_case(&s, &ops).unwrap();
}
