//! The `exact` target (DESIGN §3): weights whose algebra is exact, except LayerNorm division whose
//! relative error is bounded below the dtype's epsilon.
//!
//! Block `l` computes `h ← h + Attn_l(h); h ← h + MLP_l(norm_l?(h))` (docs/FORMATS.md).
//!
//! **Embedding.** `embed.weight` is the identity into rows 0..=d (y at row 0, x at rows 1..=d; a
//! part the program never reads is embedded as 0 so that its unbounded range cannot enter a
//! division bound), `embed.bias` = 0, and `pos.weight[t]` holds the other built-ins the program
//! reads (`one` = 1, `is_x`, `is_y`, `count`) at their rows. Everything else starts at 0.
//!
//! **mov `dst ← src from P`** (attention, no Q/K, `zero_attn`). One head per distinct pattern in
//! the layer: its bias row for query t is 0 on the keys `P.sources(t)` and −∞ elsewhere, and its
//! null key (column max_len, value 0) is 0 exactly when `P.sources(t)` is empty. Softmax over
//! {0, −∞} is uniform on the allowed keys, so the head outputs the mean of its value over
//! `P.sources(t)`, or 0 — exactly `src[P(t)]` (a single key gets weight exp(0)/exp(0) = 1
//! exactly). Value: component c selects src row c (weight 1); output: component c adds into dst
//! row c. One `self` head (bias 0 on the diagonal only) has value −h[dst] for every moved dst, so
//! the residual sum is `h[dst] + src[P(t)] − h[dst] = src[P(t)]`: an overwrite. All heads share
//! `head_dim` = the largest head's component count (unused components are zero).
//!
//! **mul `dst ← A·B`** (bilinear MLP `down·((gate·m + b_g) ⊙ (up·m + b_u))`). One hidden unit per
//! product term A[i,j]·B[j,k]: gate = e_{A[i,j]}, up = e_{B[j,k]}, down adds it into dst[i,k].
//! One more unit per dst element, gate = −e_{dst}, up = 0, b_u = 1, down adds into dst: the
//! residual sum is `h[dst] + Σ_j A[i,j]B[j,k] − h[dst]`, an overwrite. Every unit reads the MLP
//! input, so an in-place product reads the old operands.
//!
//! **aff `dst ← Σ C_i·src_i + b`.** One unit per dst element e: gate = Σ_i Σ_j C_i[e,j]·e_{src_i[j]}
//! − e_{dst[e]} (coefficients on the same row merged: in place, the dst coefficient is C − 1),
//! b_g = b[e], up = 0, b_u = 1, down adds into dst[e]: `h[dst_e] + (Σ C·src + b − h[dst_e])`.
//!
//! **div `dst ← num / |den|`.** DivPrep in the attention's self head: payload rows
//! p1 ← +P·den and p2 ← −P·den (value P·h[den] − h[p1], −P·h[den] − h[p2]: overwrites) and
//! dst ← 0 (value −h[dst]). The layer has LayerNorm on the MLP input (eps 0, weight 1, bias 0).
//! DivApply in the MLP, one unit per element: gate = g·(e_{num_e} − e_{zero}), up = 0, b_u = 1,
//! down adds into dst_e. Derivation: with L = width and μ the column mean, the payload cancels in
//! the sum, so `L·σ² = Σ_r h_r² − Lμ² = 2P²den² + R`, `R = Σ_{r∉payload} h_r² − Lμ²
//! ∈ [0, Σ_{r∉payload} h_r²]`; `LN(h)[num] − LN(h)[zero] = (num − μ)/σ − (0 − μ)/σ = num/σ`, so
//! `dst = g·num·√L / (√2·P·|den|·√(1 + R/(2P²den²)))`. With `g = P·√(2/L)` the first factor is 1 up
//! to the rounding of g, and `1 − 1/√(1+x) ≤ x/2` gives the relative error
//! `≤ R/(4P²den²) ≤ R_max/(4P²den_min²)`. R_max = Σ over non-payload rows of the square of the
//! largest |value| the row can hold (the maximum over every register that ever occupies it, from
//! the range analysis); P is the smallest power of two (≥ 1) with `R_max/(4P²den_min²) ≤ eps/4`.
//! P·den is exact (P a power of two). Overflow: `Σ_r (h_r − μ)² ≤ L·(2M)²` with
//! `M = max(P·den_max, max_r bound_r)`, required `≤` the dtype's largest finite value.
//! Floating point: the payload overwrite `h[p1] + (P·den − h[p1])` rounds when the rows still hold
//! a previous division's payload (relative error ≤ eps·(1 + |old|/|new|)); p2 = −p1 stays exact
//! (the two computations are negations of each other), so the payload always sums to zero.

