//! Probing the hidden states for the intermediate quantities of in-context learning algorithms
//! (Akyürek et al., ICLR 2023, §5 and Fig. 4; Appendix E) — `icl probe`.
//!
//! **What is probed.** For a prompt `x̃_1, ỹ_1, …, x̃_n, ỹ_n, x̃_{n+1}` and every number of examples
//! k = 1..=n, three targets ([`Target`]): the moment vector XᵀY = Σ_{i≤k} x_i y_i, the
//! minimum-norm least-squares weights w_OLS of the first k examples and the ridge weights
//! w_ridge(λ) (both from [`crate::solvers`], f64). One probe per (hidden state h, target, k), where
//! hidden state 0 is the embedding output and hidden state l the output of layer l (1-based; the
//! layout's 0-based layer j is followed by hidden state j+1).
//!
//! **The probe** (paper, Appendix E). When predicting y_{k+1} the model has seen columns 0..=2k,
//! so the probe learns position scores s ∈ R^T over those columns (the rest are masked),
//! α = softmax(s), pools z = Σ_t α_t h_t, projects z to H′ dimensions (`proj`) and reads the target
//! out with a linear map or a two-layer GeLU MLP (`mlp_hidden` units): v̂ = W₂·gelu(W₁p + b₁) + b₂
//! on p = Pz + c. The loss is ‖v − v̂‖², optimised with Adam (no weight decay), batch 64, on
//! `train` prompts; errors are measured on `test` other prompts of the same distribution.
//! Reported per (readout, target, h, k): the held-out mean squared error per coordinate in raw
//! units (the paper's axes) and the normalised error, that MSE over the held-out variance of the
//! target (0 = decoded exactly, 1 = no better than the mean), plus both averaged over k.
//!
//! **Deviations from the paper, and why.**
//! - *Joint training.* All probes of one (readout, target) — every h and k — are trained together:
//!   their parameters are stacked along a leading probe axis and the loss is the sum of their
//!   losses. No parameter is shared and Adam's update is per parameter, so this is the same as
//!   training them one by one (each sees the same batches), only batched.
//! - *Standardised hidden rows.* The hidden states are computed once, without gradients, and each
//!   row of each hidden state is standardised with the training prompts' mean and standard
//!   deviation over prompts and columns (a constant row becomes 0). Compiled models carry rows at
//!   scale 2^40 (the LayerNorm-division payload `P·den`) next to rows of order 1, which would wreck
//!   a gradient-trained probe. The map is affine per row and the pooling weights sum to 1, so it
//!   changes nothing a linear probe can decode (its bias absorbs the shift). Statistics and the
//!   map are computed in f64; the probes read the result as f32.
//! - *Standardised targets.* Each (k, coordinate) of a target is standardised likewise with the
//!   training prompts' statistics and the probe's output mapped back before errors are measured.
//!   XᵀY after 16 examples has a standard deviation near 18 and w_OLS near 1; without it, Adam's
//!   step size (≈ lr per parameter) would favour some probes over others by that ratio.
//! - *Position scores' own learning rate* (`score_lr`, default 0.1). With the paper's 1e-3 a
//!   score moves by about 1e-3 per step, so the softmax over 2k+1 columns needs thousands of
//!   steps to put its weight on the columns that hold the quantity; a compiled model, whose
//!   hidden state holds XᵀY exactly at two columns, then stays away from error 0 for want of
//!   steps, not of information. Chosen from {1e-3, 1e-2, 3e-2, 1e-1} at 500 steps: on ridge.icl
//!   (d = 2, n = 3) the linear XᵀY probe's error at k = 3 after the layer that completes it was
//!   8.2e-4 (1e-2), 1.8e-4 (3e-2), 1.4e-5 (1e-1); on runs/tiny the w_OLS probes after the last
//!   layer reached 0.90 / 0.83 / 0.82 (linear) and 0.66 / 0.60 / 0.58 (MLP) for 1e-3 / 1e-2 /
//!   1e-1. Scores start at 0 (uniform pooling): nothing is initialised from a layout.
//! - *Sizes and budget.* H′ = 128 and 256 MLP units by default (paper: 512 and 512) and 500
//!   steps, so that the default run on a 4-layer model (six (readout, target) pairs of 80 probes)
//!   takes about two minutes on two loaded CPU cores. Probes of trained models are not converged
//!   at that budget (their training loss is still falling); `--steps` buys closer numbers.
//! - *Distribution.* A model's own task (its `train.toml`), except that a task with a fixed w (the
//!   paper's control task) is probed on w ~ N(0, I), as the paper probes its control model; a
//!   compiled model is probed on x, w ~ N(0, I) at its d and n. See [`subject`].
//!
//! **Ground truth** ([`ground_truth`]): on a compiled `ridge.icl` the layout says in which layer
//! the moment vector gets each example's product; a linear probe must decode XᵀY there and must
//! not before — a check that the probe can tell "computed" from "not yet computed".

