//! Ground truth for the probe from a compiled `ridge.icl`: its `layout.json` says in which layer
//! the moment vector b = XᵀY receives each example.
//!
//! In `ridge.icl` example j enters b through two MLP operations: `mul xy <- xi * yi` (the j-th
//! occurrence in program order) forms x_j·y_j, and `aff b <- b + xy` (the j-th occurrence) adds it
//! to b. So after the layer of the k-th `aff`, b holds Σ_{i≤k} x_i y_i at the columns 2k−1 and 2k
//! that a probe after k examples may pool (`ỹ_k` and `x̃_{k+1}`): a linear probe must decode XᵀY
//! there almost exactly. Up to and including the *input* of the layer of the k-th `mul`, x_k·y_k
//! is nowhere in the hidden state as a linear quantity (x_k and y_k are, separately), and a linear
//! read-out of a convex combination of columns cannot form their product: the linear probe must
//! fail there, by a margin set by how much of x_k·y_k the earlier examples predict. Only the
//! linear probe is held to this: an MLP read-out can form the product from the pooled x_k and
//! y_k (measured at d = 2, n = 3: normalised error 0.017 for k = 2 from hidden state 3, the
//! input of the layer that forms x_2·y_2).

use super::report::ProbeResult;
use super::{ProbeError, Readout, Result, Target};
use crate::ir::OpId;
use crate::layout::{Layer, Layout};
use serde::Serialize;

/// The statement that forms example j's product (j-th occurrence in program order).
pub const PRODUCT_OP: &str = "mul xy <- xi * yi";
/// The statement that adds example j's product to the moment vector b.
pub const ACCUMULATE_OP: &str = "aff b <- b + xy";
/// The register holding the moment vector.
pub const MOMENT_REGISTER: &str = "b";
/// Pass mark where XᵀY is computed: normalised held-out error of the linear probe below this.
pub const DECODED_BELOW: f64 = 1e-3;
/// Pass mark where it is not yet computed: normalised error of the linear probe above this.
pub const ABSENT_ABOVE: f64 = 0.05;

/// Where the layout puts example k's contribution to XᵀY, in layers (0-based) and in hidden-state
/// indices (0 = embedding output, j+1 = output of layer j).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GroundTruthLayers {
    pub k: usize,
    /// Layer whose MLP runs the k-th `mul xy <- xi * yi`.
    pub product_layer: Layer,
    /// Layer whose MLP runs the k-th `aff b <- b + xy`.
    pub accumulate_layer: Layer,
    /// Hidden state from which XᵀY after k examples must be decodable: `accumulate_layer + 1`.
    pub computed_after: usize,
    /// Last hidden state where it must not be (the input of `product_layer`): `product_layer`.
    pub absent_until: usize,
}

/// The layers, by operation index, of the MLP entries of `layout` whose text is `text`.
fn mlp_occurrences(layout: &Layout, text: &str) -> Vec<(OpId, Layer)> {
    let mut found: Vec<(OpId, Layer)> = layout
        .layers
        .iter()
        .flat_map(|l| {
            l.mlp
                .iter()
                .filter(|op| op.text == text)
                .map(move |op| (op.op, l.index))
        })
        .collect();
    found.sort();
    found.dedup_by_key(|(op, _)| *op);
    found
}

/// Whether `layout` is one this check applies to: it has register `b` and both statements.
pub fn applies(layout: &Layout) -> bool {
    layout.registers.iter().any(|r| r.name == MOMENT_REGISTER)
        && !mlp_occurrences(layout, PRODUCT_OP).is_empty()
        && !mlp_occurrences(layout, ACCUMULATE_OP).is_empty()
}

