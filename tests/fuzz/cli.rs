//! `kiln run`'s arguments. Two layers:
//! - what the library does with them, called directly (fast, many cases): `registry::find` on
//!   any op name and `Params::for_op` on any `--param NAME=VALUE` list, against an exact oracle;
//! - the binary itself on random argument vectors (a bounded number of process spawns): clap's
//!   parsing, the dtype and parameter parsers, the `.npy` inputs, the run. It must exit with 0,
//!   1 or 2 (clap's and kiln's error code), never by a panic (101) or a signal.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln::Error;
use kiln::registry::{Array, Op, Params, find, registry};
use proptest::prelude::*;

use super::{Tally, config, corpus, scratch};

/// Names of every op, `<family>/<op>`.
fn op_names() -> Vec<String> {
    registry().iter().map(|op| op.full_name()).collect()
}

/// Text that is not a name: empty, separators, unicode, control characters (not NUL, which no
/// argument vector can carry).
fn garbage() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        prop::sample::select(vec!["-", "--", "/", "activation/", "/relu", "../..", "=", "==", " ", "\t", "é", "∞"])
            .prop_map(String::from),
        "[^\u{0}]{0,12}",
    ]
}

/// An op name: a real one, a near miss of one, or garbage.
fn op_name() -> impl Strategy<Value = String> {
    let names = op_names();
    prop_oneof![
        6 => prop::sample::select(names.clone()),
        2 => (prop::sample::select(names.clone()), 0usize..4).prop_map(|(n, k)| match k {
            0 => n.to_uppercase(),
            1 => format!("{n} "),
            2 => n[..n.len() - 1].to_string(),
            _ => format!("{n}/fwd"),
        }),
        2 => garbage(),
    ]
}

/// Parameter names: every name any op declares, plus garbage.
fn param_names() -> Vec<String> {
    let mut names: Vec<String> = registry()
        .iter()
        .flat_map(|op| {
            let numbers = op.params().iter().map(|p| p.0.to_string());
            numbers.chain(op.string_params().iter().map(|p| p.0.to_string())).collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A parameter value as a user may type it.
fn param_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (-5.0f64..5.0).prop_map(|v| v.to_string()),
        3 => prop::sample::select(vec![
            "0", "1", "2", "-1", "0.1", "1e-5", "1e400", "-1e400", "nan", "NaN", "inf", "-inf", "infinity", "+1",
            ".5", "5.", "1e", "0x10", "1_0", "first", "second", "third", "component", "norm", "integral", "", "=",
            "uvu", "uvw", "8x0e+8x1o",
            "1x0e+1x1o+1x2e", "x", "😀",
        ])
        .prop_map(String::from),
        1 => garbage(),
    ]
}

/// The number a named value stands for, for the parameter that has that name (the model of
/// tools/params.rs's NAMED_VALUES): `gate_half` first/second, `normalization`
/// component/norm/integral.
fn named(name: &str, value: &str) -> Option<f64> {
    match (name, value) {
        ("gate_half", "first") => Some(kiln::glu::op::GATE_FIRST),
        ("gate_half", "second") => Some(kiln::glu::op::GATE_SECOND),
        ("normalization", "component") => Some(0.0),
        ("normalization", "norm") => Some(1.0),
        ("normalization", "integral") => Some(2.0),
        _ => None,
    }
}

/// What `Params::for_op` must answer: Ok, or the error for the first bad pair (its `arg`).
fn expected(op: &dyn Op, given: &[(String, String)]) -> Result<(), &'static str> {
    for (name, value) in given {
        if let Some(&(arg, _)) = op.params().iter().find(|p| p.0 == name) {
            let number = named(name, value).is_some() || value.parse::<f64>().is_ok();
            if !number {
                return Err(arg);
            }
        } else if !op.string_params().iter().any(|p| p.0 == name) {
            return Err("param");
        }
    }
    Ok(())
}

/// Cases of the direct properties (microseconds each) and spawns of the binary (tens of
/// milliseconds each, more when the op runs on the emulator).
const CASES_FIND: u32 = 2000;
const CASES_PARAMS: u32 = 3000;
const CASES_ARGV: u32 = 250;

