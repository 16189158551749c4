//! Unit tests of the API edge: validation order, errno values, XNACK mode, queues.

use super::*;
use crate::error::Errno;
use crate::platform::{CopyDir, Pte, TlbFlush, VmFlags, VmaInfo, VramBuf};
use crate::topology::GpuDesc;

/// A fixed memory map and a simple limit, enough to drive the API edge.
struct Fake {
    vmas: Vec<VmaInfo>,
    limit: u64,
    used: u64,
    bufs: u64,
    ptes_written: u64,
    /// The newest fault in every GPU's ring, if any.
    ih_newest: Option<u64>,
    /// The device LRU's last position handed out.
    lru: u64,
    /// Pages `fault_in` populated.
    faulted_in: u64,
}

impl Fake {
    fn new(vmas: &[(u64, u64, bool)]) -> Self {
        Self {
            vmas: vmas
                .iter()
                .map(|&(s, e, io)| VmaInfo {
                    range: PageRange::new(PageNum::new(s), PageNum::new(e)),
                    flags: VmFlags {
                        read: true,
                        write: true,
                        exec: false,
                        io,
                        ..VmFlags::default()
                    },
                })
                .collect(),
            limit: u64::MAX,
            used: 0,
            bufs: 0,
            ptes_written: 0,
            ih_newest: None,
            lru: 0,
            faulted_in: 0,
        }
    }
}

impl Hardware for Fake {
    fn now_ns(&self) -> u64 {
        0
    }
    fn pte_context(&self, _gpu: GpuIndex) -> crate::pte::PteContext {
        crate::pte::PteContext::dgpu(crate::pte::GcVersion::DEFAULT)
    }
    fn vram_alloc(&mut self, _gpu: GpuIndex, _npages: u64) -> Result<VramBuf> {
        self.bufs += 1;
        Ok(VramBuf(self.bufs))
    }
    fn vram_free(&mut self, _gpu: GpuIndex, _buf: VramBuf) {}
    fn vram_addr(&self, _gpu: GpuIndex, buf: VramBuf, k: u64) -> u64 {
        (buf.0 << 32) + k * 4096
    }
    fn copy_run(
        &mut self,
        _dir: CopyDir,
        _gpu: GpuIndex,
        _buf: VramBuf,
        _k: u64,
        _va: PageNum,
        _n: u64,
        _compound: bool,
    ) {
    }
    fn copy_peer_run(
        &mut self,
        _from: GpuIndex,
        _src: VramBuf,
        _k: u64,
        _to: GpuIndex,
        _dst: VramBuf,
        _dk: u64,
        _va: PageNum,
        _n: u64,
        _compound: bool,
    ) {
    }
    fn duplicate_run(
        &mut self,
        _gpu: GpuIndex,
        _buf: VramBuf,
        _k: u64,
        _va: PageNum,
        _from: Option<(GpuIndex, VramBuf, u64)>,
        _n: u64,
    ) {
    }
    fn copy_bo(&mut self, _gpu: GpuIndex, _dir: CopyDir, _npages: u64) {}
    fn dma_map(&mut self, _gpu: GpuIndex, va: PageNum) -> u64 {
        va.raw() * 4096
    }
    fn dma_unmap(&mut self, _gpu: GpuIndex, _addr: u64) {}
    fn map_ptes(&mut self, _gpu: GpuIndex, _start: PageNum, ptes: &[Pte]) {
        self.ptes_written += ptes.len() as u64;
    }
    fn unmap_ptes(&mut self, _gpu: GpuIndex, _range: PageRange) {}
    fn flush_tlb(&mut self, _gpu: GpuIndex, _kind: TlbFlush) {}
    fn smi_event(&mut self, _gpu: GpuIndex, _event: crate::events::Event) {}
    fn evict_queues(&mut self, _gpu: GpuIndex) {}
    fn vram_free_pages(&self, _gpu: GpuIndex) -> u64 {
        u64::MAX
    }
    fn foreign_buffers(&self, _gpu: GpuIndex) -> Vec<crate::policy::victim::Candidate> {
        Vec::new()
    }
    fn evict_foreign(
        &mut self,
        _gpu: GpuIndex,
        _owner: usize,
        _kind: crate::policy::victim::BoKind,
        _bo: u64,
    ) -> Option<u64> {
        None
    }
    fn reserve_vram_limit(&mut self, _gpu: GpuIndex, _bytes: u64) -> Result {
        Ok(())
    }
    fn unreserve_vram_limit(&mut self, _gpu: GpuIndex, _bytes: u64) {}
    fn lru_bump(&mut self, _gpu: GpuIndex) -> u64 {
        self.lru += 1;
        self.lru
    }
    fn restore_queues(&mut self, _gpu: GpuIndex) {}
    fn ih_checkpoint(&self, _gpu: GpuIndex) -> Option<u64> {
        self.ih_newest
    }
}