use super::alloc::{allocate, Allocation};
use super::schedule::{schedule, Schedule};
use super::LowerError;
use crate::ir::{operand_index, Builtin, OpKind, Pattern, Program, RegId, RegKind, Shape};
use crate::layout::{
    DivConstants, LayerOps, Layout, OpPart, OutputPlacement, PlacedOp, RegisterPlacement, RowNames,
    LAYOUT_FORMAT,
};
use crate::model::config::{
    Activation, AttnConfig, DType, LayerConfig, MlpConfig, MlpKind, ModelConfig, ModelKind,
    NormConfig, MODEL_FORMAT,
};
use crate::ranges::{analyze, Ranges};
use crate::tensors::{NamedTensors, RawTensor};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LowerOptions {
    /// Dtype the weights will be stored in (and the epsilon the division constant is chosen for).
    pub dtype: DType,
}

impl Default for LowerOptions {
    fn default() -> Self {
        LowerOptions { dtype: DType::F64 }
    }
}

/// The constants and bound of one LayerNorm division.
#[derive(Debug, Clone, PartialEq)]
pub struct DivReport {
    pub op: usize,
    pub layer: usize,
    pub text: String,
    pub at: String,
    /// Payload scale P (a power of two).
    pub payload_scale: f64,
    /// MLP gain: gate weight g and up bias u (both exact in the dtype) with g·u ≈ P·√(2/L).
    pub gain: f64,
    pub gain_up: f64,
    /// Bound on Σ over non-payload rows of h_r².
    pub r_max: f64,
    /// `[min |den|, max |den|]` from the range analysis at this op.
    pub den_abs: [f64; 2],
    /// Bound on the relative error δ + (1+δ)·R_max/(4P²den_min²), δ = |(gu)²L/(2P²) − 1|.
    pub relative_error: f64,
    /// Name of the divisor register.
    pub den: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Blocks (layers) of the compiled model.
    pub layers: usize,
    /// Operations of the unrolled program: the depth at one layer per primitive.
    pub primitives: usize,
    pub width: usize,
    /// Total number of tensor entries.
    pub parameters: usize,
    /// Non-zero entries (−∞ bias entries count as non-zero).
    pub nonzero: usize,
    pub max_heads: usize,
    pub max_hidden: usize,
}

/// A compiled model in memory: everything `emit` writes except the certificate.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub config: ModelConfig,
    /// f64 values; `emit` stores them in `config.dtype`.
    pub tensors: NamedTensors,
    pub layout: Layout,
    pub divs: Vec<DivReport>,
    pub stats: Stats,
    pub schedule: Schedule,
}

/// A linear form over hidden rows: `(row, coefficient)`, merged by row.
#[derive(Default, Clone)]
struct Form(BTreeMap<usize, f64>);

impl Form {
    fn add(&mut self, row: usize, c: f64) {
        *self.0.entry(row).or_insert(0.0) += c;
    }
    fn one(row: usize, c: f64) -> Form {
        let mut f = Form::default();
        f.add(row, c);
        f
    }
}

/// One bilinear hidden unit: `(gate·m + gate_bias) · (up·m + up_bias)`, added into `down` rows.
struct Unit {
    gate: Form,
    gate_bias: f64,
    up: Form,
    up_bias: f64,
    down: usize,
}

/// One attention value component: value `v·h`, added into output row `out`.
struct Component {
    v: Form,
    out: usize,
}

fn elem_name(name: &str, shape: Shape, e: usize) -> String {
    if shape.is_scalar() {
        name.to_string()
    } else if shape.cols == 1 {
        format!("{name}[{e}]")
    } else {
        format!("{name}[{},{}]", e / shape.cols, e % shape.cols)
    }
}

