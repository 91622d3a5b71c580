//! `icl dual` and `icl implicit` (docs/ANALYSIS.md, "Attention as implicit finetuning (Dai et
//! al.)") on learners with known answers: the compiled gd.icl's implicit model is 2α Σ y_i x_i,
//! a hand-built attention with equal scores is exactly its first-order expansion and its linear
//! relaxation, the best one-step GD step size matches a simulation, and bad input is an error
//! naming it.

mod common;

use candle_core::Device;
use icl::analysis::dai::{dual, implicit};
use icl::analysis::learner::{self, Executor, LoadOptions};
use icl::analysis::prompt_set::PromptSet;
use icl::model::config::*;
use icl::model::{expected_tensors, save_model_dir, Transformer};
use icl::prompt::PromptDistribution;
use icl::tensors::{NamedTensors, RawTensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::process::Command;

fn f64_dense() -> LoadOptions {
    LoadOptions {
        device: Device::Cpu,
        dtype: Some(DType::F64),
        executor: Executor::Dense,
    }
}

fn info() -> dual::PromptInfo<'static> {
    dual::PromptInfo {
        source: "test",
        distribution: "test".into(),
    }
}

/// ‖a − b‖ / ‖b‖ (‖a‖ when b = 0).
fn rel(a: &[f64], b: &[f64]) -> f64 {
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    if nb == 0.0 {
        diff
    } else {
        diff / nb
    }
}

#[test]
fn compiled_gd_implicit_model_is_the_gd_step() {
    let dir = tempfile::tempdir().unwrap();
    let (model_dir, _) =
        common::compile_program("programs/gd.icl", &[("d", "3"), ("n", "6")], dir.path());
    let alpha = 0.01; // gd.icl's default
    let set = PromptSet::sample(&PromptDistribution::new(3, 6), 6, 3).unwrap();
    let l = learner::load(&model_dir.display().to_string(), &set.dist, &f64_dense()).unwrap();
    let preds = l.predict(&set.prompts).unwrap();
    let (basis, lin) = implicit::basis_weights(&l, &set.prompts, &preds).unwrap();
    let learner::Source::Model { model, .. } = &l.source else {
        panic!("a model")
    };
    let (grad, gpreds) = implicit::model_weights(model, &set.prompts).unwrap();
    let mut worst: f64 = 0.0;
    for (i, p) in set.prompts.iter().enumerate() {
        for k in 0..=6 {
            let mut want = vec![0.0; 3];
            for j in 0..k {
                for (w, x) in want.iter_mut().zip(&p.xs[j]) {
                    *w += 2.0 * alpha * p.ys[j] * x;
                }
            }
            worst = worst
                .max(rel(&basis[i][k], &want))
                .max(rel(&grad[i][k], &want));
            assert!((gpreds[i][k] - preds[i][k]).abs() < 1e-12);
        }
    }
    assert!(worst < 1e-12, "largest relative error {worst}");
    assert!(
        lin.max_intercept < 1e-12 && lin.max_deviation < 1e-12,
        "{lin:?}"
    );

    // Its attention heads are fixed patterns: uniform reads, exactly first order, no spread.
    let r = dual::analyze(model, "gd", &set.prompts, &info(), None).unwrap();
    assert!(r.notes.iter().any(|n| n.contains("fixed-pattern")));
    for h in &r.heads {
        assert!(!h.qk);
        for at in &h.per_k {
            assert_eq!(
                at.mean.spread, 0.0,
                "layer {} head {} k {}",
                h.layer, h.head, at.k
            );
            let e = at.mean.first_order_err;
            assert!(e.is_nan() && at.defined == 0 || e < 1e-12, "{e}");
        }
    }
}

fn one_layer_config(qk: bool) -> ModelConfig {
    ModelConfig {
        format: MODEL_FORMAT.into(),
        kind: ModelKind::Trained,
        target: "gpt2".into(),
        dtype: DType::F64,
        d: 2,
        n: 4,
        max_len: 9,
        width: 6,
        layers: vec![LayerConfig {
            attn_norm: None,
            attn: qk.then_some(AttnConfig {
                heads: 2,
                head_dim: 3,
                qk: true,
                bias: false,
                zero_attn: false,
                momentum: None,
            }),
            norm: None,
            mlp: Some(MlpConfig {
                kind: MlpKind::Gelu,
                hidden: 4,
                activation: Activation::Gelu,
            }),
        }],
        final_norm: None,
        readout_row: None,
    }
}

