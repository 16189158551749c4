//! The engine against the naive per-page reference model, over random operation sequences.
//!
//! A proptest state machine generates mmap, munmap (holes included),
//! mprotect, SET_ATTR, GET_ATTR, XNACK and queue operations inside a
//! 128-page window that straddles a `max_svm_range_pages` boundary. After
//! every operation the engine's result must equal the model's, the checkers
//! must pass, and a GET_ATTR of every page of the window must agree.
//!
//! `SVM_CASES` sets the number of cases (default 256); `SVM_SEED` replays a
//! run. A failure prints both and the minimal failing sequence.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest};
use svm_core::Errno;
use svm_core::addr::{CpuVa, PageNum, PageRange};
use svm_core::gpu::GpuId;
use svm_core::range::SvmRange;
use svm_core::topology::{GpuDesc, Topology};
use svm_core::uapi::{SVM_OP_GET_ATTR, SVM_OP_SET_ATTR, SvmArgs, SvmAttribute};
use svm_sim::check;
use svm_sim::machine::{Machine, MemLimit, Pid};
use svm_sim::mm::{Backing, Mark, Prot};
use svm_sim::refmodel::{RefGpu, RefModel};

use crate::support::PAGE;

/// First page of the window; page 0x400 (a 2 MiB boundary) is in its middle.
const WIN: u64 = 0x3c0;
/// Pages in the window.
const WIN_PAGES: u64 = 0x80;
/// A gpu_id that no machine has.
const BOGUS: u32 = 0x7777;
const IDS: [u32; 3] = [0x1002, 0x2002, 0x3002];

/// The machine of one case: the third GPU varies, so SVM-less and
/// XNACK-less GPUs both show up.
#[derive(Clone, Debug)]
struct Setup {
    gpu2_svm: bool,
    gpu2_xnack: bool,
    xnack_default: bool,
    limit_pages: u64,
}

impl Setup {
    fn gpus(&self) -> Vec<(u32, bool, bool)> {
        vec![
            (IDS[0], true, true),
            (IDS[1], true, true),
            (IDS[2], self.gpu2_svm, self.gpu2_xnack),
        ]
    }
}

/// One operation, with raw uAPI values where the API takes them.
#[derive(Clone, Debug)]
enum Op {
    Mmap {
        page: u64,
        npages: u64,
        io: bool,
    },
    Munmap {
        page: u64,
        npages: u64,
    },
    Mprotect {
        page: u64,
        npages: u64,
        write: bool,
    },
    SetAttr {
        start: u64,
        size: u64,
        attrs: Vec<(u32, u32)>,
    },
    GetAttr {
        start: u64,
        size: u64,
        attrs: Vec<(u32, u32)>,
    },
    SetXnack(i32),
    CreateQueue(u32),
    DestroyQueue(u32),
}

/// What the model said the last operation returns.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    None,
    Done(Result<(), Errno>),
    Attrs(Result<Vec<(u32, u32)>, Errno>),
    Value(Result<i32, Errno>),
    Queue(Result<u32, Errno>),
}

#[derive(Clone, Debug)]
struct RefState {
    setup: Setup,
    model: RefModel,
    mapped: BTreeSet<u64>,
    last: Outcome,
}

fn raw(attrs: &[(u32, u32)]) -> Vec<SvmAttribute> {
    attrs
        .iter()
        .map(|&(t, v)| SvmAttribute::new(t, v))
        .collect()
}

struct Ref;

fn location() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => prop::sample::select(IDS.to_vec()),
        3 => Just(0u32),
        1 => Just(0xffff_ffffu32),
        1 => Just(BOGUS),
    ]
}

fn gpu() -> impl Strategy<Value = u32> {
    prop_oneof![8 => prop::sample::select(IDS.to_vec()), 1 => Just(BOGUS), 1 => Just(0u32)]
}

