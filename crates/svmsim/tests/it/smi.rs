//! The SMI log is kfd's, byte for byte: every event kind reads back with
//! the kernel's own format strings, as a tool's `sscanf` would, and prints
//! again with them to the same bytes; `--events` writes one file per GPU
//! with no prefix, or the prefixed single file on request.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use svm_core::addr::{PageCount, PageNum};
use svm_core::attr::Location;
use svm_core::events::{self, Event, EvictTrigger, Kind, MigrateTrigger, UnmapTrigger};
use svm_core::gpu::GpuId;
use svm_sim::machine::SmiEvent;
use svmsim::smi;

use super::cli::scratch;
use super::{stderr, stdout, svmsim};

/// The message header `kfd_smi_event_add` prints before every payload.
const HEADER: &str = "%x ";

/// The payload formats, verbatim from the `KFD_EVENT_FMT_*` macros of
/// torvalds/linux `include/uapi/linux/kfd_ioctl.h` (since the 2024 patch
/// "drm/amdkfd: Output migrate end event if migrate failed", which added
/// MIGRATE_END's error code), by event id.
const KFD_FMT: [(u32, &str); 7] = [
    (
        events::MIGRATE_START,
        "%lld -%d @%lx(%lx) %x->%x %x:%x %d\n",
    ),
    (events::MIGRATE_END, "%lld -%d @%lx(%lx) %x->%x %d %d\n"),
    (events::PAGE_FAULT_START, "%lld -%d @%lx(%x) %c\n"),
    (events::PAGE_FAULT_END, "%lld -%d @%lx(%x) %c\n"),
    (events::QUEUE_EVICTION, "%lld -%d %x %d\n"),
    (events::QUEUE_RESTORE, "%lld -%d %x %c\n"),
    (events::UNMAP_FROM_GPU, "%lld -%d @%lx(%lx) %x %d\n"),
];

/// One converted value.
#[derive(Clone, Debug, PartialEq, Eq)]
enum V {
    /// `%d`, `%lld`.
    I(i64),
    /// `%x`, `%lx`.
    X(u64),
    /// `%c`.
    C(char),
    /// `%s`.
    S(String),
}

/// The letter of the conversion after a `%` (`d`, `x`, `c`, `s`), past any
/// length modifier (`ll`, `l`): the value's width does not change its text.
fn conversion(f: &mut std::iter::Peekable<std::str::Chars<'_>>) -> char {
    while matches!(f.peek(), Some('l' | 'h')) {
        f.next();
    }
    f.next().expect("a conversion letter after %")
}

/// Reads `input` against `fmt` as C's `sscanf` does for the conversions
/// kfd uses: whitespace in the format matches any run of whitespace (none
/// too), `%d`/`%x`/`%s` skip leading whitespace, `%c` takes the next
/// character as it is, other characters must match. Returns the values
/// converted before the first mismatch.
fn sscanf(input: &str, fmt: &str) -> Vec<V> {
    let mut out = Vec::new();
    let mut s = input.chars().peekable();
    let mut f = fmt.chars().peekable();
    let skip_ws = |s: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while s.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            s.next();
        }
    };
    while let Some(fc) = f.next() {
        if fc.is_ascii_whitespace() {
            skip_ws(&mut s);
            continue;
        }
        if fc != '%' {
            if s.next() != Some(fc) {
                return out;
            }
            continue;
        }
        let conv = conversion(&mut f);
        if conv != 'c' {
            skip_ws(&mut s);
        }
        let v = match conv {
            'c' => match s.next() {
                Some(c) => V::C(c),
                None => return out,
            },
            's' => {
                let mut w = String::new();
                while let Some(&c) = s.peek().filter(|c| !c.is_ascii_whitespace()) {
                    w.push(c);
                    s.next();
                }
                if w.is_empty() {
                    return out;
                }
                V::S(w)
            }
            'd' | 'x' => {
                let neg = match s.peek() {
                    Some('-') => {
                        s.next();
                        true
                    }
                    Some('+') => {
                        s.next();
                        false
                    }
                    _ => false,
                };
                let radix = if conv == 'x' { 16 } else { 10 };
                let mut digits = String::new();
                while let Some(&c) = s.peek().filter(|c| c.is_digit(radix)) {
                    digits.push(c);
                    s.next();
                }
                // An optional 0x before hex digits, as strtoul takes it.
                if conv == 'x' && digits == "0" && matches!(s.peek(), Some('x' | 'X')) {
                    s.next();
                    digits.clear();
                    while let Some(&c) = s.peek().filter(|c| c.is_ascii_hexdigit()) {
                        digits.push(c);
                        s.next();
                    }
                }
                let Ok(n) = u64::from_str_radix(&digits, radix) else {
                    return out;
                };
                if conv == 'd' {
                    let n = i64::try_from(n).expect("a value kfd prints fits");
                    V::I(if neg { -n } else { n })
                } else {
                    V::X(if neg { n.wrapping_neg() } else { n })
                }
            }
            other => panic!("conversion %{other} is not one kfd's formats use"),
        };
        out.push(v);
    }
    out
}