/// Random tensors for `c`, with the query and key weights zero where `flat_scores`: every key then
/// gets the same score q_bᵀk_b/√3 (from the biases), different per head.
fn tensors(c: &ModelConfig, flat_scores: bool) -> NamedTensors {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    expected_tensors(c)
        .into_iter()
        .map(|(name, shape)| {
            let mut t = RawTensor::zeros(&shape);
            let zero = flat_scores && (name.ends_with("q.weight") || name.ends_with("k.weight"));
            if !zero {
                t.data
                    .iter_mut()
                    .for_each(|v| *v = rng.random_range(-1.0..1.0));
            }
            (name, t)
        })
        .collect()
}

#[test]
fn equal_scores_make_the_dual_forms_exact() {
    let c = one_layer_config(true);
    let m = Transformer::from_named(
        c.clone(),
        &tensors(&c, true),
        &Device::Cpu,
        DType::F64,
        false,
    )
    .unwrap();
    let set = PromptSet::sample(&PromptDistribution::new(2, 4), 5, 1).unwrap();
    let r = dual::analyze(&m, "flat", &set.prompts, &info(), None).unwrap();
    assert_eq!(r.heads.len(), 2);
    for h in &r.heads {
        for at in &h.per_k {
            assert_eq!(at.defined, 5);
            assert!(at.mean.spread < 1e-15, "{:?}", at.mean);
            assert!(at.mean.first_order_err < 1e-14, "{:?}", at.mean);
            // F_lin = s·Σ v_j is parallel to F = v̄: c = 1/(T·s) makes it exact.
            assert!(at.mean.linear_err < 1e-14, "{:?}", at.mean);
            assert_eq!(at.keys, 2 * at.k + 1);
        }
    }
    // With Q/K weights the scores spread and neither form is exact.
    let m = Transformer::from_named(
        c.clone(),
        &tensors(&c, false),
        &Device::Cpu,
        DType::F64,
        false,
    )
    .unwrap();
    let r = dual::analyze(&m, "random", &set.prompts, &info(), None).unwrap();
    let last = &r.heads[0].per_k[4];
    assert!(
        last.mean.spread > 1e-3 && last.mean.first_order_err > 1e-8,
        "{:?}",
        last.mean
    );
}

#[test]
fn best_one_step_alpha_matches_a_simulation() {
    for (d, k, tau, sigma) in [(3usize, 5usize, 1.0, 0.0), (2, 6, 0.8, 0.5)] {
        let mut dist = PromptDistribution::new(d, k);
        dist.w_std = tau;
        dist.noise_std = sigma;
        let prompts = dist.sample_batch(20_000, 11);
        let step = 0.004;
        let grid: Vec<f64> = (1..40).map(|i| i as f64 * step).collect();
        let mse = |alpha: f64| {
            let s: f64 = prompts
                .iter()
                .map(|p| {
                    let w = icl::solvers::gd_weights(&p.xs[..k], &p.ys[..k], alpha);
                    let yh: f64 = w.iter().zip(&p.xs[k]).map(|(a, b)| a * b).sum();
                    (yh - p.ys[k]).powi(2)
                })
                .sum();
            s / prompts.len() as f64
        };
        let curve: Vec<f64> = grid.iter().map(|&a| mse(a)).collect();
        let best = (0..grid.len())
            .min_by(|&a, &b| curve[a].total_cmp(&curve[b]))
            .unwrap();
        let star = implicit::alpha_star(d, k, tau, sigma);
        assert!(
            (grid[best] - star).abs() <= step,
            "argmin {} vs α* {star}",
            grid[best]
        );
        let (sim, want) = (mse(star), implicit::gd_mse(d, k, tau, sigma, star));
        eprintln!("d={d} k={k} τ={tau} σ={sigma}: grid argmin α = {}, α* = {star}, MSE(α*) simulated {sim}, predicted {want}", grid[best]);
        assert!(
            (sim / want - 1.0).abs() < 0.05,
            "MSE at α*: simulated {sim}, predicted {want}"
        );
    }
}

