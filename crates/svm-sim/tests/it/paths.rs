//! One access path for the GPU, one for the CPU.
//!
//! A scenario's `gpu_access` and a kernel's loads and stores are the same
//! waves through the same MMU, so the same list of accesses must leave the
//! same machine behind whichever way it was issued; and a CPU access
//! resolves its VMA before anything migrates.

use std::rc::Rc;

use svm_core::addr::{CpuVa, PageNum};
use svm_core::attr::Location;
use svm_core::uapi::attr_type::{ACCESS, GRANULARITY, PREFETCH_LOC};
use svm_sim::machine::{AccessError, KernelFn, WaveCtx};
use svm_sim::mm::Prot;

use crate::support::*;

/// One access of the list: GPU, byte offset into the buffer, length, and
/// whether it writes (its bytes are a function of its index).
type Access = (u32, u64, u64, bool);

fn bytes(i: usize, len: u64) -> Vec<u8> {
    (0..len)
        .map(|b| ((i as u64 * 31 + b) % 251) as u8)
        .collect()
}

/// What a run left: every page's place and bytes, the engine's per-GPU
/// counters, the hardware counters and the SMI stream.
#[derive(Debug, PartialEq)]
struct State {
    pages: Vec<(bool, Option<Location>, Vec<u8>)>,
    stats: Vec<svm_core::process::GpuStats>,
    counters: svm_sim::gpu::HwCounters,
    events: Vec<svm_sim::machine::SmiEvent>,
}

/// A two-GPU machine with a 4 MiB buffer the CPU wrote, at 64 KiB
/// granularity, accessible by both GPUs.
fn machine() -> (Kfd, u64) {
    let mut k = Kfd::new(true);
    let size = 4 * MIB;
    let buf = k.mmap(size);
    k.cpu_write(buf, &words((size / 4) as usize, |i| i ^ 0x5a5a));
    k.set(
        buf,
        size,
        &[(ACCESS, GPU0), (ACCESS, GPU1), (GRANULARITY, 4)],
    )
    .unwrap();
    (k, buf)
}

fn state(k: &Kfd, buf: u64) -> State {
    let svm = &k.m.process(k.pid).svm;
    let pages = (0..4 * MIB / PAGE)
        .map(|i| {
            let page = PageNum::new(buf / PAGE + i);
            let loc = svm
                .ranges()
                .find(page)
                .and_then(|r| r.actual_loc)
                .map(|g| Location::Vram(svm.devices()[g].id));
            (
                svm.page_in_vram(page),
                loc,
                k.m.page_bytes(k.pid, page).to_vec(),
            )
        })
        .collect();
    State {
        pages,
        stats: svm.stats().iter().map(|(_, s)| *s).collect(),
        counters: k.m.counters(),
        events: k.m.events().to_vec(),
    }
}

/// Issues the list through the scenario API, one access at a time, and
/// returns the bytes each load returned.
fn as_scenario(k: &mut Kfd, buf: u64, list: &[Access]) -> Vec<Vec<u8>> {
    let mut loads = Vec::new();
    for (i, &(gpu, off, len, write)) in list.iter().enumerate() {
        let at = CpuVa::new(buf + off);
        let data = write.then(|| bytes(i, len));
        let (out, _) =
            k.m.gpu_access(k.pid, gpu, at, len, data.as_deref())
                .unwrap();
        if !write {
            loads.push(out);
        }
        k.check();
    }
    loads
}

