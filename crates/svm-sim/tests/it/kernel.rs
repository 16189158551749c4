//! Kernels: grids of waves through the GPU's MMU.

use std::rc::Rc;

use svm_core::uapi::attr_type::{ACCESS, PREFETCH_LOC};
use svm_sim::machine::{AccessError, KernelFn, WaveCtx};
use svm_sim::timing::Profile;

use crate::support::*;

/// c = a + b, one 256-byte instruction per wave step, `per_wave` bytes per wave.
fn vadd(a: u64, b: u64, c: u64, per_wave: u64) -> KernelFn {
    Rc::new(move |w: u32, ctx: WaveCtx| {
        Box::pin(async move {
            let base = u64::from(w) * per_wave;
            let mut off = 0;
            while off < per_wave {
                let x = ctx.load_u32s(a + base + off, 64).await;
                let y = ctx.load_u32s(b + base + off, 64).await;
                let z: Vec<u32> = x.iter().zip(&y).map(|(p, q)| p.wrapping_add(*q)).collect();
                ctx.store_u32s(c + base + off, &z).await;
                off += 256;
            }
        })
    })
}

fn setup(k: &mut Kfd, size: u64) -> (u64, u64, u64) {
    let a = k.mmap(size);
    let b = k.mmap(size);
    let c = k.mmap(size);
    k.cpu_write(a, &words((size / 4) as usize, |i| i));
    k.cpu_write(b, &words((size / 4) as usize, |i| 3 * i));
    (a, b, c)
}

/// A 4 MiB vector add on an MI210-class machine, launched as `waves`
/// waves: the machine, the kernel and the output array.
fn launch_vadd(waves: u32) -> (Kfd, svm_sim::machine::KernelId, u64) {
    let mut k = Kfd::new(true);
    k.m.apply_profile(&Profile::built_in("mi210").unwrap());
    let size = 4 * MIB;
    let (a, b, c) = setup(&mut k, size);
    for x in [a, b, c] {
        k.set(x, size, &[(ACCESS, GPU0)]).unwrap();
    }
    let id =
        k.m.launch_kernel(k.pid, GPU0, waves, vadd(a, b, c, size / u64::from(waves)))
            .unwrap();
    (k, id, c)
}

#[test]
fn a_vector_add_kernel_faults_its_pages_in_and_computes() {
    let (mut k, id, c) = launch_vadd(64);
    let (size, waves) = (4 * MIB, 64u32);
    let st = k.m.wait_kernel(id).unwrap();
    assert_eq!(st.waves, u64::from(waves));
    assert_eq!(st.accesses, 3 * size / 256);
    assert!(st.faults > 0 && st.tlb_hits > st.tlb_misses, "{st:?}");
    assert!(st.end_ns > st.first_wave_done_ns && st.first_wave_done_ns > st.launch_ns);
    assert_eq!(k.cpu_read(c, size), words((size / 4) as usize, |i| 4 * i));
    k.check();
}

#[test]
fn with_xnack_off_an_unmapped_access_kills_the_kernel() {
    let mut k = Kfd::new(false);
    let size = MIB;
    let (a, b, c) = setup(&mut k, size);
    // c is not registered for the GPU: its first store faults, fatally.
    for x in [a, b] {
        k.set(x, size, &[(ACCESS, GPU0)]).unwrap();
    }
    let id =
        k.m.launch_kernel(k.pid, GPU0, 4, vadd(a, b, c, size / 4))
            .unwrap();
    match k.m.wait_kernel(id) {
        Err(AccessError::VmFault {
            addr,
            write,
            errno,
            gpu_id,
            ..
        }) => {
            assert!(write && addr.raw() >= c && addr.raw() < c + size);
            assert_eq!((errno, gpu_id), (svm_core::Errno::Efault, GPU0));
        }
        other => panic!("expected a memory access fault, got {other:?}"),
    }
    assert!(!k.m.work_pending());
    k.check();
}