impl Platform for Fake {
    fn vma_at(&self, page: PageNum) -> Option<VmaInfo> {
        self.vmas.iter().copied().find(|v| v.range.contains(page))
    }
    fn host_holds(&self, _page: PageNum) -> bool {
        // (The fake keeps no pages.)
        false
    }
    fn reserve_mem_limit(&mut self, bytes: u64) -> Result {
        if self.used + bytes > self.limit {
            return Err(Error::MemLimit {
                need_bytes: bytes,
                used_bytes: self.used,
                limit_bytes: self.limit,
            });
        }
        self.used += bytes;
        Ok(())
    }
    fn fault_in(&mut self, _page: PageNum, write: bool) -> bool {
        if write {
            self.faulted_in += 1;
        }
        write
    }
    fn unreserve_mem_limit(&mut self, bytes: u64) {
        self.used = self
            .used
            .checked_sub(bytes)
            .expect("unreserve more than reserved");
    }
}

fn ioctl(p: &mut Process, pf: &mut Fake, a: &mut SvmArgs) -> Result<(), Errno> {
    p.svm_ioctl(pf, a).map(drop).map_err(|e| e.errno())
}

fn xnack(p: &mut Process, pf: &mut Fake, v: i32) -> Result<i32, Errno> {
    p.set_xnack_mode(pf, v).map_err(|e| e.errno())
}

const GPU0: u32 = 0x1002;
const GPU1: u32 = 0x2002;
const NOSVM: u32 = 0x3002;

fn topo(second_xnack: bool) -> Topology {
    let g = |name: &str, id, svm, xnack| GpuDesc {
        name: name.into(),
        id: GpuId::new(id).unwrap(),
        vram_bytes: 16 << 30,
        svm,
        xnack,
        hive: None,
        apu: false,
        prefer_gtt: false,
        ats: false,
        local_atomics: false,
        gc: crate::pte::GcVersion::DEFAULT,
    };
    Topology::new(vec![
        g("gpu0", GPU0, true, true),
        g("gpu1", GPU1, true, second_xnack),
        g("old", NOSVM, false, false),
    ])
    .unwrap()
}

fn args(op: u32, start: u64, size: u64, attrs: &[(u32, u32)]) -> SvmArgs {
    SvmArgs {
        start_addr: start,
        size,
        op,
        attrs: attrs
            .iter()
            .map(|&(t, v)| SvmAttribute::new(t, v))
            .collect(),
    }
}

#[test]
fn ioctl_rejects_misaligned_and_empty() {
    let mut p = Process::new(&topo(true), true);
    let mut pf = Fake::new(&[(0x10, 0x20, false)]);
    // Table: (start, size) that must give EINVAL before anything is looked at.
    for (start, size) in [
        (0x10001, 0x1000),
        (0x10000, 0x800),
        (0x10000, 0),
        (0, 0x1000),
    ] {
        let mut a = args(uapi::SVM_OP_SET_ATTR, start, size, &[]);
        assert_eq!(
            ioctl(&mut p, &mut pf, &mut a),
            Err(Errno::Einval),
            "{start:#x}+{size:#x}"
        );
    }
    let mut a = args(7, 0x10000, 0x1000, &[]);
    assert_eq!(ioctl(&mut p, &mut pf, &mut a), Err(Errno::Einval));
}

