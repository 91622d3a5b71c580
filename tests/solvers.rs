//! The f64 solvers against independent computations: normal equations solved exactly in
//! rationals (Gauss–Jordan written here), hand-unrolled SGD/GD on small integer data, kNN cases
//! worked by hand.

// Index loops mirror the formulas they check (Σ_j over explicit indices).
#![allow(clippy::needless_range_loop)]

use icl::prompt::{Prompt, PromptDistribution};
use icl::solvers::{gd_weights, ols_weights, predict_batch, ridge_weights, sgd_weights, Solver};
use num_rational::BigRational;
use num_traits::{ToPrimitive, Zero};
use proptest::prelude::*;

fn q(v: f64) -> BigRational {
    BigRational::from_float(v).unwrap()
}

/// Solves the square system `m z = r` exactly (Gauss–Jordan with the first non-zero pivot).
fn solve_exact(mut m: Vec<Vec<BigRational>>, mut r: Vec<BigRational>) -> Vec<BigRational> {
    let n = r.len();
    for c in 0..n {
        let p = (c..n)
            .find(|&i| !m[i][c].is_zero())
            .expect("singular system");
        m.swap(c, p);
        r.swap(c, p);
        let piv = m[c][c].clone();
        for j in 0..n {
            m[c][j] = &m[c][j] / &piv;
        }
        r[c] = &r[c] / &piv;
        for i in 0..n {
            if i != c && !m[i][c].is_zero() {
                let f = m[i][c].clone();
                for j in 0..n {
                    let v = &f * &m[c][j];
                    m[i][j] -= v;
                }
                let v = &f * &r[c];
                r[i] -= v;
            }
        }
    }
    r
}

/// Exact ridge `(XᵀX + λI)⁻¹Xᵀy` via the normal equations in rationals.
fn ridge_exact(xs: &[Vec<f64>], ys: &[f64], lambda: f64) -> Vec<f64> {
    let d = xs[0].len();
    let mut m = vec![vec![BigRational::zero(); d]; d];
    let mut r = vec![BigRational::zero(); d];
    for (x, &y) in xs.iter().zip(ys) {
        for i in 0..d {
            for j in 0..d {
                m[i][j] += q(x[i]) * q(x[j]);
            }
            r[i] += q(x[i]) * q(y);
        }
    }
    for (i, row) in m.iter_mut().enumerate() {
        row[i] += q(lambda);
    }
    solve_exact(m, r)
        .iter()
        .map(|v| v.to_f64().unwrap())
        .collect()
}

/// Exact minimum-norm least squares for X of full rank: Xᵀ(XXᵀ)⁻¹y when k ≤ d, else
/// (XᵀX)⁻¹Xᵀy.
fn ols_exact_full_rank(xs: &[Vec<f64>], ys: &[f64]) -> Vec<f64> {
    let (k, d) = (xs.len(), xs[0].len());
    if k >= d {
        return ridge_exact(xs, ys, 0.0);
    }
    let g: Vec<Vec<BigRational>> = (0..k)
        .map(|a| {
            (0..k)
                .map(|b| (0..d).map(|j| q(xs[a][j]) * q(xs[b][j])).sum())
                .collect()
        })
        .collect();
    let z = solve_exact(g, ys.iter().map(|&y| q(y)).collect());
    (0..d)
        .map(|j| {
            let v: BigRational = (0..k).map(|a| q(xs[a][j]) * &z[a]).sum();
            v.to_f64().unwrap()
        })
        .collect()
}

fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= tol * 1f64.max(y.abs()))
}

