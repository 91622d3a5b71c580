//! `icl compare` on learners with known answers: compiled gd.icl and ridge.icl must be judged to
//! run GD(α) and ridge(λ) with their own constants, the interpreter must agree with the solver it
//! implements (SPD and ILWD ≈ 0), out-of-range prompts are refused unless asked for, and bad
//! learner specs are errors naming the argument.

use candle_core::Device;
use icl::analysis::compare::{self, CompareOptions, Comparison};
use icl::analysis::learner::{self, LoadOptions};
use icl::analysis::prompt_set::PromptSet;
use icl::prompt::PromptDistribution;
use std::path::{Path, PathBuf};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

mod common;

/// Compile `program` with `sets` (no validation) into `dir/model`.
fn compile(program: &str, sets: &[(&str, &str)], dir: &Path) -> PathBuf {
    common::compile_program(program, sets, dir).0
}

fn opts(ilwd_prompts: usize, allow: bool) -> CompareOptions {
    CompareOptions {
        ilwd_prompts,
        probes: 0,
        seed: 1,
        allow_uncertified: allow,
        progress: false,
    }
}

fn run(
    specs: &[String],
    dist: &PromptDistribution,
    count: usize,
    o: &CompareOptions,
) -> anyhow::Result<Comparison> {
    let set = PromptSet::sample(dist, count, 7)?;
    let lo = LoadOptions {
        device: Device::Cpu,
        dtype: None,
        executor: Default::default(),
    };
    let learners = specs
        .iter()
        .map(|s| learner::load(s, &set.dist, &lo))
        .collect::<Result<Vec<_>, _>>()?;
    compare::compare(&learners, &set, "test", o)
}

fn specs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn compiled_ridge_is_ridge_with_its_own_lambda() {
    let dir = tempfile::tempdir().unwrap();
    let model = compile(
        "programs/ridge.icl",
        &[("d", "2"), ("n", "4"), ("lambda", "0.5")],
        dir.path(),
    );
    let dist = PromptDistribution::new(2, 4);
    let m = model.display().to_string();
    let c = run(
        &specs(&[&m, "ridge:0.5", "ridge:0.1", "ols", "gd:0.02"]),
        &dist,
        40,
        &opts(4, false),
    )
    .unwrap();
    let (p, _) = c.pair("model", "ridge(0.5)").unwrap();
    // Rounding level: the compiled f64 model against the f64 solver.
    assert!(p.spd.iter().all(|&v| v < 1e-20), "{:?}", p.spd);
    assert!(p.ilwd.iter().all(|&v| v < 1e-16), "{:?}", p.ilwd);
    let (q, _) = c.pair("model", "ridge(0.1)").unwrap();
    assert!(
        q.mspd_all > 1e-6,
        "ridge(0.1) must be clearly farther: {}",
        q.mspd_all
    );
    for v in &c.verdicts {
        assert_eq!(v.closest, "ridge(0.5)", "{v:?}");
    }
    assert_eq!(c.verdicts.len(), 2);
    // A compiled model is exactly linear in the query: R² = 1 wherever the fit is defined.
    assert!(
        c.r2[0].iter().flatten().all(|r| (r - 1.0).abs() < 1e-9),
        "{:?}",
        c.r2[0]
    );
}

#[test]
fn compiled_gd_is_gd_with_its_own_alpha_and_the_interpreter_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let model = compile(
        "programs/gd.icl",
        &[("d", "2"), ("n", "3"), ("alpha", "0.05")],
        dir.path(),
    );
    let dist = PromptDistribution::new(2, 3);
    let m = model.display().to_string();
    let prog = repo("programs/gd.icl").display().to_string() + ":alpha=0.05";
    let c = run(
        &specs(&[&m, &prog, "gd:0.05", "gd:0.02", "ridge:0.5", "ols"]),
        &dist,
        40,
        &opts(4, false),
    )
    .unwrap();
    for v in c.verdicts.iter().filter(|v| v.learner == "model") {
        assert!(
            v.closest == "gd(0.05)" || v.closest == "gd.icl(alpha=0.05)",
            "{v:?}"
        );
    }
    // The interpreter (a program learner) computes GD(0.05) exactly: predictions and implicit
    // weights — the latter read by querying fresh probe inputs, which exercises causality.
    let (p, _) = c.pair("gd.icl(alpha=0.05)", "gd(0.05)").unwrap();
    assert!(p.spd.iter().all(|&v| v < 1e-24), "{:?}", p.spd);
    assert!(p.ilwd.iter().all(|&v| v < 1e-24), "{:?}", p.ilwd);
    let (q, _) = c.pair("gd.icl(alpha=0.05)", "gd(0.02)").unwrap();
    assert!(q.milwd_all > 1e-4, "{}", q.milwd_all);
}