#[test]
fn set_attr_checks_attributes_before_the_va() {
    let mut p = Process::new(&topo(true), true);
    let mut pf = Fake::new(&[]);
    // Nothing is mapped, yet a bad attribute wins: check_attr runs first.
    let mut a = args(uapi::SVM_OP_SET_ATTR, 0x10000, 0x1000, &[(99, 0)]);
    assert_eq!(ioctl(&mut p, &mut pf, &mut a), Err(Errno::Einval));
    let mut a = args(
        uapi::SVM_OP_SET_ATTR,
        0x10000,
        0x1000,
        &[(attr_type::GRANULARITY, 3)],
    );
    assert_eq!(ioctl(&mut p, &mut pf, &mut a), Err(Errno::Efault));
}

#[test]
fn set_attr_validation_table() {
    let mut p = Process::new(&topo(true), false);
    let mut pf = Fake::new(&[(0x10, 0x20, false), (0x20, 0x30, true)]);
    use attr_type::*;
    let u = uapi::SVM_LOCATION_UNDEFINED;
    // Table: (attribute, expected result) on a mapped VA.
    type Case = ((u32, u32), Result<(), Errno>);
    let cases: &[Case] = &[
        ((PREFERRED_LOC, 0), Ok(())),
        ((PREFERRED_LOC, u), Ok(())),
        ((PREFERRED_LOC, GPU0), Ok(())),
        ((PREFERRED_LOC, 0x9999), Err(Errno::Einval)),
        ((PREFETCH_LOC, 0), Ok(())),
        ((PREFETCH_LOC, GPU1), Ok(())),
        ((PREFETCH_LOC, u), Err(Errno::Einval)), // UNDEFINED is looked up as a gpu_id
        ((ACCESS, GPU0), Ok(())),
        ((ACCESS, NOSVM), Err(Errno::Einval)), // no SVM support
        ((ACCESS_IN_PLACE, NOSVM), Err(Errno::Einval)),
        ((NO_ACCESS, NOSVM), Err(Errno::Einval)), // every GPU named must support SVM
        ((PREFERRED_LOC, NOSVM), Err(Errno::Einval)),
        ((PREFETCH_LOC, NOSVM), Err(Errno::Einval)),
        ((NO_ACCESS, 0x9999), Err(Errno::Einval)),
        ((ACCESS, 0), Err(Errno::Einval)), // sysmem is not a GPU
        ((SET_FLAGS, 0xffff_ffff), Ok(())),
        ((CLR_FLAGS, 0xffff_ffff), Ok(())),
        ((GRANULARITY, 0xffff), Ok(())),
        ((8, 0), Err(Errno::Einval)),
    ];
    for &(attr, want) in cases {
        let mut a = args(uapi::SVM_OP_SET_ATTR, 0x10000, 0x1000, &[attr]);
        assert_eq!(ioctl(&mut p, &mut pf, &mut a), want, "{attr:x?}");
    }
    // VM_IO mapping and a hole are EFAULT.
    let mut a = args(uapi::SVM_OP_SET_ATTR, 0x1f000, 0x2000, &[(GRANULARITY, 1)]);
    assert_eq!(ioctl(&mut p, &mut pf, &mut a), Err(Errno::Efault));
    let mut a = args(uapi::SVM_OP_SET_ATTR, 0x2f000, 0x2000, &[(GRANULARITY, 1)]);
    assert_eq!(ioctl(&mut p, &mut pf, &mut a), Err(Errno::Efault));
}

#[test]
fn get_attr_checks_va_before_types_and_gpu_last() {
    let mut p = Process::new(&topo(true), true);
    let mut pf = Fake::new(&[(0x10, 0x20, false)]);
    use attr_type::*;
    // Unmapped VA with a bad query type: EFAULT, because is_valid runs first.
    let mut a = args(uapi::SVM_OP_GET_ATTR, 0x40000, 0x1000, &[(NO_ACCESS, GPU0)]);
    assert_eq!(ioctl(&mut p, &mut pf, &mut a), Err(Errno::Efault));
    for ty in [ACCESS_IN_PLACE, NO_ACCESS, 8] {
        let mut a = args(uapi::SVM_OP_GET_ATTR, 0x10000, 0x1000, &[(ty, GPU0)]);
        assert_eq!(
            ioctl(&mut p, &mut pf, &mut a),
            Err(Errno::Einval),
            "type {ty}"
        );
    }
    let mut a = args(uapi::SVM_OP_GET_ATTR, 0x10000, 0x1000, &[(ACCESS, 0x9999)]);
    assert_eq!(ioctl(&mut p, &mut pf, &mut a), Err(Errno::Einval));
    // A GPU without SVM is a valid query: it simply has no access.
    let mut a = args(uapi::SVM_OP_GET_ATTR, 0x10000, 0x1000, &[(ACCESS, NOSVM)]);
    assert_eq!(ioctl(&mut p, &mut pf, &mut a), Ok(()));
    assert_eq!(a.attrs[0], SvmAttribute::new(NO_ACCESS, NOSVM));
}

