//! Momentum attention (docs/ANALYSIS.md, "Momentum attention"): η ∈ [0, 1] in both configs, paired
//! seeds (every arm starts from the same shared parameters and sees the same batches), and the
//! `icl experiment momentum` driver — its file errors, a tiny end-to-end run whose paired
//! differences are the per-seed differences, resumption after `--stop-after`, and determinism.

use candle_core::Device;
use icl::analysis::experiment::momentum::{self, MomentumReport};
use icl::analysis::experiment::{RunOptions, RunStatus};
use icl::model::config::{ModelConfig, MomentumConfig};
use icl::model::validate_config;
use icl::train::{self, StepOutcome, TrainConfig};
use std::path::{Path, PathBuf};

const BASE: &str = r#"
[task]
d = 2
n = 3
[model]
arch = "gpt2"
layers = 2
width = 8
heads = 2
mlp_hidden = 16
[train]
steps = 6
batch = 4
lr = 1e-3
seed = 3
checkpoint_every = 2
log_every = 2
"#;

fn config(sets: &[&str]) -> Result<TrainConfig, String> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    train::parse_config(BASE, "base.toml", &sets).map_err(|e| e.to_string())
}

fn with_eta(mut c: ModelConfig, eta: f64) -> ModelConfig {
    for l in &mut c.layers {
        l.attn.as_mut().unwrap().momentum = Some(MomentumConfig::Fixed { eta });
    }
    c
}

#[test]
fn momentum_eta_is_allowed_on_the_closed_unit_interval_and_nothing_else() {
    for ok in ["0", "0.5", "1", "1.0"] {
        let c = config(&[&format!("model.momentum_eta={ok}")]).unwrap();
        assert!(c.model.momentum_eta.is_some());
        validate_config(&c.model_config()).unwrap();
    }
    for bad in ["1.0000001", "-0.1", "nan", "inf", "2"] {
        let e = config(&[&format!("model.momentum_eta={bad}")]).unwrap_err();
        assert!(
            e.contains("model.momentum_eta") && e.contains("[0, 1]"),
            "{bad}: {e}"
        );
    }
    let e = config(&["model.momentum_eta=0.5", "model.momentum_learned=true"]).unwrap_err();
    assert!(e.contains("choose one"), "{e}");
    let plain = config(&[]).unwrap().model_config();
    validate_config(&with_eta(plain.clone(), 1.0)).unwrap();
    for bad in [1.5, -0.25, f64::NAN] {
        let e = validate_config(&with_eta(plain.clone(), bad))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("layers[0].attn.momentum.eta") && e.contains("[0, 1]"),
            "{bad}: {e}"
        );
    }
}

/// The first `steps` batches a config trains on, as trained (through `train_step`).
fn first_batches(cfg: &TrainConfig, steps: usize) -> Vec<Vec<icl::prompt::Prompt>> {
    let (model, mut opt) = train::fresh(cfg, &Device::Cpu).unwrap();
    (0..steps)
        .map(
            |s| match train::train_step(cfg, &model, &mut opt, s).unwrap() {
                StepOutcome::Done { prompts, .. } => prompts,
                StepOutcome::NonFinite(l) => panic!("loss {l}"),
            },
        )
        .collect()
}

#[test]
fn paired_seeds_share_the_initial_parameters_and_the_data_stream() {
    let plain = config(&[]).unwrap();
    let arms = [
        config(&["model.momentum_eta=0.5"]).unwrap(),
        config(&["model.momentum_eta=1"]).unwrap(),
        config(&["model.momentum_learned=true"]).unwrap(),
    ];
    let p0 = train::init_params(&plain.model_config(), plain.train.seed);
    for arm in &arms {
        let a0 = train::init_params(&arm.model_config(), arm.train.seed);
        for (name, t) in &p0 {
            assert_eq!(a0.get(name), Some(t), "{name} differs from plain");
        }
        // Only the learned arm has more: its logits, at 0 (η = 1/2).
        for (name, t) in a0.iter().filter(|(n, _)| !p0.contains_key(*n)) {
            assert!(name.ends_with("momentum_logit"), "{name}");
            assert!(t.data.iter().all(|&v| v == 0.0), "{name}");
        }
        assert_eq!(a0.len() > p0.len(), arm.model.momentum_learned);
        assert_eq!(first_batches(arm, 2), first_batches(&plain, 2));
    }
    // Another seed changes both, so the pairing is by seed and not an accident.
    let other = config(&["train.seed=4"]).unwrap();
    let o0 = train::init_params(&other.model_config(), other.train.seed);
    assert_ne!(
        o0.get("layers.0.attn.q.weight"),
        p0.get("layers.0.attn.q.weight")
    );
    assert_ne!(first_batches(&other, 1), first_batches(&plain, 1));
}