pub mod data;
pub mod fit;
pub mod ground_truth;
pub mod plot;
pub mod report;
pub mod subject;

use crate::model::ModelError;
use data::{Hidden, TargetValues};
pub use ground_truth::{
    check_ground_truth, ground_truth_layers, GroundTruthCheck, GroundTruthLayers,
    GroundTruthOutcome,
};
pub use plot::write_plot;
pub use report::{LayerErrors, ModelReport, ProbeReport, ProbeResult};
use serde::{Deserialize, Serialize};
pub use subject::{load_subject, PromptChoice, Role, Subject};

/// Everything that can go wrong in a probe run; messages name the argument or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A bad argument: `arg` is the flag (or positional) as the user typed it.
    #[error("{arg}: {msg}")]
    Arg { arg: &'static str, msg: String },
    /// A model directory that cannot be probed as asked.
    #[error("{path}: {msg}")]
    Dir { path: String, msg: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Plot(#[from] crate::plot::PlotError),
}

pub type Result<T> = std::result::Result<T, ProbeError>;

fn arg_error(arg: &'static str, msg: impl Into<String>) -> ProbeError {
    ProbeError::Arg {
        arg,
        msg: msg.into(),
    }
}

/// A quantity a probe reads out, after k examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// XᵀY = Σ_{i≤k} x_i y_i.
    Xty,
    /// Minimum-norm least squares on the first k examples.
    Ols,
    /// Ridge(λ) on the first k examples.
    Ridge,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::Xty, Target::Ols, Target::Ridge];

    pub fn name(self) -> &'static str {
        match self {
            Target::Xty => "xty",
            Target::Ols => "ols",
            Target::Ridge => "ridge",
        }
    }

    /// `xty,ols,ridge` (any non-empty subset, in any order; repeats dropped).
    pub fn parse_list(s: &str) -> Result<Vec<Target>> {
        let mut out = Vec::new();
        for word in s.split(',').map(str::trim) {
            let t = Target::ALL
                .into_iter()
                .find(|t| t.name() == word)
                .ok_or_else(|| {
                    arg_error(
                        "--targets",
                        format!("unknown target `{word}` (expected xty, ols or ridge)"),
                    )
                })?;
            if !out.contains(&t) {
                out.push(t);
            }
        }
        Ok(out)
    }
}

/// The probe's read-out after the projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Readout {
    Linear,
    Mlp,
}

impl Readout {
    pub fn name(self) -> &'static str {
        match self {
            Readout::Linear => "linear",
            Readout::Mlp => "mlp",
        }
    }

    /// `linear`, `mlp` or `both`.
    pub fn parse_choice(s: &str) -> Result<Vec<Readout>> {
        match s.trim() {
            "linear" => Ok(vec![Readout::Linear]),
            "mlp" => Ok(vec![Readout::Mlp]),
            "both" => Ok(vec![Readout::Linear, Readout::Mlp]),
            other => Err(arg_error(
                "--readout",
                format!("unknown readout `{other}` (expected linear, mlp or both)"),
            )),
        }
    }
}