/// Issues the list as kernels: each run of accesses by one GPU is one
/// kernel of one wave that makes them in order.
fn as_kernels(k: &mut Kfd, buf: u64, list: &[Access]) -> Vec<Vec<u8>> {
    let mut loads = Vec::new();
    let mut i = 0;
    while i < list.len() {
        let gpu = list[i].0;
        let run: Vec<(usize, Access)> = list[i..]
            .iter()
            .copied()
            .enumerate()
            .take_while(|&(_, a)| a.0 == gpu)
            .map(|(j, a)| (i + j, a))
            .collect();
        i += run.len();
        let out = Rc::new(std::cell::RefCell::new(Vec::new()));
        let (o, run2) = (Rc::clone(&out), run.clone());
        let f: KernelFn = Rc::new(move |_, ctx: WaveCtx| {
            let (o, run) = (Rc::clone(&o), run2.clone());
            Box::pin(async move {
                for (idx, (_, off, len, write)) in run {
                    if write {
                        ctx.store(buf + off, bytes(idx, len)).await;
                    } else {
                        let d = ctx.load(buf + off, usize::try_from(len).unwrap()).await;
                        o.borrow_mut().push(d.into_vec());
                    }
                }
            })
        });
        let id = k.m.launch_kernel(k.pid, gpu, 1, f).unwrap();
        k.m.wait_kernel(id).unwrap();
        k.check();
        loads.extend(out.take());
    }
    loads
}

#[test]
fn an_access_list_leaves_the_same_machine_as_a_scenario_and_as_a_kernel() {
    // GPU 0 reads and writes its first half, GPU 1 the middle, and back:
    // faults, migrations VRAM to VRAM through RAM, duplicates within the
    // 2 ms window (untimed, every retry is one retry delay later), and
    // accesses that end on a page boundary.
    let mut list: Vec<Access> = Vec::new();
    for p in (0..512).step_by(7) {
        list.push((GPU0, p * PAGE + 8, 64, p % 3 == 0));
    }
    for p in (256..768).step_by(5) {
        list.push((GPU1, p * PAGE + PAGE - 16, 16, p % 2 == 0));
    }
    for p in (0..1024).step_by(33) {
        list.push((GPU0, p * PAGE, PAGE, p % 4 == 1));
    }
    let (mut a, buf_a) = machine();
    let loads_a = as_scenario(&mut a, buf_a, &list);
    let (mut b, buf_b) = machine();
    let loads_b = as_kernels(&mut b, buf_b, &list);
    assert_eq!(buf_a, buf_b, "both machines map the buffer at one address");
    assert_eq!(loads_a, loads_b, "loads return the same bytes");
    let (sa, sb) = (state(&a, buf_a), state(&b, buf_b));
    assert!(
        sa.stats.iter().map(|s| s.faults).sum::<u64>() > 100,
        "the list faults: {:?}",
        sa.stats
    );
    assert!(sa.counters.pages_to_vram > 0, "{:?}", sa.counters);
    assert_eq!(sa.pages, sb.pages, "residency and bytes");
    assert_eq!(sa.stats, sb.stats, "per-GPU fault and migration counters");
    assert_eq!(sa.counters, sb.counters, "hardware counters");
    assert_eq!(sa.events, sb.events, "SMI events");
}

/// A write to a read-only VMA, from a scenario and from a kernel: the same
/// fatal fault, with the handler's errno (EPERM), on both paths.
#[test]
fn a_gpu_write_to_a_read_only_vma_fails_alike_on_every_path() {
    let mut errs = Vec::new();
    for kernel in [false, true] {
        let (mut k, buf) = machine();
        k.m.mprotect(k.pid, CpuVa::new(buf), 4 * MIB, Prot::READ)
            .unwrap();
        let e = if kernel {
            let f: KernelFn = Rc::new(move |_, ctx: WaveCtx| {
                Box::pin(async move {
                    ctx.store(buf + 8, vec![1; 8]).await;
                })
            });
            let id = k.m.launch_kernel(k.pid, GPU0, 1, f).unwrap();
            k.m.wait_kernel(id).unwrap_err()
        } else {
            k.m.gpu_access(k.pid, GPU0, CpuVa::new(buf + 8), 8, Some(&[1; 8]))
                .unwrap_err()
        };
        assert_eq!(e.errno(), svm_core::Errno::Eperm, "{e}");
        // The faulting byte, not its page.
        assert!(
            matches!(e, AccessError::VmFault { addr, .. } if addr.raw() == buf + 8),
            "{e}"
        );
        errs.push(e);
    }
    assert_eq!(errs[0], errs[1]);
}

