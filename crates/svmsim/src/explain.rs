//! "What happened": the few lines after a table that say, for each run,
//! where its simulated time went, the buffer that cost most, whether a
//! buffer thrashed and who pulled it back and forth, and one command to
//! try next. On by default under a table, off for `--json` and `--csv`
//! (`--explain on|off`). The demo and `compare --drivers` add their own
//! comparisons (`demo.rs`, `drivers.rs`); this is about each run alone.

use std::fmt::Write as _;

use crate::exec::{BufferOut, Outcome, Status};
use crate::runs::time;
use crate::size;

/// Runs explained one by one at most; more (a sweep) get a summary and
/// their fastest and slowest.
const MAX_EXPLAINED: usize = 6;

/// A share of a whole, as a percentage.
fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "0%".into();
    }
    let p = part as f64 * 100.0 / whole as f64;
    if p > 0.0 && p < 1.0 {
        "<1%".into()
    } else {
        format!("{p:.0}%")
    }
}

/// Where the pages of `b` arrived, largest first: "GPU 0 (0x1002) 70 GiB,
/// system memory 1 GiB", each place named by `name` (of a gpu_id, 0 for
/// system memory).
fn arrivals(b: &BufferOut, name: &dyn Fn(u32) -> String) -> String {
    let mut v: Vec<(u32, u64)> = b.arrivals.iter().map(|(&k, &n)| (k, n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.iter()
        .map(|&(at, bytes)| format!("{} {}", name(at), size::human(bytes)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where the served faults' latency went, phase by phase (they add up
/// to it): "A served fault took 41.2 µs on average from raised to
/// handled: ...".
fn phases(m: &crate::exec::Metrics) -> String {
    let whole = m.fault_latency_ns;
    let mean = whole / m.faults_served.max(1);
    let part = |ns: u64| format!("{} ({})", time(ns), pct(ns, whole));
    format!(
        "A served fault took {} on average from raised to handled, {} in all: {} delivered to \
         the handler's ring, {} waiting there for the handler, {} waiting for locks, {} in the \
         handler ({} migrating, {} mapping, {} of that PTE writes and TLB flushes).",
        time(mean),
        time(whole),
        part(m.fault_delivery_ns),
        part(m.fault_queued_ns),
        part(m.fault_lock_ns),
        part(m.fault_handler_ns),
        time(m.fault_migrate_ns),
        time(m.fault_map_ns),
        time(m.fault_bind_ns)
    )
}

/// One run's lines.
pub fn run(o: &Outcome) -> Vec<String> {
    let m = &o.metrics;
    let mut lines = counted(m, format!("The kernels ran {}", time(m.kernel_ns)));
    if let Status::Killed { error } = &o.status {
        lines.push(format!("It was killed: {error}."));
    }
    lines.extend(buffers(&o.buffers, &|id| o.gpu_name(id)));
    lines
}

/// A scenario's lines (its buffers are told under each process's
/// ranges), and the command to try next.
pub fn scenario(r: &crate::scenario::run::RunReport) -> (Vec<String>, String) {
    let m = &r.metrics;
    let opening = match &r.profile {
        Some(p) => format!(
            "The scenario ran {} of simulated time ({p} profile)",
            time(r.end_ns)
        ),
        None => "The scenario ran untimed (its [system] names no profile, so the times below \
                 are zero; `profile = \"mi210\"` there prices it)"
            .to_owned(),
    };
    let lines = counted(m, opening);
    // (The built-in default runs without its file, wherever one is.)
    let file = if r.file == crate::scenario::DEFAULT.0 {
        String::new()
    } else {
        format!(" {}", r.file)
    };
    let thrash = r
        .processes
        .iter()
        .any(|p| p.buffers.iter().any(BufferOut::thrashing));
    let next = if r.profile.is_none() {
        format!("svmsim scenario{file} --events smi   # kfd's SMI log of its faults and migrations")
    } else if thrash && r.config.driver.name() != "uvm" {
        format!("svmsim scenario{file} --driver uvm   # UVM's thrashing throttle on the same ops")
    } else {
        match r.seed {
            Some(s) => format!(
                "svmsim scenario{file} --seed {}   # another interleaving of its concurrent work",
                s.wrapping_add(1)
            ),
            None => format!(
                "svmsim scenario{file} --seed 1   # its concurrent work interleaved in a seeded order"
            ),
        }
    };
    (lines, next)
}

/// The lines any set of metrics gives, after `opening` (what ran, and
/// for how long): where the time went, what became of the faults, the
/// served faults' phases, where the accesses were served.
fn counted(m: &crate::exec::Metrics, opening: String) -> Vec<String> {
    let mut lines = Vec::new();
    // Where the time went: the waves' lives, split into parked on faults,
    // held by stopped queues, and the rest (computing and accessing).
    let mut t = opening;
    if m.wave_ns > 0 {
        let busy = m.wave_ns.saturating_sub(m.fault_stall_ns + m.held_ns);
        let _ = write!(
            t,
            "; the waves lived {} in all, {} of it parked on faults (fault stall {}), {} \
             held by stopped queues and {} computing and reaching memory",
            time(m.wave_ns),
            pct(m.fault_stall_ns, m.wave_ns),
            time(m.fault_stall_ns),
            pct(m.held_ns, m.wave_ns),
            pct(busy, m.wave_ns)
        );
    }
    let locks = m.svms_lock_wait_ns + m.migrate_lock_wait_ns;
    // (Untimed, a scenario without a profile, all three are zero.)
    if m.handler_busy_ns + m.copy_busy_ns + locks > 0 {
        let _ = write!(
            t,
            ". The fault handlers were busy {}, the copy engines {}; faults waited {} for locks",
            time(m.handler_busy_ns),
            time(m.copy_busy_ns),
            time(locks)
        );
    }
    if m.queue_evictions > 0 {
        let _ = write!(t, "; the queues were stopped {} times", m.queue_evictions);
    }
    t.push('.');
    lines.push(t);
    // What became of the faults.
    if m.faults_raised + m.faults_filtered > 0 {
        let mut f = format!(
            "Its waves raised {} faults: the ring's CAM filtered {} repeats of pending ones; the \
             handlers served {}, dropped {} (duplicates, stragglers, throttles: the waves retried \
             {} times) and refused {}",
            m.faults_raised + m.faults_filtered,
            m.faults_filtered,
            m.faults_served,
            m.faults_dropped,
            m.faults_retried,
            m.faults_refused
        );
        if m.faults_before_handler > 0 {
            let _ = write!(
                f,
                "; {} were dropped before the handler (the IH's stale filter, a batch flush)",
                m.faults_before_handler
            );
        }
        f.push('.');
        lines.push(f);
    }
    if m.faults_served > 0 && m.fault_latency_ns > 0 {
        lines.push(phases(m));
    }
    // Where the accesses were served.
    let bytes = m.bytes_local + m.bytes_peer + m.bytes_sys;
    if bytes > 0 {
        let part = |b: u64| format!("{} ({})", size::human(b), pct(b, bytes));
        lines.push(format!(
            "Its GPU accesses moved {}: {} in their own VRAM, {} in system memory over the host \
             link, {} in a peer's VRAM.",
            size::human(bytes),
            part(m.bytes_local),
            part(m.bytes_sys),
            part(m.bytes_peer)
        ));
    }
    lines
}

/// The lines on a run's (or a scenario process's) buffers: the one that
/// cost most (moved most, else faulted most) and the three that moved
/// most among those that thrashed.
pub fn buffers(list: &[BufferOut], name: &dyn Fn(u32) -> String) -> Vec<String> {
    let mut lines = Vec::new();
    // The buffer that cost most: the first (`exec::buffers` sorts them
    // by bytes moved, then faults).
    if let Some(b) = list
        .first()
        .filter(|b| b.faults > 0 || b.bytes_in + b.bytes_out > 0)
    {
        let amount = |n: u64| {
            if n == 0 {
                "nothing".to_string()
            } else {
                size::human(n)
            }
        };
        lines.push(format!(
            "The buffer that cost most: {} at {:#x}, with {} faults served there; {} moved into \
             VRAM, {} back to system memory.",
            size::human(b.bytes),
            b.addr,
            b.faults,
            amount(b.bytes_in),
            amount(b.bytes_out)
        ));
    }
    // (The three that moved most: the buffers are sorted so.)
    for b in list.iter().filter(|b| b.thrashing()).take(3) {
        let moved = b.bytes_in + b.bytes_out;
        lines.push(format!(
            "Thrashing: the {} buffer at {:#x} moved {}, {:.0}x its size, its pages pulled back \
             and forth ({}).",
            size::human(b.bytes),
            b.addr,
            size::human(moved),
            moved as f64 / b.bytes.max(1) as f64,
            arrivals(b, name)
        ));
    }
    lines
}

/// The one command to try next, for the runs shown together.
fn next(outs: &[Outcome]) -> Option<String> {
    let o = outs.first()?;
    let s = &o.spec;
    if s.workload.starts_with("trace:") {
        return Some(format!(
            "{} --timeline t.json   # every fault, migration and map on a timeline",
            o.spec.repro()
        ));
    }
    let head = format!(
        "svmsim compare {} --size {} --iters {}",
        s.workload,
        size::show(s.size),
        s.iters
    );
    let thrash = outs
        .iter()
        .any(|o| o.buffers.iter().any(BufferOut::thrashing));
    let stalled = outs
        .iter()
        .any(|o| o.metrics.fault_stall_ns * 2 > o.metrics.wave_ns && o.metrics.wave_ns > 0);
    Some(if outs.len() > 1 {
        format!(
            "{} --timeline t.json   # the first run's faults, migrations and maps on a timeline",
            o.spec.repro()
        )
    } else if thrash {
        format!(
            "{head} --drivers all   # how UVM's thrashing throttle and Xe's whole ranges fare on it"
        )
    } else if stalled {
        format!(
            "{head} --granularities 0,9   # smaller or larger migration windows against the fault stall"
        )
    } else {
        format!("{head} --drivers all   # the same workload under kfd, UVM and Xe")
    })
}

/// `text` after `pad`, its words wrapped at `width` columns when given
/// (a terminal's), the lines after the first indented two more.
fn wrap(pad: &str, text: &str, width: Option<usize>) -> String {
    let Some(width) = width else {
        return format!("{pad}{text}\n");
    };
    let mut out = String::new();
    let mut line = pad.to_owned();
    let mut empty = true;
    for word in text.split(' ') {
        if !empty && line.chars().count() + 1 + word.chars().count() > width {
            out += &line;
            out.push('\n');
            line = format!("{pad}  ");
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line += word;
        empty = false;
    }
    out += &line;
    out.push('\n');
    out
}

/// The block for runs shown together: each run's lines (under its label
/// when there are several), then one command to try. On a terminal
/// (`width`) the lines wrap at its width.
pub fn block(outs: &[Outcome], width: Option<usize>) -> String {
    let mut s = String::from("What happened:\n");
    // A sweep's many points: the fastest and the slowest in full, and the
    // labels of those that thrashed (each run's lines are in `--json
    // --explain on`).
    let shown: Vec<&Outcome> = if outs.len() > MAX_EXPLAINED {
        let key = |o: &&Outcome| o.metrics.kernel_ns;
        let fast = outs.iter().min_by_key(key).expect("runs");
        let slow = outs.iter().max_by_key(key).expect("runs");
        let thrashed: Vec<&str> = outs
            .iter()
            .filter(|o| o.buffers.iter().any(BufferOut::thrashing))
            .map(|o| o.label.as_str())
            .collect();
        let mut head = format!(
            "{} runs; the fastest and the slowest follow ({} and {} of kernel time)",
            outs.len(),
            time(fast.metrics.kernel_ns),
            time(slow.metrics.kernel_ns)
        );
        if !thrashed.is_empty() {
            let _ = write!(
                head,
                "; {} of them thrashed: {}",
                thrashed.len(),
                thrashed.join(", ")
            );
        }
        head.push('.');
        s += &wrap("  ", &head, width);
        if std::ptr::eq(fast, slow) {
            vec![fast]
        } else {
            vec![fast, slow]
        }
    } else {
        outs.iter().collect()
    };
    for o in shown {
        if outs.len() > 1 {
            let _ = writeln!(s, "  - {}:", o.label);
        }
        let pad = if outs.len() > 1 { "    " } else { "  " };
        for l in run(o) {
            s += &wrap(pad, &l, width);
        }
    }
    if let Some(n) = next(outs) {
        let _ = writeln!(s, "Try next:\n  {n}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wrapped at a width, a line breaks between words and indents its
    /// continuation; without one it stays whole.
    #[test]
    fn lines_wrap_at_a_terminal_s_width_only() {
        let text = "The kernels ran 17.70 ms; their waves lived 493.55 ms in all";
        assert_eq!(wrap("  ", text, None), format!("  {text}\n"));
        let w = wrap("  ", text, Some(30));
        assert!(w.lines().all(|l| l.chars().count() <= 30), "{w}");
        assert!(w.lines().skip(1).all(|l| l.starts_with("    ")), "{w}");
        let words: Vec<&str> = w.split_whitespace().collect();
        assert_eq!(words, text.split(' ').collect::<Vec<_>>());
    }
}
