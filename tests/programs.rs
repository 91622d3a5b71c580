//! The shipped `.icl` programs against the exact solvers and the paper's closed forms.
//!
//! Criterion (f64 interpreter vs solver): at every x̃ column,
//! `|interp − solver| ≤ 1e-10 · max(1, |solver|)`. Exact (rational) vs f64 interpreter:
//! `|exact − f64| ≤ 1e-12 · max(1, |exact|)`.
//!
//! `cargo test --test programs -- --ignored --nocapture` prints the largest errors measured over
//! a larger sample (`measure_max_errors`).

// Index loops mirror the formulas they check (Σ_j over explicit indices).
#![allow(clippy::needless_range_loop)]

use icl::interp::{run_exact, run_f64, InterpError};
use icl::ir::{Program, RegMap};
use icl::prompt::{Prompt, PromptDistribution};
use icl::solvers::Solver;
use num_traits::ToPrimitive;
use proptest::prelude::*;
use std::path::Path;

fn load(path: &str, sets: &[(&str, String)]) -> Program {
    let overrides: Vec<(String, String)> = sets
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    match icl::front::load_file(&full, &overrides) {
        Ok(p) => p,
        Err(e) => panic!("{path} with {overrides:?} does not load:\n{e}"),
    }
}

fn dims(d: usize, n: usize) -> Vec<(&'static str, String)> {
    vec![("d", d.to_string()), ("n", n.to_string())]
}

/// x ~ N(0, I), w ~ N(0, I), y = wᵀx + N(0, 0.25²): within the programs' default input ranges
/// (|x| ≤ 6, |y| ≤ 50) for the d used here (the interpreter would report any violation).
fn prompt(d: usize, n: usize, seed: u64) -> Prompt {
    let mut dist = PromptDistribution::new(d, n);
    dist.noise_std = 0.25;
    dist.sample_batch(1, seed).remove(0)
}

/// Largest `|a − b| / max(1, |b|)`.
fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f64::max)
}

fn vs_solver(
    path: &str,
    sets: &[(&str, String)],
    solver: Solver,
    d: usize,
    n: usize,
    seed: u64,
) -> f64 {
    let mut all = dims(d, n);
    all.extend(sets.iter().cloned());
    let p = load(path, &all);
    let pr = prompt(d, n, seed);
    let got = run_f64(&p, &pr, false)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .outputs;
    assert_eq!(got.len(), n + 1);
    rel_err(&got, &solver.predict(&pr))
}

