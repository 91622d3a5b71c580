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

/// The family of the x entries: `Normal` is x_j = shift + scale·N(0, 1); `Uniform` is
/// x_j = shift + scale·U(−√3, √3), so that `scale` is the standard deviation in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XFamily {
    #[default]
    Normal,
    Uniform,
}

/// The distribution prompts are drawn from: x_j ~ shift + scale·(N(0, 1) or U(−√3, √3)),
/// w ~ N(0, τ² I_d) (or every entry fixed to `w_fixed`), y = wᵀx + N(0, σ²).
///
/// As text (`icl prompts --dist SPEC`, [`PromptDistribution::parse_spec`]): comma-separated
/// `key=value` pairs, `d` and `n` required, e.g.
/// `d=8,n=40,x=normal*2.5+0,w=normal*1,noise=0.1`; `x=uniform*1+0`; `w=const*1` (every entry 1).
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
    /// Normal (default) or uniform x entries.
    #[serde(default)]
    pub x_family: XFamily,
    /// Every entry of w equal to this value instead of drawn (the paper's control task, w = 1).
    #[serde(default)]
    pub w_fixed: Option<f64>,
}

/// A `--dist` SPEC that does not parse, or a distribution with an invalid parameter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("distribution `{spec}`: {msg}")]
pub struct DistError {
    pub spec: String,
    pub msg: String,
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
            x_family: XFamily::Normal,
            w_fixed: None,
        }
    }

    /// Parse a SPEC such as `d=4,n=16,x=normal*1+0,w=normal*1,noise=0.25` (see the type's doc).
    /// Unknown keys, repeated keys, missing `d`/`n` and invalid values are errors naming them.
    pub fn parse_spec(spec: &str) -> Result<Self, DistError> {
        let err = |msg: String| DistError {
            spec: spec.to_string(),
            msg,
        };
        let mut fields: std::collections::BTreeMap<&str, &str> = Default::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| err(format!("`{part}`: expected key=value")))?;
            if fields.insert(k.trim(), v.trim()).is_some() {
                return Err(err(format!("`{}` given twice", k.trim())));
            }
        }
        let int = |k: &str| -> Result<usize, DistError> {
            let v = fields
                .get(k)
                .ok_or_else(|| err(format!("`{k}` is required (e.g. d=4,n=16)")))?;
            v.parse()
                .map_err(|_| err(format!("`{k}={v}`: expected a whole number")))
        };
        let mut dist = PromptDistribution::new(int("d")?, int("n")?);
        for (&k, &v) in &fields {
            match k {
                "d" | "n" => {}
                "x" => {
                    let (family, scale, shift) = parse_family(v, true).map_err(&err)?;
                    dist.x_family = match family {
                        "normal" => XFamily::Normal,
                        "uniform" => XFamily::Uniform,
                        f => return Err(err(format!("x: unknown family `{f}` (normal, uniform)"))),
                    };
                    dist.x_scale = scale;
                    dist.x_shift = shift;
                }
                "w" => {
                    let (family, scale, shift) = parse_family(v, false).map_err(&err)?;
                    debug_assert_eq!(shift, 0.0);
                    match family {
                        "normal" => dist.w_std = scale,
                        "const" => dist.w_fixed = Some(scale),
                        f => return Err(err(format!("w: unknown family `{f}` (normal, const)"))),
                    }
                }
                "noise" => {
                    dist.noise_std = v
                        .parse()
                        .map_err(|_| err(format!("`noise={v}`: expected a number")))?
                }
                _ => return Err(err(format!("unknown key `{k}` (keys: d, n, x, w, noise)"))),
            }
        }
        dist.validate().map_err(err)?;
        Ok(dist)
    }

    /// The canonical SPEC of this distribution (parses back to it).
    pub fn spec(&self) -> String {
        let x = match self.x_family {
            XFamily::Normal => "normal",
            XFamily::Uniform => "uniform",
        };
        let w = match self.w_fixed {
            Some(c) => format!("const*{c}"),
            None => format!("normal*{}", self.w_std),
        };
        format!(
            "d={},n={},x={x}*{}+{},w={w},noise={}",
            self.d, self.n, self.x_scale, self.x_shift, self.noise_std
        )
    }

    /// d ≥ 1, n ≥ 1, finite parameters, non-negative standard deviations.
    pub fn validate(&self) -> Result<(), String> {
        if self.d == 0 || self.n == 0 {
            return Err(format!(
                "d and n must be at least 1 (found d = {}, n = {})",
                self.d, self.n
            ));
        }
        for (name, v) in [
            ("w std", self.w_std),
            ("noise", self.noise_std),
            ("x scale", self.x_scale),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{name} must be a finite number ≥ 0, found {v}"));
            }
        }
        for (name, v) in [("x shift", Some(self.x_shift)), ("w const", self.w_fixed)] {
            if v.is_some_and(|v| !v.is_finite()) {
                return Err(format!("{name} must be finite, found {}", v.unwrap_or(0.0)));
            }
        }
        Ok(())
    }

    /// λ* = σ²/τ² of the Bayes-optimal ridge predictor for this distribution (x ~ anything,
    /// w ~ N(0, τ²I), noise N(0, σ²)); `None` when w is fixed or τ = 0.
    pub fn bayes_lambda(&self) -> Option<f64> {
        (self.w_fixed.is_none() && self.w_std > 0.0)
            .then(|| self.noise_std * self.noise_std / (self.w_std * self.w_std))
    }

    /// Draw one x vector.
    pub fn sample_x(&self, rng: &mut impl Rng) -> Vec<f64> {
        (0..self.d)
            .map(|_| {
                let z = match self.x_family {
                    XFamily::Normal => StandardNormal.sample(rng),
                    XFamily::Uniform => rng.random_range(-3f64.sqrt()..3f64.sqrt()),
                };
                self.x_shift + self.x_scale * z
            })
            .collect()
    }

    /// Draw one prompt.
    pub fn sample(&self, rng: &mut impl Rng) -> Prompt {
        let w: Vec<f64> = match self.w_fixed {
            Some(c) => vec![c; self.d],
            None => (0..self.d)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(rng);
                    self.w_std * z
                })
                .collect(),
        };
        let mut xs = Vec::with_capacity(self.n + 1);
        let mut ys = Vec::with_capacity(self.n + 1);
        for _ in 0..=self.n {
            let x = self.sample_x(rng);
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

/// `family*scale+shift` (shift only when `with_shift`; `family*scale` and `family` alone mean
/// scale 1 and shift 0).
fn parse_family(v: &str, with_shift: bool) -> Result<(&str, f64, f64), String> {
    let num = |s: &str| -> Result<f64, String> {
        s.trim()
            .parse::<f64>()
            .map_err(|_| format!("`{v}`: `{s}` is not a number"))
    };
    let (family, rest) = v.split_once('*').unwrap_or((v, "1"));
    let (scale, shift) = match rest.find(['+', '-']).filter(|&i| i > 0) {
        Some(i) if with_shift => (num(&rest[..i])?, num(rest[i..].trim_start_matches('+'))?),
        Some(_) => return Err(format!("`{v}`: w takes no shift")),
        None => (num(rest)?, 0.0),
    };
    Ok((family.trim(), scale, shift))
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
    fn specs_parse_and_print_back() {
        let d =
            PromptDistribution::parse_spec("d=8,n=40,x=normal*2.5+0,w=normal*1,noise=0.1").unwrap();
        assert_eq!(
            (d.d, d.n, d.x_scale, d.x_shift, d.noise_std),
            (8, 40, 2.5, 0.0, 0.1)
        );
        let e = PromptDistribution::parse_spec("d=4,n=2,x=uniform*1-2.5,w=const*1").unwrap();
        assert_eq!(e.x_family, XFamily::Uniform);
        assert_eq!((e.x_shift, e.w_fixed), (-2.5, Some(1.0)));
        for dist in [d, e, PromptDistribution::new(3, 5)] {
            assert_eq!(PromptDistribution::parse_spec(&dist.spec()).unwrap(), dist);
        }
        for bad in [
            "n=4",
            "d=4,n=4,q=1",
            "d=4,n=4,x=cauchy*1",
            "d=4,n=4,noise=-1",
            "d=4,n=4,w=normal*1+3",
            "d=0,n=4",
            "d=4,d=5,n=4",
            "d=4,n=4,x=normal*abc",
        ] {
            assert!(PromptDistribution::parse_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn families_have_the_stated_moments_and_fixed_w_is_fixed() {
        let mut dist = PromptDistribution::parse_spec("d=2,n=200,x=uniform*2+1,w=const*1").unwrap();
        let ps = dist.sample_batch(50, 3);
        let xs: Vec<f64> = ps
            .iter()
            .flat_map(|p| p.xs.iter().flatten().copied())
            .collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            (mean - 1.0).abs() < 0.05 && (var.sqrt() - 2.0).abs() < 0.05,
            "{mean} {var}"
        );
        assert!(xs.iter().all(|x| (x - 1.0).abs() <= 2.0 * 3f64.sqrt()));
        assert!(ps.iter().all(|p| p.w == vec![1.0, 1.0]));
        dist.noise_std = 0.5;
        dist.w_fixed = None;
        dist.w_std = 2.0;
        assert_eq!(dist.bayes_lambda(), Some(0.0625));
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
