//! `certificate.json` types (docs/FORMATS.md): written by `emit` from [`super::certify_model`]'s
//! result (plus the validation figures), read back by `icl check`.

use crate::layout::Layer;
use crate::model::config::DType;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

pub const CERTIFICATE_FORMAT: &str = "icl-certificate/1";

/// A double that may be infinite: JSON has no ∞, so ±∞ (and NaN) are written as the strings
/// `"inf"`, `"-inf"` (`"nan"`); finite values as numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExtF64(pub f64);

impl Serialize for ExtF64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let x = self.0;
        if x.is_finite() {
            s.serialize_f64(x)
        } else if x.is_nan() {
            s.serialize_str("nan")
        } else if x > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }
}

impl<'de> Deserialize<'de> for ExtF64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(f64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(x) => Ok(ExtF64(x)),
            Raw::S(s) => match s.as_str() {
                "inf" => Ok(ExtF64(f64::INFINITY)),
                "-inf" => Ok(ExtF64(f64::NEG_INFINITY)),
                "nan" => Ok(ExtF64(f64::NAN)),
                other => Err(serde::de::Error::custom(format!(
                    "expected a number, \"inf\", \"-inf\" or \"nan\", found \"{other}\""
                ))),
            },
        }
    }
}

/// The program a compiled model was built from: enough to rebuild the `ir::Program`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramRecord {
    /// File name as given (used in `file:line:col`).
    pub name: String,
    /// Full source text.
    pub source: String,
    /// `--set` overrides as given: (`name`, `value text`).
    pub overrides: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssumptionRecord {
    pub text: String,
    pub at: String,
    pub register: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The layer's function equals its operations' semantics for all inputs.
    Exact,
    /// Equal up to a stated relative error on the division's result, over the program's ranges.
    Bounded,
}

impl Verdict {
    /// The verdict as certificate.json writes it.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Exact => "exact",
            Verdict::Bounded => "bounded",
        }
    }
}

/// A value recorded among a layer's ranges: an interval, or a single bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RangeValue {
    Interval([ExtF64; 2]),
    Value(ExtF64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerCertificate {
    pub index: Layer,
    /// The operations the layer carries, e.g. `attn: mov xp <- x from prev (ridge.icl:12:1)`.
    pub ops: Vec<String>,
    pub verdict: Verdict,
    /// For `bounded`: the relative error bound on the division's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_error: Option<f64>,
    /// Ranges the bound relies on (empty for `exact`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ranges: BTreeMap<String, RangeValue>,
    /// Assumptions the bound relies on (source text).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assumptions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// `paper` target: the largest error the layer adds to a value it writes when its inputs are
    /// exact (rounding included), and the largest error bound over the values it writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_error: Option<ExtF64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_after: Option<ExtF64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndToEnd {
    /// Bound on |model output − program output| at every x̃ column (∞ when no finite bound
    /// could be derived from the ranges).
    pub bound: ExtF64,
    pub kind: String,
    /// When `bound` is ∞: the first layer (and its operations) after which the first-order
    /// propagation no longer gives a finite bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unbounded_from: Option<String>,
    /// The backward-error reading of the division bounds (absent when every layer is exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backward: Option<BackwardError>,
    /// `paper` target: the per-layer reading — the largest `local_error` of any layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_layer: Option<PerLayerError>,
}

/// The `paper` target's per-layer reading: every layer computes its operations on the values it
/// actually reads, within its `local_error`, whenever those values lie in the program's ranges
/// — finite where the forward propagation of worst cases is not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerLayerError {
    /// The largest `local_error` over the layers, and its layer.
    pub max: ExtF64,
    pub layer: Layer,
    pub statement: String,
}

/// Every layer but the LayerNorm divisions is proved equal to its operations, and each division
/// is proved to compute `num/|den|·(1+θ)` with one θ per column, |θ| ≤ its relative error, for
/// values within the analysed ranges. So, in exact arithmetic, the model computes the program
/// with every division result scaled by such a (1+θ): a backward error, which stays meaningful
/// where the forward propagation of those θ through a long program does not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackwardError {
    /// Number of divisions (bounded layers).
    pub divisions: usize,
    /// The largest relative error of any division.
    pub max_relative: f64,
    pub statement: String,
}

impl EndToEnd {
    /// One line for a summary: the forward bound, or why there is none, and the backward error.
    pub fn summary(&self) -> String {
        let forward = if self.bound.0.is_finite() {
            format!(
                "end-to-end bound {:.3e} (absolute, on the output)",
                self.bound.0
            )
        } else {
            format!(
                "no finite end-to-end bound (the worst-case propagation of the layers' errors over the \
                 program's ranges diverges from {})",
                self.unbounded_from.as_deref().unwrap_or("an unnamed layer")
            )
        };
        if let Some(p) = &self.per_layer {
            return format!(
                "{forward}; per layer: every layer computes its operations on the values it reads \
                 within {:.3e} (the largest, layer {}), for values in the program's ranges",
                p.max.0, p.layer
            );
        }
        match &self.backward {
            Some(b) => format!(
                "{forward}; backward error: the model computes the program with each of its {} \
                 division results scaled by (1+θ), |θ| ≤ {:.3e}",
                b.divisions, b.max_relative
            ),
            None => forward,
        }
    }
}

/// Measured errors of one dtype's model against the interpreter and the solver (filled by
/// `icl-compile`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationFigures {
    pub max_abs_vs_interp: ExtF64,
    /// 0 when the program is compared with no solver.
    pub max_rel_vs_solver: ExtF64,
}

/// What was measured in one dtype: the figures, or why there are none — no model in that dtype
/// can be compiled (e.g. a LayerNorm payload beyond f32's range). Written as the figures
/// themselves, or as `{"unavailable": "<why>"}` (docs/FORMATS.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measurement<T> {
    /// No model in this dtype, because of the reason given (the lowering's error).
    Unavailable(String),
    #[serde(untagged)]
    Measured(T),
}

impl<T> Measurement<T> {
    /// The measured value, if any.
    pub fn measured(&self) -> Option<&T> {
        match self {
            Measurement::Measured(t) => Some(t),
            Measurement::Unavailable(_) => None,
        }
    }

    /// The same measurement with its value mapped.
    pub fn map<U>(&self, f: impl FnOnce(&T) -> U) -> Measurement<U> {
        match self {
            Measurement::Measured(t) => Measurement::Measured(f(t)),
            Measurement::Unavailable(why) => Measurement::Unavailable(why.clone()),
        }
    }
}

/// The validation section: `prompts` seeded prompts through the f64 model and the f32 model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validation {
    pub prompts: usize,
    pub seed: u64,
    /// Every program that compiles has an f64 model.
    pub f64: ValidationFigures,
    pub f32: Measurement<ValidationFigures>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// Always `icl-certificate/1`.
    pub format: String,
    pub program: ProgramRecord,
    pub dtype: DType,
    /// Range of every input the program reads (hull over every prompt the assumptions allow).
    pub input_ranges: BTreeMap<String, [ExtF64; 2]>,
    pub assumptions: Vec<AssumptionRecord>,
    pub layers: Vec<LayerCertificate>,
    /// `exact` when every layer is, else `bounded`.
    pub verdict: Verdict,
    pub end_to_end: EndToEnd,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
}
