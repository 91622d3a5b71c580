//! The typed results of a probe run (what `icl probe --json` prints) and their tables.

use super::data::{Hidden, TargetValues};
use super::ground_truth::{GroundTruthCheck, GroundTruthOutcome};
use super::subject::{Role, Subject};
use super::{ProbeOptions, Readout, Target};
use crate::model::config::ModelKind;
use serde::Serialize;
use std::fmt::Write;

/// Held-out errors of the probes at one hidden state (0 = embedding output, l = after layer l).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerErrors {
    pub hidden: usize,
    /// Mean squared error per coordinate, raw units, per probed k.
    pub mse: Vec<f64>,
    /// `mse` over the held-out variance of the target, per probed k.
    pub normalised: Vec<f64>,
    pub mean_mse: f64,
    pub mean_normalised: f64,
}

/// One (readout, target): errors at every hidden state and probed k.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeResult {
    pub readout: Readout,
    pub target: Target,
    pub ks: Vec<usize>,
    /// Held-out variance of the target per k (mean over coordinates): the normaliser.
    pub target_variance: Vec<f64>,
    pub layers: Vec<LayerErrors>,
    /// Training loss per probe at the end (standardised units, summed over coordinates).
    pub final_train_loss: f64,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

impl ProbeResult {
    /// From the held-out errors in standardised units, per probe p = h·K + i and coordinate.
    pub fn new(
        readout: Readout,
        target: Target,
        ks: &[usize],
        values: &TargetValues,
        standardised_mse: &[Vec<f64>],
        final_train_loss: f64,
    ) -> ProbeResult {
        let layers = standardised_mse
            .chunks(ks.len())
            .enumerate()
            .map(|(hidden, per_k)| {
                let mse: Vec<f64> = per_k
                    .iter()
                    .zip(&values.scale)
                    .map(|(e, s)| {
                        mean(&e.iter().zip(s).map(|(e, s)| e * s * s).collect::<Vec<_>>())
                    })
                    .collect();
                let normalised: Vec<f64> = mse
                    .iter()
                    .zip(&values.test_variance)
                    .map(|(m, v)| m / v)
                    .collect();
                LayerErrors {
                    hidden,
                    mean_mse: mean(&mse),
                    mean_normalised: mean(&normalised),
                    mse,
                    normalised,
                }
            })
            .collect();
        ProbeResult {
            readout,
            target,
            ks: ks.to_vec(),
            target_variance: values.test_variance.clone(),
            layers,
            final_train_loss,
        }
    }
}

/// Everything measured on one model directory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelReport {
    pub dir: String,
    pub role: Role,
    pub kind: ModelKind,
    pub layers: usize,
    pub width: usize,
    /// The prompt distribution (`--dist` syntax) and where it came from.
    pub distribution: String,
    pub distribution_source: String,
    pub train_prompts: usize,
    pub test_prompts: usize,
    /// Rows constant on the training prompts, per hidden state (read as 0 by the probes).
    pub constant_rows: Vec<usize>,
    pub results: Vec<ProbeResult>,
    /// The ground-truth check, for a compiled ridge.icl-like layout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ground_truth: Option<GroundTruthOutcome>,
    /// Wall time of the probing (printed in the table, not serialized: JSON output stays
    /// byte-identical for the same seed).
    #[serde(skip)]
    pub seconds: f64,
}

/// A whole `icl probe` run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeReport {
    pub options: ProbeOptions,
    pub models: Vec<ModelReport>,
}

impl ModelReport {
    pub fn new(
        subject: &Subject,
        hidden: &Hidden,
        results: Vec<ProbeResult>,
        ground_truth: Option<GroundTruthOutcome>,
        seconds: f64,
    ) -> ModelReport {
        let c = &subject.model.config;
        ModelReport {
            dir: subject.dir.display().to_string(),
            role: subject.role,
            kind: c.kind,
            layers: c.layers.len(),
            width: c.width,
            distribution: subject.dist.spec(),
            distribution_source: subject.dist_source.clone(),
            train_prompts: hidden.n_train,
            test_prompts: hidden.n_test,
            constant_rows: hidden.constant_rows.clone(),
            results,
            ground_truth,
            seconds,
        }
    }