/// `1,4,16`: the numbers of examples to probe at (each ≥ 1; checked against n when probing).
pub fn parse_ks(s: &str) -> Result<Vec<usize>> {
    let mut ks = Vec::new();
    for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let k: usize = word.parse().map_err(|_| {
            arg_error(
                "--k",
                format!("`{word}` is not a number of examples (1, 2, …)"),
            )
        })?;
        if k == 0 {
            return Err(arg_error("--k", "k counts examples and starts at 1"));
        }
        if !ks.contains(&k) {
            ks.push(k);
        }
    }
    if ks.is_empty() {
        return Err(arg_error("--k", "empty list (give e.g. --k 1,4,16)"));
    }
    ks.sort_unstable();
    Ok(ks)
}

/// Settings of a probe run (the flags of `icl probe`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeOptions {
    pub readouts: Vec<Readout>,
    pub targets: Vec<Target>,
    /// λ of the ridge target.
    pub lambda: f64,
    /// Numbers of examples to probe at; `None`: every k = 1..=n.
    pub ks: Option<Vec<usize>>,
    /// Adam steps per (readout, target).
    pub steps: usize,
    /// Adam learning rate of the projection and read-out.
    pub lr: f64,
    /// Adam learning rate of the position scores.
    pub score_lr: f64,
    pub batch: usize,
    /// H′: width of the projection.
    pub proj: usize,
    /// Hidden units of the MLP read-out.
    pub mlp_hidden: usize,
    /// Training and held-out prompt counts.
    pub train: usize,
    pub test: usize,
    pub seed: u64,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            readouts: vec![Readout::Linear, Readout::Mlp],
            targets: Target::ALL.to_vec(),
            lambda: 0.5,
            ks: None,
            steps: 500,
            lr: 1e-3,
            score_lr: 0.1,
            batch: 64,
            proj: 128,
            mlp_hidden: 256,
            train: 2048,
            test: 512,
            seed: 0,
        }
    }
}

impl ProbeOptions {
    /// Checks that do not depend on a model.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("--steps", self.steps),
            ("--batch", self.batch),
            ("--proj", self.proj),
            ("--mlp-hidden", self.mlp_hidden),
            ("--train", self.train),
            ("--test", self.test),
        ];
        if let Some((arg, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(arg_error(arg, "must be at least 1"));
        }
        let rates = [
            ("--lr", self.lr),
            ("--score-lr", self.score_lr),
            ("--lambda", self.lambda),
        ];
        if let Some((arg, v)) = rates.iter().find(|(_, v)| !(v.is_finite() && *v > 0.0)) {
            return Err(arg_error(
                arg,
                format!("must be a positive number, found {v}"),
            ));
        }
        if self.train < 2 || self.test < 2 {
            return Err(arg_error(
                if self.train < 2 { "--train" } else { "--test" },
                "needs at least 2 prompts (means and variances are estimated from them)",
            ));
        }
        if self.readouts.is_empty() || self.targets.is_empty() {
            return Err(arg_error("--targets", "nothing to probe"));
        }
        Ok(())
    }

    /// The ks for prompts with `n` examples: the given list, each ≤ n, or 1..=n.
    pub fn ks_for(&self, n: usize) -> Result<Vec<usize>> {
        match &self.ks {
            None => Ok((1..=n).collect()),
            Some(ks) if ks.is_empty() => Err(arg_error("--k", "empty list")),
            Some(ks) => match ks.iter().find(|&&k| k == 0 || k > n) {
                Some(k) => Err(arg_error(
                    "--k",
                    format!("k = {k} is not in 1..={n} (the prompts have n = {n} examples)"),
                )),
                None => Ok(ks.clone()),
            },
        }
    }

    /// Adam steps one subject takes in all: the length of its progress bar.
    pub fn total_steps(&self) -> u64 {
        (self.steps * self.readouts.len() * self.targets.len()) as u64
    }
}

