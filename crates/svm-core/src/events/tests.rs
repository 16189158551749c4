use super::*;

fn id(raw: u32) -> GpuId {
    GpuId::new(raw).unwrap()
}

/// Every kind and every printed variation (character flags, system memory
/// and GPU locations, an undefined location, a negative error code), with
/// the exact text kfd prints for it.
#[test]
fn each_kind_prints_as_kfd_does() {
    let ev = |ts_ns, pid, kind| Event { ts_ns, pid, kind };
    let vram = |raw| Location::Vram(id(raw));
    // (event, text)
    let table = [
        (
            page_fault_start(1000, 42, 0x7f000, 0x1002, true),
            "7 1000 -42 @7f000(1002) W",
        ),
        (
            page_fault_start(1000, 42, 0x7f000, 0x1002, false),
            "7 1000 -42 @7f000(1002) R",
        ),
        (
            page_fault_end(2000, 42, 0x7f000, 0x1002, false),
            "8 2000 -42 @7f000(1002) U",
        ),
        (
            page_fault_end(2000, 42, 0x7f000, 0x1002, true),
            "8 2000 -42 @7f000(1002) M",
        ),
        // Undefined prefetch location: kfd prints the raw 0xffffffff.
        (
            migrate_start(
                5,
                1,
                0x200,
                0x200,
                0,
                0x1002,
                0xffff_ffff,
                0,
                MigrateTrigger::PagefaultGpu,
            ),
            "5 5 -1 @200(200) 0->1002 ffffffff:0 1",
        ),
        (
            migrate_end(6, 1, 0x200, 0x200, 0x1002, 0, MigrateTrigger::PagefaultCpu),
            "6 6 -1 @200(200) 1002->0 2 0",
        ),
        // kfd passes its negative errno (`r`) through `%d`.
        (
            ev(
                6,
                1,
                Kind::MigrateEnd {
                    start: PageNum::new(0x10),
                    npages: PageCount::new(0x20),
                    from: Location::Sys,
                    to: vram(0x2002),
                    trigger: MigrateTrigger::Prefetch,
                    error_code: -12,
                },
            ),
            "6 6 -1 @10(20) 0->2002 0 -12",
        ),
        (
            unmap_from_gpu(7, 1, 0x10, 4, 0x2002, UnmapTrigger::UnmapFromCpu),
            "b 7 -1 @10(4) 2002 2",
        ),
        (queue_eviction(8, 1, 0x1002), "9 8 -1 1002 0"),
        (
            ev(
                8,
                1,
                Kind::QueueEviction {
                    gpu_id: id(0x1002),
                    trigger: EvictTrigger::CriuRestore,
                },
            ),
            "9 8 -1 1002 5",
        ),
        (queue_restore(9, 1, 0x1002), "a 9 -1 1002 0"),
        (queue_restore_rescheduled(10, 1, 0x1002), "a 10 -1 1002 R"),
    ];
    for (e, text) in table {
        assert_eq!(e.to_string(), text, "{e:?}");
        // Every line scans back, as kfd's tests read it: the id, the
        // time and pid, and one field per conversion of its format.
        let (got, fields) = scan(text).unwrap_or_else(|| panic!("{text}"));
        assert_eq!(got, e.kind.id(), "{text}");
        assert_eq!(
            fields[1],
            ("ts", Scanned::Num(i64::try_from(e.ts_ns).unwrap()))
        );
        assert_eq!(fields[2], ("pid", Scanned::Num(i64::from(e.pid))));
    }
    let (_, f) = scan("6 6 -1 @10(20) 0->2002 0 -12").unwrap();
    assert_eq!(
        f[3..],
        [
            ("addr", Scanned::Num(0x10)),
            ("size", Scanned::Num(0x20)),
            ("from", Scanned::Num(0)),
            ("to", Scanned::Num(0x2002)),
            ("trigger", Scanned::Num(0)),
            ("error", Scanned::Num(-12)),
        ]
    );
    let (_, f) = scan("a 10 -1 1002 R").unwrap();
    assert_eq!(f[4], ("flag", Scanned::Char('R')));
    // A line off its format, or of an unknown id, does not scan.
    for bad in [
        "6 6 -1 @10(20) 0->2002 0",
        "7 1 -1 @zz(1002) R",
        "c 1 -1 x",
        "",
        "5 x",
    ] {
        assert_eq!(scan(bad), None, "{bad}");
    }
}

#[test]
fn constructors_type_their_fields() {
    let e = migrate_start(
        3,
        7,
        0x400,
        0x10,
        0x1002,
        0,
        0,
        0xffff_ffff,
        MigrateTrigger::TtmEviction,
    );
    assert_eq!(
        e,
        Event {
            ts_ns: 3,
            pid: 7,
            kind: Kind::MigrateStart {
                start: PageNum::new(0x400),
                npages: PageCount::new(0x10),
                from: Location::Vram(id(0x1002)),
                to: Location::Sys,
                prefetch_loc: Some(Location::Sys),
                preferred_loc: None,
                trigger: MigrateTrigger::TtmEviction,
            },
        }
    );
    assert_eq!(e.kind.id(), MIGRATE_START);
}