/// Lower `p` to the `exact` target.
pub fn compile(p: &Program, opts: &LowerOptions) -> Result<Compiled, LowerError> {
    // Division operands must not share dst's rows: DivPrep clears dst before DivApply reads num.
    for op in &p.ops {
        if let OpKind::Div { dst, num, den } = op.kind {
            if dst == num || dst == den {
                return Err(LowerError::Unsupported {
                    at: p.location(op.span),
                    msg: format!(
                        "`{}` writes its own {}; the LayerNorm division clears dst before it \
                         reads num — write the quotient to a fresh register and copy it with `aff`",
                        op.text,
                        if dst == num { "numerator" } else { "divisor" }
                    ),
                });
            }
        }
    }
    let ranges = analyze(p)?;
    let sched = schedule(p);
    let alloc = allocate(p, &sched)?;
    let width = alloc.width;
    let t_max = p.columns();
    let nblocks = sched.blocks;
    let divs = division_constants(p, &ranges, &alloc, &sched, opts.dtype)?;

    let mut tensors = NamedTensors::new();
    // --- embedding and positions ---
    let mut embed = RawTensor::zeros(&[width, p.d + 1]);
    if p.input(Builtin::Y).is_some() {
        embed.set2(0, 0, 1.0);
    }
    if p.input(Builtin::X).is_some() {
        for i in 1..=p.d {
            embed.set2(i, i, 1.0);
        }
    }
    tensors.insert("embed.weight".into(), embed);
    tensors.insert("embed.bias".into(), RawTensor::zeros(&[width]));
    let mut pos = RawTensor::zeros(&[t_max, width]);
    for &(b, _, row) in &alloc.input_rows {
        if matches!(b, Builtin::Y | Builtin::X) {
            continue;
        }
        for t in 0..t_max {
            pos.set2(t, row, b.value(t, &[], 0));
        }
    }
    tensors.insert("pos.weight".into(), pos);
    let mut readout = RawTensor::zeros(&[1, width]);
    let out_row = output_row(p, &alloc)?;
    readout.set2(0, out_row, 1.0);
    tensors.insert("readout.weight".into(), readout);
    tensors.insert("readout.bias".into(), RawTensor::zeros(&[1]));

    // --- layers ---
    let mut layer_cfgs = Vec::with_capacity(nblocks);
    let mut layer_ops = Vec::with_capacity(nblocks);
    let mut by_block: Vec<Vec<usize>> = vec![Vec::new(); nblocks];
    for (k, &b) in sched.block_of.iter().enumerate() {
        by_block[b].push(k);
    }
    let mut stats = Stats {
        layers: nblocks,
        primitives: p.ops.len(),
        width,
        parameters: 0,
        nonzero: 0,
        max_heads: 0,
        max_hidden: 0,
    };
    for (l, ops) in by_block.iter().enumerate() {
        let mut placed_attn = Vec::new();
        let mut placed_mlp = Vec::new();
        // Attention: pattern heads in order of first use, then the self head.
        let mut patterns: Vec<Pattern> = Vec::new();
        let mut heads: Vec<Vec<Component>> = Vec::new();
        let mut self_head: Vec<Component> = Vec::new();
        let mut units: Vec<Unit> = Vec::new();
        let mut div_here: Option<&DivReport> = None;
        let mut attn_owner: Vec<(usize, Option<usize>, OpPart)> = Vec::new();
        for &k in ops {
            let op = &p.ops[k];
            match &op.kind {
                OpKind::Mov { src, pattern, .. } => {
                    let size = p.reg(*src).shape.size();
                    let h = match patterns.iter().position(|q| q == pattern) {
                        Some(h) => h,
                        None => {
                            patterns.push(*pattern);
                            heads.push(Vec::new());
                            patterns.len() - 1
                        }
                    };
                    let (s0, d0) = (alloc.read_row(p, k, 0), alloc.write_row(k));
                    for e in 0..size {
                        heads[h].push(Component {
                            v: Form::one(s0 + e, 1.0),
                            out: d0 + e,
                        });
                        self_head.push(Component {
                            v: Form::one(d0 + e, -1.0),
                            out: d0 + e,
                        });
                    }
                    attn_owner.push((k, Some(h), OpPart::Whole));
                }
                OpKind::Div { dst, .. } => {
                    let dv =
                        divs.iter()
                            .find(|d| d.op == k)
                            .ok_or_else(|| LowerError::Internal {
                                msg: format!("no division constants for op {k}"),
                            })?;
                    div_here = Some(dv);
                    let [p1, p2] = alloc.payload.ok_or_else(|| LowerError::Internal {
                        msg: "division without payload rows".into(),
                    })?;
                    let den_row = alloc.read_row(p, k, 0);
                    let num_row = alloc.read_row(p, k, 1);
                    let d0 = alloc.write_row(k);
                    let pp = dv.payload_scale;
                    // p1 ← P·den, p2 ← −P·den (overwrites), dst ← 0.
                    let mut v1 = Form::one(den_row, pp);
                    v1.add(p1, -1.0);
                    let mut v2 = Form::one(den_row, -pp);
                    v2.add(p2, -1.0);
                    self_head.push(Component { v: v1, out: p1 });
                    self_head.push(Component { v: v2, out: p2 });
                    let size = p.reg(*dst).shape.size();
                    for e in 0..size {
                        self_head.push(Component {
                            v: Form::one(d0 + e, -1.0),
                            out: d0 + e,
                        });
                        // dst_e += g·u·(LN(h)[num_e] − LN(h)[zero]): the gate carries g, the
                        // up projection the constant u (see `division_gain`).
                        let mut gate = Form::one(num_row + e, dv.gain);
                        gate.add(alloc.zero_row, -dv.gain);
                        units.push(Unit {
                            gate,
                            gate_bias: 0.0,
                            up: Form::default(),
                            up_bias: dv.gain_up,
                            down: d0 + e,
                        });
                    }
                    attn_owner.push((k, None, OpPart::DivPrep));
                    placed_mlp.push(placed(p, k, OpPart::DivApply, vec![]));
                }
                OpKind::Mul { a, b, .. } => {
                    let (sa, sb) = (p.operand_shape(*a), p.operand_shape(*b));
                    let (ra, rb) = (p.reg(a.reg).shape, p.reg(b.reg).shape);
                    let (a0, b0, d0) = (
                        alloc.read_row(p, k, 0),
                        alloc.read_row(p, k, 1),
                        alloc.write_row(k),
                    );
                    for i in 0..sa.rows {
                        for c in 0..sb.cols {
                            let out = d0 + i * sb.cols + c;
                            for j in 0..sa.cols {
                                units.push(Unit {
                                    gate: Form::one(
                                        a0 + operand_index(ra, a.transposed, i, j),
                                        1.0,
                                    ),
                                    gate_bias: 0.0,
                                    up: Form::one(b0 + operand_index(rb, b.transposed, j, c), 1.0),
                                    up_bias: 0.0,
                                    down: out,
                                });
                            }
                            units.push(Unit {
                                gate: Form::one(out, -1.0),
                                gate_bias: 0.0,
                                up: Form::default(),
                                up_bias: 1.0,
                                down: out,
                            });
                        }
                    }
                    placed_mlp.push(placed(p, k, OpPart::Whole, vec![]));
                }
                OpKind::Aff { dst, terms, bias } => {
                    let size = p.reg(*dst).shape.size();
                    let d0 = alloc.write_row(k);
                    // First hidden row of each term's source register.
                    let term_rows: Vec<usize> = (0..terms.len())
                        .map(|ti| alloc.read_row(p, k, ti))
                        .collect();
                    for (e, &be) in bias.iter().enumerate().take(size) {
                        // The −dst overwrite is its own unit: merging it into the gate would round
                        // C − 1 when dst shares rows with a source (in place, or a reused row).
                        units.push(Unit {
                            gate: Form::one(d0 + e, -1.0),
                            gate_bias: 0.0,
                            up: Form::default(),
                            up_bias: 1.0,
                            down: d0 + e,
                        });
                        let mut gate = Form::default();
                        for (ti, _, elem, c) in p.aff_coefficients(terms, e) {
                            gate.add(term_rows[ti] + elem, c);
                        }
                        units.push(Unit {
                            gate,
                            gate_bias: be,
                            up: Form::default(),
                            up_bias: 1.0,
                            down: d0 + e,
                        });
                    }
                    placed_mlp.push(placed(p, k, OpPart::Whole, vec![]));
                }
            }
        }
        let pre = format!("layers.{l}");
        let attn_cfg = if attn_owner.is_empty() {
            None
        } else {
            let self_idx = heads.len();
            heads.push(self_head);
            let nh = heads.len();
            let hd = heads.iter().map(Vec::len).max().unwrap_or(0).max(1);
            let inner = nh * hd;
            let mut wv = RawTensor::zeros(&[inner, width]);
            let mut wo = RawTensor::zeros(&[width, inner]);
            for (h, comps) in heads.iter().enumerate() {
                for (c, comp) in comps.iter().enumerate() {
                    let i = h * hd + c;
                    for (&row, &coef) in &comp.v.0 {
                        wv.set2(i, row, coef);
                    }
                    wo.set2(comp.out, i, 1.0);
                }
            }
            // Bias: −∞ everywhere, then 0 on each head's allowed keys.
            let mut bias = RawTensor {
                shape: vec![nh, t_max, t_max + 1],
                data: vec![f64::NEG_INFINITY; nh * t_max * (t_max + 1)],
            };
            let idx = |h: usize, t: usize, s: usize| (h * t_max + t) * (t_max + 1) + s;
            for (h, pat) in patterns.iter().enumerate() {
                for t in 0..t_max {
                    let src = pat.sources(t);
                    if src.is_empty() {
                        bias.data[idx(h, t, t_max)] = 0.0;
                    }
                    for s in src {
                        bias.data[idx(h, t, s)] = 0.0;
                    }
                }
            }
            for t in 0..t_max {
                bias.data[idx(self_idx, t, t)] = 0.0;
            }
            tensors.insert(format!("{pre}.attn.v.weight"), wv);
            tensors.insert(format!("{pre}.attn.v.bias"), RawTensor::zeros(&[inner]));
            tensors.insert(format!("{pre}.attn.o.weight"), wo);
            tensors.insert(format!("{pre}.attn.o.bias"), RawTensor::zeros(&[width]));
            tensors.insert(format!("{pre}.attn.bias"), bias);
            for (k, h, part) in attn_owner {
                let hs = match h {
                    Some(h) => vec![h, self_idx],
                    None => vec![self_idx],
                };
                placed_attn.push(placed(p, k, part, hs));
            }
            stats.max_heads = stats.max_heads.max(nh);
            Some(AttnConfig {
                heads: nh,
                head_dim: hd,
                qk: false,
                bias: true,
                zero_attn: true,
                momentum: None,
            })
        };
        let norm_cfg = div_here.map(|_| {
            tensors.insert(
                format!("{pre}.norm.weight"),
                RawTensor {
                    shape: vec![width],
                    data: vec![1.0; width],
                },
            );
            tensors.insert(format!("{pre}.norm.bias"), RawTensor::zeros(&[width]));
            NormConfig { eps: 0.0 }
        });
        let mlp_cfg = if units.is_empty() {
            None
        } else {
            let hidden = units.len();
            let mut gate = RawTensor::zeros(&[hidden, width]);
            let mut gate_b = RawTensor::zeros(&[hidden]);
            let mut up = RawTensor::zeros(&[hidden, width]);
            let mut up_b = RawTensor::zeros(&[hidden]);
            let mut down = RawTensor::zeros(&[width, hidden]);
            for (u, unit) in units.iter().enumerate() {
                for (&row, &c) in &unit.gate.0 {
                    gate.set2(u, row, c);
                }
                for (&row, &c) in &unit.up.0 {
                    up.set2(u, row, c);
                }
                gate_b.data[u] = unit.gate_bias;
                up_b.data[u] = unit.up_bias;
                down.set2(unit.down, u, 1.0);
            }
            tensors.insert(format!("{pre}.mlp.gate.weight"), gate);
            tensors.insert(format!("{pre}.mlp.gate.bias"), gate_b);
            tensors.insert(format!("{pre}.mlp.up.weight"), up);
            tensors.insert(format!("{pre}.mlp.up.bias"), up_b);
            tensors.insert(format!("{pre}.mlp.down.weight"), down);
            tensors.insert(format!("{pre}.mlp.down.bias"), RawTensor::zeros(&[width]));
            stats.max_hidden = stats.max_hidden.max(hidden);
            Some(MlpConfig {
                kind: MlpKind::Bilinear,
                hidden,
                activation: Activation::Gelu,
            })
        };
        layer_cfgs.push(LayerConfig {
            attn_norm: None,
            attn: attn_cfg,
            norm: norm_cfg,
            mlp: mlp_cfg,
        });
        layer_ops.push(LayerOps {
            index: l,
            attn: placed_attn,
            mlp: placed_mlp,
        });
    }
    for t in tensors.values() {
        stats.parameters += t.data.len();
        stats.nonzero += t.data.iter().filter(|v| **v != 0.0).count();
    }
    let config = ModelConfig {
        format: MODEL_FORMAT.into(),
        kind: ModelKind::Compiled,
        target: "exact".into(),
        dtype: opts.dtype,
        d: p.d,
        n: p.n,
        max_len: t_max,
        width,
        layers: layer_cfgs,
        final_norm: None,
        readout_row: Some(out_row),
    };
    let layout = build_layout(p, &alloc, nblocks, layer_ops, &divs, out_row);
    Ok(Compiled {
        config,
        tensors,
        layout,
        divs,
        stats,
        schedule: sched,
    })
}

