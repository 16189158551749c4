//! Bad scenario files (exit 2, placed errors) and failed expectations (exit 1).

use crate::{stderr, stdout, svmsim};

/// Writes `text` to a fresh file and runs it.
fn run_text(name: &str, text: &str, json: bool) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("svmsim-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let p = path.to_string_lossy().into_owned();
    if json {
        svmsim(&["scenario", &p, "--json"])
    } else {
        svmsim(&["scenario", &p])
    }
}

const GPU: &str = "[system]\n[[system.gpu]]\nname = \"gpu0\"\n";

#[test]
fn malformed_files_name_file_line_and_field() {
    // Table: (file body, expected "line:col: field `...`" fragment, expected message fragment)
    let cases: &[(&str, &str, &str)] = &[
        ("[system\n", ":1:8:", "unclosed table"),
        ("", ":1:1:", "missing field `system`"),
        (
            "[system]\nbogus = 1\n",
            ":2:1: field `system.bogus`",
            "unknown field",
        ),
        (
            "[system]\n",
            ":1:1: field `system`",
            "at least one [[system.gpu]]",
        ),
        (
            "[system]\n[[system.gpu]]\nvram = \"16 GB\"\n",
            ":3:8: field `system.gpu[0].vram`",
            "expected a size",
        ),
        (
            "[system]\n[[system.gpu]]\nid = 0\n",
            ":3:6: field `system.gpu[0].id`",
            "reserved",
        ),
        (
            "[system]\n[[system.gpu]]\ngc = \"gfx942\"\n",
            ":3:6: field `system.gpu[0].gc`",
            "expected a graphics IP version",
        ),
        (
            "[system]\n[[system.gpu]]\n[[system.gpu]]\nname = \"gpu0\"\n",
            "field `system.gpu[1]`",
            "used twice",
        ),
        (
            "[system]\n[[system.gpu]]\n[[op]]\ndo = \"frob\"\n",
            ":4:6: field `op[0].do`",
            "unknown op \"frob\"",
        ),
        (
            "[system]\n[[system.gpu]]\n[[op]]\ndo = \"set_attr\"\naddr = \"buf\"\nsize = 4096\nattrs = []\n",
            ":5:8: field `op[0].addr`",
            "no mapping labelled \"buf\"",
        ),
        (
            "[system]\n[[system.gpu]]\n[[op]]\ndo = \"mmap\"\nname = \"b\"\nsize = 4096\n[[op]]\ndo = \"set_attr\"\naddr = \"b\"\nsize = 4096\nattrs = [{ acces = \"gpu0\" }]\n",
            ":11:20: field `op[1].attrs[0].acces`",
            "unknown attribute",
        ),
        (
            "[system]\n[[system.gpu]]\n[[op]]\ndo = \"mmap\"\nname = \"b\"\nsize = 4096\n[[op]]\ndo = \"set_attr\"\naddr = \"b\"\nsize = 4096\nattrs = [{ access = \"gpu7\" }]\n",
            "field `op[1].attrs[0].access`",
            "no GPU named \"gpu7\"",
        ),
        (
            "[system]\n[[system.gpu]]\n[[op]]\ndo = \"get_attr\"\naddr = 0x10000\nsize = 4096\nexpect = \"EWHAT\"\n",
            ":7:10: field `op[0].expect`",
            "expected \"ok\" or an errno",
        ),
        (
            "[system]\n[[system.gpu]]\n[[op]]\ndo = \"munmap\"\naddr = 0x10000\nsize = -5\n",
            ":6:8: field `op[0].size`",
            "cannot be negative",
        ),
        (
            "[system]\n[[system.gpu]]\n[[op]]\ndo = \"set_xnack\"\nprocess = \"nobody\"\n",
            ":5:11: field `op[0].process`",
            "no process named \"nobody\"",
        ),
        (
            "[system]\n[[system.gpu]]\n[[op]]\ndo = \"queue_destroy\"\nqueue = \"q\"\n",
            ":5:9: field `op[0].queue`",
            "no queue named \"q\"",
        ),
        (
            "[system]\n[[system.gpu]]\n[[op]]\ndo = \"mprotect\"\naddr = 0x10000\nsize = 4096\nprot = \"rq\"\n",
            ":7:8: field `op[0].prot`",
            "expected protection",
        ),
        (
            "[system]\n[[system.gpu]]\n[[op]]\ndo = \"get_attr\"\naddr = 0x10000\nsize = 4096\nquery = [\"granularity\"]\nexpect = { preferred_loc = \"sysmem\" }\n",
            "field `op[0].query`",
            "does not ask for",
        ),
        (
            "[system]\n[[system.gpu]]\n[[op]]\ndo = \"exit\"\nexpect = \"ok\"\n",
            ":5:10: field `op[0].expect`",
            "takes no `expect`",
        ),
        (
            "[system]\n[[system.gpu]]\nname = \"g\"\n[[op]]\ndo = \"gpu_access\"\ngpu = \"g\"\naddr = 0x10000\nsize = 4\nlaunch = \"w\"\n",
            ":9:10: field `op[0].launch`",
            "never waited for",
        ),
        (
            "[system]\n[[system.gpu]]\n[[op]]\ndo = \"wait\"\naccess = \"w\"\n",
            ":5:10: field `op[0].access`",
            "no access named \"w\" is in flight",
        ),
        (
            "[system]\n[[system.gpu]]\nname = \"g\"\n[[op]]\ndo = \"gpu_access\"\ngpu = \"g\"\naddr = 0x10000\nsize = 4\nlaunch = \"w\"\nexpect = \"ok\"\n",
            "field `op[0]`",
            "put `expect` on the `wait`",
        ),
        (
            "[system]\nprofile = \"mi999\"\n[[system.gpu]]\n",
            ":2:11: field `system.profile`",
            "known: mi210",
        ),
        (
            "[system]\nseed = -1\n[[system.gpu]]\n",
            ":2:8: field `system.seed`",
            "",
        ),
        (
            "[system]\n[[system.gpu]]\n[[op]]\ndo = \"evict_vram\"\ngpu = \"gpu3\"\n",
            ":5:7: field `op[0].gpu`",
            "no GPU named \"gpu3\"",
        ),
        (
            "[system]\n[[system.gpu]]\n[[op]]\ndo = \"evict_vram\"\ngpu = 0\nneed = \"lots\"\n",
            ":6:8: field `op[0].need`",
            "expected a size",
        ),
        (
            "[system]\n[[system.gpu]]\n[[op]]\ndo = \"prefetch\"\naddr = 0x10000\nsize = 4096\n",
            ":3:1: field `op[0]`",
            "missing field `loc`",
        ),
        (
            "[system]\n[[system.gpu]]\n[[op]]\ndo = \"advance_time\"\ntime = \"soon\"\n",
            ":5:8: field `op[0].time`",
            "expected a duration",
        ),
        // Every field of an op is read by serde and placed at its value.
        (
            "[system]\n[[system.gpu]]\n[[op]]\ndo = \"mmap\"\nsize = 4096\nbogus = 3\n",
            ":6:1: field `op[0].bogus`",
            "unknown field `bogus`; expected one of: name, addr, size",
        ),
        (
            "[system]\n[[system.gpu]]\n[[op]]\ndo = \"mmap\"\nsize = 4096\nbacking = \"tape\"\n",
            ":6:11: field `op[0].backing`",
            "unknown variant `tape`, expected one of `anon`, `file`, `io`",
        ),
        (
            "[system]\n[[system.gpu]]\n[[op]]\ndo = \"mmap\"\nname = \"b\"\nsize = 4096\n[[op]]\ndo = \"set_attr\"\naddr = \"b\"\nsize = 4096\nattrs = [{ granularity = 1 }, { set_flags = [\"coherent\", \"nope\"] }]\n",
            ":11:58: field `op[1].attrs[1].set_flags[1]`",
            "unknown flag \"nope\"",
        ),
        (
            "[system]\n[[system.gpu]]\n[[op]]\ndo = \"counters\"\nexpect = { page_in = 0, faults = { gpu9 = 1 } }\n",
            ":5:43: field `op[0].expect.faults.gpu9`",
            "no GPU named \"gpu9\"",
        ),
        (
            "[system]\n[[system.gpu]]\n[[op]]\ndo = \"cpu_access\"\naddr = 0x10000\nsize = 4\nthreads = 0\n",
            ":7:11: field `op[0].threads`",
            "threads 0: an access has 1 to 256 CPU threads",
        ),
    ];
    for (i, (body, place, msg)) in cases.iter().enumerate() {
        let name = format!("bad{i}.toml");
        let out = run_text(&name, body, false);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "case {i}: {err}");
        assert!(err.contains(&name), "case {i}: no file name in {err:?}");
        assert!(err.contains(place), "case {i}: want {place:?} in {err:?}");
        assert!(err.contains(msg), "case {i}: want {msg:?} in {err:?}");
        assert!(
            out.stdout.is_empty(),
            "case {i}: printed a report for a bad file"
        );
        assert!(!err.contains("panicked"), "case {i}: {err}");
    }
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = svmsim(&["scenario", "no/such/file.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read no/such/file.toml"));
}

