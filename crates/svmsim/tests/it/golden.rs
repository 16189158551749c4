//! `--json` on fixed seeds, against files in `tests/golden/`. A change to
//! the engine that moves a number shows up here as a diff; regenerate
//! with `UPDATE_GOLDEN=1 cargo nextest run -p svmsim golden` after reading
//! it.

use super::{stderr, stdout, svmsim};

fn golden(name: &str, args: &[&str]) {
    let o = svmsim(args);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    let got = stdout(&o);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    if got != want {
        let line = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "{name} differs from `svmsim {}` at line {}:\n  got:  {}\n  want: {}\n\
             (UPDATE_GOLDEN=1 regenerates it)",
            args.join(" "),
            line + 1,
            got.lines().nth(line).unwrap_or("<end>"),
            want.lines().nth(line).unwrap_or("<end>")
        );
    }
}

#[test]
fn run_json_is_golden() {
    golden(
        "run-stream.json",
        &[
            "run", "stream", "--size", "2MiB", "--iters", "1", "--seed", "7", "--json",
        ],
    );
}

#[test]
fn compare_json_is_golden() {
    golden(
        "compare-gups.json",
        &[
            "compare", "gups", "--size", "1MiB", "--iters", "1", "--seed", "3", "--json",
        ],
    );
}

#[test]
fn demo_json_is_golden() {
    golden("demo.json", &["run", "--json"]);
}