#[test]
fn get_attr_defaults_follow_xnack_mode() {
    for xnack in [false, true] {
        let mut p = Process::new(&topo(true), xnack);
        assert_eq!(p.xnack_enabled(), xnack);
        let mut pf = Fake::new(&[(0x10, 0x20, false)]);
        use attr_type::*;
        let mut a = args(
            uapi::SVM_OP_GET_ATTR,
            0x10000,
            0x1000,
            &[
                (PREFERRED_LOC, 0),
                (PREFETCH_LOC, 0),
                (ACCESS, GPU0),
                (SET_FLAGS, 0),
                (CLR_FLAGS, 0),
                (GRANULARITY, 0),
            ],
        );
        ioctl(&mut p, &mut pf, &mut a).unwrap();
        let want_access = if xnack { ACCESS } else { NO_ACCESS };
        assert_eq!(
            a.attrs,
            vec![
                SvmAttribute::new(PREFERRED_LOC, uapi::SVM_LOCATION_UNDEFINED),
                SvmAttribute::new(PREFETCH_LOC, uapi::SVM_LOCATION_UNDEFINED),
                SvmAttribute::new(want_access, GPU0),
                SvmAttribute::new(SET_FLAGS, 0x3),
                SvmAttribute::new(CLR_FLAGS, !0x3),
                SvmAttribute::new(GRANULARITY, 9),
            ],
            "xnack {xnack}"
        );
    }
}

#[test]
fn get_attr_combines_ranges_and_ignores_gaps() {
    let mut p = Process::new(&topo(true), false);
    let mut pf = Fake::new(&[(0x10, 0x30, false)]);
    use attr_type::*;
    let flag = uapi::flag::GPU_EXEC;
    let r1 = PageRange::new(PageNum::new(0x10), PageNum::new(0x12));
    let r2 = PageRange::new(PageNum::new(0x20), PageNum::new(0x22));
    let ops1 = p
        .check_attrs(&[
            SvmAttribute::new(PREFERRED_LOC, GPU0),
            SvmAttribute::new(SET_FLAGS, flag),
            SvmAttribute::new(GRANULARITY, 4),
            SvmAttribute::new(ACCESS_IN_PLACE, GPU1),
        ])
        .unwrap();
    let ops2 = p
        .check_attrs(&[
            SvmAttribute::new(PREFERRED_LOC, GPU0),
            SvmAttribute::new(GRANULARITY, 6),
            SvmAttribute::new(ACCESS_IN_PLACE, GPU1),
        ])
        .unwrap();
    p.set_attr(&mut pf, r1, &ops1).unwrap();
    p.set_attr(&mut pf, r2, &ops2).unwrap();
    let whole = PageRange::new(PageNum::new(0x10), PageNum::new(0x30));
    let v = p
        .get_attr(
            &pf,
            whole,
            &[
                AttrQuery::PreferredLoc,
                AttrQuery::SetFlags,
                AttrQuery::ClrFlags,
                AttrQuery::Granularity,
                AttrQuery::Access(GPU1),
                AttrQuery::Access(GPU0),
            ],
        )
        .unwrap();
    let gpu0 = GpuId::new(GPU0).unwrap();
    assert_eq!(
        v,
        vec![
            AttrValue::PreferredLoc(Some(Location::Vram(gpu0))),
            AttrValue::SetFlags(SvmFlags::DEFAULT),
            AttrValue::ClrFlags(SvmFlags::from_bits(!(0x3 | flag))),
            AttrValue::Granularity(Granularity::from_uapi(4)),
            AttrValue::Access(GpuId::new(GPU1).unwrap(), AccessKind::AccessInPlace),
            AttrValue::Access(gpu0, AccessKind::NoAccess),
        ]
    );
}

