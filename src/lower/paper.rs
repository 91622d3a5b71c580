//! The `paper` target: the paper's own construction (docs/PAPER_TARGET.md) in the trained mode's
//! `paper` block — softmax attention from Q/K reading position codes, a GeLU MLP behind a
//! LayerNorm, no bias tables, no bilinear units. Nothing here is exact; `crate::certify::paper`
//! bounds every layer from the emitted weights. This module builds the weights and chooses the
//! constants that minimise those bounds:
//!
//! - **Rows.** The exact target's allocation (same schedule, same register rows), then four
//!   position-code rows written once by `pos.weight` (c1 = t/D, c2 = t²/D², parity = t mod 2, a
//!   constant 1; D the power of two ≥ max_len), the two LayerNorm bypass rows (+N_ln, −N_ln, from
//!   `embed.bias`), and zero rows up to a width L = 2k² (so √(2/L) = 1/k is rational).
//! - **Attention** ([`pattern_qk`]): every pattern is a score N·u(t,s) with u = +1/2 on the keys
//!   the program reads and ≤ −1/2 on every other real key, the null key scoring 0. N is the
//!   smallest integer with (T+1)·e^{−N/2} ≤ u/16 (u the dtype's unit roundoff).
//! - **MLP.** Every input is read through the LayerNorm bypass: with the ±N_ln rows present and
//!   unit weights G·c (G = N_ln/k) whose row sum is cancelled on the zero row, a unit's
//!   pre-activation is c·h/√(1+x), x ≤ (Σ_r h_r² + L·eps)/(2N_ln²). N_ln = k·2^j is the smallest
//!   with that relative error ≤ u/16. Linear maps and overwrites are **pairs** of units
//!   g(z) − g(−z) = z (exact for every z: g(z) − g(−z) = z(Φ(z) + Φ(−z)) = z); products are GeLU
//!   **triples** ([`mul`]), with input scales ε from [`product_scale`].
//! - **Division** ([`div_prep`], [`div_apply`]): LayerNorm division as in the exact target, with the
//!   bypass rows zeroed by `attn.o.bias` and restored by `mlp.down.bias`, and the payload cleared
//!   by the next layer's attention ([`clear_payload`]).

use super::alloc::{allocate, Allocation};
use super::exact::{
    aff_rows, build_layout, check_division_operands, embedding, ops_by_block, output_row, placed,
    row_bounds, stats, Form, MulOperand,
};
use super::schedule::schedule;
use super::{Compiled, DivReport, LowerError};
use crate::ir::{OpId, OpKind, Pattern, Program};
use crate::layout::{
    CodeRows, Layer, LayerOps, OpPart, PaperLayout, PayloadClear, ProductScales, Row, RowNames,
};
use crate::model::config::{
    Activation, AttnConfig, DType, LayerConfig, MlpConfig, MlpKind, ModelConfig, ModelKind,
    NormConfig, MODEL_FORMAT,
};
use crate::model::schema::{Attention, Block, Mlp, Weights};
use crate::ranges::{analyze, Ranges};
use crate::tensors::RawTensor;
use std::collections::{BTreeMap, HashMap};

/// Head dimension of every head: √4 = 2, so the score scale 1/√head_dim is exact.
pub const HEAD_DIM: usize = 4;

/// LayerNorm eps of every block (the trained default, so a compiled model trains unchanged).
pub const LN_EPS: f64 = 1e-5;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaperOptions {
    /// Dtype the weights will be stored in (the constants are chosen for it).
    pub dtype: DType,
}

/// Unit roundoff u = eps/2 of a dtype.
pub fn unit_roundoff(dtype: DType) -> f64 {
    dtype.epsilon() / 2.0
}

/// **The attention scale N**: the smallest integer with (T+1)·e^{−N/2} ≤ u/16, so the softmax
/// leak (at most (T+1)·e^{−N/2} of the weight, docs/PAPER_TARGET.md §1) stays far below the
/// dtype's rounding.
pub fn attention_scale(t_max: usize, dtype: DType) -> f64 {
    let u = unit_roundoff(dtype);
    (2.0 * ((t_max as f64 + 1.0) * 16.0 / u).ln()).ceil()
}

