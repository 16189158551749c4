//! Phantom mode at scale: a first touch of a large footprint (default
//! 256 GiB) over the 8 GPUs of an MI300X-class node, with no byte kept.
//! Prints the simulated outcome and the process's peak memory.
//!
//! `cargo run --release -p svm-workloads --example phantom [GIB]`

use svm_sim::timing::Profile;
use svm_workloads::experiments::phantom_first_touch;

/// The process's peak resident set in bytes (Linux `VmHWM`), if known.
fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn main() {
    let gib: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let profile = Profile::built_in("mi300x").expect("built-in profile");
    let t = std::time::Instant::now();
    let r = phantom_first_touch(&profile, gib << 30, 8).expect("experiment runs");
    let wall = t.elapsed().as_secs_f64();
    println!("{r:#?}");
    let rss = peak_rss().unwrap_or(0);
    println!(
        "wall {wall:.1} s; peak RSS {:.2} GiB = {:.1} bytes per page (each page on one GPU)",
        rss as f64 / f64::from(1 << 30),
        rss as f64 / r.pages as f64
    );
}