#[test]
fn set_attr_is_transactional_on_enomem() {
    let mut p = Process::new(&topo(true), false);
    let mut pf = Fake::new(&[(0x10, 0x100, false)]);
    let gran = [AttrOp::Granularity(3)];
    p.set_attr(
        &mut pf,
        PageRange::new(PageNum::new(0x20), PageNum::new(0x30)),
        &gran,
    )
    .unwrap();
    assert_eq!(pf.used, 0x10 * 4096);
    pf.limit = pf.used + 0x8 * 4096;
    let before = p.ranges().clone();
    // Covers the existing range partly (a clone and a split) and needs 0xc
    // new pages, more than the 8 left.
    let err = p
        .set_attr(
            &mut pf,
            PageRange::new(PageNum::new(0x14), PageNum::new(0x2c)),
            &[AttrOp::Granularity(1)],
        )
        .unwrap_err();
    assert!(matches!(err, Error::MemLimit { .. }), "{err:?}");
    assert_eq!(err.errno(), Errno::Enomem);
    assert_eq!(p.ranges(), &before);
    assert_eq!(pf.used, 0x10 * 4096);
    // XNACK on reserves nothing, so the same call succeeds.
    p.set_xnack(&mut pf, true).unwrap();
    assert_eq!(pf.used, 0);
    p.set_attr(
        &mut pf,
        PageRange::new(PageNum::new(0x18), PageNum::new(0x2c)),
        &[AttrOp::Granularity(1)],
    )
    .unwrap();
    assert_eq!(p.ranges().len(), 3);
}

#[test]
fn xnack_mode_rules() {
    let mut pf = Fake::new(&[(0x10, 0x20, false)]);
    // A GPU that cannot fault: the default is off and enabling is EPERM.
    let mut p = Process::new(&topo(false), true);
    assert!(!p.xnack_enabled());
    assert_eq!(xnack(&mut p, &mut pf, 1), Err(Errno::Eperm));
    assert_eq!(xnack(&mut p, &mut pf, 0), Ok(0));
    assert_eq!(xnack(&mut p, &mut pf, -1), Ok(0));

    let mut p = Process::new(&topo(true), false);
    assert_eq!(xnack(&mut p, &mut pf, 1), Ok(1));
    let q = p.create_queue(GPU1).unwrap();
    // Busy with a queue, even when asking for the current mode.
    assert_eq!(xnack(&mut p, &mut pf, 0), Err(Errno::Ebusy));
    assert_eq!(xnack(&mut p, &mut pf, 1), Err(Errno::Ebusy));
    assert_eq!(xnack(&mut p, &mut pf, -1), Ok(1));
    p.destroy_queue(q.raw()).unwrap();
    assert_eq!(p.destroy_queue(q.raw()).unwrap_err().errno(), Errno::Einval);
    assert_eq!(p.create_queue(0x9999).unwrap_err().errno(), Errno::Einval);
    assert_eq!(xnack(&mut p, &mut pf, 0), Ok(0));
}

#[test]
fn xnack_off_reserves_all_or_nothing() {
    let mut pf = Fake::new(&[(0x10, 0x100, false)]);
    let mut p = Process::new(&topo(true), true);
    for s in [0x10, 0x40] {
        let r = PageRange::new(PageNum::new(s), PageNum::new(s + 0x10));
        p.set_attr(&mut pf, r, &[AttrOp::Granularity(2)]).unwrap();
    }
    assert_eq!(pf.used, 0);
    pf.limit = 0x18 * 4096; // room for one range, not two
    assert_eq!(xnack(&mut p, &mut pf, 0), Err(Errno::Enomem));
    assert!(p.xnack_enabled());
    assert_eq!(pf.used, 0);
    pf.limit = u64::MAX;
    assert_eq!(xnack(&mut p, &mut pf, 0), Ok(0));
    assert_eq!(pf.used, 0x20 * 4096);
    assert_eq!(p.reserved_bytes(), pf.used);
    p.unmap_from_cpu(
        &mut pf,
        PageRange::new(PageNum::new(0x18), PageNum::new(0x48)),
    );
    // The notifier only splits; the deferred work frees and unreserves.
    assert_eq!(pf.used, 0x20 * 4096);
    assert!(p.deferred_pending());
    assert!(p.deferred_list_work(&mut pf));
    assert!(!p.deferred_list_work(&mut pf));
    assert_eq!(pf.used, 0x10 * 4096);
    p.exit(&mut pf);
    assert_eq!(pf.used, 0);
}

