//! The `exact` target: weights whose algebra is exact, except LayerNorm division whose relative
//! error is bounded below the dtype's epsilon.
//!
//! Block `l` computes `h ← h + Attn_l(h); h ← h + MLP_l(norm_l?(h))` (docs/FORMATS.md). [`compile`]
//! schedules the ops into blocks (`schedule`), gives their registers hidden rows (`alloc`), and
//! builds every block from one construction per operation, each documented with its derivation:
//! `embedding` (inputs and read-out), `mov` (a pattern head plus the self head's overwrite), `mul`
//! and `aff` (bilinear MLP units), `div_prep` (the division's attention half) and `div_apply` (its
//! MLP half, with the constants of the `division` sub-module). `layer_config` says which parts a
//! block has; `attention_weights` and `mlp_weights` write its heads and units into the tensors of
//! [`crate::model::schema`]. The `placement` sub-module writes `layout.json`.

use super::alloc::{allocate, Allocation};
use super::schedule::{schedule, Schedule};
use super::LowerError;
use crate::ir::{operand_index, Builtin, OpId, OpKind, Pattern, Program, RegKind, Shape};
use crate::layout::{Layer, Layout, OpPart, Row};
use crate::model::config::{
    Activation, AttnConfig, DType, LayerConfig, MlpConfig, MlpKind, ModelConfig, ModelKind,
    NormConfig, MODEL_FORMAT,
};
use crate::model::schema::{Attention, Block, Mlp, Weights};
use crate::ranges::analyze;
use crate::tensors::{NamedTensors, RawTensor};
use std::collections::BTreeMap;

mod division;
mod placement;

use division::division_constants;
pub(super) use division::row_bounds;
pub use division::DivReport;
#[cfg(test)]
use division::{division_gain, non_payload_bound, payload_scale};
use placement::placed_ops;
pub(super) use placement::{build_layout, placed};

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
pub(super) struct Form(pub(super) BTreeMap<Row, f64>);