#[test]
fn a_failed_expectation_exits_1_and_names_the_op() {
    let body = format!(
        "{GPU}[[op]]\ndo = \"mmap\"\nname = \"b\"\nsize = 4096\n\n[[op]]\ndo = \"set_attr\"\naddr = \"b\"\nsize = 4096\nattrs = [{{ granularity = 3 }}]\nexpect = \"EFAULT\"\n\n[[op]]\ndo = \"get_attr\"\naddr = \"b\"\nsize = 4096\nexpect = {{ granularity = 4 }}\n"
    );
    let out = run_text("mismatch.toml", &body, false);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAILED: 2 of 2 expectation(s) did not hold"),
        "{text}"
    );
    assert!(
        text.contains("op 1 (set_attr, line 9): expected EFAULT, got ok"),
        "{text}"
    );
    assert!(
        text.contains("op 2 (get_attr, line 16): granularity: expected 4, got 3"),
        "{text}"
    );

    let out = run_text("mismatch.toml", &body, true);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["passed"], false);
    assert_eq!(v["mismatches"], 2);
    assert_eq!(v["ops"][1]["mismatch"], "expected EFAULT, got ok");
    assert_eq!(v["ops"][1]["line"], 9);
}

#[test]
fn an_unresolvable_label_at_run_time_is_placed() {
    // The mmap fails (zero length), so its label never gets an address.
    let body = format!(
        "{GPU}[[op]]\ndo = \"mmap\"\nname = \"b\"\nsize = 0\nexpect = \"EINVAL\"\n\n[[op]]\ndo = \"munmap\"\naddr = \"b\"\nsize = 4096\n"
    );
    let out = run_text("label.toml", &body, false);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("label.toml:10:1: field `op[1].addr`"), "{err}");
    assert!(err.contains("its mmap failed"), "{err}");
}