/// Two runs of the same kernel under the same seed are identical, event
/// for event.
#[test]
fn kernels_replay_under_a_seed() {
    let run = |seed: u64| {
        let mut k = Kfd::new(true);
        k.m.apply_profile(&Profile::built_in("mi210").unwrap());
        k.m.set_seed(Some(seed));
        let size = MIB;
        let (a, b, c) = setup(&mut k, size);
        for x in [a, b, c] {
            k.set(x, size, &[(ACCESS, GPU0), (ACCESS, GPU1)]).unwrap();
        }
        let k0 =
            k.m.launch_kernel(k.pid, GPU0, 8, vadd(a, b, c, size / 8))
                .unwrap();
        let k1 =
            k.m.launch_kernel(k.pid, GPU1, 8, vadd(a, b, c, size / 8))
                .unwrap();
        let s0 = k.m.wait_kernel(k0).unwrap();
        let s1 = k.m.wait_kernel(k1).unwrap();
        k.check();
        (s0, s1, k.m.events().to_vec(), k.m.now_ns())
    };
    assert_eq!(run(5), run(5));
}

/// CPU threads run in the GPUs' timeline: while a GPU kernel pulls one half
/// of a range into VRAM, CPU threads write the other half; then CPU threads
/// read the GPU's half back through the CPU fault path.
#[test]
fn cpu_threads_share_the_timeline_and_fault_pages_back() {
    let mut k = Kfd::new(true);
    k.m.apply_profile(&Profile::built_in("mi210").unwrap());
    let size = 4 * MIB;
    let buf = k.mmap(size);
    k.set(buf, size, &[(ACCESS, GPU0)]).unwrap();
    let half = size / 2;
    let per = half / 8;
    let fill = |base: u64, v: u32| -> KernelFn {
        Rc::new(move |w: u32, ctx: WaveCtx| {
            Box::pin(async move {
                let lo = base + u64::from(w) * per;
                for off in (0..per).step_by(256) {
                    ctx.store_u32s(lo + off, &[v; 64]).await;
                }
            })
        })
    };
    let gpu = k.m.launch_kernel(k.pid, GPU0, 8, fill(buf, 7)).unwrap();
    let cpu = k.m.launch_cpu(k.pid, 8, fill(buf + half, 9)).unwrap();
    let g = k.m.wait_kernel(gpu).unwrap();
    let c = k.m.wait_kernel(cpu).unwrap();
    // Both ran at once: neither started after the other ended.
    assert!(
        c.launch_ns < g.end_ns && g.launch_ns < c.end_ns,
        "{g:?} {c:?}"
    );
    assert_eq!(k.vram_pages_in(buf, half), half / PAGE);
    assert_eq!(k.vram_pages_in(buf + half, half), 0);
    // CPU threads read the GPU's half: every page faults back to RAM.
    let sums = Rc::new(std::cell::RefCell::new(Vec::new()));
    let s2 = Rc::clone(&sums);
    let read: KernelFn = Rc::new(move |w: u32, ctx: WaveCtx| {
        let s = Rc::clone(&s2);
        Box::pin(async move {
            let v = ctx.load_u32s(buf + u64::from(w) * per, 64).await;
            s.borrow_mut().push(v.iter().sum::<u32>());
        })
    });
    let r = k.m.launch_cpu(k.pid, 8, read).unwrap();
    k.m.wait_kernel(r).unwrap();
    assert_eq!(*sums.borrow(), vec![7 * 64; 8]);
    assert!(k.vram_pages_in(buf, half) < half / PAGE);
    k.check();
}

#[test]
fn a_cpu_thread_touching_a_protected_page_gets_sigsegv() {
    let mut k = Kfd::new(true);
    let buf = k.mmap(MIB);
    let none = svm_sim::mm::Prot {
        read: false,
        write: false,
        exec: false,
    };
    k.m.mprotect(k.pid, svm_core::addr::CpuVa::new(buf), MIB, none)
        .unwrap();
    let f: KernelFn = Rc::new(move |_, ctx: WaveCtx| {
        Box::pin(async move {
            ctx.load(buf, 4).await;
        })
    });
    let t = k.m.launch_cpu(k.pid, 1, f).unwrap();
    match k.m.wait_kernel(t) {
        Err(AccessError::Signal { kind, addr, .. }) => {
            assert_eq!((kind, addr.raw()), ("SIGSEGV", buf));
        }
        other => panic!("expected SIGSEGV, got {other:?}"),
    }
}

