//! Fuzzing every entry point (issue 22 item 8): the C ABI's argument validation, the `.npy`
//! reader and `kiln run`'s command line, as proptest properties.
//!
//! Why proptest and not cargo-fuzz: libFuzzer needs a nightly toolchain, and the machines that
//! build and test kiln (developers', CI's) have stable only. proptest runs on stable, shrinks a
//! failure to a small input and persists its seed.
//!
//! Bounded and repeatable: every property runs a fixed number of cases (`CASES_*` below, sized
//! so that the whole file stays well under 60 s on a 2-core machine; `PROPTEST_CASES` overrides
//! them all for a longer local run) and prints how many it ran and how long they took. Its corpus
//! is checked in:
//! - `tests/fuzz.proptest-regressions`: proptest's seeds of every failure found so far, replayed
//!   first by every property (proptest writes a new failure's seed there);
//! - `tests/fuzz/corpus/`: hand-picked seed inputs (valid and malformed `.npy` files, argument
//!   vectors of `kiln run` with their expected exit codes) that a test runs before the random
//!   cases, and that the mutating properties start from.
//!
//! A failure found becomes a named regression test in the module of its entry point.
//!
//! The C ABI part needs the emulated library (`--features emu`); without it the `.npy` and
//! command-line parts still run.

#[cfg(feature = "emu")]
#[path = "fuzz/c_abi.rs"]
mod c_abi;
#[path = "fuzz/cli.rs"]
mod cli;
#[path = "fuzz/npy.rs"]
mod npy;

use std::path::{Path, PathBuf};
use std::time::Instant;

use proptest::test_runner::{Config, FileFailurePersistence};

/// Where proptest reads and writes the seeds of failures (relative to the package root, the
/// working directory of `cargo test`): one committed file for the whole fuzz suite.
const REGRESSIONS: &str = "tests/fuzz.proptest-regressions";

/// A property's configuration: `cases` random cases after the persisted failures, no forking
/// (a crash fails the test binary loudly, which is what CI should see), shrinking bounded so a
/// failure is reported in seconds rather than minutes.
fn config(cases: u32) -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        max_shrink_iters: 2000,
        max_shrink_time: 20_000,
        ..Config::default()
    }
}

/// The checked-in seed inputs.
fn corpus(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus").join(kind)
}

/// A scratch directory of this test binary (cargo's, under target/), one per name.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz").join(name);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// Counts what a property did and prints it when the property ends, so a CI log shows the work
/// behind a green line (`cargo test -- --nocapture` shows it; cargo captures it otherwise).
struct Tally {
    name: &'static str,
    start: Instant,
    counts: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl Tally {
    fn new(name: &'static str) -> Tally {
        Tally { name, start: Instant::now(), counts: Default::default() }
    }

    fn add(&self, what: &'static str) {
        *self.counts.lock().unwrap_or_else(|e| e.into_inner()).entry(what).or_default() += 1;
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!("fuzz {}: {} in {:.1} s", self.name, parts.join(", "), self.start.elapsed().as_secs_f64());
    }
}