fn placed(p: &Program, k: usize, part: OpPart, heads: Vec<usize>) -> PlacedOp {
    let op = &p.ops[k];
    PlacedOp {
        op: k,
        part,
        text: op.text.clone(),
        at: p.location(op.span),
        heads,
    }
}

fn output_row(p: &Program, alloc: &Allocation) -> Result<usize, LowerError> {
    let reg = p.reg(p.output);
    if !reg.shape.is_scalar() {
        return Err(LowerError::Unsupported {
            at: p.location(reg.span),
            msg: format!(
                "the output `{}` is a {}, expected a scalar",
                reg.name, reg.shape
            ),
        });
    }
    match reg.kind {
        RegKind::Input(_) => Ok(alloc.input_row(p.output)),
        RegKind::Work => alloc
            .webs
            .iter()
            .rev()
            .find(|w| w.reg == p.output)
            .map(|w| w.row)
            .ok_or_else(|| LowerError::Unsupported {
                at: p.location(reg.span),
                msg: format!("the output `{}` is never written", reg.name),
            }),
    }
}

/// Largest |value| each hidden row can hold (payload rows: 0, they are excluded from R).
fn row_bounds(p: &Program, ranges: &Ranges, alloc: &Allocation) -> Vec<(f64, String)> {
    let mut b: Vec<(f64, String)> = vec![(0.0, String::new()); alloc.width];
    let mut put = |row: usize, v: f64, who: String| {
        // NaN (never expected) counts as unbounded.
        let v = if v.is_nan() { f64::INFINITY } else { v };
        if v > b[row].0 || b[row].1.is_empty() {
            b[row] = (v.max(b[row].0), who);
        }
    };
    for &(_, reg, row) in &alloc.input_rows {
        let r = p.reg(reg);
        for (e, iv) in ranges.reg_hull(reg).iter().enumerate() {
            put(row + e, iv.abs_max(), elem_name(&r.name, r.shape, e));
        }
    }
    for w in &alloc.webs {
        let r = p.reg(w.reg);
        for (e, iv) in ranges.reg_hull(w.reg).iter().enumerate() {
            put(w.row + e, iv.abs_max(), elem_name(&r.name, r.shape, e));
        }
    }
    b
}