fn prefix_data(p: &Prompt, m: usize) -> (&[Vec<f64>], &[f64]) {
    (&p.xs[..m], &p.ys[..m])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn ridge_matches_exact_normal_equations(d in 1usize..6, n in 1usize..9, lambda in 0.05f64..2.0, seed in any::<u64>()) {
        let mut dist = PromptDistribution::new(d, n);
        dist.noise_std = 0.3;
        let p = &dist.sample_batch(1, seed)[0];
        for m in 1..=n {
            let (xs, ys) = prefix_data(p, m);
            let w = ridge_weights(xs, ys, lambda);
            let e = ridge_exact(xs, ys, lambda);
            prop_assert!(close(&w, &e, 1e-9), "m={m}: {w:?} vs {e:?}");
        }
    }

    #[test]
    fn ols_is_min_norm_least_squares(d in 1usize..6, n in 1usize..9, seed in any::<u64>()) {
        let p = &PromptDistribution::new(d, n).sample_batch(1, seed)[0];
        for m in 1..=n {
            let (xs, ys) = prefix_data(p, m);
            let w = ols_weights(xs, ys);
            let e = ols_exact_full_rank(xs, ys);
            prop_assert!(close(&w, &e, 1e-8), "m={m}: {w:?} vs {e:?}");
        }
    }

    #[test]
    fn predictions_are_prefix_fits(d in 1usize..5, n in 1usize..7, seed in any::<u64>()) {
        // predict()[k-1] = w(examples 1..k−1)ᵀ x_k, and 0 with no example.
        let p = &PromptDistribution::new(d, n).sample_batch(1, seed)[0];
        for s in [Solver::Ols, Solver::Ridge { lambda: 0.3 }, Solver::Gd { alpha: 0.05 }, Solver::Sgd { alpha: 0.05, lambda: 0.1 }] {
            let pred = s.predict(p);
            prop_assert_eq!(pred.len(), n + 1);
            prop_assert_eq!(pred[0], 0.0);
            for k in 2..=n + 1 {
                let w = s.weights(&p.xs[..k - 1], &p.ys[..k - 1]);
                let e: f64 = w.iter().zip(&p.xs[k - 1]).map(|(a, b)| a * b).sum();
                prop_assert!((pred[k - 1] - e).abs() <= 1e-12 * 1f64.max(e.abs()), "{}: k={k}", s.name());
            }
        }
        let batch = predict_batch(&Solver::Ols, std::slice::from_ref(p));
        prop_assert_eq!(batch, vec![Solver::Ols.predict(p)]);
    }
}

#[test]
fn ols_rank_deficient_equals_deduplicated() {
    // Repeating an example (with the same label) changes neither the least-squares set nor the
    // minimum-norm point: the solution must equal the one on the deduplicated data.
    let xs = vec![
        vec![1.0, 2.0, -1.0],
        vec![0.5, 0.0, 3.0],
        vec![1.0, 2.0, -1.0],
    ];
    let ys = vec![2.0, -1.0, 2.0];
    let w = ols_weights(&xs, &ys);
    let e = ols_exact_full_rank(&xs[..2], &ys[..2]);
    assert!(close(&w, &e, 1e-12), "{w:?} vs {e:?}");
    // And an exactly collinear pair in d = 2: x = (1, 1), (2, 2); min-norm w is along (1, 1).
    let w = ols_weights(&[vec![1.0, 1.0], vec![2.0, 2.0]], &[1.0, 2.0]);
    assert!(close(&w, &[0.5, 0.5], 1e-12), "{w:?}");
    assert!(ols_weights(&[], &[]).is_empty());
}

#[test]
fn ridge_with_zero_lambda_is_ols() {
    let xs = vec![vec![1.0, 0.0, 2.0], vec![0.0, 1.0, 1.0]];
    let ys = vec![1.0, 3.0];
    assert!(close(
        &ridge_weights(&xs, &ys, 0.0),
        &ols_exact_full_rank(&xs, &ys),
        1e-12
    ));
}

#[test]
fn gd_is_two_alpha_xty_by_hand() {
    // x1 = (1, 2), y1 = 3; x2 = (−1, 0.5), y2 = 2; α = 0.25:
    // Xᵀy = (3 − 2, 6 + 1) = (1, 7); w = 2·0.25·(1, 7) = (0.5, 3.5).
    let w = gd_weights(&[vec![1.0, 2.0], vec![-1.0, 0.5]], &[3.0, 2.0], 0.25);
    assert_eq!(w, vec![0.5, 3.5]);
    // The predictions: x̃_1 → 0; x̃_2 → (2α x1 y1)ᵀx2 = (1.5, 3)·(−1, 0.5) = 0;
    // x̃_3 → (0.5, 3.5)·(2, 1) = 4.5.
    let p = Prompt {
        xs: vec![vec![1.0, 2.0], vec![-1.0, 0.5], vec![2.0, 1.0]],
        ys: vec![3.0, 2.0, 0.0],
        w: vec![0.0, 0.0],
    };
    assert_eq!(Solver::Gd { alpha: 0.25 }.predict(&p), vec![0.0, 0.0, 4.5]);
}

