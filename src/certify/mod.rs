//! Per-layer translation validation of a compiled model, from its emitted files alone
//! (DESIGN §4.2).
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
//! program's semantics and compared coefficient by coefficient; every row no operation writes
//! must be unchanged. A symbolic run of the schedule ([`Content`] per row) proves that every
//! operand row holds the version of the register the program reads at that point, so the
//! composition of the layers is the program. Errors are propagated alongside ([`bound`]) for
//! the end-to-end bound.

pub mod attn;
pub mod bound;
pub mod div;
pub mod exact;
pub mod mlp;
pub mod report;

pub use report::*;

use crate::ir::{operand_index, Builtin, OpKind, Program, RegId, RegKind, Shape};
use crate::layout::{Layout, OpPart, PlacedOp};
use crate::model::config::{DType, ModelConfig, ModelKind, MODEL_FORMAT};
use crate::ranges::{Interval, Ranges};
use crate::tensors::{NamedTensors, RawTensor};
use exact::Dy;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Which part of the model an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Files,
    Layout,
    Embedding,
    Attention,
    Mlp,
    Readout,
    /// A whole layer (e.g. a part with no exact normal form).
    Layer,
}

/// A rejection: which layer and part, which operation, what differs.
#[derive(Debug, Clone, PartialEq)]
pub struct CertifyError {
    pub layer: Option<usize>,
    pub part: Part,
    /// Index of the operation in the unrolled program, when one is concerned.
    pub op: Option<usize>,
    /// `text, file:line:col` of that operation.
    pub op_label: Option<String>,
    pub message: String,
}

impl std::fmt::Display for CertifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.layer, self.part) {
            (Some(l), Part::Attention) => write!(f, "layer {l} attention: ")?,
            (Some(l), Part::Mlp) => write!(f, "layer {l} MLP: ")?,
            (Some(l), _) => write!(f, "layer {l}: ")?,
            (None, Part::Embedding) => write!(f, "embedding: ")?,
            (None, Part::Readout) => write!(f, "readout: ")?,
            (None, Part::Layout) => write!(f, "layout.json: ")?,
            (None, _) => {}
        }
        write!(f, "{}", self.message)?;
        if let Some(op) = &self.op_label {
            write!(f, " ({op})")?;
        }
        Ok(())
    }
}

impl std::error::Error for CertifyError {}

fn err(part: Part, message: impl Into<String>) -> CertifyError {
    CertifyError {
        layer: None,
        part,
        op: None,
        op_label: None,
        message: message.into(),
    }
}

/// The files of a compiled model directory, parsed.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub config: ModelConfig,
    pub tensors: NamedTensors,
    pub dtype: DType,
    pub layout: Layout,
}

/// What a model directory holds, parsed (the certificate is the stored claim, re-checked).
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub files: ModelFiles,
    pub certificate: Certificate,
}

/// Read `config.json`, `model.safetensors`, `layout.json` and `certificate.json` of a compiled
/// model directory.
pub fn load_dir(dir: &Path) -> anyhow::Result<ModelDir> {
    use anyhow::Context;
    let read_json = |name: &str| -> anyhow::Result<String> {
        let p = dir.join(name);
        std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()))
    };
    let config: ModelConfig = serde_json::from_str(&read_json("config.json")?)
        .with_context(|| format!("{}: invalid config", dir.join("config.json").display()))?;
    if config.kind != ModelKind::Compiled {
        anyhow::bail!(
            "{}: a trained model has no program to check against (kind \"trained\"); `icl check` \
             certifies compiled models",
            dir.display()
        );
    }
    let layout: Layout = serde_json::from_str(&read_json("layout.json")?)
        .with_context(|| format!("{}: invalid layout", dir.join("layout.json").display()))?;
    let certificate: Certificate = serde_json::from_str(&read_json("certificate.json")?)
        .with_context(|| {
            format!(
                "{}: invalid certificate",
                dir.join("certificate.json").display()
            )
        })?;
    let (tensors, dtype) = crate::tensors::load(&dir.join("model.safetensors"))?;
    Ok(ModelDir {
        files: ModelFiles {
            config,
            tensors,
            dtype,
            layout,
        },
        certificate,
    })
}

/// Rebuild the program a model directory was compiled from (its `certificate.json` source and
/// overrides), through the front end and the static checker.
pub fn rebuild_program(rec: &ProgramRecord) -> anyhow::Result<Program> {
    crate::front::load_program(&rec.name, &rec.source, &rec.overrides).map_err(|d| {
        anyhow::anyhow!(
            "certificate.json: the recorded program does not check:\n{}",
            d.render()
        )
    })
}

/// `icl check DIR`: re-certify a compiled model directory from its files. Errors name the layer
/// and the operation.
pub fn run_check(dir: &Path) -> anyhow::Result<Certificate> {
    run_check_with(dir, rebuild_program)
}

/// [`run_check`] with the program rebuilt by `rebuild` (tests inject hand-built programs).
pub fn run_check_with(
    dir: &Path,
    rebuild: impl Fn(&ProgramRecord) -> anyhow::Result<Program>,
) -> anyhow::Result<Certificate> {
    let md = load_dir(dir)?;
    let program = rebuild(&md.certificate.program)?;
    let cert = certify_model(&program, &md.files)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    compare_claims(&md.certificate, &cert)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    Ok(cert)
}