fn division_constants(
    p: &Program,
    ranges: &Ranges,
    alloc: &Allocation,
    sched: &Schedule,
    dtype: DType,
) -> Result<Vec<DivReport>, LowerError> {
    let mut out = Vec::new();
    let has_div = p.ops.iter().any(|o| matches!(o.kind, OpKind::Div { .. }));
    if !has_div {
        return Ok(out);
    }
    let bounds = row_bounds(p, ranges, alloc);
    let payload = alloc.payload.unwrap_or([usize::MAX; 2]);
    let l = alloc.width as f64;
    let eps = dtype.epsilon();
    let max_finite = match dtype {
        DType::F32 => f32::MAX as f64,
        DType::F64 => f64::MAX,
    };
    for (k, op) in p.ops.iter().enumerate() {
        let OpKind::Div { den, .. } = op.kind else {
            continue;
        };
        let err = |msg: String| LowerError::Division {
            at: p.location(op.span),
            op: op.text.clone(),
            msg,
        };
        // R_max = Σ_{r ∉ payload} bound_r², rounded upward.
        let mut r_max = 0.0f64;
        let mut m_rows = 0.0f64;
        for (row, (v, who)) in bounds.iter().enumerate() {
            if payload.contains(&row) {
                continue;
            }
            if !v.is_finite() {
                return Err(err(format!(
                    "the range analysis gives no finite bound for hidden row {row} (`{who}`), \
                     and every row enters the LayerNorm; state its range with an assumption \
                     (e.g. `assume {} in [lo, hi]`)",
                    who.split('[').next().unwrap_or(who)
                )));
            }
            r_max = (r_max + (v * v).next_up()).next_up();
            m_rows = m_rows.max(*v);
        }
        let den_iv = ranges
            .before_op(k, den)
            .and_then(|v| v.first().copied())
            .ok_or_else(|| err(format!("no range for the divisor `{}`", p.reg(den).name)))?;
        let (den_min, den_max) = (den_iv.abs_min(), den_iv.abs_max());
        if den_min <= 0.0 || !den_max.is_finite() {
            return Err(err(format!(
                "the divisor `{}` has range {den_iv}; the payload needs 0 < |den| ≤ a finite bound \
                 (state it, e.g. `assume {} in [1, 1000]`)",
                p.reg(den).name,
                p.reg(den).name
            )));
        }
        // Smallest P = 2^k ≥ 1 with R_max ≤ (eps/2)·P²·den_min² (⇔ R_max/(4P²den_min²) ≤ eps/8);
        // with δ ≤ eps/16 from `division_gain`, the relative error stays below eps/4.
        let mut pp = 1.0f64;
        while r_max > 0.5 * eps * pp * pp * den_min * den_min {
            pp *= 2.0;
            if !pp.is_finite() {
                return Err(err(format!(
                    "no finite payload scale: R_max = {r_max:e}, min |den| = {den_min:e}"
                )));
            }
        }
        let m = (pp * den_max).max(m_rows);
        let sum_sq = 4.0 * l * m * m;
        if !sum_sq.is_finite() || sum_sq > max_finite {
            return Err(err(format!(
                "the payload P·|den| ≤ {:e} (P = {pp:e} chosen for {} precision with \
                 R_max = {r_max:e}, |den| ∈ [{den_min:e}, {den_max:e}]) can overflow the {} \
                 LayerNorm variance ({} rows); tighten the ranges of the registers or of `{}`",
                pp * den_max,
                dtype.name(),
                dtype.name(),
                alloc.width,
                p.reg(den).name
            )));
        }
        // The relative error is δ + (1+δ)·R_max/(4P²den_min²) — the bound the certifier proves.
        let (gain, gain_up, delta) = division_gain(pp, l, dtype);
        if delta > eps / 16.0 {
            return Err(err(format!(
                "no gate weight and up bias in {} whose product is within {:e} of P·√(2/L) \
                 (best δ = {delta:e})",
                dtype.name(),
                eps / 16.0
            )));
        }
        let rel = (delta + (1.0 + delta) * (r_max / (4.0 * pp * pp * den_min * den_min)).next_up())
            .next_up();
        out.push(DivReport {
            op: k,
            layer: sched.block_of[k],
            text: op.text.clone(),
            at: p.location(op.span),
            payload_scale: pp,
            gain,
            gain_up,
            r_max,
            den_abs: [den_min, den_max],
            relative_error: rel,
            den: p.reg(den).name.clone(),
        });
    }
    Ok(out)
}