    /// The aligned table: header lines, then per (readout, target) the normalised held-out error
    /// at every hidden state (mean over the probed k), then the ground-truth check if any.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let kind = match self.kind {
            ModelKind::Compiled => "compiled",
            ModelKind::Trained => "trained",
        };
        let role = match self.role {
            Role::Model => "",
            Role::Control => ", control",
        };
        let _ = writeln!(
            s,
            "{} ({kind}{role}, {} layers, width {}): prompts {} ({}); {} train / {} held out; {:.1} s",
            self.dir,
            self.layers,
            self.width,
            self.distribution,
            self.distribution_source,
            self.train_prompts,
            self.test_prompts,
            self.seconds
        );
        if let Some(r) = self.results.first() {
            let _ = writeln!(
                s,
                "normalised held-out error (MSE / variance of the target), mean over k in {}; h0 = embedding, hl = after layer l:",
                ks_text(&r.ks)
            );
        }
        s.push_str(&error_table(&self.results));
        match &self.ground_truth {
            Some(GroundTruthOutcome::Checked(c)) => s.push_str(&ground_truth_table(c)),
            Some(GroundTruthOutcome::Skipped { reason }) => {
                let _ = writeln!(s, "ground truth (layout.json): not checked: {reason}");
            }
            None => {}
        }
        s
    }
}

/// `1..=16` for a full range, else the list.
fn ks_text(ks: &[usize]) -> String {
    let full = ks.iter().enumerate().all(|(i, &k)| k == i + 1);
    match (full, ks.last()) {
        (true, Some(last)) if ks.len() > 2 => format!("1..={last}"),
        _ => ks
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// An error for a table cell: fixed notation where it reads well, scientific when small.
pub fn fmt_error(e: f64) -> String {
    if e != 0.0 && e.abs() < 0.01 {
        format!("{e:.1e}")
    } else {
        format!("{e:.3}")
    }
}

fn error_table(results: &[ProbeResult]) -> String {
    let mut s = String::new();
    let Some(first) = results.first() else {
        return s;
    };
    let _ = write!(s, "{:<8} {:<6}", "readout", "target");
    for l in &first.layers {
        let _ = write!(s, " {:>8}", format!("h{}", l.hidden));
    }
    s.push('\n');
    for r in results {
        let _ = write!(s, "{:<8} {:<6}", r.readout.name(), r.target.name());
        for l in &r.layers {
            let _ = write!(s, " {:>8}", fmt_error(l.mean_normalised));
        }
        s.push('\n');
    }
    s
}

fn ground_truth_table(c: &GroundTruthCheck) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ground truth (layout.json, linear XᵀY probe): {} — decoded (< {}) after the layer of the k-th `aff b <- b + xy`, absent (> {}) up to the input of the layer of the k-th `mul xy <- xi * yi`",
        if c.passed { "PASS" } else { "FAIL" },
        c.decoded_below,
        c.absent_above
    );
    let _ = writeln!(
        s,
        "{:>3} {:>9} {:>9} {:>12} {:>18} {:>13} {:>12}  verdict",
        "k", "mul layer", "aff layer", "absent in", "min error there", "computed at", "error there"
    );
    for r in &c.rows {
        let g = &r.layers;
        let _ = writeln!(
            s,
            "{:>3} {:>9} {:>9} {:>12} {:>18} {:>13} {:>12}  {}",
            g.k,
            g.product_layer.index(),
            g.accumulate_layer.index(),
            format!("h0..=h{}", g.absent_until),
            format!(
                "{} (h{})",
                fmt_error(r.min_error_absent),
                r.min_error_absent_at
            ),
            format!("h{}", g.computed_after),
            fmt_error(r.error_computed),
            if r.pass { "pass" } else { "FAIL" }
        );
    }
    s
}