#[test]
fn run_op_names() {
    let tally = Tally::new("cli op names");
    let names = op_names();
    proptest!(config(CASES_FIND), |(name in op_name())| {
        match find(&name) {
            Ok(op) => prop_assert_eq!(op.full_name(), name),
            Err(Error::UnknownOp(n)) => {
                prop_assert!(!names.contains(&name));
                prop_assert_eq!(n, name);
            }
            Err(e) => prop_assert!(false, "find({:?}): {:?}", name, e),
        }
        tally.add("names");
    });
}

#[test]
fn run_params_against_each_op() {
    let tally = Tally::new("cli params");
    let ops = registry();
    let names = param_names();
    let pair = (prop_oneof![4 => prop::sample::select(names.clone()), 1 => garbage()], param_value());
    let case = (0..ops.len(), prop::collection::vec(pair, 0..5));
    proptest!(config(CASES_PARAMS), |((i, given) in case)| {
        let op = ops[i].as_ref();
        let result = Params::for_op(op, &given);
        match (expected(op, &given), &result) {
            (Ok(()), Ok(params)) => {
                // The last value given for each number parameter is the one kept.
                let last: std::collections::BTreeMap<&str, &str> =
                    given.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                for (name, value) in last {
                    if !op.params().iter().any(|p| p.0 == name) {
                        continue;
                    }
                    let want = named(name, value)
                        .unwrap_or_else(|| value.parse::<f64>().expect("checked by expected()"));
                    let got = params.get(name).copied().expect("a declared parameter is kept");
                    prop_assert!(got.to_bits() == want.to_bits(), "{name}: {got} for {value:?}");
                }
                tally.add("accepted");
            }
            (Err(arg), Err(Error::InvalidValue { arg: got, .. })) => {
                prop_assert_eq!(arg, *got);
                tally.add("refused");
            }
            (want, got) => prop_assert!(false, "{}: {:?} gave {:?}, expected {:?}", op.full_name(), given, got, want),
        }
    });
}

/// The directories a `--dir` may name: valid activation inputs, malformed ones, none, none at
/// all, a file.
struct Dirs {
    good: PathBuf,
    bad: PathBuf,
    empty: PathBuf,
    missing: PathBuf,
    file: PathBuf,
}

fn dirs() -> Dirs {
    let root = scratch("cli");
    let dirs = Dirs {
        good: root.join("good"),
        bad: root.join("bad"),
        empty: root.join("empty"),
        missing: root.join("missing"),
        file: root.join("good").join("x.npy"),
    };
    for d in [&dirs.good, &dirs.bad, &dirs.empty] {
        std::fs::create_dir_all(d).expect("create a --dir");
    }
    // x, dy [2, 8] f32 (every activation's inputs) and a slope/theta per channel.
    let values: Vec<f64> = (0..16).map(|i| (i as f64 - 7.5) / 4.0).collect();
    for name in ["x", "dy"] {
        kiln::npy::write_f32(&dirs.good.join(format!("{name}.npy")), &Array::new(vec![2, 8], values.clone()))
            .expect("write an input");
    }
    // The malformed directory holds seed files as inputs: a wrong dtype, a cut-short file.
    let seeds = corpus("npy");
    std::fs::copy(seeds.join("err_truncated_data.npy"), dirs.bad.join("x.npy")).expect("copy a seed");
    std::fs::copy(seeds.join("err_complex64.npy"), dirs.bad.join("dy.npy")).expect("copy a seed");
    dirs
}