/// The division MLP's constants: gate weight g and up bias u with g·u as near P·√(2/L) as two
/// values of the dtype allow, and δ = |(g·u)²·L/(2P²) − 1| (exact, rounded up).
///
/// One stored value is off by up to half an ulp, which puts δ near the dtype's epsilon. Products
/// of two stored values are far denser: for u = 1 + k·2⁻²⁰ (exact in f32 and f64), g the dtype
/// values nearest P·√(2/L)/u; δ behaves like a fresh sample from [0, ~2 ulp) per try, so a few
/// hundred tries reach δ ≪ epsilon. Deterministic: the first pair with δ ≤ eps/1024, or the best.
fn division_gain(pp: f64, l: f64, dtype: DType) -> (f64, f64, f64) {
    // The dtype's value nearest x and its two neighbours.
    let around = |x: f64| -> [f64; 3] {
        match dtype {
            DType::F64 => [x.next_down(), x, x.next_up()],
            DType::F32 => {
                let y = x as f32;
                [y.next_down() as f64, y as f64, y.next_up() as f64]
            }
        }
    };
    let target = pp * (2.0 / l).sqrt();
    let good = dtype.epsilon() / 1024.0;
    let mut best = (target, 1.0, f64::INFINITY);
    for k in 0..512u32 {
        let u = 1.0 + k as f64 / (1u64 << 20) as f64;
        for g in around(target / u) {
            let d = gain_delta(g, u, pp, l, false);
            if d < best.2 {
                best = (g, u, d);
            }
        }
        if best.2 <= good {
            break;
        }
    }
    let (g, u, _) = best;
    (g, u, gain_delta(g, u, pp, l, true))
}