/// Prints `values` with `fmt` as C's `printf` does for these conversions.
fn printf(fmt: &str, values: &[V]) -> String {
    let mut out = String::new();
    let mut vals = values.iter();
    let mut f = fmt.chars().peekable();
    while let Some(fc) = f.next() {
        if fc != '%' {
            out.push(fc);
            continue;
        }
        let conv = conversion(&mut f);
        match (conv, vals.next().expect("a value for every conversion")) {
            ('d', V::I(n)) => out += &n.to_string(),
            ('x', V::X(n)) => out += &format!("{n:x}"),
            ('c', V::C(c)) => out.push(*c),
            ('s', V::S(w)) => out += w,
            (c, v) => panic!("%{c} cannot print {v:?}"),
        }
    }
    out
}

/// The number of conversions in `fmt`.
fn conversions(fmt: &str) -> usize {
    fmt.matches('%').count()
}

/// The full kernel format of a message with event id `id`.
fn kernel_format(id: u32) -> String {
    let (_, payload) = KFD_FMT
        .iter()
        .find(|(i, _)| *i == id)
        .unwrap_or_else(|| panic!("no kfd format for event id {id:#x}"));
    format!("{HEADER}{payload}")
}

/// Reads one line of a kfd SMI file as a tool would: the id first, then the
/// whole message with that event's format. Checks that every conversion
/// matched and that printing the values again gives the same bytes.
fn read_back(line: &str) -> (u32, Vec<V>) {
    let id = match sscanf(line, "%x").as_slice() {
        [V::X(id)] => u32::try_from(*id).expect("an event id"),
        v => panic!("{line:?}: no event id ({v:?})"),
    };
    let fmt = kernel_format(id);
    let v = sscanf(line, &fmt);
    assert_eq!(
        v.len(),
        conversions(&fmt),
        "{line:?} against {fmt:?}: {v:?}"
    );
    assert_eq!(
        printf(&fmt, &v),
        line,
        "{line:?} is not byte for byte {fmt:?}"
    );
    (id, v)
}