fn opts(stop_after: Option<usize>) -> RunOptions {
    RunOptions {
        device: Device::Cpu,
        progress: false,
        stop_after,
        engine: Default::default(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// An experiment file over `BASE` with the given arms (TOML array-of-tables text) and seeds.
fn experiment(dir: &Path, name: &str, arms: &str, seeds: &str) -> PathBuf {
    write(dir, "base.toml", BASE);
    let out = dir.join("runs").display().to_string();
    let text = format!(
        "base = \"base.toml\"\nout = {out:?}\nseeds = {seeds}\n{arms}\n[eval]\nprompts = 64\nseed = 9\n"
    );
    write(dir, name, &text)
}

const TWO_ARMS: &str = "[[arms]]\nname = \"plain\"\n[[arms]]\nname = \"sum\"\neta = 1.0\n";

fn check_structure(r: &MomentumReport) {
    assert_eq!(r.arms.len(), 2);
    let (plain, sum) = (&r.arms[0], &r.arms[1]);
    assert_eq!((plain.arm.name.as_str(), sum.arm.eta), ("plain", Some(1.0)));
    let keys: Vec<&str> = sum.summaries.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(keys, ["mse", "nmse", "nmse_late"]);
    assert!(plain.summaries.iter().all(|s| s.diff.is_none()));
    for (m, (_, _, of)) in momentum::METRICS.iter().enumerate() {
        let diff = sum.summaries[m].diff.as_ref().unwrap();
        for (i, s) in [3u64, 7].iter().enumerate() {
            assert_eq!((plain.runs[i].seed, sum.runs[i].seed), (*s, *s));
            let want = of(&sum.runs[i].errors) - of(&plain.runs[i].errors);
            assert_eq!(diff.per_seed[i], want, "metric {m}, seed {s}");
        }
        let mean = diff.per_seed.iter().sum::<f64>() / 2.0;
        assert!((diff.ci.mean - mean).abs() <= 1e-15 * mean.abs().max(1e-300));
        let lo = diff.per_seed.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = diff
            .per_seed
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(
            lo <= diff.ci.lo && diff.ci.lo <= diff.ci.mean,
            "{:?}",
            diff.ci
        );
        assert!(
            diff.ci.mean <= diff.ci.hi && diff.ci.hi <= hi,
            "{:?}",
            diff.ci
        );
    }
    for run in &sum.runs {
        let e = &run.errors;
        assert_eq!(e.mse_per_k.len(), r.n + 1);
        assert!(e.mse.is_finite() && e.mse > 0.0);
        assert_eq!(e.nmse_per_k[2], e.mse_per_k[2] / r.zero_mse_per_k[2]);
        // k ≥ d = 2: k = 2, 3.
        assert_eq!(e.nmse_late, (e.nmse_per_k[2] + e.nmse_per_k[3]) / 2.0);
    }
    let names: Vec<&str> = r.baselines.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["ols", "ridge(0.1)"]);
    let text = r.table();
    for want in [
        "Δ vs plain",
        "Δ per seed (s3 s7)",
        "mean over k ≥ d",
        "normalised MSE per k",
    ] {
        assert!(text.contains(want), "{want}:\n{text}");
    }
    assert_eq!(r.figure().panels.len(), 3);
}

#[test]
fn a_tiny_momentum_experiment_pairs_seeds_resumes_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment(dir.path(), "m.toml", TWO_ARMS, "[3, 7]");
    // Interrupted after 3 steps (checkpoint at 2), two runs at a time.
    let e = momentum::run(&exp, &opts(Some(3)), 2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("stopped early"), "{e}");
    assert!(dir.path().join("runs/sum-s7/checkpoint.json").exists());
    let r = momentum::run(&exp, &opts(None), 2).unwrap();
    assert!(r
        .arms
        .iter()
        .flat_map(|a| &a.runs)
        .all(|s| s.status == RunStatus::Resumed));
    check_structure(&r);
    // Again, one at a time: every run reused, the JSON byte-identical.
    let again = momentum::run(&exp, &opts(None), 1).unwrap();
    assert!(again
        .arms
        .iter()
        .flat_map(|a| &a.runs)
        .all(|s| s.status == RunStatus::Reused));
    // Byte-identical up to the statuses (resumed then, reused now).
    let json = |r: &MomentumReport| serde_json::to_string_pretty(r).unwrap();
    let mut resumed = r.clone();
    for s in resumed.arms.iter_mut().flat_map(|a| &mut a.runs) {
        s.status = RunStatus::Reused;
    }
    assert_eq!(json(&again), json(&resumed));
    // A folder holding another config's run is refused.
    let other = experiment(
        dir.path(),
        "other.toml",
        "[[arms]]\nname = \"plain\"\n[[arms]]\nname = \"sum\"\neta = 0.9\n",
        "[3]",
    );
    let e = momentum::run(&other, &opts(None), 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("another config"), "{e}");
}

#[test]
fn bad_momentum_experiment_files_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (TWO_ARMS.replace("1.0", "1.5"), "[0]", "arms[1].eta"),
        (TWO_ARMS.replace("1.0", "nan"), "[0]", "arms[1].eta"),
        (String::new(), "[0]", "arms"),
        (TWO_ARMS.into(), "[]", "`seeds` is empty"),
        (TWO_ARMS.into(), "[1, 1]", "listed twice"),
        (
            TWO_ARMS.replace("\"sum\"", "\"plain\""),
            "[0]",
            "duplicate arm name",
        ),
        (
            TWO_ARMS.replace("\"plain\"", "\"a/b\""),
            "[0]",
            "arms[0].name",
        ),
        (
            TWO_ARMS.replace("\"plain\"", "\"flat\""),
            "[0]",
            "`reference`",
        ),
        (
            TWO_ARMS.replace("eta = 1.0", "eta = 1.0\nlearned = true"),
            "[0]",
            "not both",
        ),
    ];
    for (i, (arms, seeds, want)) in cases.iter().enumerate() {
        let arms = if arms.is_empty() { "arms = []" } else { arms };
        let exp = experiment(dir.path(), &format!("bad{i}.toml"), arms, seeds);
        let e = match momentum::runs(&exp) {
            Ok(_) => panic!("case {i} ({want}) accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(want), "case {i}: {e}");
    }
    // The arms own the momentum settings: a base that sets one is refused.
    let exp = experiment(dir.path(), "base-mom.toml", TWO_ARMS, "[0]");
    let text = std::fs::read_to_string(&exp).unwrap();
    std::fs::write(&exp, format!("set = [\"model.momentum_eta=0.5\"]\n{text}")).unwrap();
    let e = momentum::runs(&exp).err().unwrap().to_string();
    assert!(
        e.contains("the base config (with `set`) has momentum"),
        "{e}"
    );
}