#[test]
fn implicit_models_of_solvers_and_programs_match_their_references() {
    let set = PromptSet::sample(&PromptDistribution::new(2, 5), 30, 2).unwrap();
    let specs = [
        repo("programs/gd.icl:alpha=0.05"),
        "ols".into(),
        "knn:2".into(),
    ];
    let learners: Vec<_> = specs
        .iter()
        .map(|s| learner::load(s, &set.dist, &f64_dense()).unwrap())
        .collect();
    let opts = implicit::ImplicitOptions {
        gd_steps: vec![2],
        lambda: Some(0.5),
        resamples: 200,
        seed: 0,
    };
    let r = implicit::implicit(&learners, &set, "test", &opts).unwrap();
    let refs: Vec<&str> = r
        .references
        .iter()
        .map(|x| x.reference.label.as_str())
        .collect();
    assert_eq!(refs, ["gd-1(α*)", "gd-2", "ridge(0.5)", "ols"]);
    // OLS against itself: cos 1, no difference, from k = 1 on.
    let ols = &r.learners[1].vs[3];
    for k in 1..=5 {
        assert!((ols.cos[k].mean - 1.0).abs() < 1e-12 && ols.diff[k].mean < 1e-12);
    }
    // The program is read by basis queries and is linear in the query.
    let prog = &r.learners[0];
    let lin = prog.linearity.unwrap();
    assert!(
        lin.max_deviation < 1e-12 * lin.max_prediction.max(1.0),
        "{lin:?}"
    );
    // gd.icl with α = 0.05 is GD-1 with another step size: cos 1 to gd-1(α*) wherever defined.
    let gd1 = &prog.vs[0];
    for k in 1..=5 {
        assert!(
            (gd1.cos[k].mean - 1.0).abs() < 1e-12,
            "k = {k}: {:?}",
            gd1.cos[k]
        );
    }
    // kNN is not linear in the query: the check says so.
    let knn = r.learners[2].linearity.unwrap();
    assert!(knn.max_deviation > 1e-3, "{knn:?}");
    // The GD step sizes per k follow the formula (x ~ N(0, I)).
    let a = r.references[0].reference.alphas.as_ref().unwrap();
    assert_eq!(a[3], implicit::alpha_star(2, 3, 1.0, 0.0));
}

fn repo(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(p)
        .display()
        .to_string()
}

fn icl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_icl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dual_cli_reports_and_names_bad_heads_and_models_without_attention() {
    let dir = tempfile::tempdir().unwrap();
    let (model_dir, _) =
        common::compile_program("programs/gd.icl", &[("d", "2"), ("n", "3")], dir.path());
    let m = model_dir.display().to_string();
    let json = dir.path().join("dual.json");
    let (ok, out, err) = icl(&["dual", &m, "--count", "4", "--json", json.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("‖F−F₁‖/‖F‖") && out.contains("all"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["prompts"], 4);
    let (ok, _, err) = icl(&["dual", &m, "--count", "4", "--heads", "9:0"]);
    assert!(
        !ok && err.contains("--heads 9:0") && err.contains("layers"),
        "{err}"
    );
    let (ok, _, err) = icl(&["dual", &m, "--count", "4", "--heads", "0:7"]);
    assert!(
        !ok && err.contains("--heads 0:7") && err.contains("heads"),
        "{err}"
    );
    let (ok, _, err) = icl(&["dual", &m, "--heads", "x"]);
    assert!(!ok && err.contains("LAYER:HEAD"), "{err}");
    // An MLP-only model.
    let c = one_layer_config(false);
    let plain = dir.path().join("plain");
    save_model_dir(&plain, &c, &tensors(&c, false)).unwrap();
    let (ok, _, err) = icl(&[
        "dual",
        plain.to_str().unwrap(),
        "--dist",
        "d=2,n=4",
        "--count",
        "2",
    ]);
    assert!(!ok && err.contains("no attention"), "{err}");
}

#[test]
fn implicit_cli_writes_json_and_rejects_bad_steps() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("imp.json");
    let gd = repo("programs/gd.icl");
    let args = [
        "implicit",
        &gd,
        "ols",
        "--dist",
        "d=2,n=4",
        "--count",
        "10",
        "--resamples",
        "50",
    ];
    let (ok, out, err) = icl(&[&args[..], &["--json", json.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    assert!(out.contains("gd-1(α*)"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["learners"].as_array().unwrap().len(), 2);
    let (ok, _, err) = icl(&[&args[..], &["--gd-steps", "0"]].concat());
    assert!(!ok && err.contains("--gd-steps"), "{err}");
}