/// The values a kfd message of `e` carries, typed as the kernel prints them.
fn expected(e: &Event) -> Vec<V> {
    let loc = |l: Option<Location>| V::X(u64::from(Location::to_uapi(l)));
    let page = |p: PageNum| V::X(p.raw());
    let count = |n: PageCount| V::X(n.raw());
    let gpu = |g: GpuId| V::X(u64::from(g.raw()));
    let mut v = vec![
        V::X(u64::from(e.kind.id())),
        V::I(i64::try_from(e.ts_ns).unwrap()),
        V::I(i64::from(e.pid)),
    ];
    v.extend(match e.kind {
        Kind::PageFaultStart {
            addr,
            gpu_id,
            write,
        } => vec![page(addr), gpu(gpu_id), V::C(if write { 'W' } else { 'R' })],
        Kind::PageFaultEnd {
            addr,
            gpu_id,
            migrated,
        } => vec![
            page(addr),
            gpu(gpu_id),
            V::C(if migrated { 'M' } else { 'U' }),
        ],
        Kind::MigrateStart {
            start,
            npages,
            from,
            to,
            prefetch_loc,
            preferred_loc,
            trigger,
        } => vec![
            page(start),
            count(npages),
            loc(Some(from)),
            loc(Some(to)),
            loc(prefetch_loc),
            loc(preferred_loc),
            V::I(i64::from(trigger.raw())),
        ],
        Kind::MigrateEnd {
            start,
            npages,
            from,
            to,
            trigger,
            error_code,
        } => vec![
            page(start),
            count(npages),
            loc(Some(from)),
            loc(Some(to)),
            V::I(i64::from(trigger.raw())),
            V::I(i64::from(error_code)),
        ],
        Kind::QueueEviction { gpu_id, trigger } => {
            vec![gpu(gpu_id), V::I(i64::from(trigger.raw()))]
        }
        Kind::QueueRestore {
            gpu_id,
            rescheduled,
        } => vec![gpu(gpu_id), V::C(if rescheduled { 'R' } else { '0' })],
        Kind::UnmapFromGpu {
            addr,
            npages,
            gpu_id,
            trigger,
        } => vec![
            page(addr),
            count(npages),
            gpu(gpu_id),
            V::I(i64::from(trigger.raw())),
        ],
    });
    v
}

fn id(raw: u32) -> GpuId {
    GpuId::new(raw).unwrap()
}

/// Every kind, every trigger, both values of every flag, every kind of
/// location, a failed migration's error code, and wide numbers.
fn every_variation() -> Vec<Event> {
    let g = id(0x1002);
    let far = PageNum::new(0x7_ffff_ffff);
    let locs = [Location::Sys, Location::Vram(g), Location::Vram(id(0xfffe))];
    let mut kinds = Vec::new();
    for flag in [false, true] {
        kinds.push(Kind::PageFaultStart {
            addr: far,
            gpu_id: g,
            write: flag,
        });
        kinds.push(Kind::PageFaultEnd {
            addr: far,
            gpu_id: g,
            migrated: flag,
        });
        kinds.push(Kind::QueueRestore {
            gpu_id: g,
            rescheduled: flag,
        });
    }
    let triggers = [
        MigrateTrigger::Prefetch,
        MigrateTrigger::PagefaultGpu,
        MigrateTrigger::PagefaultCpu,
        MigrateTrigger::TtmEviction,
    ];
    for (k, trigger) in triggers.into_iter().enumerate() {
        let (from, to) = (locs[k % 3], locs[(k + 1) % 3]);
        kinds.push(Kind::MigrateStart {
            start: far,
            npages: PageCount::new(0x200),
            from,
            to,
            prefetch_loc: [None, Some(from), Some(to), None][k],
            preferred_loc: [Some(to), None, Some(Location::Sys), None][k],
            trigger,
        });
        kinds.push(Kind::MigrateEnd {
            start: far,
            npages: PageCount::new(0x200),
            from,
            to,
            trigger,
            error_code: [0, -12, -14, -16][k],
        });
    }
    for trigger in [
        EvictTrigger::Svm,
        EvictTrigger::Userptr,
        EvictTrigger::Ttm,
        EvictTrigger::Suspend,
        EvictTrigger::CriuCheckpoint,
        EvictTrigger::CriuRestore,
    ] {
        kinds.push(Kind::QueueEviction { gpu_id: g, trigger });
    }
    for trigger in [
        UnmapTrigger::MmuNotify,
        UnmapTrigger::MmuNotifyMigrate,
        UnmapTrigger::UnmapFromCpu,
    ] {
        kinds.push(Kind::UnmapFromGpu {
            addr: PageNum::new(0x10),
            npages: PageCount::new(1),
            gpu_id: g,
            trigger,
        });
    }
    kinds
        .into_iter()
        .enumerate()
        .map(|(k, kind)| Event {
            ts_ns: 1_000_000_007 * k as u64,
            pid: 4_194_304,
            kind,
        })
        .collect()
}

