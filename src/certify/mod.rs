//! Per-layer translation validation of a compiled model, from its emitted files alone
//! (docs/ARCHITECTURE.md).
//!
//! The checker reads `config.json`, `model.safetensors`, `layout.json` and the program (rebuilt
//! from `certificate.json`'s source, so the specification comes from the program, not from the
//! compiler's intermediate data), converts every weight to an exact dyadic rational
//! ([`exact::Dy`]) and derives the function each layer part computes:
//! - attention ([`attn`]): per distinct attention matrix P (from the 0/−∞ bias pattern), the
//!   width×width matrix M_P = Σ_{heads with pattern P} W_O^h W_V^h, so that
//!   `h'[r,t] = h[r,t] + Σ_P Σ_r' M_P[r,r'] Σ_s P(t,s) h[r',s]`;
//! - bilinear MLP ([`mlp`]): per output row a quadratic polynomial in the MLP input;
//! - LayerNorm division ([`div`]): the structure of the construction, and a relative error
//!   bound from the program's ranges.
//!
//! The expected normal forms are built from the placed operations (layout.json) and the
//! program's semantics and compared coefficient by coefficient ([`coeffs`]); every row no
//! operation writes must be unchanged. A symbolic run of the schedule ([`Content`] per row,
//! [`state`]) proves that every operand row holds the version of the register the program reads
//! at that point, so the composition of the layers is the program. Errors are propagated
//! alongside ([`bound`]) for the end-to-end bound.
//!
//! The modules: [`command`] (`icl check`: read a directory, hold its certificate to the
//! proof), [`structure`] (config, layout, placements), [`weights`] (the tensors, resolved once
//! through the schema), [`io`] (embedding and read-out), [`layer`] (one layer's steps),
//! [`error`] (what a rejection names), [`report`] (`certificate.json`).

pub mod attn;
pub mod bound;
pub mod coeffs;
pub mod command;
pub mod div;
pub mod error;
pub mod exact;
pub mod io;
pub mod layer;
pub mod mlp;
pub mod paper;
pub mod report;
pub mod sound;
pub mod state;
pub mod structure;
pub mod weights;

pub use command::{
    compare_claims, load_dir, rebuild_program, run_check, run_check_with, ClaimError, ModelDir,
};
pub use error::{CertifyError, OpSite, Part};
pub use report::*;
pub use state::{Content, Ctx, RowState};

use crate::ir::{Program, RegKind};
use crate::layout::{Layer, Layout};
use crate::model::config::{DType, ModelConfig};
use crate::ranges::{Interval, Ranges};
use crate::tensors::NamedTensors;
use std::collections::BTreeMap;

/// The files of a compiled model directory, parsed.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub config: ModelConfig,
    pub tensors: NamedTensors,
    pub dtype: DType,
    pub layout: Layout,
}

/// What both targets' certification reads before the layers: the program checked, config.json
/// and layout.json's header against it, the program's ranges, every register's rows and the
/// stored tensors resolved through the schema.
struct Inputs<'a> {
    ranges: Ranges,
    start: crate::ir::RegMap<crate::layout::Row>,
    weights: crate::model::schema::Weights<weights::Stored<'a>>,
}

impl<'a> Inputs<'a> {
    fn read(p: &Program, files: &'a ModelFiles) -> Result<Inputs<'a>, CertifyError> {
        let cfg = &files.config;
        crate::ir::validate(p).map_err(|e| {
            CertifyError::new(Part::Files, format!("the program is malformed: {e}"))
        })?;
        structure::check_config(p, files)?;
        let ranges = crate::ranges::analyze(p).map_err(|e| {
            CertifyError::new(
                Part::Files,
                format!("the program's range analysis fails: {e}"),
            )
        })?;
        let start = structure::place_registers(p, &files.layout, cfg.width)?;
        let weights = weights::resolve(cfg, &files.tensors)?;
        Ok(Inputs {
            ranges,
            start,
            weights,
        })
    }
    /// The context every check reads.
    fn ctx<'b>(&'b self, p: &'b Program, files: &'b ModelFiles) -> Ctx<'b> {
        Ctx {
            p,
            cfg: &files.config,
            weights: &self.weights,
            layout: &files.layout,
            ranges: &self.ranges,
            start: self.start.clone(),
            cols: files.config.max_len,
            width: files.config.width,
        }
    }
}