/// A wave that asks for memory past the end of the address space ends its
/// kernel with an error; nothing panics.
#[test]
fn an_access_past_the_address_space_is_an_error() {
    let mut k = Kfd::new(true);
    let f: KernelFn = Rc::new(move |_, ctx: WaveCtx| {
        Box::pin(async move {
            ctx.load(u64::MAX - 2, 16).await;
        })
    });
    for cpu in [false, true] {
        let id = if cpu {
            k.m.launch_cpu(k.pid, 1, f.clone()).unwrap()
        } else {
            k.m.launch_kernel(k.pid, GPU0, 1, f.clone()).unwrap()
        };
        assert!(matches!(
            k.m.wait_kernel(id),
            Err(AccessError::OutOfRange { .. })
        ));
    }
}

/// `size` bytes the CPU wrote (word `i` holds `i`) with `attrs` set, on a
/// machine with XNACK on.
fn counted(size: u64, attrs: &[(u32, u32)]) -> (Kfd, u64) {
    let mut k = Kfd::new(true);
    let a = k.mmap(size);
    k.cpu_write(a, &words((size / 4) as usize, |i| i));
    k.set(a, size, attrs).unwrap();
    (k, a)
}

/// A wave may keep a load's bytes while it issues more: each load still
/// answers its own bytes (the first is lent in place, later ones get
/// vectors of their own), stores and compute answer none, and bytes kept
/// with `into_vec` outlive the buffer's reuse.
#[test]
fn loads_held_across_other_instructions_keep_their_bytes() {
    let (mut k, a) = counted(2 * PAGE, &[(ACCESS, GPU0)]);
    let seen = Rc::new(std::cell::RefCell::new(Vec::new()));
    let out = Rc::clone(&seen);
    let f: KernelFn = Rc::new(move |_w: u32, ctx: WaveCtx| {
        let out = Rc::clone(&out);
        Box::pin(async move {
            let first = ctx.load(a, 8).await;
            let second = ctx.load(a + PAGE, 8).await;
            let stored = ctx.store(a + 16, vec![9; 4]).await;
            let computed = ctx.compute(5).await;
            let third = ctx.load(a + 16, 4).await;
            let kept = ctx.load(a + 4, 4).await.into_vec();
            let fourth = ctx.load(a + PAGE + 4, 4).await;
            out.borrow_mut().extend([
                first.to_vec(),
                second.to_vec(),
                stored.to_vec(),
                computed.to_vec(),
                third.to_vec(),
                kept,
                fourth.to_vec(),
            ]);
        })
    });
    let id = k.m.launch_kernel(k.pid, GPU0, 1, f).unwrap();
    k.m.wait_kernel(id).unwrap();
    let le = |ws: &[u32]| ws.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>();
    let p = u32::try_from(PAGE / 4).unwrap();
    assert_eq!(
        *seen.borrow(),
        vec![
            le(&[0, 1]),
            le(&[p, p + 1]),
            Vec::new(),
            Vec::new(),
            vec![9; 4],
            le(&[1]),
            le(&[p + 1]),
        ]
    );
    k.check();
}

/// A load from VRAM lends the page it read rather than copying it, so a
/// store to that page while the load's bytes are still held (by the same
/// wave, or by another wave before this one resumes) must leave them as
/// they were when the load was performed.
#[test]
fn a_lent_page_keeps_its_bytes_when_stored_to() {
    let mut k = Kfd::new(true);
    let a = k.mmap(PAGE);
    k.cpu_write(a, &words((PAGE / 4) as usize, |i| i));
    k.set(a, PAGE, &[(ACCESS, GPU0), (PREFETCH_LOC, GPU0)])
        .unwrap();
    assert_eq!(k.vram_pages_in(a, PAGE), 1, "the page is in VRAM");
    let seen = Rc::new(std::cell::RefCell::new(Vec::new()));
    let out = Rc::clone(&seen);
    let f: KernelFn = Rc::new(move |w: u32, ctx: WaveCtx| {
        let out = Rc::clone(&out);
        Box::pin(async move {
            if w == 0 {
                // Performed before wave 1's store (same time, FIFO), but
                // resumed after it.
                let before = ctx.load(a, 8).await;
                // Held across its own store to the same bytes.
                ctx.store(a + 4, vec![7; 4]).await;
                let after = ctx.load(a, 8).await;
                out.borrow_mut().push((before.to_vec(), after.to_vec()));
            } else {
                ctx.store(a, vec![9; 4]).await;
            }
        })
    });
    let id = k.m.launch_kernel(k.pid, GPU0, 2, f).unwrap();
    k.m.wait_kernel(id).unwrap();
    let le = |ws: &[u32]| ws.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>();
    let mut after = vec![9; 4];
    after.extend([7; 4]);
    assert_eq!(*seen.borrow(), vec![(le(&[0, 1]), after.clone())]);
    assert_eq!(k.cpu_read(a, 8), after);
    k.check();
}