impl Form {
    pub(super) fn add(&mut self, row: Row, c: f64) {
        *self.0.entry(row).or_insert(0.0) += c;
    }
    pub(super) fn one(row: Row, c: f64) -> Form {
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
    down: Row,
}

/// One attention value component: value `v·h`, added into output row `out`.
struct Component {
    v: Form,
    out: Row,
}

pub(super) fn elem_name(name: &str, shape: Shape, e: usize) -> String {
    if shape.is_scalar() {
        name.to_string()
    } else if shape.cols == 1 {
        format!("{name}[{e}]")
    } else {
        format!("{name}[{},{}]", e / shape.cols, e % shape.cols)
    }
}

/// Lower `p` to the `exact` target: schedule and allocate, choose the division constants, plan
/// every block from its ops' constructions, then write the planned blocks into tensors named by
/// [`Weights::spec`] of the resulting config.
pub fn compile(p: &Program, opts: &LowerOptions) -> Result<Compiled, LowerError> {
    crate::ir::validate(p)?;
    check_division_operands(p)?;
    let ranges = analyze(p)?;
    let sched = schedule(p);
    let alloc = allocate(p, &sched)?;
    let divs = division_constants(p, &ranges, &alloc, &sched, opts.dtype)?;
    let out_row = output_row(p, &alloc)?;
    let t_max = p.columns();
    let plans = ops_by_block(&sched)
        .iter()
        .map(|ops| plan_block(p, &alloc, &divs, ops))
        .collect::<Result<Vec<_>, _>>()?;
    let config = ModelConfig {
        format: MODEL_FORMAT.into(),
        kind: ModelKind::Compiled,
        target: "exact".into(),
        dtype: opts.dtype,
        d: p.d,
        n: p.n,
        max_len: t_max,
        width: alloc.width,
        layers: plans.iter().map(layer_config).collect(),
        final_norm: None,
        readout_row: Some(out_row.index()),
    };
    let spec = Weights::spec(&config);
    let mut w = spec.map(|s| RawTensor::zeros(&s.shape));
    embedding(p, &alloc, out_row, &mut w);
    for (block, plan) in w.layers.iter_mut().zip(&plans) {
        block_weights(plan, t_max, block)?;
    }
    let tensors = spec.into_named(w);
    let stats = stats(p, &config, &tensors);
    let layer_ops = plans
        .iter()
        .enumerate()
        .map(|(l, plan)| placed_ops(p, Layer(l), plan))
        .collect();
    let layout = build_layout(p, &alloc, sched.blocks, layer_ops, &divs, out_row);
    Ok(Compiled {
        config,
        tensors,
        layout,
        divs,
        stats,
        schedule: sched,
    })
}

/// Division operands must not share dst's rows: `div_prep` clears dst before `div_apply` reads
/// num (and the payload is computed from den in the same attention that clears dst).
pub(super) fn check_division_operands(p: &Program) -> Result<(), LowerError> {
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
    Ok(())
}

/// The ops of every block, in program order.
pub(super) fn ops_by_block(sched: &Schedule) -> Vec<Vec<OpId>> {
    let mut by_block: Vec<Vec<OpId>> = vec![Vec::new(); sched.blocks];
    for (k, &b) in sched.block_of.iter().enumerate() {
        by_block[b].push(OpId(k));
    }
    by_block
}

/// **Embedding and read-out.** `embed.weight` is the identity into rows 0..=d (y at row 0, x at
/// rows 1..=d; a part the program never reads is embedded as 0 so that its unbounded range cannot
/// enter a division bound), `embed.bias` = 0, and `pos.weight[t]` holds the other built-ins the
/// program reads (`one` = 1, `is_x`, `is_y`, `count`) at their rows. Everything else starts at 0.
/// The read-out is `e_{out_row}` with bias 0: the prediction is the output register's row.
pub(super) fn embedding(p: &Program, alloc: &Allocation, out_row: Row, w: &mut Weights<RawTensor>) {
    if p.input(Builtin::Y).is_some() {
        w.embed.weight.set2(0, 0, 1.0);
    }
    if p.input(Builtin::X).is_some() {
        for i in 1..=p.d {
            w.embed.weight.set2(i, i, 1.0);
        }
    }
    for &(b, _, row) in &alloc.input_rows {
        if matches!(b, Builtin::Y | Builtin::X) {
            continue;
        }
        for t in 0..w.pos.shape[0] {
            w.pos.set2(t, row.index(), b.value(t, &[], 0));
        }
    }
    w.readout.weight.set2(0, out_row.index(), 1.0);
}

/// A head attending with a fixed pattern: its value components.
struct PatternHead {
    pattern: Pattern,
    comps: Vec<Component>,
}

/// The attention heads of one block: one per distinct pattern in order of first use, then the
/// self head (bias 0 on the diagonal only), which carries every overwrite and the division
/// payload. All heads share `head_dim` = the largest head's component count.
#[derive(Default)]
struct Heads {
    patterns: Vec<PatternHead>,
    self_head: Vec<Component>,
}

impl Heads {
    /// Index of the self head (after the pattern heads).
    fn self_index(&self) -> usize {
        self.patterns.len()
    }
    /// Components of every head, the self head last.
    fn all(&self) -> impl Iterator<Item = &[Component]> {
        let pattern_heads = self.patterns.iter().map(|h| h.comps.as_slice());
        pattern_heads.chain([self.self_head.as_slice()])
    }
    fn count(&self) -> usize {
        self.patterns.len() + 1
    }
    /// Unused components of a smaller head stay zero.
    fn head_dim(&self) -> usize {
        self.all().map(<[Component]>::len).max().unwrap_or(0).max(1)
    }
}

/// **mov `dst ← src from P`** (attention, no Q/K, `zero_attn`). The head of pattern `P` (created
/// on its first use in the block): component c has value weight 1 on src row c and output weight
/// 1 into dst row c, so the head adds `src[P(t)]` into dst (see [`attention_weights`] for why its
/// softmax reads exactly `P.sources(t)`). The self head gets a component with value −h[dst_c] into
/// dst row c: the residual sum is `h[dst] + src[P(t)] − h[dst] = src[P(t)]`, an overwrite.
///
/// `src` and `dst` are the first hidden rows of the registers, `size` their element count.
/// Returns the index of the pattern head.
fn mov(heads: &mut Heads, pattern: Pattern, src: Row, dst: Row, size: usize) -> usize {
    let h = match heads.patterns.iter().position(|h| h.pattern == pattern) {
        Some(h) => h,
        None => {
            heads.patterns.push(PatternHead {
                pattern,
                comps: Vec::new(),
            });
            heads.patterns.len() - 1
        }
    };
    for e in 0..size {
        heads.patterns[h].comps.push(Component {
            v: Form::one(src + e, 1.0),
            out: dst + e,
        });
        heads.self_head.push(Component {
            v: Form::one(dst + e, -1.0),
            out: dst + e,
        });
    }
    h
}

/// **div `dst ← num / |den|`, attention half (DivPrep)**, in the self head: payload rows
/// p1 ← +P·den and p2 ← −P·den (values P·h[den] − h[p1] and −P·h[den] − h[p2]: overwrites), and
/// dst ← 0 (value −h[dst]), so that [`div_apply`] can add the quotient into a zero dst.
/// P·den is exact (P a power of two); the overwrite `h[p1] + (P·den − h[p1])` rounds only when
/// the rows still hold a previous division's payload, and p2 = −p1 stays exact (the two
/// computations are negations of each other), so the payload always sums to zero.
fn div_prep(
    self_head: &mut Vec<Component>,
    den: Row,
    payload: [Row; 2],
    pp: f64,
    dst: Row,
    size: usize,
) {
    let [p1, p2] = payload;
    let mut v1 = Form::one(den, pp);
    v1.add(p1, -1.0);
    let mut v2 = Form::one(den, -pp);
    v2.add(p2, -1.0);
    self_head.push(Component { v: v1, out: p1 });
    self_head.push(Component { v: v2, out: p2 });
    for e in 0..size {
        self_head.push(Component {
            v: Form::one(dst + e, -1.0),
            out: dst + e,
        });
    }
}

/// **div `dst ← num / |den|`, MLP half (DivApply).** The block has LayerNorm on the MLP input
/// (eps 0, weight 1, bias 0); one unit per element: gate = g·(e_{num_e} − e_{zero}), up = 0,
/// b_u = u, down adds into dst_e (cleared by [`div_prep`]).
///
/// With L = width and μ the column mean, the payload cancels in the sum, so
/// `L·σ² = Σ_r h_r² − Lμ² = 2P²den² + R`, `R = Σ_{r∉payload} h_r² − Lμ² ∈ [0, Σ_{r∉payload} h_r²]`;
/// `LN(h)[num] − LN(h)[zero] = (num − μ)/σ − (0 − μ)/σ = num/σ`, so
/// `dst = g·u·num·√L / (√2·P·|den|·√(1 + R/(2P²den²)))`. With `g·u ≈ P·√(2/L)` (δ =
/// |(g·u)²L/(2P²) − 1|, see `division_gain`) the first factor is 1 up to δ, and
/// `1 − 1/√(1+x) ≤ x/2` gives the relative error `≤ δ + (1+δ)·R/(4P²den²)`, which
/// `division_constants` bounds by choosing P.
fn div_apply(units: &mut Vec<Unit>, num: Row, zero: Row, dst: Row, size: usize, dv: &DivReport) {
    for e in 0..size {
        // The gate carries g, the up projection the constant u.
        let mut gate = Form::one(num + e, dv.gain);
        gate.add(zero, -dv.gain);
        units.push(Unit {
            gate,
            gate_bias: 0.0,
            up: Form::default(),
            up_bias: dv.gain_up,
            down: dst + e,
        });
    }
}

/// A `mul` operand as the MLP reads it: the first hidden row of its register, the register's
/// shape, and whether the operand is transposed.
#[derive(Debug, Clone, Copy)]
pub(super) struct MulOperand {
    row: Row,
    reg: Shape,
    transposed: bool,
}

impl MulOperand {
    pub(super) fn of(p: &Program, o: crate::ir::Operand, row: Row) -> MulOperand {
        MulOperand {
            row,
            reg: p.reg(o.reg).shape,
            transposed: o.transposed,
        }
    }
    /// Shape of the operand after its transposition.
    pub(super) fn shape(self) -> Shape {
        if self.transposed {
            self.reg.transposed()
        } else {
            self.reg
        }
    }
    /// Hidden row of the operand's element (i, j).
    pub(super) fn row_of(self, i: usize, j: usize) -> Row {
        self.row + operand_index(self.reg, self.transposed, i, j)
    }
}

/// **mul `dst ← A·B`** (bilinear MLP `down·((gate·m + b_g) ⊙ (up·m + b_u))`). One hidden unit per
/// product term A[i,j]·B[j,k]: gate = e_{A[i,j]}, up = e_{B[j,k]}, down adds it into dst[i,k].
/// After the terms of each dst element one more unit, gate = −e_{dst}, up = 0, b_u = 1, down adds
/// into dst: the residual sum is `h[dst] + Σ_j A[i,j]B[j,k] − h[dst]`, an overwrite. Every unit
/// reads the MLP input, so an in-place product reads the old operands.
fn mul(units: &mut Vec<Unit>, a: MulOperand, b: MulOperand, dst: Row) {
    let (sa, sb) = (a.shape(), b.shape());
    for i in 0..sa.rows {
        for c in 0..sb.cols {
            let out = dst + i * sb.cols + c;
            for j in 0..sa.cols {
                units.push(Unit {
                    gate: Form::one(a.row_of(i, j), 1.0),
                    gate_bias: 0.0,
                    up: Form::one(b.row_of(j, c), 1.0),
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
}

/// **aff `dst ← Σ C_i·src_i + b`.** Two units per dst element e, both with up = 0, b_u = 1 and
/// down adding into dst[e]: first the overwrite, gate = −e_{dst[e]}; then the map, gate =
/// Σ_i Σ_j C_i[e,j]·e_{src_i[j]} (coefficients on the same row merged), b_g = b[e]. The residual
/// sum is `h[dst_e] − h[dst_e] + (Σ C·src + b)`. The dst coefficient is kept in its own unit, not
/// merged into the gate as C − 1: that would round when dst shares rows with a source (in place,
/// or a reused row).
///
/// `gates[e]` lists element e's `(hidden row, coefficient)` pairs in term then operand order.
fn aff(units: &mut Vec<Unit>, dst: Row, bias: &[f64], gates: &[Vec<(Row, f64)>]) {
    for (e, (&be, coefs)) in bias.iter().zip(gates).enumerate() {
        units.push(Unit {
            gate: Form::one(dst + e, -1.0),
            gate_bias: 0.0,
            up: Form::default(),
            up_bias: 1.0,
            down: dst + e,
        });
        let mut gate = Form::default();
        for &(row, c) in coefs {
            gate.add(row, c);
        }
        units.push(Unit {
            gate,
            gate_bias: be,
            up: Form::default(),
            up_bias: 1.0,
            down: dst + e,
        });
    }
}

/// The `(hidden row, coefficient)` pairs of every element of an `aff` destination of `size`
/// elements, in term then operand order, with `read(i)` the first row of term i's register.
pub(super) fn aff_rows(
    p: &Program,
    terms: &[crate::ir::AffTerm],
    size: usize,
    read: impl Fn(usize) -> Row,
) -> Vec<Vec<(Row, f64)>> {
    let term_rows: Vec<Row> = (0..terms.len()).map(read).collect();
    (0..size)
        .map(|e| {
            p.aff_coefficients(terms, e)
                .map(|(ti, _, elem, c)| (term_rows[ti] + elem, c))
                .collect()
        })
        .collect()
}

/// One block before it becomes weights: its heads and units, and the ops they serve.
#[derive(Default)]
struct BlockPlan<'a> {
    heads: Heads,
    /// Ops served by the attention, in op order: (op, its pattern head, part).
    attn_ops: Vec<(OpId, Option<usize>, OpPart)>,
    units: Vec<Unit>,
    /// Ops served by the MLP, in op order.
    mlp_ops: Vec<(OpId, OpPart)>,
    /// The block's division (a block holds at most one); its MLP input is LayerNorm'd.
    div: Option<&'a DivReport>,
}

/// The heads and units of the block holding `ops`: each op's construction, with the rows the
/// allocation gave its operands.
fn plan_block<'a>(
    p: &Program,
    alloc: &Allocation,
    divs: &'a [DivReport],
    ops: &[OpId],
) -> Result<BlockPlan<'a>, LowerError> {
    let mut b = BlockPlan::default();
    for &k in ops {
        let dst = alloc.write_row(k);
        let read = |i| alloc.read_row(p, k, i);
        match &p.ops[k].kind {
            OpKind::Mov { src, pattern, .. } => {
                let size = p.reg(*src).shape.size();
                let h = mov(&mut b.heads, *pattern, read(0), dst, size);
                b.attn_ops.push((k, Some(h), OpPart::Whole));
            }
            OpKind::Div { dst: reg, .. } => {
                let dv = divs
                    .iter()
                    .find(|d| d.op == k)
                    .ok_or_else(|| LowerError::Internal {
                        msg: format!("no division constants for op {k}"),
                    })?;
                let payload = alloc.payload.ok_or_else(|| LowerError::Internal {
                    msg: "division without payload rows".into(),
                })?;
                let size = p.reg(*reg).shape.size();
                div_prep(
                    &mut b.heads.self_head,
                    read(0),
                    payload,
                    dv.payload_scale,
                    dst,
                    size,
                );
                div_apply(&mut b.units, read(1), alloc.zero_row, dst, size, dv);
                b.div = Some(dv);
                b.attn_ops.push((k, None, OpPart::DivPrep));
                b.mlp_ops.push((k, OpPart::DivApply));
            }
            OpKind::Mul { a, b: bo, .. } => {
                let (a, bo) = (
                    MulOperand::of(p, *a, read(0)),
                    MulOperand::of(p, *bo, read(1)),
                );
                mul(&mut b.units, a, bo, dst);
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
    Ok(b)
}

/// **The layer config of a block.** Attention when an op uses it: no Q/K (the scores are the bias
/// alone), the score bias with a null key, `heads` = one per pattern plus the self head,
/// `head_dim` = the largest head. LayerNorm before the MLP (eps 0) when the block divides. A
/// bilinear MLP with one hidden unit per [`Unit`] when it has any.
fn layer_config(plan: &BlockPlan) -> LayerConfig {
    LayerConfig {
        attn_norm: None,
        attn: (!plan.attn_ops.is_empty()).then(|| AttnConfig {
            heads: plan.heads.count(),
            head_dim: plan.heads.head_dim(),
            qk: false,
            bias: true,
            zero_attn: true,
            momentum: None,
        }),
        norm: plan.div.map(|_| NormConfig { eps: 0.0 }),
        mlp: (!plan.units.is_empty()).then_some(MlpConfig {
            kind: MlpKind::Bilinear,
            hidden: plan.units.len(),
            activation: Activation::Gelu,
        }),
    }
}

/// Writes a planned block into its tensors (zeros, shaped by the spec of [`layer_config`]'s
/// config for the same plan, so exactly the parts the plan uses are present).
fn block_weights(
    plan: &BlockPlan,
    t_max: usize,
    w: &mut Block<RawTensor>,
) -> Result<(), LowerError> {
    if let Some(a) = &mut w.attn {
        attention_weights(&plan.heads, t_max, a)?;
    }
    if let Some(n) = &mut w.norm {
        // LayerNorm weight 1, bias 0: the division reads the plain normalised column.
        n.weight.data.fill(1.0);
    }
    if let Some(m) = &mut w.mlp {
        mlp_weights(&plan.units, m)?;
    }
    Ok(())
}

/// The heads' tensors. Head h's component c is inner index `h·head_dim + c`: its value row holds
/// the component's form, its output column a 1 on the component's dst row.
///
/// **Bias.** −∞ everywhere, then the bias row of a pattern head for query t is 0 on the keys
/// `P.sources(t)`, and its null key (column max_len, value 0) is 0 exactly when `P.sources(t)` is
/// empty; the self head's is 0 on the diagonal only. Softmax over {0, −∞} is uniform on the
/// allowed keys, so the head outputs the mean of its value over `P.sources(t)`, or 0 — exactly
/// `src[P(t)]` (a single key gets weight exp(0)/exp(0) = 1 exactly).
fn attention_weights(
    heads: &Heads,
    t_max: usize,
    w: &mut Attention<RawTensor>,
) -> Result<(), LowerError> {
    let hd = heads.head_dim();
    for (h, comps) in heads.all().enumerate() {
        for (c, comp) in comps.iter().enumerate() {
            let i = h * hd + c;
            for (&row, &coef) in &comp.v.0 {
                w.v.weight.set2(i, row.index(), coef);
            }
            w.o.weight.set2(comp.out.index(), i, 1.0);
        }
    }
    let bias = w.bias.as_mut().ok_or_else(|| LowerError::Internal {
        msg: "attention without its score bias".into(),
    })?;
    bias.data.fill(f64::NEG_INFINITY);
    let idx = |h: usize, t: usize, s: usize| (h * t_max + t) * (t_max + 1) + s;
    for (h, head) in heads.patterns.iter().enumerate() {
        for t in 0..t_max {
            let src = head.pattern.sources(t);
            if src.is_empty() {
                bias.data[idx(h, t, t_max)] = 0.0;
            }
            for s in src {
                bias.data[idx(h, t, s)] = 0.0;
            }
        }
    }
    for t in 0..t_max {
        bias.data[idx(heads.self_index(), t, t)] = 0.0;
    }
    Ok(())
}

/// The units' tensors: unit u is hidden index u, with its gate and up forms as rows u of the
/// gate and up weights, its biases at u, and a 1 from u into its down row.
fn mlp_weights(units: &[Unit], w: &mut Mlp<RawTensor>) -> Result<(), LowerError> {
    let gate = w.gate.as_mut().ok_or_else(|| LowerError::Internal {
        msg: "bilinear MLP without its gate".into(),
    })?;
    for (u, unit) in units.iter().enumerate() {
        for (&row, &c) in &unit.gate.0 {
            gate.weight.set2(u, row.index(), c);
        }
        for (&row, &c) in &unit.up.0 {
            w.up.weight.set2(u, row.index(), c);
        }
        gate.bias.data[u] = unit.gate_bias;
        w.up.bias.data[u] = unit.up_bias;
        w.down.weight.set2(unit.down.index(), u, 1.0);
    }
    Ok(())
}

/// Size and sparsity of the compiled model.
pub(super) fn stats(p: &Program, config: &ModelConfig, tensors: &NamedTensors) -> Stats {
    let layers = &config.layers;
    Stats {
        layers: layers.len(),
        primitives: p.ops.len(),
        width: config.width,
        parameters: tensors.values().map(|t| t.data.len()).sum(),
        nonzero: tensors
            .values()
            .map(|t| t.data.iter().filter(|v| **v != 0.0).count())
            .sum(),
        max_heads: layers
            .iter()
            .filter_map(|l| l.attn)
            .map(|a| a.heads)
            .max()
            .unwrap_or(0),
        max_hidden: layers
            .iter()
            .filter_map(|l| l.mlp)
            .map(|m| m.hidden)
            .max()
            .unwrap_or(0),
    }
}

/// The row the read-out reads: the output register's (an input's row, or the row of its last
/// live range), which must be a scalar.
pub(super) fn output_row(p: &Program, alloc: &Allocation) -> Result<Row, LowerError> {
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

#[cfg(test)]
mod tests;
