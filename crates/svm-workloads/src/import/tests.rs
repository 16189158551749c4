use super::*;

fn one(text: &str, gpu: Option<u32>) -> Result<Imported, ImportError> {
    kfd_smi(&[Source { text, gpu }], 1 << 20, None)
}

/// Faults of one GPU become one kernel of first touches, R a load and W
/// a store, dealt round robin to its waves; the mapping is what the
/// migrations cover, registered for the GPU in buffers cut where a
/// migration's range starts or ends; a CPU fault's migration a CPU read;
/// fault ends and migrations for faults are effects.
#[test]
fn faults_become_first_touches_and_effects_are_counted() {
    let text = "\
7 100 -42 @7f000(beef) W
5 110 -42 @7f000(200) 0->beef ffffffff:0 1
6 120 -42 @7f000(200) 0->beef 1 0
8 130 -42 @7f000(beef) M
7 140 -42 @7f001(beef) R
5 200 -42 @7f001(1) beef->0 ffffffff:0 2
";
    let i = one(text, Some(0xbeef)).unwrap();
    let r = &i.report;
    assert_eq!(r.gpus, vec![(0xbeef, 0x1002)]);
    assert_eq!(r.pids, vec![42]);
    assert_eq!(
        r.buffers,
        vec![
            (0x7f00_0000, 0x1000),
            (0x7f00_1000, 0x1000),
            (0x7f00_2000, (2 << 20) - 0x2000)
        ]
    );
    assert!(i.events.contains(&TraceEvent::Mmap {
        pid: 0,
        addr: 0x7f00_0000,
        len: 2 << 20,
        prot: 3,
        mark: 0
    }));
    assert_eq!(
        (r.gpu_faults, r.cpu_faults, r.kernels, r.effects),
        (2, 1, 1, 3)
    );
    assert_eq!(r.events["page_fault_start"], 2);
    let ops: Vec<_> = i
        .events
        .iter()
        .filter_map(|e| match e {
            TraceEvent::Wave { wave, op, .. } => Some((*wave, *op)),
            _ => None,
        })
        .collect();
    assert_eq!(
        ops,
        vec![
            (
                0,
                WaveOp::Store {
                    addr: 0x7f00_0000,
                    len: 4
                }
            ),
            // Raised 40 ns after the kernel's first fault: its wave
            // computes that long first.
            (1, WaveOp::Compute { ns: 40 }),
            (
                1,
                WaveOp::Load {
                    addr: 0x7f00_1000,
                    len: 4
                }
            ),
        ]
    );
    // The host waited for the kernel (its last fault, 140), then 60 ns
    // until the CPU fault.
    assert!(
        i.events.contains(&TraceEvent::Advance { ns: 60 }),
        "{:?}",
        i.events
    );
    assert!(i.events.contains(&TraceEvent::Launch {
        pid: 0,
        gpu_id: 0x1002,
        waves: 2
    }));
    assert!(i.events.contains(&TraceEvent::Cpu {
        pid: 0,
        addr: 0x7f00_1000,
        len: 4,
        write: false
    }));
}

/// A prefixed file: lines of several GPUs, merged in time order; a
/// prefetch becomes SET_ATTR PREFETCH_LOC to the GPU it went to, a munmap
/// a munmap, and a later touch of the block maps it again.
#[test]
fn a_prefixed_file_merges_gpus_and_keeps_prefetches_and_munmaps() {
    let text = "\
# svmsim run partial
2002 7 300 -1 @400(2002) R
1002 5 100 -1 @200(200) 0->1002 1002:0 0
1002 6 150 -1 @200(200) 0->1002 0 0
1002 b 400 -1 @200(200) 1002 2
2002 7 500 -1 @201(2002) W
1002 e 600 -1 3
# svmsim run whole-range
1002 7 5 -1 @0(1002) R
";
    let i = one(text, None).unwrap();
    let r = &i.report;
    assert_eq!(r.gpus, vec![(0x1002, 0x1002), (0x2002, 0x2002)]);
    assert_eq!(
        (r.prefetches, r.unmaps, r.gpu_faults, r.kernels),
        (1, 1, 2, 2)
    );
    assert_eq!((r.dropped, r.runs_left_out), (3, 1));
    let pos = |want: &dyn Fn(&TraceEvent) -> bool| i.events.iter().position(want).unwrap();
    let prefetch = pos(
        &|e| matches!(e, TraceEvent::SetAttr { attrs, .. } if attrs == &vec![(attr_type::PREFETCH_LOC, 0x1002)]),
    );
    let munmap = pos(&|e| {
        matches!(
            e,
            TraceEvent::Munmap {
                addr: 0x20_0000,
                len: 0x20_0000,
                ..
            }
        )
    });
    let remap = i
        .events
        .iter()
        .rposition(|e| {
            matches!(
                e,
                TraceEvent::Mmap {
                    addr: 0x20_0000,
                    ..
                }
            )
        })
        .unwrap();
    assert!(prefetch < munmap && munmap < remap);
}

