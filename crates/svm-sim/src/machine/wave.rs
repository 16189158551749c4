//! The wave's side of the executor: what a kernel's code uses to reach
//! memory ([`WaveCtx`], [`MemOp`], [`Data`]) and the slot where a wave
//! and the executor meet (one posted request, one answer).
//!
//! A wave is an `async` block. Each memory operation posts one request
//! into its slot, and awaiting it returns `Pending` until the executor
//! (`kernel.rs`) has performed it through the MMU (`mmu.rs`). What a
//! TLB-hit load touches of the slot is kept to 48 bytes: with hundreds of
//! waves in flight the slot is rarely in the host's L1 cache when its
//! wave steps.

use std::cell::{Cell, OnceCell, Ref, RefCell, RefMut};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use crate::pages::PageBytes;

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").finish_non_exhaustive()
    }
}

/// A wave's code: given its index in the grid and its context, the future
/// that runs it.
pub type KernelFn = Rc<dyn Fn(u32, WaveCtx) -> Pin<Box<dyn Future<Output = ()>>>>;

/// A memory request a wave posts (a store's bytes wait in the slot, so
/// that posting and taking a request copies a few words and drops nothing).
#[derive(Clone, Copy, Debug)]
pub(super) struct Req {
    pub(super) kind: ReqKind,
    /// The address (the time, for compute).
    pub(super) addr: u64,
    /// Bytes loaded or stored.
    pub(super) len: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReqKind {
    Load,
    Store,
    /// An atomic add of the posted `u32`s, answered with the old ones.
    Atomic,
    Compute,
}

/// Where a wave and the executor meet: one posted request, one answer.
/// (Cells where each side only moves a value in or out; a `RefCell` for
/// the buffer, which the executor fills in place and the wave reads in
/// place.)
///
/// Every step reads and writes it, and with hundreds of waves in flight
/// it is rarely in the host's L1 cache, so what a TLB-hit load touches
/// is kept within 48 bytes (with its reference counts, one 64-byte
/// allocation): the buffers of the other paths are a box of their own,
/// made when first used.
#[derive(Default)]
pub(super) struct Slot {
    /// The posted request, its fields in cells of their own (an
    /// `Option<Req>`, or a struct of them, would take a word more).
    pub(super) req_kind: Cell<Option<ReqKind>>,
    pub(super) req_addr: Cell<u64>,
    pub(super) req_len: Cell<u64>,
    /// Whether the posted request has been performed, and where its
    /// answer is.
    pub(super) answer: Cell<Answer>,
    /// Retry faults in a row on the posted request.
    pub(super) page_faults: Cell<u32>,
    /// The wave made an instruction while an earlier one was still posted
    /// (made but not awaited): the earlier one is lost, so the wave dies.
    pub(super) misused: Cell<bool>,
    /// The page a load from VRAM lends ([`Answer::Page`]).
    pub(super) page: Cell<Option<PageBytes>>,
    pub(super) bufs: OnceCell<Box<Bufs>>,
}

/// A slot's buffers, for the paths that move bytes (stores, and loads
/// that copy).
#[derive(Default)]
pub(super) struct Bufs {
    /// The posted store's bytes.
    pub(super) stored: Cell<Vec<u8>>,
    /// The wave's load buffer. The executor fills it in place, and the
    /// load's [`Data`] reads it in place (a shared borrow), so a load
    /// neither allocates nor moves a buffer. While the wave still holds an
    /// earlier load's `Data`, the executor cannot borrow it and fills
    /// `spill` instead, which the next `Data` takes.
    pub(super) buf: RefCell<Vec<u8>>,
    pub(super) spill: Cell<Vec<u8>>,
}

/// Where the executor writes a load's bytes: the wave's buffer, or, while
/// the wave holds an earlier load's bytes from it, a vector of their own.
pub(super) enum Out<'s> {
    Buf(RefMut<'s, Vec<u8>>),
    Spill(Vec<u8>),
}

impl Out<'_> {
    pub(super) fn vec(&mut self) -> &mut Vec<u8> {
        match self {
            Out::Buf(b) => b,
            Out::Spill(v) => v,
        }
    }
}

impl Slot {
    /// Posts `r`; returns whether a request was posted already.
    #[inline(always)]
    pub(super) fn post(&self, r: Req) -> bool {
        self.req_addr.set(r.addr);
        self.req_len.set(r.len);
        self.req_kind.replace(Some(r.kind)).is_some()
    }