/// kfd resolves the VMA before `svm_migrate_to_ram`: a CPU write to a
/// read-only range that lives in VRAM is a SIGSEGV, and nothing moves,
/// whether the caller or a CPU thread makes it.
#[test]
fn a_cpu_write_to_a_read_only_range_in_vram_migrates_nothing() {
    for thread in [false, true] {
        let (mut k, buf) = machine();
        k.set(buf, 4 * MIB, &[(PREFETCH_LOC, GPU0)]).unwrap();
        assert_eq!(k.vram_pages_in(buf, 4 * MIB), 1024);
        k.m.mprotect(k.pid, CpuVa::new(buf), 4 * MIB, Prot::READ)
            .unwrap();
        let (before, events) = (k.m.counters(), k.m.events().len());
        let e = if thread {
            let f: KernelFn = Rc::new(move |_, ctx: WaveCtx| {
                Box::pin(async move {
                    ctx.store(buf + 2 * MIB, vec![7; 16]).await;
                })
            });
            let id = k.m.launch_cpu(k.pid, 1, f).unwrap();
            k.m.wait_kernel(id).unwrap_err()
        } else {
            k.m.cpu_access(k.pid, CpuVa::new(buf + 2 * MIB), 16, Some(&[7; 16]))
                .unwrap_err()
        };
        assert!(
            matches!(
                e,
                AccessError::Signal {
                    kind: "SIGSEGV",
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(k.vram_pages_in(buf, 4 * MIB), 1024, "nothing migrated");
        assert_eq!(k.m.counters().pages_to_ram, before.pages_to_ram);
        assert_eq!(k.m.events().len(), events, "no event: nothing happened");
        k.check();
        // A read is allowed, and brings its window home.
        let got = k.cpu_read(buf + 2 * MIB, 4);
        assert_eq!(
            got,
            (0x5a5au32 ^ u32::try_from(2 * MIB / 4).unwrap()).to_le_bytes()
        );
        assert!(k.vram_pages_in(buf, 4 * MIB) < 1024);
    }
}

/// The CPU path's rule is the address space's own: a write needs only
/// `PROT_WRITE` (a write-only mapping takes it), and device memory
/// refuses every access, whatever its protection.
#[test]
fn the_cpu_path_takes_linux_s_permission_rule() {
    use svm_sim::mm::{Backing, Mark};
    let mut k = Kfd::new(true);
    let wo = Prot {
        read: false,
        write: true,
        exec: false,
    };
    let w =
        k.m.mmap(k.pid, None, 2 * PAGE, wo, Backing::Anon, Mark::None)
            .unwrap()
            .start_va();
    k.m.cpu_access(k.pid, w, 4, Some(&[1, 2, 3, 4])).unwrap();
    let e = k.m.cpu_access(k.pid, w, 4, None).unwrap_err();
    assert!(
        matches!(
            e,
            AccessError::Signal {
                kind: "SIGSEGV",
                ..
            }
        ),
        "{e}"
    );
    let io =
        k.m.mmap(k.pid, None, 2 * PAGE, Prot::RW, Backing::Io, Mark::None)
            .unwrap()
            .start_va();
    for data in [None, Some(&[9u8; 4][..])] {
        let e = k.m.cpu_access(k.pid, io, 4, data).unwrap_err();
        assert!(
            matches!(
                e,
                AccessError::Signal {
                    kind: "SIGSEGV",
                    ..
                }
            ),
            "{e}"
        );
    }
    assert_eq!(
        k.m.page_bytes(k.pid, io.page_num())[..4],
        [0; 4],
        "nothing written"
    );
    k.check();
}