/// Runs the binary; returns the exit code (None: killed by a signal) and its stderr.
fn kiln_run(args: &[String]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env("KILN_EMU_CHECK", "1")
        .output()
        .expect("spawn kiln");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// What every exit must be: a code clap or kiln chose, with no panic message.
fn check_exit(args: &[String], code: Option<i32>, stderr: &str) {
    assert!(matches!(code, Some(0..=2)), "kiln {args:?} exited with {code:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "kiln {args:?} panicked: {stderr}");
}

/// One option of `kiln run`, as an argument-vector fragment.
fn option(dirs: &'static [String]) -> impl Strategy<Value = Vec<String>> {
    let dtype = prop_oneof![
        4 => prop::sample::select(vec!["f32", "f16", "bf16", "f64"]).prop_map(String::from),
        1 => prop::sample::select(vec!["F32", "i32", "u8", "float32", ""]).prop_map(String::from),
        1 => garbage(),
    ];
    let param = prop_oneof![
        4 => (prop::sample::select(param_names()), param_value()).prop_map(|(n, v)| format!("{n}={v}")),
        1 => garbage(),
    ];
    let backend = prop::sample::select(vec!["cpu", "emu", "auto", "cuda", "gpu", ""]).prop_map(String::from);
    prop_oneof![
        4 => prop::sample::select(dirs).prop_map(|d| vec!["--dir".into(), d]),
        2 => dtype.prop_map(|d| vec!["--dtype".into(), d]),
        3 => param.prop_map(|p| vec!["--param".into(), p]),
        2 => Just(vec!["--bwd".into()]),
        1 => Just(vec!["--bwd2".into()]),
        2 => backend.prop_map(|b| vec!["--backend".into(), b]),
        1 => prop::sample::select(vec!["--dir", "--dtype", "--param", "--backend", "--frobnicate", "-x", "--", "-h"])
            .prop_map(|f| vec![f.to_string()]),
    ]
}

/// A random argument vector: half the time a runnable base (`run`, an activation op, the
/// directory of valid inputs) with random options after it, so that parsing reaches the op and
/// the run; otherwise `run`, an op name and options in any order (sometimes none of the required
/// ones), and now and then another subcommand or none.
fn argv(dirs: &'static [String]) -> impl Strategy<Value = Vec<String>> {
    let activations: Vec<String> = op_names().into_iter().filter(|n| n.starts_with("activation/")).collect();
    let good = dirs[0].clone();
    let base =
        (prop::sample::select(activations), prop::collection::vec(option(dirs), 0..3)).prop_map(move |(op, opts)| {
            let mut v = vec!["run".to_string(), op, "--dir".to_string(), good.clone()];
            v.extend(opts.into_iter().flatten());
            v
        });
    let run = (op_name(), prop::collection::vec(option(dirs), 0..6)).prop_map(|(op, opts)| {
        let mut v = vec!["run".to_string(), op];
        v.extend(opts.into_iter().flatten());
        v
    });
    let other = prop_oneof![
        Just(vec![]),
        Just(vec!["list".into()]),
        Just(vec!["--version".into()]),
        Just(vec!["run".into(), "--help".into()]),
        garbage().prop_map(|g| vec![g]),
    ];
    prop_oneof![5 => base, 4 => run, 1 => other]
}

/// The seed argument vectors (tests/fuzz/corpus/cli/run_args.txt), each with its exact exit code.
#[test]
fn run_argv_seed_corpus() {
    let tally = Tally::new("cli argv seeds");
    let dirs = dirs();
    let text = std::fs::read_to_string(corpus("cli").join("run_args.txt")).expect("the argv seeds");
    for line in text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let mut fields = line.split('\t');
        let want: i32 = match fields.next() {
            // Runs on the emulator: they succeed only where it is compiled in.
            Some("emu:0") => {
                if kiln::build_info::EMU_COMPILED {
                    0
                } else {
                    2
                }
            }
            code => code.and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("bad seed line {line:?}")),
        };
        let args: Vec<String> = fields
            .map(|a| {
                let path = |p: &Path| p.display().to_string();
                match a {
                    "$GOOD" => path(&dirs.good),
                    "$BAD" => path(&dirs.bad),
                    "$EMPTY" => path(&dirs.empty),
                    "$MISSING" => path(&dirs.missing),
                    "$FILE" => path(&dirs.file),
                    a => a.to_string(),
                }
            })
            .collect();
        let (code, stderr) = kiln_run(&args);
        check_exit(&args, code, &stderr);
        assert_eq!(code, Some(want), "kiln {args:?}: {stderr}");
        tally.add("vectors");
    }
}

#[test]
fn run_argv_random() {
    let tally = Tally::new("cli argv (process spawns)");
    let d = dirs();
    let paths: Vec<String> = [&d.good, &d.bad, &d.empty, &d.missing, &d.file]
        .iter()
        .map(|p| p.display().to_string())
        .chain(["".to_string(), "-".to_string()])
        .collect();
    let paths: &'static [String] = Box::leak(paths.into_boxed_slice());
    proptest!(config(CASES_ARGV), |(args in argv(paths))| {
        let (code, stderr) = kiln_run(&args);
        check_exit(&args, code, &stderr);
        tally.add(match code {
            Some(0) => "exit 0",
            Some(1) => "exit 1",
            _ => "exit 2",
        });
    });
}