    /// Takes the posted request.
    #[inline(always)]
    pub(super) fn take_req(&self) -> Option<Req> {
        let kind = self.req_kind.take()?;
        Some(Req {
            kind,
            addr: self.req_addr.get(),
            len: self.req_len.get(),
        })
    }

    pub(super) fn is_posted(&self) -> bool {
        self.req_kind.get().is_some()
    }

    pub(super) fn bufs(&self) -> &Bufs {
        self.bufs.get_or_init(Box::default)
    }

    /// An empty place for a load's bytes.
    pub(super) fn out(&self) -> Out<'_> {
        match self.bufs().buf.try_borrow_mut() {
            Ok(mut b) => {
                b.clear();
                Out::Buf(b)
            }
            Err(_) => Out::Spill(Vec::new()),
        }
    }

    /// Answers the posted load, whose bytes are in `out`.
    pub(super) fn answer(&self, out: Out<'_>) {
        let answer = match out {
            Out::Buf(_) => Answer::Buf,
            Out::Spill(v) => {
                self.bufs().spill.set(v);
                Answer::Spill
            }
        };
        self.answer.set(answer);
    }

    /// Answers the posted store, whose bytes, `data`, are written: their
    /// vector becomes the wave's buffer when that is free.
    pub(super) fn answer_store(&self, data: Vec<u8>) {
        if let Ok(mut b) = self.bufs().buf.try_borrow_mut() {
            *b = data;
            b.clear();
        }
        self.answer.set(Answer::Empty);
    }
}

/// Where a performed request's answer is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Answer {
    /// Not performed yet.
    #[default]
    Pending,
    /// No bytes (a store, or compute).
    Empty,
    /// In the slot's buffer.
    Buf,
    /// In the slot's spill vector.
    Spill,
    /// `len` bytes at `off` in the page the slot lends.
    Page { off: u16, len: u16 },
}

/// What a wave's code uses to reach memory.
#[derive(Clone, Debug)]
pub struct WaveCtx {
    pub(super) slot: Rc<Slot>,
}

/// One memory instruction of a wave, issued when it was made and resolved
/// when the executor has performed it. It borrows the wave's context
/// rather than sharing it, so issuing an instruction counts no references.
#[derive(Debug)]
pub struct MemOp<'a> {
    slot: &'a Slot,
}

/// The bytes a load returned (none for a store or compute). It reads as a
/// byte slice: for a load from VRAM, the page itself, lent as it was when
/// the load was performed; otherwise the wave's own buffer, lent in
/// place. So loads in a loop neither allocate nor copy twice; see
/// [`Data::into_vec`] to keep the bytes.
pub struct Data<'a>(Bytes<'a>);

pub(super) enum Bytes<'a> {
    Lent(Ref<'a, Vec<u8>>),
    Owned(Vec<u8>),
    /// Part of a page of memory, lent as it was when the load was
    /// performed (see `crate::pages`).
    Page(PageBytes, u16, u16),
}

impl Data<'_> {
    /// The bytes, as an owned vector.
    pub fn into_vec(self) -> Vec<u8> {
        match self.0 {
            Bytes::Lent(b) => b.to_vec(),
            Bytes::Owned(v) => v,
            Bytes::Page(..) => self.to_vec(),
        }
    }
}

impl std::ops::Deref for Data<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Bytes::Lent(b) => b,
            Bytes::Owned(v) => v,
            Bytes::Page(p, off, len) => {
                let off = usize::from(*off);
                &p[off..off + usize::from(*len)]
            }
        }
    }
}

impl std::fmt::Debug for Data<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Data").field(&&**self).finish()
    }
}

impl PartialEq<[u8]> for Data<'_> {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl<'a> Future for MemOp<'a> {
    type Output = Data<'a>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Data<'a>> {
        // (Even its first poll may find it done: a wave may yield on
        // something else between making an instruction and awaiting it.)
        let slot = self.slot;
        match slot.answer.replace(Answer::Pending) {
            Answer::Pending => Poll::Pending,
            Answer::Page { off, len } => Poll::Ready(Data(match slot.page.take() {
                Some(p) => Bytes::Page(p, off, len),
                None => Bytes::Owned(Vec::new()),
            })),
            Answer::Empty => Poll::Ready(Data(Bytes::Owned(Vec::new()))),
            other => Poll::Ready(slot.data(other)),
        }
    }
}