/// The stored certificate must not claim more than what is proved: same program, same layers,
/// same verdicts, and no stated bound below the recomputed one.
pub fn compare_claims(stored: &Certificate, proved: &Certificate) -> Result<(), String> {
    if stored.format != CERTIFICATE_FORMAT {
        return Err(format!(
            "certificate.json: format `{}`, expected `{CERTIFICATE_FORMAT}`",
            stored.format
        ));
    }
    if stored.layers.len() != proved.layers.len() {
        return Err(format!(
            "certificate.json lists {} layers, the model has {}",
            stored.layers.len(),
            proved.layers.len()
        ));
    }
    for (s, p) in stored.layers.iter().zip(&proved.layers) {
        if s.index != p.index || s.verdict != p.verdict {
            return Err(format!(
                "certificate.json: layer {} claims {:?}, the check proves {:?} for layer {}",
                s.index, s.verdict, p.verdict, p.index
            ));
        }
        if let (Some(a), Some(b)) = (s.relative_error, p.relative_error) {
            if a < b {
                return Err(format!(
                    "certificate.json: layer {} claims relative error {a:e}, the check proves \
                     only {b:e}",
                    s.index
                ));
            }
        }
    }
    if stored.verdict != proved.verdict {
        return Err(format!(
            "certificate.json: verdict {:?}, the check proves {:?}",
            stored.verdict, proved.verdict
        ));
    }
    let max_rel = |e: &EndToEnd| e.backward.as_ref().map(|b| (b.divisions, b.max_relative));
    match (max_rel(&stored.end_to_end), max_rel(&proved.end_to_end)) {
        (Some((sn, sr)), Some((pn, pr))) if sn == pn && sr >= pr => {}
        // No record claims nothing (certificates written before the record existed).
        (None, _) => {}
        (s, p) => {
            return Err(format!(
                "certificate.json: backward error (divisions, max relative) {s:?}, the check \
                 proves {p:?}"
            ))
        }
    }
    if stored.end_to_end.bound.0 < proved.end_to_end.bound.0 {
        return Err(format!(
            "certificate.json: end-to-end bound {:e}, the check proves only {:e}",
            stored.end_to_end.bound.0, proved.end_to_end.bound.0
        ));
    }
    Ok(())
}

/// What a hidden row holds at some point of the schedule (symbolically).
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Exactly 0 in every column.
    Zero,
    /// A built-in input the program does not read (its element).
    Builtin(Builtin, usize),
    /// Element `elem` of register `reg` as written by op `ver` (`None`: the embedding's input).
    Val {
        reg: RegId,
        elem: usize,
        ver: Option<usize>,
    },
    /// Cleared (0) by the attention half of the division `op`, to be written by its MLP half.
    Cleared(usize),
    /// A payload row of the division `op` (±P·den).
    Payload(usize),
}

/// A row's content and a bound on |model value − program value| there (end-to-end analysis).
#[derive(Debug, Clone, PartialEq)]
pub struct RowState {
    pub content: Content,
    pub err: f64,
}

/// Everything the per-part checks need.
pub struct Ctx<'a> {
    pub p: &'a Program,
    pub cfg: &'a ModelConfig,
    pub tensors: &'a NamedTensors,
    pub layout: &'a Layout,
    pub ranges: &'a Ranges,
    /// First row of every register.
    pub start: Vec<usize>,
    /// Columns certified: every query column the position table and bias cover.
    pub cols: usize,
    pub width: usize,
}