/// One SET_ATTR or GET_ATTR attribute: mostly well-formed, sometimes not.
fn attr() -> impl Strategy<Value = (u32, u32)> {
    prop_oneof![
        3 => (0u32..=1, location()),
        4 => (2u32..=4, gpu()),
        2 => (5u32..=6, prop_oneof![0u32..0x100, any::<u32>()]),
        2 => (Just(7u32), prop_oneof![0u32..12, 0u32..0x50, any::<u32>()]),
        1 => (8u32..20, any::<u32>()),
    ]
}

fn attrs() -> impl Strategy<Value = Vec<(u32, u32)>> {
    prop::collection::vec(attr(), 0..4)
}

/// A byte range inside the window; rarely misaligned or empty.
fn span() -> impl Strategy<Value = (u64, u64)> {
    (
        0..WIN_PAGES,
        1..=WIN_PAGES,
        prop::sample::select(vec![0u64, 0, 0, 0, 0, 0, 0, 0, 0, 0x800]),
        prop::sample::select(vec![0u64, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
    )
        .prop_map(|(p, n, skew, extra)| {
            let n = n.min(WIN_PAGES - p);
            (
                (WIN + p) * PAGE + skew,
                if extra == 1 { 0 } else { n * PAGE },
            )
        })
}

fn pages() -> impl Strategy<Value = (u64, u64)> {
    (0..WIN_PAGES, 1..=WIN_PAGES / 2).prop_map(|(p, n)| (WIN + p, n.min(WIN_PAGES - p)))
}

impl ReferenceStateMachine for Ref {
    type State = RefState;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<RefState> {
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            prop::sample::select(vec![40u64, 100, 1 << 20]),
        )
            .prop_map(|(gpu2_svm, gpu2_xnack, xnack_default, limit_pages)| {
                let setup = Setup {
                    gpu2_svm,
                    gpu2_xnack,
                    xnack_default,
                    limit_pages,
                };
                let gpus = setup
                    .gpus()
                    .into_iter()
                    .map(|(id, svm, xnack)| RefGpu { id, svm, xnack })
                    .collect();
                RefState {
                    model: RefModel::new(gpus, xnack_default, limit_pages * PAGE),
                    setup,
                    mapped: BTreeSet::new(),
                    last: Outcome::None,
                }
            })
            .boxed()
    }

    fn transitions(_: &RefState) -> BoxedStrategy<Op> {
        prop_oneof![
            3 => (pages(), prop::bool::weighted(0.1)).prop_map(|((page, npages), io)| Op::Mmap { page, npages, io }),
            2 => pages().prop_map(|(page, npages)| Op::Munmap { page, npages }),
            1 => (pages(), any::<bool>()).prop_map(|((page, npages), write)| Op::Mprotect { page, npages, write }),
            8 => (span(), attrs()).prop_map(|((start, size), attrs)| Op::SetAttr { start, size, attrs }),
            4 => (span(), attrs()).prop_map(|((start, size), attrs)| Op::GetAttr { start, size, attrs }),
            1 => prop::sample::select(vec![-1, 0, 1]).prop_map(Op::SetXnack),
            1 => prop::sample::select(vec![IDS[0], IDS[2], BOGUS]).prop_map(Op::CreateQueue),
            1 => (1u32..4).prop_map(Op::DestroyQueue),
        ]
        .boxed()
    }

    fn apply(mut s: RefState, op: &Op) -> RefState {
        let m = &mut s.model;
        s.last = match op {
            Op::Mmap { page, npages, io } => {
                m.mmap(*page, *npages, *io);
                s.mapped.extend(*page..page + npages);
                Outcome::None
            }
            Op::Munmap { page, npages } => {
                m.munmap(*page, *npages);
                s.mapped.retain(|p| !(*page..page + npages).contains(p));
                Outcome::None
            }
            Op::Mprotect { page, npages, .. } => {
                let all = (*page..page + npages).all(|p| s.mapped.contains(&p));
                Outcome::Done(if all { Ok(()) } else { Err(Errno::Enomem) })
            }
            Op::SetAttr { start, size, attrs } => {
                Outcome::Done(m.set_attr(*start, *size, &raw(attrs)))
            }
            Op::GetAttr { start, size, attrs } => Outcome::Attrs(
                m.get_attr(*start, *size, &raw(attrs))
                    .map(|v| v.into_iter().map(|a| (a.ty, a.value)).collect()),
            ),
            Op::SetXnack(v) => Outcome::Value(m.set_xnack(*v)),
            Op::CreateQueue(g) => Outcome::Queue(m.create_queue(*g)),
            Op::DestroyQueue(q) => Outcome::Done(m.destroy_queue(*q)),
        };
        s
    }
}

/// The engine's ranges, for structure checks the per-page model cannot make.
fn ranges(s: &Sut) -> Vec<SvmRange> {
    s.m.process(s.pid).svm.ranges().iter().cloned().collect()
}

/// What an operation may do to the range *structure* (splits, skips,
/// untouched neighbours), which the per-page model does not see.
enum Shape {
    /// SET_ATTR over these pages.
    Set(PageRange),
    /// munmap or MAP_FIXED over these pages.
    Cut(PageRange),
    /// Leaves the ranges alone.
    Same,
}

impl Shape {
    fn of(op: &Op) -> Shape {
        let pages = |p: u64, n: u64| PageRange::new(PageNum::new(p), PageNum::new(p + n));
        match *op {
            Op::SetAttr { start, size, .. }
                if start % PAGE == 0 && size % PAGE == 0 && size > 0 =>
            {
                Shape::Set(pages(start / PAGE, size / PAGE))
            }
            Op::Mmap { page, npages, .. } | Op::Munmap { page, npages } => {
                Shape::Cut(pages(page, npages))
            }
            _ => Shape::Same,
        }
    }

    fn check(&self, before: &[SvmRange], after: &[SvmRange], got: &Outcome) {
        let untouched = |r: &SvmRange, set: &[SvmRange]| set.contains(r);
        match (self, got) {
            (Shape::Set(span), Outcome::Done(Ok(()))) => {
                // Ranges away from the span are untouched, both ways.
                for r in before.iter().filter(|r| !r.range().overlaps(*span)) {
                    assert!(
                        untouched(r, after),
                        "range {} outside {span} changed",
                        r.range()
                    );
                }
                // A new range outside the span is the head or tail split off a
                // range that reached into it, with that range's attributes.
                for r in after
                    .iter()
                    .filter(|r| !r.range().overlaps(*span) && !untouched(r, before))
                {
                    let parent = before
                        .iter()
                        .find(|b| b.range().contains_range(r.range()) && b.range().overlaps(*span));
                    let parent = parent
                        .unwrap_or_else(|| panic!("range {} outside {span} appeared", r.range()));
                    assert_eq!(
                        parent.attrs,
                        r.attrs,
                        "split piece {} changed attributes",
                        r.range()
                    );
                    // A piece cut at an unaligned point is remapped, which
                    // maps it even if its parent was not; nothing unmaps it.
                    assert!(
                        !parent.mapped_to_gpu || r.mapped_to_gpu,
                        "split piece {} lost its mapping",
                        r.range()
                    );
                }
                // A range reaching past the span is one that was skipped:
                // unchanged, mapped, and already holding the attributes.
                for r in after
                    .iter()
                    .filter(|r| r.range().overlaps(*span) && !span.contains_range(r.range()))
                {
                    assert!(
                        untouched(r, before) && r.mapped_to_gpu,
                        "range {} crosses the edge of {span} without being a skipped mapped range",
                        r.range()
                    );
                }
                // Every page of the span belongs to a range now.
                let covered: u64 = after
                    .iter()
                    .filter_map(|r| r.range().intersect(*span))
                    .map(|x| x.npages().raw())
                    .sum();
                assert_eq!(
                    covered,
                    span.npages().raw(),
                    "SET_ATTR left a hole in {span}"
                );
            }
            (Shape::Same, _) => {
                // mprotect and the like may change mapping state, never the
                // ranges or their attributes.
                let layout =
                    |v: &[SvmRange]| v.iter().map(|r| (r.range(), r.attrs)).collect::<Vec<_>>();
                assert_eq!(
                    layout(before),
                    layout(after),
                    "an op changed the range layout"
                );
            }
            (Shape::Set(_), _) => {
                assert_eq!(before, after, "a failed SET_ATTR changed the ranges");
            }
            (Shape::Cut(hole), _) => {
                assert!(
                    after.iter().all(|r| !r.range().overlaps(*hole)),
                    "a range survives in the hole {hole}"
                );
                for r in after {
                    let parent = before.iter().find(|b| b.range().contains_range(r.range()));
                    let parent =
                        parent.unwrap_or_else(|| panic!("range {} has no parent", r.range()));
                    assert_eq!(
                        parent.attrs,
                        r.attrs,
                        "a cut changed the attributes of {}",
                        r.range()
                    );
                    assert_eq!(
                        parent.mapped_to_gpu,
                        r.mapped_to_gpu,
                        "a cut changed the mapping of {}",
                        r.range()
                    );
                }
                let kept: u64 = before
                    .iter()
                    .map(|b| {
                        b.range().npages().raw()
                            - b.range().intersect(*hole).map_or(0, |x| x.npages().raw())
                    })
                    .sum();
                assert_eq!(
                    kept,
                    after.iter().map(|r| r.range().npages().raw()).sum::<u64>(),
                    "a cut lost pages"
                );
            }
        }
    }
}

struct Sut {
    m: Machine,
    pid: Pid,
}

struct EngineTest;

impl StateMachineTest for EngineTest {
    type SystemUnderTest = Sut;
    type Reference = Ref;

    fn init_test(r: &RefState) -> Sut {
        let gpus = r
            .setup
            .gpus()
            .into_iter()
            .enumerate()
            .map(|(i, (id, svm, xnack))| GpuDesc {
                name: format!("gpu{i}"),
                id: GpuId::new(id).unwrap(),
                vram_bytes: 64 << 20,
                svm,
                xnack,
                hive: None,
                apu: false,
                prefer_gtt: false,
                ats: false,
                local_atomics: false,
                gc: svm_core::pte::GcVersion::DEFAULT,
            })
            .collect();
        let limit = MemLimit {
            limit_bytes: r.setup.limit_pages * PAGE,
            used_bytes: 0,
        };
        let mut m = Machine::new(Topology::new(gpus).unwrap(), r.setup.xnack_default, limit);
        let pid = m.spawn("p");
        // kfd leaves the PTEs of a GPU that lost its access bits (see
        // `fault::kernel_leaves_ptes_of_a_gpu_that_lost_access`); the
        // checkers here look at everything else.
        m.process_mut(pid).set_unmap_every_mapped_gpu(true);
        assert_eq!(
            m.process(pid).svm.xnack_enabled(),
            r.model.xnack(),
            "initial XNACK mode"
        );
        Sut { m, pid }
    }

    fn apply(mut s: Sut, r: &RefState, op: Op) -> Sut {
        let before = ranges(&s);
        let shape = Shape::of(&op);
        let (m, pid) = (&mut s.m, s.pid);
        let got = match op {
            Op::Mmap { page, npages, io } => {
                let backing = if io { Backing::Io } else { Backing::Anon };
                m.mmap(
                    pid,
                    Some(CpuVa::new(page * PAGE)),
                    npages * PAGE,
                    Prot::RW,
                    backing,
                    Mark::None,
                )
                .expect("fixed mmap inside the window");
                Outcome::None
            }
            Op::Munmap { page, npages } => {
                m.munmap(pid, CpuVa::new(page * PAGE), npages * PAGE)
                    .expect("munmap inside the window");
                Outcome::None
            }
            Op::Mprotect {
                page,
                npages,
                write,
            } => {
                let prot = Prot {
                    read: true,
                    write,
                    exec: false,
                };
                Outcome::Done(
                    m.mprotect(pid, CpuVa::new(page * PAGE), npages * PAGE, prot)
                        .map_err(|e| e.errno()),
                )
            }
            Op::SetAttr { start, size, attrs } => {
                let mut a = SvmArgs {
                    start_addr: start,
                    size,
                    op: SVM_OP_SET_ATTR,
                    attrs: raw(&attrs),
                };
                Outcome::Done(m.svm_ioctl(pid, &mut a).map(drop).map_err(|e| e.errno()))
            }
            Op::GetAttr { start, size, attrs } => {
                let mut a = SvmArgs {
                    start_addr: start,
                    size,
                    op: SVM_OP_GET_ATTR,
                    attrs: raw(&attrs),
                };
                Outcome::Attrs(
                    m.svm_ioctl(pid, &mut a)
                        .map(|_| a.attrs.iter().map(|a| (a.ty, a.value)).collect())
                        .map_err(|e| e.errno()),
                )
            }
            Op::SetXnack(v) => Outcome::Value(m.set_xnack_mode(pid, v).map_err(|e| e.errno())),
            Op::CreateQueue(g) => Outcome::Queue(
                m.create_queue(pid, g)
                    .map(|q| q.raw())
                    .map_err(|e| e.errno()),
            ),
            Op::DestroyQueue(q) => Outcome::Done(m.destroy_queue(pid, q).map_err(|e| e.errno())),
        };
        assert_eq!(got, r.last, "engine and model disagree");
        shape.check(&before, &ranges(&s), &got);
        s
    }

    fn check_invariants(s: &Sut, r: &RefState) {
        if let Err(v) = check::check(&s.m) {
            panic!("{v}");
        }
        let p = s.m.process(s.pid);
        assert_eq!(p.svm.xnack_enabled(), r.model.xnack(), "XNACK mode");
        assert_eq!(
            p.svm.ranges().total_pages().raw(),
            r.model.registered_pages() as u64,
            "registered pages"
        );
        assert_eq!(
            s.m.mem_limit().used_bytes,
            r.model.used_bytes(),
            "reserved bytes"
        );
        // Every page of the window answers the same full query.
        let q: Vec<(u32, u32)> = vec![
            (0, 0),
            (1, 0),
            (2, IDS[0]),
            (2, IDS[1]),
            (2, IDS[2]),
            (5, 0),
            (6, 0),
            (7, 0),
        ];
        for page in WIN..WIN + WIN_PAGES {
            let mut a = raw(&q);
            let got =
                s.m.svm_get_attr(s.pid, page * PAGE, PAGE, &mut a)
                    .map(|_| a.iter().map(|a| (a.ty, a.value)).collect::<Vec<_>>())
                    .map_err(|e| e.errno());
            let want = r
                .model
                .get_attr(page * PAGE, PAGE, &raw(&q))
                .map(|v| v.into_iter().map(|a| (a.ty, a.value)).collect::<Vec<_>>());
            assert_eq!(got, want, "GET_ATTR of page {page:#x}");
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

/// The seed of this run: `SVM_SEED`, or a fixed default so CI is repeatable.
fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| env_u64("SVM_SEED").unwrap_or(0x5eed_0001))
}

#[test]
fn engine_matches_reference_model() {
    let cases = env_u64("SVM_CASES").unwrap_or(256);
    let seed = seed();
    let config = Config {
        cases: u32::try_from(cases).expect("SVM_CASES fits in u32"),
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    };
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        config.clone(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    // Shrinking replays many failing sequences; their panic messages would
    // bury the one that matters, which proptest hands back in `result`.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = runner.run(&Ref::sequential_strategy(1..48), |(init, ops, seen)| {
        EngineTest::test_sequential(config.clone(), init, ops, seen);
        Ok(())
    });
    std::panic::set_hook(hook);
    if let Err(e) = result {
        panic!(
            "SEED={seed:#x} cases={cases}: {e}\n\
             note: reproduce with `SVM_SEED={seed:#x} SVM_CASES={cases} cargo nextest run -p svm-sim engine_matches_reference_model`"
        );
    }
}