fn exact_vs_f64(path: &str, sets: &[(&str, String)], d: usize, n: usize, seed: u64) -> f64 {
    let mut all = dims(d, n);
    all.extend(sets.iter().cloned());
    let p = load(path, &all);
    let pr = prompt(d, n, seed);
    let f = run_f64(&p, &pr, false).unwrap().outputs;
    let e: Vec<f64> = run_exact(&p, &pr, false)
        .unwrap()
        .outputs
        .iter()
        .map(|v| v.to_f64().unwrap())
        .collect();
    rel_err(&f, &e)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn ridge_program_is_ridge(d in 1usize..6, n in 1usize..10, lambda in 0.1f64..2.0, seed in any::<u64>()) {
        let err = vs_solver("programs/ridge.icl", &[("lambda", lambda.to_string())], Solver::Ridge { lambda }, d, n, seed);
        prop_assert!(err <= 1e-10, "relative error {err:e}");
    }

    #[test]
    fn sgd_program_is_sgd(d in 1usize..6, n in 1usize..10, alpha in 0.001f64..0.05, lambda in 0.0f64..1.0, seed in any::<u64>()) {
        let sets = [("alpha", alpha.to_string()), ("lambda", lambda.to_string())];
        let err = vs_solver("programs/sgd.icl", &sets, Solver::Sgd { alpha, lambda }, d, n, seed);
        prop_assert!(err <= 1e-10, "relative error {err:e}");
    }

    #[test]
    fn gd_program_is_gd(d in 1usize..6, n in 1usize..10, alpha in 0.001f64..0.5, seed in any::<u64>()) {
        let err = vs_solver("programs/gd.icl", &[("alpha", alpha.to_string())], Solver::Gd { alpha }, d, n, seed);
        prop_assert!(err <= 1e-10, "relative error {err:e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    #[test]
    fn exact_interpreter_agrees_with_f64(d in 1usize..4, n in 1usize..4, lambda in 0.1f64..2.0, alpha in 0.001f64..0.05, seed in any::<u64>()) {
        let l = ("lambda", lambda.to_string());
        let a = ("alpha", alpha.to_string());
        for (path, sets) in [
            ("programs/ridge.icl", vec![l.clone()]),
            ("programs/sgd.icl", vec![a.clone(), l.clone()]),
            ("programs/gd.icl", vec![a.clone()]),
        ] {
            let err = exact_vs_f64(path, &sets, d, n, seed);
            prop_assert!(err <= 1e-12, "{path}: relative error {err:e}");
        }
    }
}

fn vec_literal(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
    format!("[{}]", parts.join(", "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Appendix A: w′ = w₀ − 2α(x₁x₁ᵀw₀ − x₁y₁ + λw₀), output w′ᵀx₂ at x̃_2 (and 0 at x̃_1).
    #[test]
    fn appendix_a_is_one_gd_step(d in 1usize..6, alpha in 0.001f64..0.2, lambda in 0.0f64..1.0,
                                 w0 in prop::collection::vec(-2.0f64..2.0, 5), seed in any::<u64>()) {
        let w0 = &w0[..d];
        let p = load("programs/paper/appendix_a.icl", &[
            ("d", d.to_string()), ("alpha", alpha.to_string()), ("lambda", lambda.to_string()),
            ("w0", vec_literal(w0)),
        ]);
        let pr = prompt(d, 1, seed);
        let (x1, y1, x2) = (&pr.xs[0], pr.ys[0], &pr.xs[1]);
        let xw: f64 = x1.iter().zip(w0).map(|(a, b)| a * b).sum();
        let w1: Vec<f64> = (0..d).map(|j| w0[j] - 2.0 * alpha * (x1[j] * xw - x1[j] * y1 + lambda * w0[j])).collect();
        let e: f64 = w1.iter().zip(x2).map(|(a, b)| a * b).sum();
        let out = run_f64(&p, &pr, false).unwrap().outputs;
        prop_assert_eq!(out.len(), 2);
        prop_assert_eq!(out[0], 0.0);
        prop_assert!((out[1] - e).abs() <= 1e-12 * e.abs().max(1.0), "{} vs {}", out[1], e);
        let ex = run_exact(&p, &pr, false).unwrap().outputs[1].to_f64().unwrap();
        prop_assert!((ex - e).abs() <= 1e-12 * e.abs().max(1.0));
    }

    /// Appendix B: w′ = (λI + x₁x₁ᵀ)⁻¹x₁y₁; since (λI + x xᵀ)x = (λ + |x|²)x, this is
    /// x₁y₁/(λ + |x₁|²), and the output at x̃_2 is y₁(x₁ᵀx₂)/(λ + |x₁|²).
    #[test]
    fn appendix_b_is_one_sherman_morrison_step(d in 1usize..6, lambda in 0.05f64..2.0, seed in any::<u64>()) {
        let p = load("programs/paper/appendix_b.icl", &[("d", d.to_string()), ("lambda", lambda.to_string())]);
        let pr = prompt(d, 1, seed);
        let (x1, y1, x2) = (&pr.xs[0], pr.ys[0], &pr.xs[1]);
        let nx: f64 = x1.iter().map(|v| v * v).sum();
        let xx: f64 = x1.iter().zip(x2).map(|(a, b)| a * b).sum();
        let e = y1 * xx / (lambda + nx);
        let out = run_f64(&p, &pr, false).unwrap().outputs;
        prop_assert_eq!(out[0], 0.0);
        prop_assert!((out[1] - e).abs() <= 1e-12 * e.abs().max(1.0), "{} vs {}", out[1], e);
        let ex = run_exact(&p, &pr, false).unwrap().outputs[1].to_f64().unwrap();
        prop_assert!((ex - e).abs() <= 1e-12 * e.abs().max(1.0));
    }
}

#[test]
fn default_parameters_run() {
    for path in [
        "programs/ridge.icl",
        "programs/sgd.icl",
        "programs/gd.icl",
        "programs/paper/appendix_a.icl",
        "programs/paper/appendix_b.icl",
    ] {
        let p = load(path, &[]);
        let out = run_f64(&p, &prompt(p.d, p.n, 9), false).unwrap().outputs;
        assert_eq!(out.len(), p.n + 1, "{path}");
    }
}

#[test]
fn a_broken_assumption_names_the_operation_and_column() {
    // λ < 0 breaks appendix B's `assume den >= 1`: den = 1 + |x₁|²/λ < 1 at column 1, the first
    // column where the moved x₁ is non-zero.
    let p = load(
        "programs/paper/appendix_b.icl",
        &[("lambda", "-0.5".into())],
    );
    let pr = Prompt {
        xs: vec![vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 0.0]],
        ys: vec![1.0, 0.0],
        w: vec![0.0; 3],
    };
    let err = run_f64(&p, &pr, false).unwrap_err();
    match &err {
        InterpError::AssumptionViolated {
            assumption,
            register,
            column,
            value,
            written_by,
            ..
        } => {
            assert_eq!(assumption, "assume den >= 1");
            assert_eq!(register, "den");
            assert_eq!(*column, 1);
            assert_eq!(*value, 1.0 + 1.0 / -0.5);
            let w = written_by.as_ref().unwrap();
            assert_eq!(
                w.text.split_whitespace().collect::<Vec<_>>().join(" "),
                "aff den <- s + 1"
            );
            assert!(
                w.location.file.ends_with("appendix_b.icl")
                    && (w.location.span.line, w.location.span.col) == (53, 1),
                "{}",
                w.location
            );
        }
        e => panic!("wrong error: {e}"),
    }
    // An input out of its declared range is reported from the prompt.
    let p = load("programs/gd.icl", &dims(1, 1));
    let pr = Prompt {
        xs: vec![vec![7.0], vec![0.0]],
        ys: vec![0.0, 0.0],
        w: vec![0.0],
    };
    match run_f64(&p, &pr, false).unwrap_err() {
        InterpError::AssumptionViolated {
            register,
            column,
            written_by,
            ..
        } => {
            assert_eq!((register.as_str(), column), ("x", 0));
            assert!(written_by.is_none());
        }
        e => panic!("wrong error: {e}"),
    }
}

/// Larger sample; prints the largest relative errors per program. Run with
/// `cargo test --test programs -- --ignored --nocapture measure_max_errors`.
#[test]
#[ignore]
fn measure_max_errors() {
    let mut worst = [0.0f64; 5];
    for seed in 0..200u64 {
        let d = 1 + (seed as usize % 5);
        let n = 1 + (seed as usize * 7 % 9);
        let lambda = 0.1 + (seed % 19) as f64 * 0.1;
        let alpha = 0.001 + (seed % 13) as f64 * 0.003;
        worst[0] = worst[0].max(vs_solver(
            "programs/ridge.icl",
            &[("lambda", lambda.to_string())],
            Solver::Ridge { lambda },
            d,
            n,
            seed,
        ));
        worst[1] = worst[1].max(vs_solver(
            "programs/sgd.icl",
            &[("alpha", alpha.to_string()), ("lambda", lambda.to_string())],
            Solver::Sgd { alpha, lambda },
            d,
            n,
            seed,
        ));
        worst[2] = worst[2].max(vs_solver(
            "programs/gd.icl",
            &[("alpha", alpha.to_string())],
            Solver::Gd { alpha },
            d,
            n,
            seed,
        ));
        worst[4] = worst[4].max(vs_solver(
            "programs/ridge_elim.icl",
            &[("lambda", lambda.to_string())],
            Solver::Ridge { lambda },
            d,
            n,
            seed,
        ));
        if seed < 20 {
            let (d, n) = (1 + seed as usize % 3, 1 + seed as usize % 4);
            worst[3] = worst[3].max(exact_vs_f64(
                "programs/ridge.icl",
                &[("lambda", lambda.to_string())],
                d,
                n,
                seed,
            ));
        }
    }
    // The defaults at the paper's size: d = 8, n = 40.
    let big = vs_solver(
        "programs/ridge.icl",
        &[],
        Solver::Ridge { lambda: 0.5 },
        8,
        40,
        1,
    );
    println!("max relative error over 200 cases: ridge {:e}, sgd {:e}, gd {:e}, ridge_elim (d=1..5) {:e}; exact-vs-f64 ridge (20 cases) {:e}; ridge d=8 n=40 {:e}",
        worst[0], worst[1], worst[2], worst[4], worst[3], big);
    assert!(worst.iter().all(|&e| e <= 1e-10) && big <= 1e-10);
}

/// Longest chain of data dependences (each op one step after the last writers of what it
/// reads) in the unrolled program.
fn dependence_depth(p: &Program) -> usize {
    let mut level = RegMap::filled(p, 0usize);
    let mut depth = 0;
    for op in &p.ops {
        let l = 1 + op.kind.reads().iter().map(|&r| level[r]).max().unwrap_or(0);
        level[op.kind.dst()] = l;
        depth = depth.max(l);
    }
    depth
}

#[test]
fn ridge_program_chain_per_example_is_five_steps() {
    // u = A·x_i → {s = x_iᵀu, O = uuᵀ} → den = s + 1 → q = O/|den| → A ← A − q.
    let d5 = dependence_depth(&load("programs/ridge.icl", &dims(3, 5)));
    let d6 = dependence_depth(&load("programs/ridge.icl", &dims(3, 6)));
    assert_eq!(d6 - d5, 5);
    // gd.icl does not grow with n.
    let g1 = dependence_depth(&load("programs/gd.icl", &dims(3, 2)));
    let g2 = dependence_depth(&load("programs/gd.icl", &dims(3, 9)));
    assert_eq!(g1, g2);
    // sgd.icl: r = x_iᵀw → g = x_i r → w: three per example.
    let s5 = dependence_depth(&load("programs/sgd.icl", &dims(3, 5)));
    let s6 = dependence_depth(&load("programs/sgd.icl", &dims(3, 6)));
    assert_eq!(s6 - s5, 3);
    let r = load("programs/ridge.icl", &[]);
    let e = load("programs/ridge_elim.icl", &[]);
    println!(
        "dependence depth at the defaults: ridge.icl (d=4, n=8) {} over {} ops; ridge_elim.icl (d=4, n=8) {} over {} ops; gd.icl {}; sgd.icl (n=8) {}",
        dependence_depth(&r), r.ops.len(), dependence_depth(&e), e.ops.len(),
        dependence_depth(&load("programs/gd.icl", &[])),
        dependence_depth(&load("programs/sgd.icl", &[]))
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// ridge_elim.icl is ridge(λ) for every d (here 1..=6).
    #[test]
    fn ridge_elim_program_is_ridge(d in 1usize..=6, n in 1usize..10, lambda in 0.1f64..2.0, seed in any::<u64>()) {
        let err = vs_solver("programs/ridge_elim.icl", &[("lambda", lambda.to_string())], Solver::Ridge { lambda }, d, n, seed);
        prop_assert!(err <= 1e-10, "relative error {err:e} at d = {d}");
        let err = exact_vs_f64("programs/ridge_elim.icl", &[("lambda", lambda.to_string())], d.min(3), n.min(3), seed);
        prop_assert!(err <= 1e-12, "exact vs f64: relative error {err:e}");
    }
}

#[test]
fn ridge_elim_depth_does_not_grow_with_n() {
    let a = dependence_depth(&load("programs/ridge_elim.icl", &dims(4, 2)));
    let b = dependence_depth(&load("programs/ridge_elim.icl", &dims(4, 30)));
    assert_eq!(a, b);
}