impl<'a> Ctx<'a> {
    /// Row of element `elem` (row-major storage index) of register `reg`.
    pub fn row(&self, reg: RegId, elem: usize) -> usize {
        self.start[reg] + elem
    }
    /// Row of element (i, j) of an operand as seen after its transposition.
    pub fn operand_row(&self, reg: RegId, transposed: bool, i: usize, j: usize) -> usize {
        self.row(reg, operand_index(self.p.reg(reg).shape, transposed, i, j))
    }
    pub fn elem_name(&self, reg: RegId, elem: usize) -> String {
        let r = self.p.reg(reg);
        match (r.shape.rows, r.shape.cols) {
            (1, 1) => r.name.clone(),
            (_, 1) => format!("{}[{elem}]", r.name),
            (_, c) => format!("{}[{},{}]", r.name, elem / c, elem % c),
        }
    }
    /// A human name for row `r` holding `c`.
    pub fn content_name(&self, r: usize, c: &Content) -> String {
        match c {
            Content::Zero if r == self.layout.zero_row => format!("row {r} (zero row)"),
            Content::Zero => format!("row {r} (unused, 0)"),
            Content::Builtin(b, e) => {
                if b.shape(self.p.d).is_scalar() {
                    format!("row {r} ({})", b.name())
                } else {
                    format!("row {r} ({}[{e}])", b.name())
                }
            }
            Content::Val { reg, elem, .. } => format!("row {r} ({})", self.elem_name(*reg, *elem)),
            Content::Cleared(_) => format!("row {r} (div destination, cleared)"),
            Content::Payload(_) => format!("row {r} (division payload)"),
        }
    }
    pub fn op_label(&self, k: usize) -> String {
        let op = &self.p.ops[k];
        format!("{}, {}", op.text, self.p.location(op.span))
    }
    /// An error about op `k` in layer `l`.
    pub fn op_err(&self, l: usize, part: Part, k: Option<usize>, msg: String) -> CertifyError {
        CertifyError {
            layer: Some(l),
            part,
            op: k,
            op_label: k.map(|k| self.op_label(k)),
            message: msg,
        }
    }
    /// Tensor `name`, checked to have `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<&'a RawTensor, CertifyError> {
        let t = self.tensors.get(name).ok_or_else(|| {
            err(
                Part::Files,
                format!("model.safetensors: missing tensor `{name}`"),
            )
        })?;
        if t.shape != shape || t.data.len() != shape.iter().product::<usize>() {
            return Err(err(
                Part::Files,
                format!(
                    "model.safetensors: tensor `{name}` has shape {:?}, expected {shape:?}",
                    t.shape
                ),
            ));
        }
        Ok(t)
    }
    /// Range (hull over columns) of the value `content` stands for, in the program's semantics.
    pub fn content_range(&self, c: &Content) -> Interval {
        match c {
            Content::Zero | Content::Cleared(_) => Interval::ZERO,
            Content::Builtin(b, _) => builtin_range(self.p, *b),
            Content::Val { reg, elem, ver } => {
                // The value written by op `ver` is the state just before op ver+1.
                let k = ver.map(|v| v + 1).unwrap_or(0);
                self.ranges
                    .before_op(k, *reg)
                    .and_then(|v| v.get(*elem).copied())
                    .unwrap_or(Interval::EVERYTHING)
            }
            // Payload rows are not bounded by the program (±P·den); callers exclude them.
            Content::Payload(_) => Interval::EVERYTHING,
        }
    }
}

/// Range of a built-in input the program does not read (so has no assumption on it).
fn builtin_range(p: &Program, b: Builtin) -> Interval {
    match b {
        Builtin::Y | Builtin::X => Interval::EVERYTHING,
        Builtin::One => Interval::point(1.0),
        Builtin::IsX | Builtin::IsY => Interval::new(0.0, 1.0),
        Builtin::Count => Interval::new(0.0, p.n as f64),
    }
}

/// The exact value of a built-in at column t (element `elem`) for the position-dependent ones.
fn builtin_position_value(b: Builtin, t: usize) -> Option<f64> {
    match b {
        Builtin::Y | Builtin::X => None,
        other => Some(other.value(t, &[], 0)),
    }
}

/// Convert a weight tensor to sparse exact rows: `rows[i]` = non-zero (column, value) pairs.
pub fn sparse_rows(name: &str, t: &RawTensor) -> Result<Vec<Vec<(usize, Dy)>>, CertifyError> {
    let (r, c) = (t.shape[0], t.shape.get(1).copied().unwrap_or(1));
    let mut out = vec![Vec::new(); r];
    for (i, row) in out.iter_mut().enumerate() {
        for j in 0..c {
            let v = t.data[i * c + j];
            if v != 0.0 {
                let d = Dy::from_f64(v).ok_or_else(|| {
                    err(
                        Part::Files,
                        format!("model.safetensors: `{name}`[{i},{j}] is {v}, not a finite number"),
                    )
                })?;
                row.push((j, d));
            }
        }
    }
    Ok(out)
}

/// Exact vector of a 1-D tensor.
pub fn exact_vec(name: &str, t: &RawTensor) -> Result<Vec<Dy>, CertifyError> {
    t.data
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            Dy::from_f64(v).ok_or_else(|| {
                err(
                    Part::Files,
                    format!("model.safetensors: `{name}`[{i}] is {v}, not a finite number"),
                )
            })
        })
        .collect()
}