#[test]
fn every_kind_reads_back_with_the_kernel_format() {
    let g = id(0x1002);
    let events: Vec<SmiEvent> = every_variation()
        .into_iter()
        .map(|event| SmiEvent { gpu_id: g, event })
        .collect();
    // The bytes of the GPU's SMI file, as `--events` writes them.
    let file = smi::gpu_text(g, &events);
    let lines: Vec<&str> = file.split_inclusive('\n').collect();
    assert_eq!(lines.len(), events.len());
    let mut ids = BTreeSet::new();
    for (line, e) in lines.iter().zip(&events) {
        let (id, values) = read_back(line);
        assert_eq!(values, expected(&e.event), "{line:?}");
        ids.insert(id);
    }
    let all: BTreeSet<u32> = KFD_FMT.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids, all, "every event kind");
}

#[test]
fn the_matcher_is_sscanf() {
    // Whitespace in the format takes any run, %c takes what comes, a
    // mismatch stops the conversions there.
    assert_eq!(
        sscanf("a  12\t-3 R", "%x %d %d %c"),
        [V::X(10), V::I(12), V::I(-3), V::C('R')]
    );
    assert_eq!(sscanf("5 0x1f", "%d %x"), [V::I(5), V::X(0x1f)]);
    assert_eq!(sscanf("7 12 +1", "%x %lld -%d"), [V::X(7), V::I(12)]);
    assert_eq!(sscanf("@1(2)", "@%lx(%x) %c"), [V::X(1), V::X(2)]);
    assert_eq!(sscanf("w x", "%s %s"), [V::S("w".into()), V::S("x".into())]);
    // The old MIGRATE_END format reads the new line's fields but the
    // error code: kfd's reason for appending it ("application uses old
    // message macro sscanf drop and ignore the error_code").
    let line = "6 6 -1 @200(200) 1002->0 2 -12\n";
    assert_eq!(sscanf(line, "%x %lld -%d @%lx(%lx) %x->%x %d\n").len(), 8);
    assert_eq!(read_back(line).1.last(), Some(&V::I(-12)));
}

/// Every event in `dir/gpu-0x<id>.smi`, read back; checks that each one
/// belongs to that GPU.
fn read_gpu_file(path: &Path, gpu: GpuId) -> Vec<(u32, Vec<V>)> {
    let text = fs::read_to_string(path).unwrap();
    let own = V::X(u64::from(gpu.raw()));
    text.split_inclusive('\n')
        .map(|line| {
            let (id, v) = read_back(line);
            let mine = match id {
                // node id after the address
                events::PAGE_FAULT_START | events::PAGE_FAULT_END => v[4] == own,
                // the GPU that migrates is one end
                events::MIGRATE_START | events::MIGRATE_END => v[5] == own || v[6] == own,
                events::QUEUE_EVICTION | events::QUEUE_RESTORE => v[3] == own,
                _ => v[5] == own,
            };
            assert!(mine, "{line:?} in {}", path.display());
            (id, v)
        })
        .collect()
}