#[test]
fn mapped_to_gpu_follows_validate_rules() {
    use attr_type::*;
    let reg = |p: &Process| {
        p.check_attrs(&[
            SvmAttribute::new(PREFETCH_LOC, 0),
            SvmAttribute::new(PREFERRED_LOC, 0),
            SvmAttribute::new(SET_FLAGS, 0x3),
            SvmAttribute::new(ACCESS, GPU0),
        ])
        .unwrap()
    };
    let r = PageRange::new(PageNum::new(0x10), PageNum::new(0x20));
    // XNACK off: ACCESS maps eagerly.
    let mut pf = Fake::new(&[(0x10, 0x20, false)]);
    let mut p = Process::new(&topo(true), false);
    let ops = reg(&p);
    assert_eq!(p.set_attr(&mut pf, r, &ops).unwrap().mapped, 1);
    assert!(p.ranges().iter().all(|r| r.mapped_to_gpu));
    // XNACK on: nothing is mapped until a GPU faults.
    let mut p = Process::new(&topo(true), true);
    let ops = reg(&p);
    assert_eq!(p.set_attr(&mut pf, r, &ops).unwrap().mapped, 0);
    assert!(p.ranges().iter().all(|r| !r.mapped_to_gpu));
    // ... unless the range asks to stay mapped.
    let ops = p
        .check_attrs(&[SvmAttribute::new(SET_FLAGS, uapi::flag::GPU_ALWAYS_MAPPED)])
        .unwrap();
    assert_eq!(p.set_attr(&mut pf, r, &ops).unwrap().mapped, 1);
}

#[test]
fn get_attr_error_leaves_earlier_answers_written() {
    let mut p = Process::new(&topo(true), true);
    let mut pf = Fake::new(&[(0x10, 0x20, false)]);
    use attr_type::*;
    let mut a = args(
        uapi::SVM_OP_GET_ATTR,
        0x10000,
        0x1000,
        &[(GRANULARITY, 0), (ACCESS, 0x9999), (PREFERRED_LOC, 7)],
    );
    assert_eq!(ioctl(&mut p, &mut pf, &mut a), Err(Errno::Einval));
    // The first answer is in place, the bad query and the one after are untouched.
    assert_eq!(
        a.attrs,
        vec![
            SvmAttribute::new(GRANULARITY, 9),
            SvmAttribute::new(ACCESS, 0x9999),
            SvmAttribute::new(PREFERRED_LOC, 7),
        ]
    );
}

/// Step 11 of set_attr validates every remap piece, mapped or not: a piece cut
/// at an unaligned point from a never-mapped range with an in-place GPU gets
/// mapped (XNACK on maps in-place GPUs eagerly), while the updated middle,
/// whose attributes asked for no mapping update, stays unmapped.
#[test]
fn remap_pieces_are_validated_even_if_never_mapped() {
    let mut p = Process::new(&topo(true), true);
    let mut pf = Fake::new(&[(0x10, 0x40, false)]);
    let r = PageRange::new(PageNum::new(0x10), PageNum::new(0x40));
    let aip = p
        .check_attrs(&[SvmAttribute::new(attr_type::ACCESS_IN_PLACE, GPU0)])
        .unwrap();
    // ACCESS_IN_PLACE with XNACK on does not ask for a mapping update.
    assert_eq!(p.set_attr(&mut pf, r, &aip).unwrap().mapped, 0);
    let inner = PageRange::new(PageNum::new(0x18), PageNum::new(0x19));
    let out = p.set_attr(&mut pf, inner, &[]).unwrap();
    assert_eq!((out.split, out.remapped, out.mapped), (1, 2, 2));
    let mapped: Vec<(u64, bool)> = p
        .ranges()
        .iter()
        .map(|r| (r.start().raw(), r.mapped_to_gpu))
        .collect();
    assert_eq!(mapped, vec![(0x10, true), (0x18, false), (0x19, true)]);
}