/// δ = |(g·u)²·L/(2P²) − 1| in exact integer arithmetic (all four are dyadic): rounded up when
/// `exact`, else to about one ulp (for ranking candidates).
fn gain_delta(g: f64, u: f64, pp: f64, l: f64, exact: bool) -> f64 {
    use num_bigint::BigInt;
    use num_rational::BigRational;
    use num_traits::{Signed, ToPrimitive};
    // x = m·2^e with an integer m (x > 0 and finite here).
    let split = |x: f64| {
        let (m, e, _) = num_traits::Float::integer_decode(x);
        (BigInt::from(m), e as i64)
    };
    let ((mg, eg), (mu, eu), (mp, ep), (ml, el)) = (split(g), split(u), split(pp), split(l));
    // (g·u)²·L / (2P²) = (mg·mu)²·ml / (2·mp²) · 2^s.
    let a = &mg * &mg * &mu * &mu * &ml;
    let b = BigInt::from(2) * &mp * &mp;
    let s = 2 * (eg + eu) + el - 2 * ep;
    let (a, b) = if s >= 0 {
        (a << s as usize, b)
    } else {
        (a, b << (-s) as usize)
    };
    let diff = (&a - &b).abs();
    // The quotient's f64 approximation ranks the candidates; an upper bound is needed only for
    // the one kept (`exact` = true), where the rational is reduced and rounded up.
    if !exact {
        return match (diff.to_f64(), b.to_f64()) {
            (Some(x), Some(y)) if y > 0.0 => x / y,
            _ => f64::INFINITY,
        };
    }
    let r = BigRational::new(diff, b);
    r.to_f64().map(f64::next_up).unwrap_or(f64::INFINITY)
}