/// **GeLU-product input scale.** The certified error of one product term a·b read as
/// ε_a·a, ε_b·b with |ε_a a|, |ε_b b| ≤ r is about |a||b|·(1.5·r² + 22.6·u/r): the Taylor
/// remainder of three units, Σ|W₂|z⁴/(6√(2π)) with |z| ≤ 2r, r, r, gives 1.5r²; the rounding of
/// the three units' pre-activations and outputs (about 18·u·r each side, times √(π/2)/ε²) gives
/// 22.6u/r (docs/PAPER_TARGET.md §2). The minimum is at r* = (7.5·u)^{1/3} (2^-16.7 in f64,
/// 2^-7.0 in f32); ε is the power of two nearest r*/R for an operand of range R.
pub fn product_scale(range: f64, dtype: DType) -> f64 {
    let r_star = (7.5 * unit_roundoff(dtype)).cbrt();
    if !range.is_finite() {
        return 1.0;
    }
    // A register known to be 0 (its range is the outward-rounded [−2^-1074, 2^-1074]) needs no
    // particular scale: cap ε at 2^20 so the weights stay far from overflow.
    (r_star / range).log2().round().min(20.0).exp2()
}

/// Smallest `k·2^j` (j ≥ 0 integer... or negative) with `(k·2^j)² ≥ need`: a multiple of k whose
/// quotient by k is a power of two, so that the gain `k·2^j / k` is exact.
fn k_times_power_of_two(k: usize, need: f64) -> f64 {
    let want = need.sqrt() / k as f64;
    let j = want.log2().ceil().max(-60.0);
    k as f64 * j.exp2()
}

/// The fixed rows this target adds after the allocation's.
#[derive(Debug, Clone, Copy)]
struct ExtraRows {
    codes: CodeRows,
    bypass: [Row; 2],
    /// The width L = 2k².
    width: usize,
    k: usize,
}

fn extra_rows(alloc: &Allocation) -> ExtraRows {
    let b = alloc.width;
    let used = b + 6;
    let k = ((used as f64 / 2.0).sqrt().ceil() as usize).max(1);
    let k = (k..).find(|k| 2 * k * k >= used).expect("some k fits");
    ExtraRows {
        codes: CodeRows {
            c1: Row(b),
            c2: Row(b + 1),
            parity: Row(b + 2),
            one: Row(b + 3),
        },
        bypass: [Row(b + 4), Row(b + 5)],
        width: 2 * k * k,
        k,
    }
}

/// The constants of one compile.
struct Constants {
    /// D: code scale, a power of two ≥ max_len.
    d_code: usize,
    /// N: attention score scale.
    n_att: f64,
    /// N_ln and the gain G = N_ln/k.
    n_ln: f64,
    gain: f64,
    /// Per op: product scales (mul) or payload scale (div).
    products: BTreeMap<OpId, [f64; 2]>,
    divs: Vec<DivReport>,
}

/// Σ_r (largest |h_r|)² over the rows the LayerNorm sees besides the bypass and payload rows,
/// doubled for the rounding the certificate adds: the S₂ of the LayerNorm bypass bound.
fn s2_bound(p: &Program, ranges: &Ranges, alloc: &Allocation) -> f64 {
    let rows = row_bounds(p, ranges, alloc);
    let codes = 4.0; // c1, c2, parity, one: each at most 1
    let s: f64 = rows.iter().map(|(v, _)| v * v).sum();
    4.0 * (s + codes)
}