/// Bad lines are errors that name the line and the field; ids the
/// kernel does not define are refused; events that are not SVM's are
/// counted and left out.
#[test]
fn bad_lines_name_their_line_and_field() {
    let bad = |text: &str, line: usize, field: &str| match one(text, Some(0x1002)) {
        Err(ImportError::Line {
            line: l, field: f, ..
        }) => {
            assert_eq!((l, f), (line, field), "{text:?}");
        }
        other => panic!("{text:?}: {other:?}"),
    };
    bad("7 100 -1 @7f(1002) W\n7 x -1 @7f(1002) W\n", 2, "timestamp");
    bad("7 100 -1 7f(1002) W\n", 1, "page");
    bad("7 100 -1 @7f(1002) Q\n", 1, "access");
    bad("5 100 -1 @7f(1) 0->1002 0:0 9\n", 1, "trigger");
    bad("5 100 -1 @7f(1) 0->1002 0:0 1 extra\n", 1, "end of line");
    bad("f 100 -1\n", 1, "event id");
    bad("7 100 -1 @ffffffffffffffff(1002) W\n", 1, "page");
    // Queue messages parse, and are the engine's to make again.
    let i = one(
        "7 90 -1 @7f(1002) W\n9 100 -1 1002 0\na 200 -1 1002 0\na 300 -1 1002 R\n",
        Some(0x1002),
    )
    .unwrap();
    assert_eq!((i.report.effects, i.report.events["queue_restore"]), (3, 2));
    bad("7 90 -1 @7f(1002) W\na 200 -1 1002 X\n", 2, "rescheduled");
    let i = one("1 1:proc\n7 100 -1 @7f(1002) W\n", Some(0x1002)).unwrap();
    assert_eq!(i.report.not_svm, 1);
    assert_eq!(
        one("1 1:proc\n", Some(0x1002)).unwrap_err(),
        ImportError::Empty
    );
    assert!(matches!(
        kfd_smi(
            &[Source {
                text: "7 1 -1 @7f(1002) W\n7 2 -1 @80(1002) W\n",
                gpu: Some(0x1002)
            }],
            1,
            None
        ),
        Err(ImportError::Limit { what: "lines", .. })
    ));
}

/// The tally counts every kind by trigger, pairs each start with its end
/// (the oldest open one of the same key first) for the durations, and
/// leaves an unpaired start untimed.
#[test]
fn the_tally_counts_by_trigger_and_times_paired_messages() {
    let text = "\
7 100 -42 @7f000(beef) W
7 105 -42 @7f000(beef) W
5 110 -42 @7f000(200) 0->beef ffffffff:0 1
6 150 -42 @7f000(200) 0->beef 1 0
8 160 -42 @7f000(beef) M
8 170 -42 @7f000(beef) U
5 200 -42 @7f001(1) beef->0 ffffffff:0 2
6 230 -42 @7f001(1) beef->0 2 -14
5 300 -42 @80000(10) 0->beef beef:0 0
9 400 -42 beef 2
a 500 -42 beef R
b 600 -42 @7f000(200) beef 2
b 610 -42 @90000(4) beef 0
5 700 -42 @a0000(8) beef->0 ffffffff:0 3
e 800 -42 3
";
    let t = tally(
        &[Source {
            text,
            gpu: Some(0xbeef),
        }],
        1 << 20,
    )
    .unwrap();
    assert_eq!((t.gpu_faults, t.gpu_fault_writes), (2, 2));
    assert_eq!((t.faults_migrated, t.faults_updated), (1, 1));
    // 100 -> 160 and 105 -> 170.
    assert_eq!((t.fault_ns, t.faults_timed), (60 + 65, 2));
    assert_eq!(t.migrations, [1, 1, 1, 1]);
    assert_eq!(t.migrated_pages, [0x10, 0x200, 1, 8]);
    assert_eq!((t.pages_to_vram, t.pages_to_ram), (0x210, 9));
    assert_eq!(t.migration_errors, 1);
    // Two ends: 40 and 30 ns; the prefetch and the eviction never end.
    assert_eq!((t.migration_ns, t.migrations_timed), (70, 2));
    assert_eq!(
        (t.queue_evictions, t.queue_restores, t.restores_rescheduled),
        (1, 1, 1)
    );
    assert_eq!(t.unmaps, [1, 0, 1]);
    assert_eq!(t.unmapped_pages, [4, 0, 0x200]);
    assert_eq!(t.dropped, 3);
    assert_eq!(t.span_ns, 700);
}

/// An allocation list gives the buffers: page-widened, in address order;
/// what lies outside them is left out and counted. Bad lines are named.
#[test]
fn an_allocation_list_gives_the_buffers() {
    let list = allocations(
        "# from the application's log\naddress,bytes,name\n0x7f001000,0x2000,b\n0x7f000000,100,a\n",
    )
    .unwrap();
    assert_eq!(list, vec![(0x7f00_0000, 0x1000), (0x7f00_1000, 0x2000)]);
    let text = "\
7 100 -42 @7f000(beef) W
7 140 -42 @7f002(beef) R
7 150 -42 @90000(beef) R
5 200 -42 @90000(1) beef->0 ffffffff:0 2
";
    let i = kfd_smi(
        &[Source {
            text,
            gpu: Some(0xbeef),
        }],
        1 << 20,
        Some(&list),
    )
    .unwrap();
    assert_eq!(i.report.buffers, list);
    assert!(i.report.listed);
    assert_eq!(
        (i.report.gpu_faults, i.report.cpu_faults, i.report.outside),
        (2, 0, 2)
    );
    assert!(i.events.contains(&TraceEvent::Mmap {
        pid: 0,
        addr: 0x7f00_0000,
        len: 0x3000,
        prot: 3,
        mark: 0
    }));
    let bad = |t: &str| match allocations(t).unwrap_err() {
        ImportError::Line { line, field, .. } => (line, field),
        e => panic!("{e}"),
    };
    assert_eq!(bad("0x1000,4096\n"), (1, "header"));
    assert_eq!(bad("address,bytes\n0x1000,zz\n"), (2, "bytes"));
    assert_eq!(bad("address,bytes\nq,1\n"), (2, "address"));
    assert_eq!(bad("address,bytes\n0x1000,0\n"), (2, "bytes"));
    assert_eq!(
        bad("address,bytes\n0x1000,4096\n0x1800,1\n"),
        (3, "address")
    );
    assert_eq!(bad("address,bytes\n0xffffffffffffffff,2\n"), (2, "bytes"));
}