/// A wave that keeps a load's bytes while it stores to the same page (a
/// read-modify-write) would make every store copy the page it lent; the
/// first such store switches the kernel's loads to copying their bytes.
/// Either way every load answers the bytes it read, and a kernel that only
/// loads keeps lending.
#[test]
fn a_read_modify_write_kernel_switches_its_loads_to_copies() {
    let size = 4 * PAGE;
    let (mut k, a) = counted(size, &[(ACCESS, GPU0), (PREFETCH_LOC, GPU0)]);
    let waves = u32::try_from(size / 256).unwrap();
    let seen = Rc::new(std::cell::RefCell::new(Vec::new()));
    let out = Rc::clone(&seen);
    let rmw: KernelFn = Rc::new(move |w: u32, ctx: WaveCtx| {
        let out = Rc::clone(&out);
        Box::pin(async move {
            let p = a + u64::from(w) * 256;
            for round in 0..3u8 {
                let v = ctx.load(p, 256).await;
                let next: Vec<u8> = v.iter().map(|b| b.wrapping_add(1)).collect();
                ctx.store(p, next).await;
                // Still the bytes it loaded, not the ones just stored.
                out.borrow_mut().push((w, round, v[..4].to_vec()));
            }
        })
    });
    let id = k.m.launch_kernel(k.pid, GPU0, waves, rmw).unwrap();
    k.m.wait_kernel(id).unwrap();
    assert_eq!(k.m.kernel_copies_loads(id), Some(true));
    let mut seen = seen.borrow().clone();
    seen.sort();
    assert_eq!(seen.len(), 3 * waves as usize);
    for (w, round, first) in seen {
        let want: Vec<u8> = (w * 64).to_le_bytes().iter().map(|b| b + round).collect();
        assert_eq!(first, want, "wave {w}, round {round}");
    }
    let want: Vec<u8> = words((size / 4) as usize, |i| i)
        .iter()
        .map(|b| b.wrapping_add(3))
        .collect();
    assert_eq!(k.cpu_read(a, size), want);

    let f: KernelFn = Rc::new(move |w: u32, ctx: WaveCtx| {
        Box::pin(async move {
            let v = ctx.load(a + u64::from(w) * 256, 256).await;
            assert_eq!(v.len(), 256);
        })
    });
    let id = k.m.launch_kernel(k.pid, GPU0, waves, f).unwrap();
    k.m.wait_kernel(id).unwrap();
    assert_eq!(k.m.kernel_copies_loads(id), Some(false));
    k.check();
}

/// A retry fault the ring's CAM filters (a repeat of a pending page) puts
/// nothing new in the ring, so it must not end the batch of waves due at
/// one time: under a seeded order that would take another draw and change
/// the run. The figures are the ones of the executor before the batch
/// check was taken from the step's result.
#[test]
fn a_filtered_fault_keeps_the_seeded_order() {
    let mut k = Kfd::new(true);
    k.m.set_seed(Some(1));
    let a = k.mmap(4 * PAGE);
    k.cpu_write(a, &words(4, |i| i));
    k.set(a, 4 * PAGE, &[(ACCESS, GPU0)]).unwrap();
    let f: KernelFn = Rc::new(move |w: u32, ctx: WaveCtx| {
        Box::pin(async move {
            for j in 0..4u64 {
                ctx.load(a + ((j + u64::from(w)) % 4) * PAGE, 4).await;
            }
        })
    });
    let id = k.m.launch_kernel(k.pid, GPU0, 8, f).unwrap();
    let st = k.m.wait_kernel(id).unwrap();
    assert_eq!((st.faults, st.tlb_misses), (5, 21), "{st:?}");
    k.check();
}