#[test]
fn faults_after_exit_are_dropped() {
    let mut p = Process::new(&topo(true), true);
    let mut pf = Fake::new(&[(0x10, 0x20, false)]);
    p.exit(&mut pf);
    let g = GpuIndex::new(0).unwrap();
    assert_eq!(
        p.restore_pages(
            &mut pf,
            g,
            PageNum::new(0x10),
            crate::policy::Access::Read,
            0
        ),
        Ok(FaultOutcome::Dropped(DropReason::ProcessGone))
    );
}

#[test]
fn faults_with_xnack_off_are_fatal() {
    let mut p = Process::new(&topo(true), false);
    let mut pf = Fake::new(&[(0x10, 0x20, false)]);
    let g = GpuIndex::new(0).unwrap();
    let err = p
        .restore_pages(
            &mut pf,
            g,
            PageNum::new(0x10),
            crate::policy::Access::Read,
            0,
        )
        .unwrap_err();
    assert_eq!(err.errno(), Errno::Efault);
}

/// A process with XNACK on and one range [0x10, 0x40) that GPU0 may access.
fn one_range() -> (Process, Fake) {
    let mut p = Process::new(&topo(true), true);
    let mut pf = Fake::new(&[(0x10, 0x40, false)]);
    let r = PageRange::new(PageNum::new(0x10), PageNum::new(0x40));
    let ops = p
        .check_attrs(&[SvmAttribute::new(attr_type::ACCESS, GPU0)])
        .unwrap();
    p.set_attr(&mut pf, r, &ops).unwrap();
    (p, pf)
}

#[test]
fn faults_on_pieces_waiting_for_deferred_work_are_not_recovered() {
    let (mut p, mut pf) = one_range();
    let g = GpuIndex::new(0).unwrap();
    let fault = |p: &mut Process, pf: &mut Fake, page: u64| {
        p.restore_pages(pf, g, PageNum::new(page), crate::policy::Access::Read, 1)
    };
    // A hole in the middle: the head stays, the hole and the tail wait.
    p.unmap_from_cpu(
        &mut pf,
        PageRange::new(PageNum::new(0x20), PageNum::new(0x28)),
    );
    let skipped = Ok(FaultOutcome::Dropped(DropReason::Unmapping));
    assert_eq!(fault(&mut p, &mut pf, 0x22), skipped, "unmapped piece");
    assert_eq!(fault(&mut p, &mut pf, 0x30), skipped, "tail not added yet");
    assert!(matches!(
        fault(&mut p, &mut pf, 0x10),
        Ok(FaultOutcome::Resolved { .. })
    ));
    assert!(p.deferred_list_work(&mut pf));
    let starts: Vec<u64> = p.ranges().iter().map(|r| r.start().raw()).collect();
    assert_eq!(starts, vec![0x10, 0x28]);
    assert!(matches!(
        fault(&mut p, &mut pf, 0x30),
        Ok(FaultOutcome::Resolved { .. })
    ));
}

#[test]
fn stragglers_up_to_the_checkpoint_are_dropped_uncounted() {
    let (mut p, mut pf) = one_range();
    let g = GpuIndex::new(0).unwrap();
    // Faults up to ts 100 were in the ring when munmap came.
    pf.ih_newest = Some(100);
    p.unmap_from_cpu(
        &mut pf,
        PageRange::new(PageNum::new(0x38), PageNum::new(0x40)),
    );
    pf.ih_newest = None;
    assert_eq!(
        p.deferred_checkpoints(),
        vec![(g, 100), (GpuIndex::new(1).unwrap(), 100)]
    );
    let fault = |p: &mut Process, pf: &mut Fake, ts: u64| {
        p.restore_pages(pf, g, PageNum::new(0x10), crate::policy::Access::Read, ts)
    };
    for ts in [7, 100] {
        assert_eq!(
            fault(&mut p, &mut pf, ts),
            Ok(FaultOutcome::Dropped(DropReason::Straggler))
        );
    }
    assert_eq!(p.stats()[g].faults, 0, "-EAGAIN is not counted");
    // The first newer fault is served and clears the checkpoint, so an
    // older timestamp is no longer compared.
    assert!(matches!(
        fault(&mut p, &mut pf, 101),
        Ok(FaultOutcome::Resolved { .. })
    ));
    assert_eq!(
        p.deferred_checkpoints(),
        vec![(GpuIndex::new(1).unwrap(), 100)]
    );
    assert_eq!(p.stats()[g].faults, 1);
}