/// Choose every constant (module comment; each chooser has its derivation).
fn constants(
    p: &Program,
    ranges: &Ranges,
    alloc: &Allocation,
    sched: &super::schedule::Schedule,
    rows: &ExtraRows,
    dtype: DType,
) -> Result<Constants, LowerError> {
    let t_max = p.columns();
    let u = unit_roundoff(dtype);
    let d_code = t_max.next_power_of_two().max(2);
    let n_att = attention_scale(t_max, dtype);
    check_scores_exact(p, d_code, n_att, dtype)?;
    let l = rows.width as f64;
    let s2 = s2_bound(p, ranges, alloc) + l * LN_EPS;
    // (S₂ + L·eps)/(4N²) ≤ u/16.
    let n_ln = k_times_power_of_two(rows.k, 4.0 * s2 / u);
    let gain = n_ln / rows.k as f64;
    let max = match dtype {
        DType::F32 => f32::MAX as f64,
        DType::F64 => f64::MAX,
    };
    let mut products = BTreeMap::new();
    let mut divs = Vec::new();
    for (i, op) in p.ops.iter().enumerate() {
        let k = OpId(i);
        let range_of = |reg| {
            ranges
                .before_op(k, reg)
                .map(|iv| iv.iter().map(|i| i.abs_max()).fold(0.0, f64::max))
                .unwrap_or_else(|| ranges.reg_abs_max(reg))
        };
        match &op.kind {
            OpKind::Mul { a, b, .. } => {
                let scales = [
                    product_scale(range_of(a.reg), dtype),
                    product_scale(range_of(b.reg), dtype),
                ];
                products.insert(k, scales);
            }
            OpKind::Div { den, .. } => {
                let iv = ranges.before_op(k, *den).map(|v| v[0]);
                let (dmin, dmax) = iv.map_or((0.0, f64::INFINITY), |i| (i.abs_min(), i.abs_max()));
                let site = || LowerError::Division {
                    at: p.location(op.span),
                    op: k,
                    text: op.text.clone(),
                    msg: String::new(),
                };
                if !(dmin > 0.0 && dmax.is_finite()) {
                    let mut e = site();
                    if let LowerError::Division { msg, .. } = &mut e {
                        *msg = format!(
                            "the divisor's range [{dmin}, {dmax}] must exclude 0 and be finite"
                        );
                    }
                    return Err(e);
                }
                // (S₂ + L·eps)/(4P²den_min²) ≤ u/16.
                let pp = k_times_power_of_two(rows.k, 4.0 * s2 / (u * dmin * dmin));
                let peak = pp * dmax;
                if peak.is_nan() || peak * peak * l * 4.0 >= max {
                    let mut e = site();
                    if let LowerError::Division { msg, .. } = &mut e {
                        *msg = format!(
                            "the payload P·|den| reaches {peak:.3e}, whose square overflows {} in the \
                             LayerNorm (P = {pp:.3e} for |den| in [{dmin:.3e}, {dmax:.3e}])",
                            dtype.name()
                        );
                    }
                    return Err(e);
                }
                divs.push(DivReport {
                    op: k,
                    layer: Layer(sched.block_of[i]),
                    text: op.text.clone(),
                    at: p.location(op.span),
                    payload_scale: pp,
                    gain: pp / rows.k as f64,
                    gain_up: 1.0,
                    r_max: s2,
                    den_abs: [dmin, dmax],
                    relative_error: s2 / (4.0 * pp * pp * dmin * dmin),
                    den: p.reg(*den).name.clone(),
                });
            }
            _ => {}
        }
    }
    Ok(Constants {
        d_code,
        n_att,
        n_ln,
        gain,
        products,
        divs,
    })
}

/// The scores must be computed exactly (docs/PAPER_TARGET.md §1): every q coordinate is an
/// integer (its weights are integer multiples of N·D², N·D, N on codes t/D, t²/D², 1), every
/// product q_i·k_i an integer of magnitude at most 4N·D·T, and their sum at most 8N·D² (D ≥ T)
/// — exact when below 2^p, p the dtype's precision. The certifier checks the emitted scores
/// themselves.
fn check_scores_exact(
    p: &Program,
    d_code: usize,
    n_att: f64,
    dtype: DType,
) -> Result<(), LowerError> {
    let bits = match dtype {
        DType::F32 => 24,
        DType::F64 => 53,
    };
    let d = d_code as f64;
    let largest = 8.0 * n_att * d * d;
    if largest >= (bits as f64).exp2() {
        return Err(LowerError::Unsupported {
            at: p.location(p.reg(p.output).span),
            msg: format!(
                "the prompt has {} columns: position-coded scores (N = {n_att}, D = {d_code}) \
                 would not be exact in {}",
                p.columns(),
                dtype.name()
            ),
        });
    }
    Ok(())
}

/// One attention value component: value `v·h`, added into output row `out`.
struct Component {
    v: Form,
    out: Row,
}

/// What a head attends: a program pattern, or each column itself.
#[derive(Debug, Clone, Copy, PartialEq)]
enum HeadKind {
    Pattern(Pattern),
    SelfHead,
}

struct Head {
    kind: HeadKind,
    comps: Vec<Component>,
}

/// A block's heads: at most [`HEAD_DIM`] components each.
#[derive(Default)]
struct Heads(Vec<Head>);

impl Heads {
    /// Adds a component to a head of `kind` with room, or to a new one; returns the head.
    fn push(&mut self, kind: HeadKind, c: Component) -> usize {
        let h = match self
            .0
            .iter()
            .position(|h| h.kind == kind && h.comps.len() < HEAD_DIM)
        {
            Some(h) => h,
            None => {
                self.0.push(Head {
                    kind,
                    comps: Vec::new(),
                });
                self.0.len() - 1
            }
        };
        self.0[h].comps.push(c);
        h
    }
}

/// A unit's identity: its form (row, coefficient bits), bias bits, and whether it is a pair's.
type UnitKey = (Vec<(Row, u64)>, u64, bool);