/// An `smi` expectation fails on a field the line does not hold, or on
/// events out of order, saying which event it missed; a field an event's
/// line has no place for is refused at parse time.
#[test]
fn smi_expectations_can_fail() {
    let text = std::fs::read_to_string(crate::root().join("examples/smi-events.toml")).unwrap();
    let wrong = text.replacen(
        "{ event = \"page_fault_start\", addr = \"buf\", gpu = \"gpu0\", write = false }",
        "{ event = \"page_fault_start\", addr = \"buf\", gpu = \"gpu0\", write = true }",
        1,
    );
    assert_ne!(wrong, text);
    // The write fault on buf+2MiB comes later, so the read one is found
    // nowhere before the events that follow it.
    let out = run_text("smi-wrong.toml", &wrong, false);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("not found"), "{}", stdout(&out));
    let order = text.replacen(
        "  { event = \"page_fault_start\", addr = \"buf+2MiB\", write = true },\n",
        "",
        1,
    );
    let order = order.replacen(
        "  { event = \"page_fault_start\", addr = \"buf\", gpu = \"gpu0\", write = false },\n",
        "  { event = \"page_fault_start\", addr = \"buf+2MiB\", write = true },\n  { event = \"page_fault_start\", addr = \"buf\", gpu = \"gpu0\", write = false },\n",
        1,
    );
    let out = run_text("smi-order.toml", &order, false);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("event 1 (page_fault_start"),
        "{}",
        stdout(&out)
    );
    let bad = text.replacen("write = false }", "write = false, trigger = 1 }", 1);
    let out = run_text("smi-bad.toml", &bad, false);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("no field for \"trigger\""), "{err}");
}