/// Certify a compiled model against its program. On success, the certificate (without the
/// validation figures, which `icl-compile` measures).
pub fn certify_model(p: &Program, files: &ModelFiles) -> Result<Certificate, CertifyError> {
    let cfg = &files.config;
    let lay = &files.layout;
    check_config(p, files)?;
    let ranges = crate::ranges::analyze(p).map_err(|e| {
        err(
            Part::Files,
            format!("the program's range analysis fails: {e}"),
        )
    })?;
    let start = place_registers(p, lay, cfg.width)?;
    let ctx = Ctx {
        p,
        cfg,
        tensors: &files.tensors,
        layout: lay,
        ranges: &ranges,
        start,
        cols: cfg.max_len,
        width: cfg.width,
    };
    check_tensor_names(&ctx)?;
    let placements = check_placements(&ctx)?;
    let mut state = check_embedding(&ctx)?;

    let mut layers = Vec::with_capacity(cfg.layers.len());
    let mut unbounded_from: Option<String> = None;
    for (l, lc) in cfg.layers.iter().enumerate() {
        let (attn_ops, mlp_ops) = &placements[l];
        if lc.attn_norm.is_some() {
            return Err(ctx.op_err(
                l,
                Part::Layer,
                None,
                "LayerNorm on the attention input — no exact normal form (the exact target \
                 never emits one)"
                    .into(),
            ));
        }
        let mut ops_text = Vec::new();
        for po in attn_ops {
            ops_text.push(format!("attn: {}", ctx.op_label(po.op)));
        }
        for po in mlp_ops {
            ops_text.push(format!("mlp: {}", ctx.op_label(po.op)));
        }
        // Attention step.
        let prep = match &lc.attn {
            Some(ac) => Some(attn::check_attention(&ctx, l, ac, attn_ops, &mut state)?),
            None => {
                if let Some(po) = attn_ops.first() {
                    return Err(ctx.op_err(
                        l,
                        Part::Attention,
                        Some(po.op),
                        "layout.json places this operation in the layer's attention, but the \
                         layer has no attention"
                            .into(),
                    ));
                }
                None
            }
        };
        // MLP step.
        let mut cert = LayerCertificate {
            index: l,
            ops: ops_text,
            verdict: Verdict::Exact,
            relative_error: None,
            ranges: BTreeMap::new(),
            assumptions: Vec::new(),
            note: None,
        };
        match &lc.mlp {
            Some(mc) => {
                let div = mlp::check_mlp(&ctx, l, mc, lc.norm.as_ref(), mlp_ops, &mut state)?;
                if let Some(dv) = div {
                    let prep = prep.flatten().ok_or_else(|| {
                        ctx.op_err(
                            l,
                            Part::Mlp,
                            Some(dv.op),
                            "the division's MLP half has no attention half (payload) in this \
                             layer"
                                .into(),
                        )
                    })?;
                    div::certify_division(&ctx, l, &prep, &dv, &mut state, &mut cert)?;
                }
            }
            None => {
                if let Some(po) = mlp_ops.first() {
                    return Err(ctx.op_err(
                        l,
                        Part::Mlp,
                        Some(po.op),
                        "layout.json places this operation in the layer's MLP, but the layer \
                         has no MLP"
                            .into(),
                    ));
                }
                if lc.norm.is_some() {
                    return Err(ctx.op_err(
                        l,
                        Part::Layer,
                        None,
                        "a LayerNorm with no MLP after it".into(),
                    ));
                }
            }
        }
        if unbounded_from.is_none() && state.iter().any(|r| !r.err.is_finite()) {
            unbounded_from = Some(format!("layer {l} ({})", cert.ops.join("; ")));
        }
        layers.push(cert);
    }
    let out_err = check_readout(&ctx, &state)?;
    let divisions: Vec<f64> = layers.iter().filter_map(|l| l.relative_error).collect();
    let backward = (!divisions.is_empty()).then(|| BackwardError {
        divisions: divisions.len(),
        max_relative: divisions.iter().copied().fold(0.0, f64::max),
        statement: "in exact arithmetic, on every column whose values before each division lie \
                    within the analysed ranges, the model computes the program with the result \
                    of every division scaled by (1+θ), one θ per division and column, |θ| at most \
                    that layer's relative_error"
            .into(),
    });

    let verdict = if layers.iter().all(|l| l.verdict == Verdict::Exact) {
        Verdict::Exact
    } else {
        Verdict::Bounded
    };
    let mut input_ranges = BTreeMap::new();
    for (id, r) in p.registers.iter().enumerate() {
        if let RegKind::Input(_) = r.kind {
            let h = ranges
                .reg_hull(id)
                .into_iter()
                .reduce(|a, b| a.hull(b))
                .unwrap_or(Interval::ZERO);
            input_ranges.insert(r.name.clone(), [ExtF64(h.lo), ExtF64(h.hi)]);
        }
    }
    Ok(Certificate {
        format: CERTIFICATE_FORMAT.into(),
        program: ProgramRecord {
            name: p.source.name.clone(),
            source: p.source.text.clone(),
            overrides: p.overrides.clone(),
        },
        dtype: files.dtype,
        input_ranges,
        assumptions: p
            .assumptions
            .iter()
            .map(|a| AssumptionRecord {
                text: a.text.clone(),
                at: p.location(a.span),
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
        },
        validation: None,
    })
}

fn check_config(p: &Program, files: &ModelFiles) -> Result<(), CertifyError> {
    let cfg = &files.config;
    let lay = &files.layout;
    let bad = |m: String| Err(err(Part::Files, m));
    if cfg.format != MODEL_FORMAT {
        return bad(format!(
            "config.json: format `{}`, expected `{MODEL_FORMAT}`",
            cfg.format
        ));
    }
    if cfg.kind != ModelKind::Compiled {
        return bad("config.json: not a compiled model".into());
    }
    if cfg.dtype != files.dtype {
        return bad(format!(
            "config.json says dtype {}, model.safetensors holds {}",
            cfg.dtype.name(),
            files.dtype.name()
        ));
    }
    if cfg.d != p.d || cfg.n != p.n {
        return bad(format!(
            "config.json: d = {}, n = {}; the program has d = {}, n = {}",
            cfg.d, cfg.n, p.d, p.n
        ));
    }
    if cfg.max_len < p.columns() {
        return bad(format!(
            "config.json: max_len {} is below the program's {} columns",
            cfg.max_len,
            p.columns()
        ));
    }
    if cfg.final_norm.is_some() {
        return bad("config.json: a final LayerNorm — no exact normal form".into());
    }
    if lay.format != crate::layout::LAYOUT_FORMAT {
        return Err(err(
            Part::Layout,
            format!(
                "format `{}`, expected `{}`",
                lay.format,
                crate::layout::LAYOUT_FORMAT
            ),
        ));
    }
    if lay.width != cfg.width {
        return Err(err(
            Part::Layout,
            format!("width {}, config.json has {}", lay.width, cfg.width),
        ));
    }
    if lay.layers.len() != cfg.layers.len() {
        return Err(err(
            Part::Layout,
            format!(
                "{} layers, config.json has {}",
                lay.layers.len(),
                cfg.layers.len()
            ),
        ));
    }
    if lay.rows.len() != cfg.width || lay.rows.iter().enumerate().any(|(i, r)| r.row != i) {
        return Err(err(
            Part::Layout,
            "`rows` must name every row of the hidden state, in order".to_string(),
        ));
    }
    if lay.zero_row >= cfg.width {
        return Err(err(
            Part::Layout,
            format!(
                "zero_row {} is outside the width {}",
                lay.zero_row, cfg.width
            ),
        ));
    }
    if let Some(pl) = lay.div_payload {
        if pl[0] >= cfg.width || pl[1] >= cfg.width || pl[0] == pl[1] {
            return Err(err(
                Part::Layout,
                format!("div_payload {pl:?} must be two distinct rows below the width"),
            ));
        }
    }
    Ok(())
}

/// First row of every register, from layout.json, checked against the program: shapes, rows
/// inside the width, pinned rows, inputs at their built-in rows; and no register overlaps the
/// zero row or the payload rows.
fn place_registers(p: &Program, lay: &Layout, width: usize) -> Result<Vec<usize>, CertifyError> {
    let mut start = vec![usize::MAX; p.registers.len()];
    let mut reserved: BTreeSet<usize> = BTreeSet::new();
    reserved.insert(lay.zero_row);
    if let Some(pl) = lay.div_payload {
        reserved.extend(pl);
    }
    for name in lay.inputs.keys() {
        if Builtin::from_name(name).is_none() {
            return Err(err(
                Part::Layout,
                format!("inputs: `{name}` is not a built-in input"),
            ));
        }
    }
    for (id, r) in p.registers.iter().enumerate() {
        let placed = lay
            .registers
            .iter()
            .filter(|x| x.name == r.name)
            .collect::<Vec<_>>();
        if placed.len() > 1 {
            return Err(err(
                Part::Layout,
                format!("register `{}` is placed {} times", r.name, placed.len()),
            ));
        }
        let rows = match (placed.first(), &r.kind) {
            (Some(pl), _) => {
                if pl.shape != [r.shape.rows, r.shape.cols] {
                    return Err(err(
                        Part::Layout,
                        format!(
                            "register `{}` has shape {:?}, the program declares {}",
                            r.name, pl.shape, r.shape
                        ),
                    ));
                }
                pl.rows
            }
            (None, RegKind::Input(b)) => *lay.inputs.get(b.name()).ok_or_else(|| {
                err(
                    Part::Layout,
                    format!("the program reads input `{}`, which has no rows", b.name()),
                )
            })?,
            (None, RegKind::Work) => {
                return Err(err(
                    Part::Layout,
                    format!("register `{}` has no rows", r.name),
                ))
            }
        };
        if rows[1] < rows[0] || rows[1] - rows[0] != r.shape.size() || rows[1] > width {
            return Err(err(
                Part::Layout,
                format!(
                    "register `{}` ({}) is placed at rows {rows:?}: expected {} rows inside the \
                     width {width}",
                    r.name,
                    r.shape,
                    r.shape.size()
                ),
            ));
        }
        if let RegKind::Input(b) = r.kind {
            if lay.inputs.get(b.name()) != Some(&rows) {
                return Err(err(
                    Part::Layout,
                    format!(
                        "input `{}` is placed at rows {rows:?}, but `inputs` says {:?}",
                        b.name(),
                        lay.inputs.get(b.name())
                    ),
                ));
            }
        }
        if let Some(pin) = r.pinned {
            if rows[0] != pin {
                return Err(err(
                    Part::Layout,
                    format!(
                        "register `{}` is pinned at row {pin}, placed at {rows:?}",
                        r.name
                    ),
                ));
            }
        }
        if let Some(bad) = (rows[0]..rows[1]).find(|x| reserved.contains(x)) {
            return Err(err(
                Part::Layout,
                format!(
                    "register `{}` occupies row {bad}, the zero row or a division payload row",
                    r.name
                ),
            ));
        }
        start[id] = rows[0];
    }
    for (name, rows) in &lay.inputs {
        let b = Builtin::from_name(name).expect("checked above");
        if rows[1] < rows[0] || rows[1] - rows[0] != b.shape(p.d).size() || rows[1] > width {
            return Err(err(
                Part::Layout,
                format!(
                    "input `{name}` at rows {rows:?}: expected {} rows inside the width",
                    b.shape(p.d).size()
                ),
            ));
        }
        if let Some(bad) = (rows[0]..rows[1]).find(|x| reserved.contains(x)) {
            return Err(err(
                Part::Layout,
                format!("input `{name}` occupies row {bad}, the zero row or a payload row"),
            ));
        }
    }
    Ok(start)
}

/// The tensor set matches the config exactly (no tensor the normal forms would not read).
fn check_tensor_names(ctx: &Ctx) -> Result<(), CertifyError> {
    let cfg = ctx.cfg;
    let mut want: BTreeSet<String> = ["embed.weight", "embed.bias", "pos.weight"]
        .iter()
        .chain(["readout.weight", "readout.bias"].iter())
        .map(|s| s.to_string())
        .collect();
    for (l, lc) in cfg.layers.iter().enumerate() {
        let pre = format!("layers.{l}");
        if lc.attn_norm.is_some() {
            want.insert(format!("{pre}.attn_norm.weight"));
            want.insert(format!("{pre}.attn_norm.bias"));
        }
        if let Some(a) = &lc.attn {
            for part in ["v", "o"] {
                want.insert(format!("{pre}.attn.{part}.weight"));
                want.insert(format!("{pre}.attn.{part}.bias"));
            }
            if a.qk {
                for part in ["q", "k"] {
                    want.insert(format!("{pre}.attn.{part}.weight"));
                    want.insert(format!("{pre}.attn.{part}.bias"));
                }
            }
            if a.bias {
                want.insert(format!("{pre}.attn.bias"));
            }
            if let Some(crate::model::config::MomentumConfig::Learned { .. }) = a.momentum {
                want.insert(format!("{pre}.attn.momentum_logit"));
            }
        }
        if lc.norm.is_some() {
            want.insert(format!("{pre}.norm.weight"));
            want.insert(format!("{pre}.norm.bias"));
        }
        if let Some(m) = &lc.mlp {
            for part in ["up", "down"] {
                want.insert(format!("{pre}.mlp.{part}.weight"));
                want.insert(format!("{pre}.mlp.{part}.bias"));
            }
            if m.kind == crate::model::config::MlpKind::Bilinear {
                want.insert(format!("{pre}.mlp.gate.weight"));
                want.insert(format!("{pre}.mlp.gate.bias"));
            }
        }
    }
    for name in &want {
        if !ctx.tensors.contains_key(name) {
            return Err(err(
                Part::Files,
                format!("model.safetensors: missing tensor `{name}`"),
            ));
        }
    }
    for name in ctx.tensors.keys() {
        if !want.contains(name) {
            return Err(err(
                Part::Files,
                format!("model.safetensors: unexpected tensor `{name}` (not in config.json's architecture)"),
            ));
        }
    }
    Ok(())
}

/// Per layer: the (attention, MLP) placed operations, checked: every op placed exactly once
/// (a div as DivPrep in a layer's attention and DivApply in the same layer's MLP), parts that
/// match the operation kinds, texts and locations that match the program.
#[allow(clippy::type_complexity)]
fn check_placements(ctx: &Ctx) -> Result<Vec<(Vec<PlacedOp>, Vec<PlacedOp>)>, CertifyError> {
    let p = ctx.p;
    let mut seen: Vec<Vec<(usize, OpPart, bool)>> = vec![Vec::new(); p.ops.len()];
    let mut out = Vec::new();
    for (l, lo) in ctx.layout.layers.iter().enumerate() {
        if lo.index != l {
            return Err(err(
                Part::Layout,
                format!("layers[{l}] has index {}", lo.index),
            ));
        }
        for (is_attn, list) in [(true, &lo.attn), (false, &lo.mlp)] {
            for po in list {
                let part = if is_attn { Part::Attention } else { Part::Mlp };
                let op = p.ops.get(po.op).ok_or_else(|| {
                    ctx.op_err(
                        l,
                        part,
                        None,
                        format!(
                            "layout.json names operation {} (`{}`); the program has {}",
                            po.op,
                            po.text,
                            p.ops.len()
                        ),
                    )
                })?;
                let at = p.location(op.span);
                if po.text != op.text || po.at != at {
                    return Err(ctx.op_err(
                        l,
                        part,
                        Some(po.op),
                        format!(
                            "layout.json labels operation {} as `{}` at {}",
                            po.op, po.text, po.at
                        ),
                    ));
                }
                let ok = matches!(
                    (is_attn, &op.kind, po.part),
                    (true, OpKind::Mov { .. }, OpPart::Whole)
                        | (true, OpKind::Div { .. }, OpPart::DivPrep)
                        | (false, OpKind::Mul { .. }, OpPart::Whole)
                        | (false, OpKind::Aff { .. }, OpPart::Whole)
                        | (false, OpKind::Div { .. }, OpPart::DivApply)
                );
                if !ok {
                    return Err(ctx.op_err(
                        l,
                        part,
                        Some(po.op),
                        format!(
                            "a {} cannot be placed as {:?} in {}",
                            op.kind.mnemonic(),
                            po.part,
                            if is_attn { "attention" } else { "an MLP" }
                        ),
                    ));
                }
                seen[po.op].push((l, po.part, is_attn));
            }
        }
        out.push((lo.attn.clone(), lo.mlp.clone()));
    }
    for (k, s) in seen.iter().enumerate() {
        let want_ok = match &p.ops[k].kind {
            OpKind::Div { .. } => {
                s.len() == 2
                    && s.iter().any(|x| x.1 == OpPart::DivPrep)
                    && s.iter().any(|x| x.1 == OpPart::DivApply)
                    && s[0].0 == s[1].0
            }
            _ => s.len() == 1,
        };
        if !want_ok {
            return Err(CertifyError {
                layer: s.first().map(|x| x.0),
                part: Part::Layout,
                op: Some(k),
                op_label: Some(ctx.op_label(k)),
                message: format!(
                    "operation {k} is placed {} time(s) ({:?}); expected once (a div: its \
                     attention half and its MLP half in one layer)",
                    s.len(),
                    s
                ),
            });
        }
    }
    Ok(out)
}

/// The embedding and position table: y and x rows by identity, built-in rows with their exact
/// values in every column, every other row 0. Returns the rows' contents after the embedding.
fn check_embedding(ctx: &Ctx) -> Result<Vec<RowState>, CertifyError> {
    let p = ctx.p;
    let (w, d) = (ctx.width, p.d);
    let ew = ctx.tensor("embed.weight", &[w, d + 1])?;
    let eb = ctx.tensor("embed.bias", &[w])?;
    let pos = ctx.tensor("pos.weight", &[ctx.cols, w])?;
    let mut state = vec![
        RowState {
            content: Content::Zero,
            err: 0.0
        };
        w
    ];
    // Which built-in (and element) each row holds.
    let mut row_input: Vec<Option<(Builtin, usize)>> = vec![None; w];
    for (name, rows) in &ctx.layout.inputs {
        let b = Builtin::from_name(name).expect("checked");
        for (e, r) in (rows[0]..rows[1]).enumerate() {
            if row_input[r].is_some() {
                return Err(err(Part::Layout, format!("row {r} holds two inputs")));
            }
            row_input[r] = Some((b, e));
        }
    }
    let bad = |m: String| Err(err(Part::Embedding, m));
    // A built-in the program does not read may be left out of the embedding (all-zero row): the
    // row then holds 0 (and its range, unbounded for y and x, stays out of division bounds).
    for (r, ri) in row_input.iter_mut().enumerate() {
        if let Some((b, _)) = *ri {
            let all_zero = (0..=d).all(|j| ew.at2(r, j) == 0.0)
                && eb.data[r] == 0.0
                && (0..ctx.cols).all(|t| pos.at2(t, r) == 0.0);
            if p.input(b).is_none() && all_zero {
                *ri = None;
            }
        }
    }
    for r in 0..w {
        // Token weights: row r reads token row j (0 = y, 1+i = x[i]) with weight 1 iff it is
        // that input's row.
        for j in 0..=d {
            let want = match row_input[r] {
                Some((Builtin::Y, 0)) => j == 0,
                Some((Builtin::X, i)) => j == 1 + i,
                _ => false,
            };
            let v = ew.at2(r, j);
            if v != want as u8 as f64 {
                let tok = if j == 0 {
                    "y".to_string()
                } else {
                    format!("x[{}]", j - 1)
                };
                return bad(format!(
                    "embed.weight[{r}, {j}] (row {r}, token {tok}) is {v}, expected {}",
                    want as u8
                ));
            }
        }
        // Bias + position: the built-in's value at column t, else 0. Exact: the sum of two
        // doubles is compared as an exact dyadic sum.
        let b = Dy::from_f64(eb.data[r])
            .ok_or_else(|| err(Part::Embedding, format!("embed.bias[{r}] is not finite")))?;
        for t in 0..ctx.cols {
            let pv = Dy::from_f64(pos.at2(t, r)).ok_or_else(|| {
                err(
                    Part::Embedding,
                    format!("pos.weight[{t}, {r}] is not finite"),
                )
            })?;
            let want = match row_input[r] {
                Some((bi, _)) => builtin_position_value(bi, t).unwrap_or(0.0),
                None => 0.0,
            };
            let got = b.add(&pv);
            if got != Dy::from_f64(want).expect("finite") {
                let what = match row_input[r] {
                    Some((bi, _)) => bi.name().to_string(),
                    None => "no input".to_string(),
                };
                return bad(format!(
                    "row {r} ({what}) at column {t}: embed.bias + pos.weight = {got}, expected {want}"
                ));
            }
        }
        if let Some((bi, e)) = row_input[r] {
            state[r].content = match p.input(bi) {
                Some(reg) => Content::Val {
                    reg,
                    elem: e,
                    ver: None,
                },
                None => Content::Builtin(bi, e),
            };
        }
    }
    Ok(state)
}

/// The read-out is the one-hot of the output register's row; that row holds the program's
/// final output. Returns the end-to-end error bound there.
fn check_readout(ctx: &Ctx, state: &[RowState]) -> Result<f64, CertifyError> {
    let p = ctx.p;
    let w = ctx.width;
    let out_reg = p.output;
    if p.reg(out_reg).shape != Shape::SCALAR {
        return Err(err(Part::Readout, "the output register is not a scalar"));
    }
    let row = ctx.row(out_reg, 0);
    let lo = &ctx.layout.output;
    if lo.register != p.reg(out_reg).name || lo.row != row {
        return Err(err(
            Part::Layout,
            format!(
                "output is `{}` at row {}; the program's output `{}` is at row {row}",
                lo.register,
                lo.row,
                p.reg(out_reg).name
            ),
        ));
    }
    if let Some(rr) = ctx.cfg.readout_row {
        if rr != row {
            return Err(err(
                Part::Readout,
                format!("config.json readout_row {rr}, the output is at row {row}"),
            ));
        }
    }
    let rw = ctx.tensor("readout.weight", &[1, w])?;
    let rb = ctx.tensor("readout.bias", &[1])?;
    for r in 0..w {
        let want = (r == row) as u8 as f64;
        if rw.data[r] != want {
            return Err(err(
                Part::Readout,
                format!(
                    "readout.weight[0, {r}] is {}, expected {want} (the output `{}` is row {row})",
                    rw.data[r],
                    p.reg(out_reg).name
                ),
            ));
        }
    }
    if rb.data[0] != 0.0 {
        return Err(err(
            Part::Readout,
            format!("readout.bias is {}, expected 0", rb.data[0]),
        ));
    }
    let last = p.ops.iter().rposition(|o| o.kind.dst() == out_reg);
    let want = Content::Val {
        reg: out_reg,
        elem: 0,
        ver: last,
    };
    if state[row].content != want {
        return Err(err(
            Part::Readout,
            format!(
                "after the last layer, {}, expected the output `{}` as written by {}",
                ctx.content_name(row, &state[row].content),
                p.reg(out_reg).name,
                last.map(|k| ctx.op_label(k))
                    .unwrap_or_else(|| "the embedding".into())
            ),
        ));
    }
    Ok(state[row].err)
}

/// The version of `reg` operation `k` reads in the program: the last write before k.
pub fn version_read(p: &Program, k: usize, reg: RegId) -> Option<usize> {
    p.ops[..k].iter().rposition(|o| o.kind.dst() == reg)
}

/// Check that every row of register `reg` holds the version op `k` reads, in `state`.
pub fn check_operand(
    ctx: &Ctx,
    l: usize,
    part: Part,
    k: usize,
    reg: RegId,
    state: &[RowState],
) -> Result<(), CertifyError> {
    let ver = version_read(ctx.p, k, reg);
    if ver.is_none() && ctx.p.reg(reg).kind == RegKind::Work {
        return Err(ctx.op_err(
            l,
            part,
            Some(k),
            format!("reads `{}` before any write", ctx.p.reg(reg).name),
        ));
    }
    for e in 0..ctx.p.reg(reg).shape.size() {
        let r = ctx.row(reg, e);
        let want = Content::Val { reg, elem: e, ver };
        if state[r].content != want {
            let what = match ver {
                Some(v) => format!("as written by `{}`", ctx.p.ops[v].text),
                None => "from the embedding".into(),
            };
            return Err(ctx.op_err(
                l,
                part,
                Some(k),
                format!(
                    "row {} must hold `{}` {what}, but holds {}",
                    r,
                    ctx.elem_name(reg, e),
                    match &state[r].content {
                        Content::Val {
                            reg: r2,
                            elem,
                            ver: v2,
                        } => format!(
                            "`{}` {}",
                            ctx.elem_name(*r2, *elem),
                            match v2 {
                                Some(v) =>
                                    format!("as written by op {v} (`{}`)", ctx.p.ops[*v].text),
                                None => "from the embedding".into(),
                            }
                        ),
                        other => ctx.content_name(r, other),
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// Map from a hidden row to the op (of a list) whose destination covers it.
pub fn writer_of(ctx: &Ctx, ops: &[PlacedOp]) -> BTreeMap<usize, usize> {
    let mut m = BTreeMap::new();
    for po in ops {
        let dst = ctx.p.ops[po.op].kind.dst();
        for e in 0..ctx.p.reg(dst).shape.size() {
            m.insert(ctx.row(dst, e), po.op);
        }
        if po.part == OpPart::DivPrep {
            if let Some(pl) = ctx.layout.div_payload {
                m.insert(pl[0], po.op);
                m.insert(pl[1], po.op);
            }
        }
    }
    m
}

/// Rows written by the ops of one step must be disjoint.
pub fn check_disjoint(
    ctx: &Ctx,
    l: usize,
    part: Part,
    ops: &[PlacedOp],
) -> Result<(), CertifyError> {
    let mut owner: BTreeMap<usize, usize> = BTreeMap::new();
    for po in ops {
        let dst = ctx.p.ops[po.op].kind.dst();
        let mut rows: Vec<usize> = (0..ctx.p.reg(dst).shape.size())
            .map(|e| ctx.row(dst, e))
            .collect();
        if po.part == OpPart::DivPrep {
            let pl = ctx.layout.div_payload.ok_or_else(|| {
                ctx.op_err(
                    l,
                    part,
                    Some(po.op),
                    "a division but layout.json has no div_payload".into(),
                )
            })?;
            rows.extend(pl);
        }
        for r in rows {
            if let Some(o) = owner.insert(r, po.op) {
                return Err(ctx.op_err(
                    l,
                    part,
                    Some(po.op),
                    format!(
                        "writes row {r}, which `{}` in the same step also writes",
                        ctx.p.ops[o].text
                    ),
                ));
            }
        }
    }
    Ok(())
}