/// The MLP units of a block: each a pre-activation `form·h + bias` (the weights are G times
/// the form), shared by every op that asks for the same one, and the down coefficients.
#[derive(Default)]
struct Units {
    forms: Vec<(Form, f64)>,
    /// (form, bias, is a pair unit) → unit: pair units and product units are never shared, so
    /// the certifier can recognise every pair (whose Taylor remainders cancel exactly).
    index: HashMap<UnitKey, usize>,
    down: BTreeMap<(Row, usize), f64>,
}

impl Units {
    fn unit(&mut self, f: Form, bias: f64, pair: bool) -> usize {
        let key = (
            f.0.iter().map(|(r, c)| (*r, c.to_bits())).collect(),
            bias.to_bits(),
            pair,
        );
        let forms = &mut self.forms;
        *self.index.entry(key).or_insert_with(|| {
            forms.push((f, bias));
            forms.len() - 1
        })
    }
    fn down(&mut self, out: Row, unit: usize, c: f64) {
        *self.down.entry((out, unit)).or_insert(0.0) += c;
    }
    /// **Pair**: adds `coef·z`, z = f·h + bias, into `out` as coef·(g(z) − g(−z)) — exact for
    /// every z, since g(z) − g(−z) = z·(Φ(z) + Φ(−z)) = z.
    fn pair(&mut self, f: &Form, bias: f64, out: Row, coef: f64) {
        let plus = self.unit(f.clone(), bias, true);
        let mut neg = Form::default();
        for (&r, &c) in &f.0 {
            neg.add(r, -c);
        }
        let minus = self.unit(neg, -bias, true);
        self.down(out, plus, coef);
        self.down(out, minus, -coef);
    }
}

/// One block before it becomes weights.
#[derive(Default)]
struct Plan {
    heads: Heads,
    units: Units,
    /// `attn.o.bias` entries (a division zeroes the bypass rows).
    o_bias: Vec<(Row, f64)>,
    /// `mlp.down.bias` entries (a division restores them).
    down_bias: Vec<(Row, f64)>,
    /// The block's division: its MLP reads the payload, not the bypass, through the LayerNorm.
    div: Option<DivReport>,
    attn_ops: Vec<(OpId, OpPart, Vec<usize>)>,
    mlp_ops: Vec<(OpId, OpPart)>,
}

/// **mov `dst ← src from P`**: component e of a head of pattern P carries `src_e` into dst_e;
/// a self-head component carries −dst_e (the overwrite: h[dst] + src[P(t)] − h[dst]).
fn mov(plan: &mut Plan, pattern: Pattern, src: Row, dst: Row, size: usize) -> Vec<usize> {
    let mut heads = Vec::new();
    for e in 0..size {
        let h = plan.heads.push(
            HeadKind::Pattern(pattern),
            Component {
                v: Form::one(src + e, 1.0),
                out: dst + e,
            },
        );
        let s = plan.heads.push(
            HeadKind::SelfHead,
            Component {
                v: Form::one(dst + e, -1.0),
                out: dst + e,
            },
        );
        heads.extend([h, s]);
    }
    heads.sort_unstable();
    heads.dedup();
    heads
}

/// **div, attention half**: the self head overwrites the payload rows with ±P·den and clears
/// dst (as the exact target's DivPrep), and `attn.o.bias` = ∓N_ln zeroes the bypass rows, so the
/// MLP's LayerNorm sees the payload as its only large rows.
#[allow(clippy::too_many_arguments)]
fn div_prep(
    plan: &mut Plan,
    den: Row,
    payload: [Row; 2],
    pp: f64,
    dst: Row,
    size: usize,
    rows: &ExtraRows,
    n_ln: f64,
) -> Vec<usize> {
    let [p1, p2] = payload;
    let mut v1 = Form::one(den, pp);
    v1.add(p1, -1.0);
    let mut v2 = Form::one(den, -pp);
    v2.add(p2, -1.0);
    let mut heads = vec![
        plan.heads
            .push(HeadKind::SelfHead, Component { v: v1, out: p1 }),
        plan.heads
            .push(HeadKind::SelfHead, Component { v: v2, out: p2 }),
    ];
    for e in 0..size {
        heads.push(plan.heads.push(
            HeadKind::SelfHead,
            Component {
                v: Form::one(dst + e, -1.0),
                out: dst + e,
            },
        ));
    }
    plan.o_bias.push((rows.bypass[0], -n_ln));
    plan.o_bias.push((rows.bypass[1], n_ln));
    heads.sort_unstable();
    heads.dedup();
    heads
}