impl Slot {
    /// The bytes of an answer in the wave's buffers (kept out of line, so
    /// that a wave's code inlines only the common answers).
    #[inline(never)]
    pub(super) fn data(&self, answer: Answer) -> Data<'_> {
        Data(match answer {
            Answer::Buf => Bytes::Lent(self.bufs().buf.borrow()),
            Answer::Spill => Bytes::Owned(self.bufs().spill.take()),
            _ => Bytes::Owned(Vec::new()),
        })
    }
}

impl WaveCtx {
    pub(super) fn op(&self, req: Req) -> MemOp<'_> {
        // An earlier instruction still posted, or answered and never taken
        // (its `MemOp` dropped before it was done): this one would get the
        // earlier's answer, so the wave dies instead.
        let earlier = self.slot.post(req);
        if earlier || !matches!(self.slot.answer.get(), Answer::Pending) {
            self.slot.misused.set(true);
            // (Not this one's answer: it must not be taken for it.)
            self.slot.answer.set(Answer::Pending);
            self.slot.page.set(None);
        }
        MemOp { slot: &self.slot }
    }

    /// Loads `len` bytes at `addr` (one memory instruction of the wave).
    pub fn load(&self, addr: u64, len: usize) -> MemOp<'_> {
        self.op(Req {
            kind: ReqKind::Load,
            addr,
            len: len as u64,
        })
    }

    /// Stores `data` at `addr`.
    pub fn store(&self, addr: u64, data: Vec<u8>) -> MemOp<'_> {
        self.op_with(ReqKind::Store, addr, data)
    }

    /// An instruction that carries bytes (a store's, an atomic's
    /// operands): they wait in the slot's buffer.
    fn op_with(&self, kind: ReqKind, addr: u64, data: Vec<u8>) -> MemOp<'_> {
        let len = data.len() as u64;
        self.slot.bufs().stored.set(data);
        self.op(Req { kind, addr, len })
    }

    /// Adds `operands` (little-endian `u32`s, at a 4-byte aligned
    /// `addr`) to memory atomically, word by word, wrapping; answers the
    /// words memory held before. No other access comes between the read
    /// and the write. It needs a writable mapping, and one the GPU's
    /// atomics reach: on a GPU whose atomics reach only its own VRAM
    /// (`svm_core::topology::GpuDesc::local_atomics`) an atomic to a page
    /// mapped elsewhere is a retry fault of its own kind
    /// (`svm_core::policy::Access::Atomic`).
    pub fn atomic_add(&self, addr: u64, operands: Vec<u8>) -> MemOp<'_> {
        self.op_with(ReqKind::Atomic, addr, operands)
    }

    /// [`WaveCtx::atomic_add`] of `u32`s; returns the old ones.
    pub async fn atomic_add_u32s(&self, addr: u64, v: &[u32]) -> Vec<u32> {
        let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let old = self.atomic_add(addr, b).await;
        old.chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect()
    }

    /// Spends `ns` computing.
    pub fn compute(&self, ns: u64) -> MemOp<'_> {
        self.op(Req {
            kind: ReqKind::Compute,
            addr: ns,
            len: 0,
        })
    }

    /// Loads `n` little-endian `u32`s.
    pub async fn load_u32s(&self, addr: u64, n: usize) -> Vec<u32> {
        let mut v = Vec::with_capacity(n);
        self.load_u32s_into(addr, n, &mut v).await;
        v
    }

    /// Loads `n` little-endian `u32`s onto the end of `out`: a loop of
    /// loads into one vector allocates nothing once it has grown.
    pub async fn load_u32s_into(&self, addr: u64, n: usize, out: &mut Vec<u32>) {
        let b = self.load(addr, n * 4).await;
        out.extend(
            b.chunks_exact(4)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])),
        );
    }

    /// Stores little-endian `u32`s. The bytes go in the wave's own
    /// buffer when it is free (the store hands it back, and its next load
    /// fills it), so a loop of stores allocates nothing once warm.
    pub async fn store_u32s(&self, addr: u64, v: &[u32]) {
        let mut b = match self.slot.bufs().buf.try_borrow_mut() {
            Ok(mut buf) => std::mem::take(&mut *buf),
            Err(_) => Vec::new(),
        };
        b.clear();
        b.reserve(v.len() * 4);
        for x in v {
            b.extend_from_slice(&x.to_le_bytes());
        }
        self.store(addr, b).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a TLB-hit load touches of its slot stays small: 48 bytes (64
    /// with its reference counts). (The kernel benchmarks measure what this
    /// buys.)
    #[test]
    fn a_slot_stays_within_its_cache_line() {
        assert!(
            std::mem::size_of::<Slot>() <= 48,
            "{}",
            std::mem::size_of::<Slot>()
        );
    }
}
