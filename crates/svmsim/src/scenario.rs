//! Scenarios: a TOML file that describes a machine and a list of operations, each with an optional expected result.
//!
//! [`parse`] reads the file (placing every error at file, line and field),
//! [`run`] executes it against a simulated machine and checks invariants
//! after each operation, and `crate::report` prints the outcome as tables or
//! JSON. The format is documented in `docs/scenario.md`.

mod de;
pub mod doc;
pub mod parse;
pub mod run;

pub use doc::ScenarioError;
pub use parse::{Scenario, parse};
pub use run::{RunReport, run};

/// The built-in default scenario: KFDTest's SplitSystemRangeTest cases.
pub const DEFAULT: (&str, &str) = (
    "examples/split-system-range.toml",
    include_str!("../../../examples/split-system-range.toml"),
);