/// **div, MLP half**: per element a pair on z = num_e (weights G_P·(e_num − e_zero), G_P = P/k):
/// the LayerNorm divides by σ = P|den|·√(2/L)·√(1+x), so z = num_e/(|den|·√(1+x)) lands in the
/// cleared dst. `mlp.down.bias` = ±N_ln restores the bypass rows.
fn div_apply(plan: &mut Plan, num: Row, dst: Row, size: usize, rows: &ExtraRows, n_ln: f64) {
    for e in 0..size {
        plan.units.pair(&Form::one(num + e, 1.0), 0.0, dst + e, 1.0);
    }
    plan.down_bias.push((rows.bypass[0], n_ln));
    plan.down_bias.push((rows.bypass[1], -n_ln));
}

/// **Payload clear**, in the layer after a division (unless it divides again, which overwrites):
/// self-head components −p1, −p2, so the next LayerNorm bypass does not see the old payload.
fn clear_payload(plan: &mut Plan, payload: [Row; 2]) {
    for p in payload {
        plan.heads.push(
            HeadKind::SelfHead,
            Component {
                v: Form::one(p, -1.0),
                out: p,
            },
        );
    }
}

/// A `mul` operand (the exact target's: rows, shape, transposition) and its input scale ε.
#[derive(Clone, Copy)]
struct Operand {
    op: MulOperand,
    scale: f64,
}

/// **mul `dst ← A·B`** by GeLU triples (Lemma 4): for every term A_ij·B_jk, units
/// g(ε_a A_ij + ε_b B_jk), g(ε_a A_ij), g(ε_b B_jk) with down weights w, −w, −w,
/// w = √(π/2)/(ε_a ε_b). Since g(z) = z/2 + z²/√(2π) + ρ(z), the linear parts cancel and the
/// quadratic parts leave w·√(2/π)·ε_aε_b·A_ij B_jk = A_ij B_jk; ρ is the certified remainder.
/// Units g(ε_a A_ij) are shared by every k (and across ops reading the same row at the same
/// scale). A pair on −dst makes the write an overwrite.
fn mul(units: &mut Units, a: Operand, b: Operand, dst: Row) {
    let (sa, sb) = (a.op.shape(), b.op.shape());
    let w = (std::f64::consts::PI / 2.0).sqrt() / (a.scale * b.scale);
    for i in 0..sa.rows {
        for c in 0..sb.cols {
            let out = dst + i * sb.cols + c;
            for j in 0..sa.cols {
                let (ra, rb) = (a.op.row_of(i, j), b.op.row_of(j, c));
                let mut both = Form::one(ra, a.scale);
                both.add(rb, b.scale);
                let s = units.unit(both, 0.0, false);
                let ua = units.unit(Form::one(ra, a.scale), 0.0, false);
                let ub = units.unit(Form::one(rb, b.scale), 0.0, false);
                units.down(out, s, w);
                units.down(out, ua, -w);
                units.down(out, ub, -w);
            }
            units.pair(&Form::one(out, 1.0), 0.0, out, -1.0);
        }
    }
}

/// **aff `dst ← Σ C_i·src_i + b`**: per element a pair on −dst_e (the overwrite) and a pair on
/// Σ_i Σ_j C_i[e,j]·src_i[j] + b_e.
fn aff(units: &mut Units, dst: Row, bias: &[f64], gates: &[Vec<(Row, f64)>]) {
    for (e, (&be, coefs)) in bias.iter().zip(gates).enumerate() {
        units.pair(&Form::one(dst + e, 1.0), 0.0, dst + e, -1.0);
        let mut f = Form::default();
        for &(row, c) in coefs {
            f.add(row, c);
        }
        units.pair(&f, be, dst + e, 1.0);
    }
}