/// Certify a compiled model against its program. On success, the certificate (without the
/// validation figures, which `icl-compile` measures).
pub fn certify_model(p: &Program, files: &ModelFiles) -> Result<Certificate, CertifyError> {
    if files.config.target == "paper" {
        return paper::certify_model(p, files);
    }
    let cfg = &files.config;
    let inputs = Inputs::read(p, files)?;
    let ctx = inputs.ctx(p, files);
    let ranges = &inputs.ranges;
    let placements = structure::check_placements(&ctx)?;
    let mut state = io::check_embedding(&ctx)?;
    let mut layers = Vec::with_capacity(cfg.layers.len());
    let mut unbounded_from: Option<String> = None;
    for (l, placed) in placements.iter().enumerate() {
        let cert = layer::certify_layer(&ctx, Layer(l), placed, &mut state)?;
        if unbounded_from.is_none() && state.iter().any(|r| !r.err.is_finite()) {
            unbounded_from = Some(format!("layer {l} ({})", cert.ops.join("; ")));
        }
        layers.push(cert);
    }
    let out_err = io::check_readout(&ctx, &state)?;
    Ok(certificate(
        p,
        files.dtype,
        ranges,
        layers,
        out_err,
        unbounded_from,
    ))
}

/// The certificate of a model whose every layer is certified: the program, its input ranges and
/// assumptions, the layers, and the end-to-end bound `out_err` on the output.
fn certificate(
    p: &Program,
    dtype: DType,
    ranges: &Ranges,
    layers: Vec<LayerCertificate>,
    out_err: f64,
    unbounded_from: Option<String>,
) -> Certificate {
    let verdict = if layers.iter().all(|l| l.verdict == Verdict::Exact) {
        Verdict::Exact
    } else {
        Verdict::Bounded
    };
    let backward = backward_error(&layers);
    Certificate {
        format: CERTIFICATE_FORMAT.into(),
        program: ProgramRecord {
            name: p.source.name.clone(),
            source: p.source.text.clone(),
            overrides: p.overrides.clone(),
        },
        dtype,
        input_ranges: input_ranges(p, ranges),
        assumptions: p
            .assumptions
            .iter()
            .map(|a| AssumptionRecord {
                text: a.text.clone(),
                at: p.location(a.span).to_string(),
                register: p.reg(a.reg).name.clone(),
            })
            .collect(),
        layers,
        verdict,
        end_to_end: EndToEnd {
            bound: ExtF64(out_err),
            kind: "absolute, on the output at every x̃ column, in exact arithmetic over the \
                   program's input ranges and assumptions (floating-point rounding of the \
                   forward pass not included)"
                .into(),
            unbounded_from: if out_err.is_finite() {
                None
            } else {
                unbounded_from
            },
            backward,
            per_layer: None,
        },
        validation: None,
    }
}

/// The backward reading of the division bounds (`None` when every layer is exact).
fn backward_error(layers: &[LayerCertificate]) -> Option<BackwardError> {
    let divisions: Vec<f64> = layers.iter().filter_map(|l| l.relative_error).collect();
    (!divisions.is_empty()).then(|| BackwardError {
        divisions: divisions.len(),
        max_relative: divisions.iter().copied().fold(0.0, f64::max),
        statement: "in exact arithmetic, on every column whose values before each division lie \
                    within the analysed ranges, the model computes the program with the result \
                    of every division scaled by (1+θ), one θ per division and column, |θ| at most \
                    that layer's relative_error"
            .into(),
    })
}

/// The range of every input register (hull over its elements).
fn input_ranges(p: &Program, ranges: &Ranges) -> BTreeMap<String, [ExtF64; 2]> {
    let mut out = BTreeMap::new();
    for id in p.reg_ids() {
        let r = p.reg(id);
        if let RegKind::Input(_) = r.kind {
            let h = ranges
                .reg_hull(id)
                .into_iter()
                .reduce(|a, b| a.hull(b))
                .unwrap_or(Interval::ZERO);
            out.insert(r.name.clone(), [ExtF64(h.lo), ExtF64(h.hi)]);
        }
    }
    out
}