#[test]
fn sgd_two_steps_by_hand() {
    // α = 0.25, λ = 0.5, w0 = 0.
    // Step 1, x1 = (1, 0), y1 = 2: w1 = 0 − 0.5·(0 − (2, 0) + 0) = (1, 0).
    // Step 2, x2 = (1, 1), y2 = 3: x2ᵀw1 = 1; x2 x2ᵀ w1 = (1, 1); x2 y2 = (3, 3); λw1 = (0.5, 0);
    //   w2 = (1, 0) − 0.5·((1, 1) − (3, 3) + (0.5, 0)) = (1, 0) − 0.5·(−1.5, −2) = (1.75, 1).
    let xs = vec![vec![1.0, 0.0], vec![1.0, 1.0]];
    let ys = vec![2.0, 3.0];
    assert_eq!(sgd_weights(&xs[..1], &ys[..1], 0.25, 0.5), vec![1.0, 0.0]);
    assert_eq!(sgd_weights(&xs, &ys, 0.25, 0.5), vec![1.75, 1.0]);
    let p = Prompt {
        xs: vec![vec![1.0, 0.0], vec![1.0, 1.0], vec![2.0, -1.0]],
        ys: vec![2.0, 3.0, 0.0],
        w: vec![0.0, 0.0],
    };
    // x̃_1: 0; x̃_2: w1ᵀx2 = 1; x̃_3: w2ᵀx3 = 3.5 − 1 = 2.5.
    assert_eq!(
        Solver::Sgd {
            alpha: 0.25,
            lambda: 0.5
        }
        .predict(&p),
        vec![0.0, 1.0, 2.5]
    );
}

#[test]
fn knn_by_hand() {
    // d = 1: examples x = 0, 1, 3, 10 with y = 1, 2, 4, 8; query 2 (distances² 4, 1, 1, 64).
    let p = Prompt {
        xs: vec![vec![0.0], vec![1.0], vec![3.0], vec![10.0], vec![2.0]],
        ys: vec![1.0, 2.0, 4.0, 8.0, 0.0],
        w: vec![0.0],
    };
    let uni = Solver::Knn {
        k: 3,
        weighted: false,
    }
    .predict(&p);
    let wtd = Solver::Knn {
        k: 3,
        weighted: true,
    }
    .predict(&p);
    // x̃_1: no example → 0.
    assert_eq!((uni[0], wtd[0]), (0.0, 0.0));
    // x̃_2 (query 1, one example x=0): fewer than k → that y.
    assert_eq!((uni[1], wtd[1]), (1.0, 1.0));
    // x̃_3 (query 3, examples 0, 1: distances² 9, 4): uniform 1.5; weighted (1/9 + 2/4)/(1/9 + 1/4).
    assert_eq!(uni[2], 1.5);
    assert!((wtd[2] - (1.0 / 9.0 + 2.0 / 4.0) / (1.0 / 9.0 + 1.0 / 4.0)).abs() < 1e-15);
    // x̃_4 (query 10, examples 0, 1, 3): exact? no; all three: uniform 7/3;
    // weighted (1/100 + 2/81 + 4/49)/(1/100 + 1/81 + 1/49).
    assert!((uni[3] - 7.0 / 3.0).abs() < 1e-15);
    let e = (1.0 / 100.0 + 2.0 / 81.0 + 4.0 / 49.0) / (1.0 / 100.0 + 1.0 / 81.0 + 1.0 / 49.0);
    assert!((wtd[3] - e).abs() < 1e-15);
    // x̃_5 (query 2): nearest three are x = 1, 3 (d² = 1) and 0 (d² = 4): uniform 7/3;
    // weighted (2 + 4 + 1/4)/(1 + 1 + 1/4) = 6.25/2.25.
    assert!((uni[4] - 7.0 / 3.0).abs() < 1e-15);
    assert!((wtd[4] - 6.25 / 2.25).abs() < 1e-15);
    // Exact match: query equal to an example uses that example's y.
    let p = Prompt {
        xs: vec![vec![0.0], vec![1.0], vec![1.0]],
        ys: vec![5.0, 7.0, 0.0],
        w: vec![0.0],
    };
    assert_eq!(
        Solver::Knn {
            k: 3,
            weighted: true
        }
        .predict(&p)[2],
        7.0
    );
    assert_eq!(
        Solver::Knn {
            k: 1,
            weighted: false
        }
        .predict(&p)[2],
        7.0
    );
}

#[test]
fn zero_and_names() {
    let p = &PromptDistribution::new(2, 3).sample_batch(1, 1)[0];
    assert_eq!(Solver::Zero.predict(p), vec![0.0; 4]);
    assert_eq!(Solver::Ridge { lambda: 0.5 }.name(), "ridge(0.5)");
    assert_eq!(
        Solver::Knn {
            k: 3,
            weighted: true
        }
        .name(),
        "knn(3,weighted)"
    );
    assert_eq!(
        Solver::Sgd {
            alpha: 0.01,
            lambda: 0.0
        }
        .name(),
        "sgd(0.01)"
    );
}