/// The plan of every block.
fn plan_blocks(
    p: &Program,
    alloc: &Allocation,
    consts: &Constants,
    rows: &ExtraRows,
    by_block: &[Vec<OpId>],
) -> Result<Vec<Plan>, LowerError> {
    let mut plans: Vec<Plan> = Vec::with_capacity(by_block.len());
    for ops in by_block {
        let mut b = Plan::default();
        for &k in ops {
            let dst = alloc.write_row(k);
            let read = |i| alloc.read_row(p, k, i);
            match &p.ops[k].kind {
                OpKind::Mov { src, pattern, .. } => {
                    let size = p.reg(*src).shape.size();
                    let heads = mov(&mut b, *pattern, read(0), dst, size);
                    b.attn_ops.push((k, OpPart::Whole, heads));
                }
                OpKind::Div { dst: reg, .. } => {
                    let dv = consts.divs.iter().find(|d| d.op == k).ok_or_else(|| {
                        LowerError::Internal {
                            msg: format!("no division constants for op {k}"),
                        }
                    })?;
                    let payload = alloc.payload.ok_or_else(|| LowerError::Internal {
                        msg: "division without payload rows".into(),
                    })?;
                    let size = p.reg(*reg).shape.size();
                    let heads = div_prep(
                        &mut b,
                        read(0),
                        payload,
                        dv.payload_scale,
                        dst,
                        size,
                        rows,
                        consts.n_ln,
                    );
                    div_apply(&mut b, read(1), dst, size, rows, consts.n_ln);
                    b.div = Some(dv.clone());
                    b.attn_ops.push((k, OpPart::DivPrep, heads));
                    b.mlp_ops.push((k, OpPart::DivApply));
                }
                OpKind::Mul { a, b: bo, .. } => {
                    let [ea, eb] = consts.products[&k];
                    let oa = Operand {
                        op: MulOperand::of(p, *a, read(0)),
                        scale: ea,
                    };
                    let ob = Operand {
                        op: MulOperand::of(p, *bo, read(1)),
                        scale: eb,
                    };
                    mul(&mut b.units, oa, ob, dst);
                    b.mlp_ops.push((k, OpPart::Whole));
                }
                OpKind::Aff {
                    dst: reg,
                    terms,
                    bias,
                } => {
                    let gates = aff_rows(p, terms, p.reg(*reg).shape.size(), read);
                    aff(&mut b.units, dst, bias, &gates);
                    b.mlp_ops.push((k, OpPart::Whole));
                }
            }
        }
        plans.push(b);
    }
    // The layer after a division clears its payload, unless it divides again (an overwrite).
    for l in 1..plans.len() {
        if plans[l - 1].div.is_some() && plans[l].div.is_none() {
            let payload = alloc.payload.expect("a division has payload rows");
            clear_payload(&mut plans[l], payload);
        }
    }
    Ok(plans)
}

/// **Q and K of a pattern** (docs/PAPER_TARGET.md §1): forms over the code rows such that
/// q_t·k_s/2 = N·u(t,s), with keys k_s = (c2_s, c1_s, 1) or (c1_s, 1) or (parity_s, 1):
/// - col(c): u = 1/2 − (s−c)² = −D²c2_s + 2cD·c1_s + (1/2 − c²), q constant;
/// - prev: c = t−1, with 2D(t−1) = 2D²c1_t − 2D and 1/2 − (t−1)² = −D²c2_t + 2Dc1_t − 1/2;
/// - self: u = s − t + 1/2 = D·c1_s + (1/2 − D·c1_t);
/// - mean(Y): u = parity_s − 1/2; mean(X): u = 1/2 − parity_s; mean(All): u = 1/2.
///
/// Targets score +N/2, every other real key ≤ −N/2 (u is a half-integer, largest on the
/// targets), the null key 0: where the program says "gets 0" no real key is a target and the
/// null key wins.
fn pattern_qk(kind: HeadKind, codes: &CodeRows, d: f64, n: f64) -> (Vec<Form>, Vec<Row>) {
    use crate::ir::ColumnSet;
    let one = codes.one;
    let two_n = 2.0 * n;
    let mut q: Vec<Form> = vec![Form::default(), Form::default(), Form::default()];
    let keys = match kind {
        HeadKind::Pattern(Pattern::Col(c)) => {
            let c = c as f64;
            q[0].add(one, -two_n * d * d);
            q[1].add(one, two_n * 2.0 * c * d);
            q[2].add(one, two_n * (0.5 - c * c));
            vec![codes.c2, codes.c1, one]
        }
        HeadKind::Pattern(Pattern::Prev) => {
            q[0].add(one, -two_n * d * d);
            q[1].add(codes.c1, two_n * 2.0 * d * d);
            q[1].add(one, -two_n * 2.0 * d);
            q[2].add(codes.c2, -two_n * d * d);
            q[2].add(codes.c1, two_n * 2.0 * d);
            q[2].add(one, -two_n * 0.5);
            vec![codes.c2, codes.c1, one]
        }
        HeadKind::SelfHead => {
            q[0].add(one, two_n * d);
            q[1].add(one, two_n * 0.5);
            q[1].add(codes.c1, -two_n * d);
            vec![codes.c1, one]
        }
        HeadKind::Pattern(Pattern::Mean(set)) => {
            let (q0, q1) = match set {
                ColumnSet::Y => (two_n, -n),
                ColumnSet::X => (-two_n, n),
                ColumnSet::All => (0.0, n),
            };
            if q0 != 0.0 {
                q[0].add(one, q0);
            }
            q[1].add(one, q1);
            vec![codes.parity, one]
        }
    };
    q.truncate(keys.len());
    (q, keys)
}