#[test]
fn prompts_outside_the_certified_ranges_are_refused_unless_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let model = compile("programs/gd.icl", &[("d", "2"), ("n", "3")], dir.path());
    // gd.icl assumes x in [-6, 6]: x ~ N(0, 25) falls outside often.
    let dist = PromptDistribution::parse_spec("d=2,n=3,x=normal*5+0").unwrap();
    let m = model.display().to_string();
    let e = run(&specs(&[&m, "ols"]), &dist, 30, &opts(0, false))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("outside the certified input ranges") && e.contains("--uncertified"),
        "{e}"
    );
    let c = run(&specs(&[&m, "ols"]), &dist, 30, &opts(0, true)).unwrap();
    let u = c.learners[0].uncertified_prompts.expect("marked");
    assert!(u > 0 && u <= 30);
    assert!(icl::analysis::tables::table(&c, None).contains("not covered by the certificate"));
    // The ILWD probe inputs are inputs too: with x in [-3, 3], some of the 4·d·(n+1) fresh
    // probes of a prompt fall outside even where the prompt itself does not.
    let dir = tempfile::tempdir().unwrap();
    let model = compile(
        "programs/gd.icl",
        &[("d", "2"), ("n", "3"), ("xmax", "3")],
        dir.path(),
    );
    let m = model.display().to_string();
    let dist = PromptDistribution::new(2, 3);
    let c = run(&specs(&[&m, "ols"]), &dist, 30, &opts(20, true)).unwrap();
    let probes = c.learners[0]
        .uncertified_probe_sets
        .expect("probe sets marked");
    assert!(
        probes > c.learners[0].uncertified_prompts.unwrap_or(0),
        "{:?}",
        c.learners[0]
    );
    let e = run(&specs(&[&m, "ols"]), &dist, 30, &opts(20, false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ILWD probe inputs"), "{e}");
}

#[test]
fn bad_learners_are_errors_naming_them() {
    let dist = PromptDistribution::new(2, 3);
    for (spec, want) in [
        ("ridge:abc", "ridge:abc"),
        ("knn:0", "k must be"),
        ("sgd", "wrong number"),
        ("nonesuch", "not a solver"),
        ("knn:3:cosine", "weighting"),
    ] {
        let e = run(&specs(&[spec]), &dist, 3, &opts(0, false))
            .expect_err(spec)
            .to_string();
        assert!(e.contains(want), "{spec}: {e}");
    }
    // A model whose d does not fit the prompts.
    let dir = tempfile::tempdir().unwrap();
    let model = compile("programs/gd.icl", &[("d", "2"), ("n", "3")], dir.path());
    let m = model.display().to_string();
    let e = run(
        &specs(&[&m]),
        &PromptDistribution::new(3, 3),
        3,
        &opts(0, false),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("does not fit") && e.contains("d = 3"), "{e}");
    let e = run(
        &specs(&[&m]),
        &PromptDistribution::new(2, 2),
        3,
        &opts(0, false),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("compiled for n = 3"), "{e}");
    // bayes needs random w.
    let fixed = PromptDistribution::parse_spec("d=2,n=3,w=const*1").unwrap();
    let e = run(&specs(&["bayes"]), &fixed, 3, &opts(0, false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("Bayes"), "{e}");
}

#[test]
fn the_cli_writes_nothing_when_an_argument_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let prompts = dir.path().join("p.safetensors");
    let icl = env!("CARGO_BIN_EXE_icl");
    let ok = std::process::Command::new(icl)
        .args([
            "prompts",
            "--dist",
            "d=2,n=3,noise=0.1",
            "--count",
            "20",
            "-o",
        ])
        .arg(&prompts)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let out = std::process::Command::new(icl)
        .args(["compare", "ols", "ridge:x", "--prompts"])
        .arg(&prompts)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ridge:x"));
    assert!(!json.exists());
    let out = std::process::Command::new(icl)
        .args([
            "compare",
            "ols",
            "bayes",
            "--ilwd-prompts",
            "5",
            "--prompts",
        ])
        .arg(&prompts)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    // bayes = ridge(σ²/τ²) = ridge(0.01) here; λ > 0 so it differs from OLS somewhere.
    assert_eq!(v["learners"][1]["label"], "bayes(λ=0.01)");
    assert!(v["pairs"][0]["mspd_all"].as_f64().unwrap() > 0.0);
}