/// An empty load or store touches no page: no TLB lookup, no fault, even
/// on memory the GPU may not reach (with XNACK off, where a fault kills).
#[test]
fn an_empty_access_touches_no_page() {
    let mut k = Kfd::new(false);
    let a = k.mmap(4 * PAGE); // never registered for the GPU
    let f: KernelFn = Rc::new(move |_w: u32, ctx: WaveCtx| {
        Box::pin(async move {
            assert!(ctx.load(a, 0).await.is_empty());
            ctx.store(a + PAGE, Vec::new()).await;
        })
    });
    let id = k.m.launch_kernel(k.pid, GPU0, 1, f).unwrap();
    let st = k.m.wait_kernel(id).expect("no page is touched");
    assert_eq!((st.accesses, st.tlb_misses, st.faults), (2, 0, 0));
}

/// Making an instruction before awaiting the previous one loses the
/// previous one: the wave's kernel dies with a message that says so, and
/// no answer goes to the wrong instruction.
#[test]
fn an_instruction_made_before_awaiting_the_last_kills_the_kernel() {
    let (mut k, a) = counted(2 * PAGE, &[(ACCESS, GPU0)]);
    let f: KernelFn = Rc::new(move |_w: u32, ctx: WaveCtx| {
        Box::pin(async move {
            let x = ctx.load(a, 4);
            let y = ctx.load(a + PAGE, 4);
            let got = x.await.to_vec();
            assert_eq!(got, 0u32.to_le_bytes(), "the wrong answer reached x");
            y.await;
        })
    });
    let id = k.m.launch_kernel(k.pid, GPU0, 1, f).unwrap();
    let e = k.m.wait_kernel(id).unwrap_err();
    assert!(
        e.to_string().contains("before awaiting its previous one"),
        "{e}"
    );
}

/// Waits for nothing once: the executor runs a step of other work (here,
/// performs the wave's posted instruction) before the wave goes on.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

/// A wave may wait on something else between making an instruction and
/// awaiting it: the executor performs the instruction meanwhile, and the
/// await, its first poll, takes the answer.
#[test]
fn an_instruction_made_before_another_wait_is_answered_when_awaited() {
    let (mut k, a) = counted(2 * PAGE, &[(ACCESS, GPU0)]);
    let f: KernelFn = Rc::new(move |_w: u32, ctx: WaveCtx| {
        Box::pin(async move {
            let op = ctx.load(a + 4, 4);
            YieldOnce(false).await;
            assert_eq!(op.await.to_vec(), 1u32.to_le_bytes());
            let op = ctx.store(a + 8, vec![9; 4]);
            YieldOnce(false).await;
            op.await;
        })
    });
    let id = k.m.launch_kernel(k.pid, GPU0, 1, f).unwrap();
    let st = k.m.wait_kernel(id).unwrap();
    assert_eq!(st.accesses, 2);
    assert_eq!(k.cpu_read(a + 8, 4), [9; 4]);
}

/// An instruction performed but dropped before its answer was taken (as a
/// select or a timeout would) must not hand that answer to the next one,
/// and one made but never awaited must not vanish: either kills the
/// kernel, as making one before awaiting the last does.
#[test]
fn an_instruction_dropped_before_it_is_done_kills_the_kernel() {
    let (mut k, a) = counted(2 * PAGE, &[(ACCESS, GPU0)]);
    let abandoned: KernelFn = Rc::new(move |_w: u32, ctx: WaveCtx| {
        Box::pin(async move {
            {
                let _op = ctx.load(a, 4);
                YieldOnce(false).await;
                // (`_op` goes here, its answer never taken.)
            }
            let got = ctx.load(a + PAGE, 4).await.to_vec();
            assert_ne!(
                got,
                0u32.to_le_bytes(),
                "the abandoned answer was handed on"
            );
        })
    });
    let unawaited: KernelFn = Rc::new(move |_w: u32, ctx: WaveCtx| {
        Box::pin(async move {
            ctx.load(a, 4).await;
            let _lost = ctx.store(a, vec![1; 4]);
        })
    });
    for f in [abandoned, unawaited] {
        let id = k.m.launch_kernel(k.pid, GPU0, 1, f).unwrap();
        let e = k.m.wait_kernel(id).unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("before awaiting its previous one") || e.contains("without awaiting"),
            "{e}"
        );
    }
    assert_eq!(
        k.cpu_read(a, 4),
        0u32.to_le_bytes(),
        "the lost store landed"
    );
}