/// The layer config every block shares: the trained `paper` block (no attention norm, Q/K
/// attention without bias tables but with the null key, LayerNorm and a GeLU MLP), as wide as
/// the widest block.
fn layer_config(heads: usize, hidden: usize) -> LayerConfig {
    LayerConfig {
        attn_norm: None,
        attn: Some(AttnConfig {
            heads: heads.max(1),
            head_dim: HEAD_DIM,
            qk: true,
            bias: false,
            zero_attn: true,
            momentum: None,
        }),
        norm: Some(NormConfig { eps: LN_EPS }),
        mlp: Some(MlpConfig {
            kind: MlpKind::Gelu,
            hidden: hidden.max(1),
            activation: Activation::Gelu,
        }),
    }
}

/// A head's Q/K/V/O weights: inner indices h·4 .. h·4+4.
fn head_weights(
    h: usize,
    head: &Head,
    rows: &ExtraRows,
    consts: &Constants,
    a: &mut Attention<RawTensor>,
) -> Result<(), LowerError> {
    let (q, k) = match (&mut a.q, &mut a.k) {
        (Some(q), Some(k)) => (q, k),
        _ => {
            return Err(LowerError::Internal {
                msg: "paper attention without Q/K".into(),
            })
        }
    };
    let (qs, keys) = pattern_qk(head.kind, &rows.codes, consts.d_code as f64, consts.n_att);
    for (i, key_row) in keys.iter().enumerate() {
        let inner = h * HEAD_DIM + i;
        k.weight.set2(inner, key_row.index(), 1.0);
        for (&row, &c) in &qs[i].0 {
            q.weight.set2(inner, row.index(), c);
        }
    }
    for (c, comp) in head.comps.iter().enumerate() {
        let inner = h * HEAD_DIM + c;
        for (&row, &coef) in &comp.v.0 {
            a.v.weight.set2(inner, row.index(), coef);
        }
        a.o.weight.set2(comp.out.index(), inner, 1.0);
    }
    Ok(())
}

/// A block's tensors. MLP unit u's weights are G·form on its rows and −G·Σform on the zero
/// row (the LayerNorm mean cancels: Σ_r W₁[u,r] = 0), with G = N_ln/k, or P/k in a division
/// block.
fn block_weights(
    plan: &Plan,
    rows: &ExtraRows,
    consts: &Constants,
    zero: Row,
    w: &mut Block<RawTensor>,
) -> Result<(), LowerError> {
    let (Some(a), Some(n), Some(m)) = (&mut w.attn, &mut w.norm, &mut w.mlp) else {
        return Err(LowerError::Internal {
            msg: "paper block without attention, norm or MLP".into(),
        });
    };
    for (h, head) in plan.heads.0.iter().enumerate() {
        head_weights(h, head, rows, consts, a)?;
    }
    for &(r, v) in &plan.o_bias {
        a.o.bias.data[r.index()] += v;
    }
    n.weight.data.fill(1.0);
    let gain = plan.div.as_ref().map_or(consts.gain, |d| d.gain);
    write_units(&plan.units, gain, zero, m);
    for &(r, v) in &plan.down_bias {
        m.down.bias.data[r.index()] += v;
    }
    Ok(())
}

fn write_units(units: &Units, gain: f64, zero: Row, m: &mut Mlp<RawTensor>) {
    for (u, (form, bias)) in units.forms.iter().enumerate() {
        let mut sum = 0.0;
        for (&row, &c) in &form.0 {
            m.up.weight.set2(u, row.index(), gain * c);
            sum += gain * c;
        }
        m.up.weight.set2(u, zero.index(), -sum);
        m.up.bias.data[u] = *bias;
    }
    for (&(out, u), &c) in &units.down {
        m.down.weight.set2(out.index(), u, c);
    }
}