/// Probe one model: sample the prompts, compute its hidden states once, train and measure every
/// (readout, target), and run the ground-truth check where the layout allows it. `bar` advances
/// one tick per Adam step (pass `ProgressBar::hidden()` for none).
pub fn probe_model(
    subject: &Subject,
    opts: &ProbeOptions,
    bar: &indicatif::ProgressBar,
) -> Result<ModelReport> {
    opts.validate()?;
    let start = std::time::Instant::now();
    let dist = &subject.dist;
    let ks = opts.ks_for(dist.n)?;
    let need = opts.train + opts.test;
    let prompts = match &subject.prompts {
        Some(p) if p.len() < need => {
            return Err(ProbeError::Arg {
                arg: "--prompts",
                msg: format!(
                    "the file holds {} prompts; --train {} + --test {} need {need}",
                    p.len(),
                    opts.train,
                    opts.test
                ),
            })
        }
        Some(p) => p[..need].to_vec(),
        None => dist.sample_batch(need, opts.seed),
    };
    let hidden = Hidden::collect(&subject.model, &prompts, opts.train)?;
    let mut results = Vec::new();
    for &target in &opts.targets {
        let values = TargetValues::compute(
            &prompts,
            target,
            &ks,
            opts.lambda,
            opts.train,
            subject.model.device(),
        )?;
        for &readout in &opts.readouts {
            bar.set_message(format!(
                "{} {} {}",
                subject.dir.display(),
                readout.name(),
                target.name()
            ));
            let seed = probe_seed(opts.seed, target, readout);
            let probes = fit::train(&hidden, &values, &ks, readout, opts, seed, bar)?;
            let errors = probes.held_out(&hidden, &values)?;
            results.push(ProbeResult::new(
                readout,
                target,
                &ks,
                &values,
                &errors,
                probes.final_train_loss,
            ));
        }
    }
    let ground_truth = subject
        .layout
        .as_ref()
        .and_then(|layout| ground_truth::check_for_results(layout, &results));
    Ok(ModelReport::new(
        subject,
        &hidden,
        results,
        ground_truth,
        start.elapsed().as_secs_f64(),
    ))
}

/// The seed of one (readout, target)'s initialisation and batches, derived from `--seed`.
fn probe_seed(seed: u64, target: Target, readout: Readout) -> u64 {
    let tag = 1 + target as u64 * 2 + readout as u64;
    seed ^ tag.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_bad_words_name_their_flag() {
        assert_eq!(
            Target::parse_list("ridge, xty,ridge").unwrap(),
            vec![Target::Ridge, Target::Xty]
        );
        let e = Target::parse_list("xty,wols").unwrap_err().to_string();
        assert!(e.starts_with("--targets: unknown target `wols`"), "{e}");
        assert_eq!(Readout::parse_choice("both").unwrap().len(), 2);
        assert!(Readout::parse_choice("deep").is_err());
        assert_eq!(parse_ks("16,1,4,4").unwrap(), vec![1, 4, 16]);
        for bad in ["", " , ", "0", "1,x"] {
            let e = parse_ks(bad).unwrap_err().to_string();
            assert!(e.starts_with("--k: "), "{bad:?}: {e}");
        }
    }

    #[test]
    fn ks_are_checked_against_n_and_options_against_zero() {
        let mut o = ProbeOptions::default();
        assert_eq!(o.ks_for(3).unwrap(), vec![1, 2, 3]);
        o.ks = Some(vec![2, 5]);
        let e = o.ks_for(4).unwrap_err().to_string();
        assert!(e.contains("k = 5 is not in 1..=4"), "{e}");
        o.ks = None;
        o.steps = 0;
        assert!(o.validate().unwrap_err().to_string().starts_with("--steps"));
        o.steps = 1;
        o.score_lr = f64::NAN;
        assert!(o
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("--score-lr"));
    }
}