/// A new compute shape applies to later kernels; one already running keeps
/// its CUs, and their TLBs stay their own.
#[test]
fn a_shape_change_mid_kernel_keeps_running_waves_apart() {
    let (mut k, id, c) = launch_vadd(256);
    let (size, waves) = (4 * MIB, 256u32);
    k.m.advance_to(k.m.now_ns() + 20_000);
    assert!(!k.m.kernel_done(id), "the kernel should still run");
    k.m.set_compute_shape(svm_sim::machine::ComputeShape {
        compute_units: 2,
        waves_per_cu: 2,
        tlb_entries: 8,
    });
    let st = k.m.wait_kernel(id).unwrap();
    assert_eq!(st.waves, u64::from(waves));
    assert_eq!(k.cpu_read(c, size), words((size / 4) as usize, |i| 4 * i));
    k.check();
}

/// `waves` waves each add `v` to the 64 words at `at`, `times` times,
/// and sum the old words they were answered.
fn adders(at: u64, v: u32, times: u32, olds: Rc<std::cell::RefCell<Vec<u32>>>) -> KernelFn {
    Rc::new(move |_, ctx: WaveCtx| {
        let olds = Rc::clone(&olds);
        Box::pin(async move {
            for _ in 0..times {
                let old = ctx.atomic_add_u32s(at, &[v; 64]).await;
                olds.borrow_mut().push(old[0]);
            }
        })
    })
}

/// Atomics are atomic: GPU waves and CPU threads adding to the same words
/// at once lose no add, and every adder sees a distinct old value (each
/// read-modify-write is whole; a load and a store would interleave).
#[test]
fn atomics_of_gpu_waves_and_cpu_threads_lose_no_add() {
    let mut k = Kfd::new(true);
    k.m.apply_profile(&Profile::built_in("mi210").unwrap());
    let buf = k.mmap(MIB);
    k.set(buf, MIB, &[(ACCESS, GPU0)]).unwrap();
    k.cpu_write(buf, &words(64, |_| 5));
    let olds = Rc::new(std::cell::RefCell::new(Vec::new()));
    let gpu =
        k.m.launch_kernel(k.pid, GPU0, 8, adders(buf, 1, 16, Rc::clone(&olds)))
            .unwrap();
    let cpu =
        k.m.launch_cpu(k.pid, 4, adders(buf, 1, 16, Rc::clone(&olds)))
            .unwrap();
    let g = k.m.wait_kernel(gpu).unwrap();
    k.m.wait_kernel(cpu).unwrap();
    assert_eq!((g.accesses, g.stores, g.atomics), (128, 128, 128));
    assert_eq!(k.cpu_read(buf, 256), words(64, |_| 5 + 12 * 16));
    let mut seen = olds.borrow().clone();
    seen.sort_unstable();
    assert_eq!(seen, (5..5 + 12 * 16).collect::<Vec<u32>>());
    assert_eq!(k.m.access_counts().total().atomics, 12 * 16);
    k.check();
}

/// An atomic adds whole 32-bit words: a misaligned one kills its kernel
/// with EINVAL, and memory is untouched.
#[test]
fn a_misaligned_atomic_is_an_error_not_a_partial_add() {
    let mut k = Kfd::new(true);
    let buf = k.mmap(MIB);
    k.set(buf, MIB, &[(ACCESS, GPU0)]).unwrap();
    let f: KernelFn = Rc::new(move |_, ctx: WaveCtx| {
        Box::pin(async move {
            ctx.atomic_add(buf + 2, vec![1; 8]).await;
        })
    });
    let id = k.m.launch_kernel(k.pid, GPU0, 1, f).unwrap();
    let e = k.m.wait_kernel(id).unwrap_err();
    assert!(
        matches!(e, AccessError::MisalignedAtomic { .. }) && e.errno() == svm_core::Errno::Einval,
        "{e}"
    );
    assert_eq!(k.cpu_read(buf, 16), vec![0; 16]);
}
