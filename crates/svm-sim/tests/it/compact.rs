//! Uniform data is stored compactly: a CPU fill of one repeated word
//! shares one page of it, migration moves such pages by reference, and
//! only a page that is written gets bytes of its own.

use svm_core::addr::CpuVa;
use svm_core::uapi::attr_type::{ACCESS, PREFETCH_LOC};
use svm_sim::machine::CpuIo;

use crate::support::*;

const WORD: u32 = 0x5a5a_0001;

/// Host pages of the process that hold bytes of their own, and all.
fn host(k: &Kfd) -> (usize, usize) {
    let s = k.m.process(k.pid).mm.pages();
    (s.own_pages(), s.populated())
}

/// VRAM pages of GPU 0 that hold bytes of their own, and all.
fn vram(k: &Kfd) -> (usize, usize) {
    let s = k.m.gpus()[0].vram.store();
    (s.own_pages(), s.populated())
}

/// Reads `[addr, addr+len)` as it streams past; returns the offset and
/// value of every word that is not `want(offset)`.
fn differing(k: &mut Kfd, addr: u64, len: u64, want: impl Fn(u64) -> u32) -> Vec<(u64, u32)> {
    let mut bad = Vec::new();
    k.m.cpu_io(
        k.pid,
        CpuVa::new(addr),
        len,
        CpuIo::Read(&mut |off, part| {
            for (i, w) in part.chunks_exact(4).enumerate() {
                let at = off + 4 * i as u64;
                let got = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                if got != want(at) {
                    bad.push((at, got));
                }
            }
        }),
    )
    .unwrap();
    k.check();
    bad
}

/// A 1 GiB fill takes no page of its own on the host, none in VRAM after
/// a prefetch moves it there, and one after a GPU writes a byte of it;
/// it reads back whole, and the bytes checker agrees at every step.
#[test]
fn a_gib_of_one_word_takes_no_pages_of_its_own_through_migration() {
    const SIZE: u64 = GIB;
    const PAGES: usize = (SIZE / PAGE) as usize;
    let mut k = Kfd::new(true);
    let buf = k.mmap(SIZE);
    k.set(buf, SIZE, &[(ACCESS, GPU0)]).unwrap();
    k.m.cpu_io(k.pid, CpuVa::new(buf), SIZE, CpuIo::Repeat(&mut |_| WORD))
        .unwrap();
    k.check();
    assert_eq!(host(&k), (0, PAGES));

    k.set(buf, SIZE, &[(PREFETCH_LOC, GPU0)]).unwrap();
    assert_eq!(k.vram_pages_in(buf, SIZE), PAGES as u64);
    assert_eq!(host(&k), (0, 0));
    assert_eq!(vram(&k), (0, PAGES));

    // One GPU store: that page alone is copied.
    let hit = buf + 12345 * PAGE + 8;
    k.gpu_write(GPU0, hit, &7u32.to_le_bytes());
    assert_eq!(vram(&k), (1, PAGES));

    k.set(buf, SIZE, &[(PREFETCH_LOC, 0)]).unwrap();
    assert_eq!(host(&k), (1, PAGES));
    assert_eq!(vram(&k), (0, 0));
    let bad = differing(&mut k, buf, SIZE, |_| WORD);
    assert_eq!(bad, vec![(hit - buf, 7)]);
}

/// A repeated word written from an unaligned start: byte `j` of the
/// access is byte `j % 4` of the word, on the ragged first and last
/// pages and on the whole pages between (stored as uniform pages of the
/// word rotated).
#[test]
fn a_repeat_from_an_unaligned_start_rotates_its_word() {
    let mut k = Kfd::new(true);
    let buf = k.mmap(8 * PAGE);
    let (start, len) = (buf + 1, 6 * PAGE + 5);
    k.m.cpu_io(k.pid, CpuVa::new(start), len, CpuIo::Repeat(&mut |_| WORD))
        .unwrap();
    k.check();
    let bytes = WORD.to_le_bytes();
    let want: Vec<u8> = (0..len).map(|j| bytes[(j % 4) as usize]).collect();
    assert_eq!(k.cpu_read(start, len), want);
    assert_eq!(k.cpu_read(buf, 1), [0]);
    assert_eq!(k.cpu_read(start + len, 1), [0]);
    // Pages 1..6 are whole (one rotated word each), pages 0 and 6 ragged.
    assert_eq!(host(&k), (2, 7));
}