/// Where example `k` (1-based) enters XᵀY in a compiled `ridge.icl` (module doc).
pub fn ground_truth_layers(layout: &Layout, k: usize) -> Result<GroundTruthLayers> {
    let layout_error = |msg: String| ProbeError::Dir {
        path: "layout.json".into(),
        msg,
    };
    if !layout.registers.iter().any(|r| r.name == MOMENT_REGISTER) {
        return Err(layout_error(format!(
            "no register `{MOMENT_REGISTER}`: the ground-truth check needs a compiled ridge.icl"
        )));
    }
    let nth = |text: &str| -> Result<Layer> {
        let found = mlp_occurrences(layout, text);
        match k.checked_sub(1).and_then(|i| found.get(i)) {
            Some(&(_, layer)) => Ok(layer),
            None => Err(layout_error(format!(
                "asked for example {k}, but `{text}` runs {} times",
                found.len()
            ))),
        }
    };
    let (product_layer, accumulate_layer) = (nth(PRODUCT_OP)?, nth(ACCUMULATE_OP)?);
    if accumulate_layer < product_layer {
        return Err(layout_error(format!(
            "example {k}: `{ACCUMULATE_OP}` (layer {accumulate_layer}) runs before `{PRODUCT_OP}` (layer {product_layer})"
        )));
    }
    Ok(GroundTruthLayers {
        k,
        product_layer,
        accumulate_layer,
        computed_after: accumulate_layer.index() + 1,
        absent_until: product_layer.index(),
    })
}

/// The check at one k: what the layout says and what the linear XᵀY probe found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroundTruthRow {
    pub layers: GroundTruthLayers,
    /// Normalised held-out error at hidden state `computed_after`.
    pub error_computed: f64,
    /// Smallest normalised error over hidden states 0..=`absent_until`, and where.
    pub min_error_absent: f64,
    pub min_error_absent_at: usize,
    pub pass: bool,
}

/// The ground-truth check of a linear XᵀY probe on a compiled ridge.icl.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroundTruthCheck {
    pub decoded_below: f64,
    pub absent_above: f64,
    pub rows: Vec<GroundTruthRow>,
    pub passed: bool,
}

/// Compare a linear XᵀY probe result with what the layout says, at every k it probed.
pub fn check_ground_truth(layout: &Layout, result: &ProbeResult) -> Result<GroundTruthCheck> {
    if result.readout != Readout::Linear || result.target != Target::Xty {
        return Err(ProbeError::Arg {
            arg: "--targets",
            msg: "the ground-truth check reads the linear XᵀY probe".into(),
        });
    }
    let mut rows = Vec::new();
    for (i, &k) in result.ks.iter().enumerate() {
        let layers = ground_truth_layers(layout, k)?;
        let at = |h: usize| -> Result<f64> {
            result
                .layers
                .get(h)
                .map(|l| l.normalised[i])
                .ok_or_else(|| ProbeError::Dir {
                    path: "layout.json".into(),
                    msg: format!(
                        "names hidden state {h}, but the model has {} hidden states",
                        result.layers.len()
                    ),
                })
        };
        let error_computed = at(layers.computed_after)?;
        let (min_error_absent_at, min_error_absent) = (0..=layers.absent_until)
            .map(|h| at(h).map(|e| (h, e)))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, f64::INFINITY));
        rows.push(GroundTruthRow {
            layers,
            error_computed,
            min_error_absent,
            min_error_absent_at,
            pass: error_computed < DECODED_BELOW && min_error_absent > ABSENT_ABOVE,
        });
    }
    let passed = rows.iter().all(|r| r.pass);
    Ok(GroundTruthCheck {
        decoded_below: DECODED_BELOW,
        absent_above: ABSENT_ABOVE,
        rows,
        passed,
    })
}

/// The check's outcome in a model report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum GroundTruthOutcome {
    Checked(GroundTruthCheck),
    /// The layout allows the check but the run could not make it (no linear XᵀY probe, or a
    /// layout that contradicts itself).
    Skipped {
        reason: String,
    },
}

/// The ground-truth outcome for a compiled model's results; `None` where the layout is not a
/// ridge.icl-like one ([`applies`]).
pub fn check_for_results(layout: &Layout, results: &[ProbeResult]) -> Option<GroundTruthOutcome> {
    if !applies(layout) {
        return None;
    }
    let linear_xty = results
        .iter()
        .find(|r| r.readout == Readout::Linear && r.target == Target::Xty);
    Some(match linear_xty {
        None => GroundTruthOutcome::Skipped {
            reason: "needs the linear XᵀY probe (--readout linear|both, --targets with xty)".into(),
        },
        Some(r) => match check_ground_truth(layout, r) {
            Ok(c) => GroundTruthOutcome::Checked(c),
            Err(e) => GroundTruthOutcome::Skipped {
                reason: e.to_string(),
            },
        },
    })
}