#[test]
fn the_kfd_log_is_one_file_per_gpu_read_back_with_the_kernel_formats() {
    let d = scratch("smi-kfd");
    let dir = d.join("smi");
    let o = svmsim(&[
        "scenario",
        "examples/smi-events.toml",
        "--events",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["gpu-0x1002.smi", "gpu-0x2002.smi"]);
    // (event id, QUEUE_RESTORE's mark) of every line of both files.
    let mut seen = BTreeSet::new();
    let mut per_gpu = Vec::new();
    for raw in [0x1002, 0x2002] {
        let p = dir.join(smi::gpu_file(id(raw)));
        let evs = read_gpu_file(&p, id(raw));
        assert!(!evs.is_empty(), "{} is empty", p.display());
        for (i, v) in &evs {
            let mark = match (i, v.last()) {
                (&events::QUEUE_RESTORE, Some(V::C(c))) => Some(*c),
                _ => None,
            };
            seen.insert((*i, mark));
        }
        per_gpu.push((raw, fs::read_to_string(&p).unwrap()));
    }
    let want: BTreeSet<(u32, Option<char>)> = KFD_FMT
        .iter()
        .flat_map(|(i, _)| match *i {
            events::QUEUE_RESTORE => vec![(*i, Some('0')), (*i, Some('R'))],
            i => vec![(i, None)],
        })
        .collect();
    assert_eq!(seen, want, "the example raises every event kind");

    // The prefixed file holds the same lines, each after its gpu_id.
    let one = d.join("all.smi");
    let o = svmsim(&[
        "scenario",
        "examples/smi-events.toml",
        "--events",
        one.to_str().unwrap(),
        "--events-format",
        "prefixed",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let all = fs::read_to_string(&one).unwrap();
    for (raw, text) in &per_gpu {
        let prefix = format!("{raw:x} ");
        let mine: String = all
            .split_inclusive('\n')
            .filter_map(|l| l.strip_prefix(&prefix))
            .collect();
        assert_eq!(&mine, text, "gpu {raw:#x}");
    }
    // The JSON report carries the same text.
    let o = svmsim(&["scenario", "examples/smi-events.toml", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let json: String = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{:x} {}\n",
                e["gpu_id"].as_u64().unwrap(),
                e["line"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(json, all);
}

#[test]
fn several_runs_write_a_directory_each() {
    let d = scratch("smi-runs");
    let dir = d.join("ev");
    let o = svmsim(&[
        "compare",
        "gups",
        "--size",
        "1MiB",
        "--iters",
        "1",
        "--policies",
        "partial,whole-range",
        "--events",
        dir.to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for run in ["1-partial", "2-whole-range"] {
        let p = dir.join(run).join("gpu-0x1002.smi");
        let evs = read_gpu_file(&p, id(0x1002));
        assert!(
            evs.iter().any(|(i, _)| *i == events::PAGE_FAULT_START),
            "{}",
            p.display()
        );
    }
}

#[test]
fn bad_event_paths_are_refused_before_the_run_and_change_nothing() {
    let d = scratch("smi-bad");
    let file = d.join("taken.smi");
    fs::write(&file, "keep me").unwrap();
    let run = |path: &Path, extra: &[&str]| {
        let mut args = vec![
            "run",
            "stream",
            "--size",
            "1MiB",
            "--iters",
            "1",
            "--events",
            path.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        svmsim(&args)
    };
    // The kfd layout is a directory; a file there is not replaced.
    let o = run(&file, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--events-format prefixed"),
        "{}",
        stderr(&o)
    );
    // The prefixed layout is a file; a directory there is not one.
    let o = run(&d, &["--events-format", "prefixed"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is a directory"), "{}", stderr(&o));
    // A missing parent is not made.
    let o = run(&d.join("no/such"), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // --events-format alone names what it needs.
    let o = svmsim(&["run", "stream", "--events-format", "prefixed"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--events"), "{}", stderr(&o));
    // Nothing was created, nothing truncated.
    let mut names: Vec<String> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["taken.smi"]);
    assert_eq!(fs::read_to_string(&file).unwrap(), "keep me");
    // A later prefixed run replaces the file whole.
    let o = run(&file, &["--events-format", "prefixed", "-q"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("1002 7 "), "{text:?}");
}