fn build_layout(
    p: &Program,
    alloc: &Allocation,
    nblocks: usize,
    layers: Vec<LayerOps>,
    divs: &[DivReport],
    out_row: usize,
) -> Layout {
    let mut inputs = BTreeMap::new();
    let mut registers = Vec::new();
    let mut names: Vec<Vec<String>> = vec![Vec::new(); alloc.width];
    // y and x are always present in the hidden state (rows 0..=d).
    inputs.insert("y".to_string(), [0, 1]);
    inputs.insert("x".to_string(), [1, p.d + 1]);
    if p.input(Builtin::Y).is_none() {
        names[0].push("y (not read: embedded as 0)".into());
    }
    if p.input(Builtin::X).is_none() {
        for (i, n) in names.iter_mut().enumerate().skip(1).take(p.d) {
            n.push(format!("x[{}] (not read: embedded as 0)", i - 1));
        }
    }
    for &(b, reg, row) in &alloc.input_rows {
        let r = p.reg(reg);
        let size = r.shape.size();
        inputs.insert(b.name().to_string(), [row, row + size]);
        registers.push(RegisterPlacement {
            name: r.name.clone(),
            shape: [r.shape.rows, r.shape.cols],
            rows: [row, row + size],
            written: None,
            last_read: alloc.input_last_read[reg],
        });
        for e in 0..size {
            names[row + e].push(format!("{} (input)", elem_name(&r.name, r.shape, e)));
        }
    }
    let last_layer = nblocks.saturating_sub(1);
    let final_out_web = alloc.webs.iter().rposition(|w| w.reg == p.output);
    // Per row: (first layer, last layer, register) of every live range, merged below.
    let mut spans: Vec<Vec<(usize, usize, RegId, usize)>> = vec![Vec::new(); alloc.width];
    let mut placements: BTreeMap<RegId, RegisterPlacement> = BTreeMap::new();
    for (wi, w) in alloc.webs.iter().enumerate() {
        let r = p.reg(w.reg);
        let size = r.shape.size();
        let last_read = if Some(wi) == final_out_web {
            Some(last_layer)
        } else {
            w.last_read_block
        };
        let pl = placements
            .entry(w.reg)
            .or_insert_with(|| RegisterPlacement {
                name: r.name.clone(),
                shape: [r.shape.rows, r.shape.cols],
                rows: [w.row, w.row + size],
                written: Some(w.written_block),
                last_read: None,
            });
        pl.last_read = pl.last_read.max(last_read);
        let until = last_read.unwrap_or(w.written_block);
        for e in 0..size {
            spans[w.row + e].push((w.written_block, until, w.reg, e));
        }
    }
    // Registers in order of first write.
    let mut placed: Vec<RegisterPlacement> = placements.into_values().collect();
    placed.sort_by_key(|pl| (pl.written, pl.rows[0]));
    registers.extend(placed);
    for (row, sp) in spans.iter_mut().enumerate() {
        sp.sort();
        let mut merged: Vec<(usize, usize, RegId, usize)> = Vec::new();
        for &s in sp.iter() {
            match merged.last_mut() {
                Some(m) if m.2 == s.2 && m.3 == s.3 => m.1 = m.1.max(s.1),
                _ => merged.push(s),
            }
        }
        for (a, b, reg, e) in merged {
            let r = p.reg(reg);
            names[row].push(format!(
                "{} (layers {a}..={b})",
                elem_name(&r.name, r.shape, e)
            ));
        }
    }
    if let Some([p1, p2]) = alloc.payload {
        names[p1].push("div payload +P·den".into());
        names[p2].push("div payload −P·den".into());
    }
    names[alloc.zero_row].push("zero (never written)".into());
    let rows = names
        .into_iter()
        .enumerate()
        .map(|(row, mut names)| {
            if names.is_empty() {
                names.push("unused (always 0)".into());
            }
            RowNames { row, names }
        })
        .collect();
    Layout {
        format: LAYOUT_FORMAT.into(),
        width: alloc.width,
        inputs,
        zero_row: alloc.zero_row,
        div_payload: alloc.payload,
        div_constants: divs
            .iter()
            .map(|d| DivConstants {
                layer: d.layer,
                payload_scale: d.payload_scale,
                gain: d.gain,
                gain_up: d.gain_up,
            })
            .collect(),
        registers,
        rows,
        layers,
        output: OutputPlacement {
            register: p.reg(p.output).name.clone(),
            row: out_row,
        },
        encoding: "columns x̃_1, ỹ_1, …, x̃_n, ỹ_n, x̃_{n+1}; x̃_k = [0, x_k], ỹ_k = [y_k, 0…]; \
                   read the output row at even columns"
            .into(),
    }
}