/// Lower `p` to the `paper` target.
pub fn compile(p: &Program, opts: &PaperOptions) -> Result<Compiled, LowerError> {
    crate::ir::validate(p)?;
    check_division_operands(p)?;
    let ranges = analyze(p)?;
    let sched = schedule(p);
    let alloc = allocate(p, &sched)?;
    let rows = extra_rows(&alloc);
    let consts = constants(p, &ranges, &alloc, &sched, &rows, opts.dtype)?;
    let out_row = output_row(p, &alloc)?;
    let t_max = p.columns();
    let by_block = ops_by_block(&sched);
    let plans = plan_blocks(p, &alloc, &consts, &rows, &by_block)?;
    let heads = plans.iter().map(|b| b.heads.0.len()).max().unwrap_or(1);
    let hidden = plans.iter().map(|b| b.units.forms.len()).max().unwrap_or(1);
    let config = ModelConfig {
        format: MODEL_FORMAT.into(),
        kind: ModelKind::Compiled,
        target: "paper".into(),
        dtype: opts.dtype,
        d: p.d,
        n: p.n,
        max_len: t_max,
        width: rows.width,
        layers: vec![layer_config(heads, hidden); plans.len()],
        final_norm: None,
        readout_row: Some(out_row.index()),
    };
    let spec = Weights::spec(&config);
    let mut w = spec.map(|s| RawTensor::zeros(&s.shape));
    embedding(p, &alloc, out_row, &mut w);
    codes_and_bypass(&rows, &consts, t_max, &mut w);
    for (block, plan) in w.layers.iter_mut().zip(&plans) {
        block_weights(plan, &rows, &consts, alloc.zero_row, block)?;
    }
    let tensors = spec.into_named(w);
    let stats = stats(p, &config, &tensors);
    let layer_ops = plans
        .iter()
        .enumerate()
        .map(|(l, plan)| LayerOps {
            index: Layer(l),
            attn: plan
                .attn_ops
                .iter()
                .map(|(k, part, heads)| placed(p, *k, *part, heads.clone()))
                .collect(),
            mlp: plan
                .mlp_ops
                .iter()
                .map(|(k, part)| placed(p, *k, *part, vec![]))
                .collect(),
        })
        .collect();
    let mut layout = build_layout(p, &alloc, sched.blocks, layer_ops, &consts.divs, out_row);
    extend_layout(&mut layout, &rows, &consts, &plans, &sched);
    Ok(Compiled {
        config,
        tensors,
        layout,
        divs: consts.divs,
        stats,
        schedule: sched,
    })
}

/// **Position codes and bypass rows.** `pos.weight[t]` holds c1 = t/D, c2 = t²/D², t mod 2 and
/// 1 at the code rows (exact: D is a power of two and t < D); `embed.bias` holds +N_ln and −N_ln
/// at the bypass rows.
fn codes_and_bypass(
    rows: &ExtraRows,
    consts: &Constants,
    t_max: usize,
    w: &mut Weights<RawTensor>,
) {
    let d = consts.d_code as f64;
    let c = &rows.codes;
    for t in 0..t_max {
        let tf = t as f64;
        w.pos.set2(t, c.c1.index(), tf / d);
        w.pos.set2(t, c.c2.index(), tf * tf / (d * d));
        w.pos.set2(t, c.parity.index(), (t % 2) as f64);
        w.pos.set2(t, c.one.index(), 1.0);
    }
    w.embed.bias.data[rows.bypass[0].index()] = consts.n_ln;
    w.embed.bias.data[rows.bypass[1].index()] = -consts.n_ln;
}

/// The layout's width, row names and `paper` section.
fn extend_layout(
    layout: &mut crate::layout::Layout,
    rows: &ExtraRows,
    consts: &Constants,
    plans: &[Plan],
    sched: &super::schedule::Schedule,
) {
    let base = layout.width;
    layout.width = rows.width;
    let c = &rows.codes;
    let named = [
        (c.c1, format!("code c1 = t/{}", consts.d_code)),
        (c.c2, format!("code c2 = t²/{}²", consts.d_code)),
        (c.parity, "code parity = t mod 2".into()),
        (c.one, "code one = 1".into()),
        (rows.bypass[0], format!("LayerNorm bypass +{}", consts.n_ln)),
        (rows.bypass[1], format!("LayerNorm bypass −{}", consts.n_ln)),
    ];
    for r in base..rows.width {
        let name = named
            .iter()
            .find(|(row, _)| row.index() == r)
            .map_or_else(|| "unused (always 0)".to_string(), |(_, n)| n.clone());
        layout.rows.push(RowNames {
            row: Row(r),
            names: vec![name],
        });
    }
    let payload_clears = (1..plans.len())
        .filter(|&l| plans[l - 1].div.is_some() && plans[l].div.is_none())
        .map(|l| PayloadClear {
            layer: Layer(l),
            op: plans[l - 1].div.as_ref().expect("filtered").op,
        })
        .collect();
    layout.paper = Some(PaperLayout {
        codes: rows.codes,
        code_scale: consts.d_code,
        attention_scale: consts.n_att,
        bypass: rows.bypass,
        bypass_scale: consts.n_ln,
        bypass_gain: consts.gain,
        products: consts
            .products
            .iter()
            .map(|(&op, &scales)| ProductScales {
                layer: Layer(sched.block_of[op.index()]),
                op,
                scales,
            })
            .collect(),
        payload_clears,
    });
}
