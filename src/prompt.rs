//! In-context regression prompts: sampling and the token encoding shared by compiled and trained
//! models (docs/LANGUAGE.md, "Prompt layout").
//!
//! A prompt with n examples is the column sequence x̃_1, ỹ_1, …, x̃_n, ỹ_n, x̃_{n+1} with
//! x̃_k = [0, x_k] and ỹ_k = [y_k, 0…0] (d+1 values each). x̃_k is column 2k−2, ỹ_k column 2k−1.
//! Predictions are read at every x̃ column: at x̃_k, the prediction for x_k from examples 1..k−1.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, StandardNormal};
use serde::{Deserialize, Serialize};

/// One in-context regression problem: n labelled examples and a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prompt {
    /// n+1 feature vectors of length d: the n examples, then the query.
    pub xs: Vec<Vec<f64>>,
    /// n+1 labels: the n examples' y, then the query's true y (not shown to the model).
    pub ys: Vec<f64>,
    /// The weight vector the labels were drawn from (for analysis; not shown to the model).
    pub w: Vec<f64>,
}

impl Prompt {
    pub fn d(&self) -> usize {
        self.xs[0].len()
    }
    /// Number of labelled examples.
    pub fn n(&self) -> usize {
        self.xs.len() - 1
    }
    /// Number of columns (tokens): 2n+1.
    pub fn columns(&self) -> usize {
        2 * self.n() + 1
    }
    /// The token at column `t` (length d+1: row 0 = y, rows 1..=d = x).
    pub fn token(&self, t: usize) -> Vec<f64> {
        let d = self.d();
        let mut tok = vec![0.0; d + 1];
        let k = t / 2;
        if t.is_multiple_of(2) {
            tok[1..].copy_from_slice(&self.xs[k]);
        } else {
            tok[0] = self.ys[k];
        }
        tok
    }
    /// All tokens, column by column: `tokens()[t][row]`.
    pub fn tokens(&self) -> Vec<Vec<f64>> {
        (0..self.columns()).map(|t| self.token(t)).collect()
    }
    /// The targets at the x̃ columns: `targets()[k]` is y_{k+1}, what x̃_{k+1} should predict.
    pub fn targets(&self) -> &[f64] {
        &self.ys
    }
}

/// Column index of x̃_k for k = 1..=n+1.
pub fn x_column(k: usize) -> usize {
    2 * k - 2
}

/// The distribution prompts are drawn from: x ~ N(shift, scale² I_d),
/// w ~ N(0, τ² I_d), y = wᵀx + N(0, σ²).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptDistribution {
    pub d: usize,
    pub n: usize,
    /// τ: standard deviation of each entry of w.
    pub w_std: f64,
    /// σ: standard deviation of the label noise.
    pub noise_std: f64,
    /// Standard deviation of each entry of x (1 by default).
    pub x_scale: f64,
    /// Mean of each entry of x (0 by default).
    pub x_shift: f64,
}

impl PromptDistribution {
    pub fn new(d: usize, n: usize) -> Self {
        PromptDistribution {
            d,
            n,
            w_std: 1.0,
            noise_std: 0.0,
            x_scale: 1.0,
            x_shift: 0.0,
        }
    }

    /// Draw one prompt.
    pub fn sample(&self, rng: &mut impl Rng) -> Prompt {
        let gauss = |rng: &mut dyn rand::RngCore| -> f64 { StandardNormal.sample(rng) };
        let w: Vec<f64> = (0..self.d).map(|_| self.w_std * gauss(rng)).collect();
        let mut xs = Vec::with_capacity(self.n + 1);
        let mut ys = Vec::with_capacity(self.n + 1);
        for _ in 0..=self.n {
            let x: Vec<f64> = (0..self.d)
                .map(|_| self.x_shift + self.x_scale * gauss(rng))
                .collect();
            let mean: f64 = x.iter().zip(&w).map(|(a, b)| a * b).sum();
            let y = if self.noise_std > 0.0 {
                Normal::new(mean, self.noise_std)
                    .expect("noise_std > 0")
                    .sample(rng)
            } else {
                mean
            };
            xs.push(x);
            ys.push(y);
        }
        Prompt { xs, ys, w }
    }

    /// Draw `count` prompts from a seed (deterministic).
    pub fn sample_batch(&self, count: usize, seed: u64) -> Vec<Prompt> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..count).map(|_| self.sample(&mut rng)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_places_x_and_y_in_their_columns() {
        let p = Prompt {
            xs: vec![vec![1.0, 2.0], vec![3.0, 4.0]],
            ys: vec![5.0, 6.0],
            w: vec![0.0, 0.0],
        };
        assert_eq!(p.columns(), 3);
        assert_eq!(p.token(0), vec![0.0, 1.0, 2.0]);
        assert_eq!(p.token(1), vec![5.0, 0.0, 0.0]);
        assert_eq!(p.token(2), vec![0.0, 3.0, 4.0]);
        assert_eq!(x_column(2), 2);
    }

    #[test]
    fn sampling_is_deterministic_and_noiseless_labels_are_linear() {
        let dist = PromptDistribution::new(3, 5);
        let a = dist.sample_batch(4, 7);
        let b = dist.sample_batch(4, 7);
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
        for p in &a {
            for (x, y) in p.xs.iter().zip(&p.ys) {
                let wx: f64 = x.iter().zip(&p.w).map(|(a, b)| a * b).sum();
                assert!((wx - y).abs() < 1e-12);
            }
        }
    }
}
