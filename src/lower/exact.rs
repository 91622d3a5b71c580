//! The `exact` target: weights whose algebra is exact, except LayerNorm division whose relative
//! error is bounded below the dtype's epsilon.
//!
//! Block `l` computes `h ← h + Attn_l(h); h ← h + MLP_l(norm_l?(h))` (docs/FORMATS.md). [`compile`]
//! schedules the ops into blocks (`schedule`), gives their registers hidden rows (`alloc`), and
//! builds every block from one construction per operation, each documented with its derivation:
//! `embedding` (inputs and read-out), `mov` (a pattern head plus the self head's overwrite), `mul`
//! and `aff` (bilinear MLP units), `div_prep` (the division's attention half) and `div_apply` (its
//! MLP half, with the constants of `division_constants`). `layer_config` says which parts a block
//! has; `attention_weights` and `mlp_weights` write its heads and units into the tensors of
//! [`crate::model::schema`].

use super::alloc::{allocate, Allocation};
use super::schedule::{schedule, Schedule};
use super::LowerError;
use crate::ir::{
    operand_index, Builtin, Location, OpId, OpKind, Pattern, Program, RegId, RegKind, Shape,
};
use crate::layout::{
    DivConstants, Layer, LayerOps, Layout, OpPart, OutputPlacement, PlacedOp, RegisterPlacement,
    Row, RowNames, LAYOUT_FORMAT,
};
use crate::model::config::{
    Activation, AttnConfig, DType, LayerConfig, MlpConfig, MlpKind, ModelConfig, ModelKind,
    NormConfig, MODEL_FORMAT,
};
use crate::model::schema::{Attention, Block, Mlp, Weights};
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
    pub op: OpId,
    pub layer: Layer,
    pub text: String,
    pub at: Location,
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
struct Form(BTreeMap<Row, f64>);

impl Form {
    fn add(&mut self, row: Row, c: f64) {
        *self.0.entry(row).or_insert(0.0) += c;
    }
    fn one(row: Row, c: f64) -> Form {
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

fn elem_name(name: &str, shape: Shape, e: usize) -> String {
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
fn check_division_operands(p: &Program) -> Result<(), LowerError> {
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
fn ops_by_block(sched: &Schedule) -> Vec<Vec<OpId>> {
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
fn embedding(p: &Program, alloc: &Allocation, out_row: Row, w: &mut Weights<RawTensor>) {
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
struct MulOperand {
    row: Row,
    reg: Shape,
    transposed: bool,
}

impl MulOperand {
    fn of(p: &Program, o: crate::ir::Operand, row: Row) -> MulOperand {
        MulOperand {
            row,
            reg: p.reg(o.reg).shape,
            transposed: o.transposed,
        }
    }
    /// Shape of the operand after its transposition.
    fn shape(self) -> Shape {
        if self.transposed {
            self.reg.transposed()
        } else {
            self.reg
        }
    }
    /// Hidden row of the operand's element (i, j).
    fn row_of(self, i: usize, j: usize) -> Row {
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
                let term_rows: Vec<Row> = (0..terms.len()).map(read).collect();
                let gates: Vec<Vec<(Row, f64)>> = (0..p.reg(*reg).shape.size())
                    .map(|e| {
                        p.aff_coefficients(terms, e)
                            .map(|(ti, _, elem, c)| (term_rows[ti] + elem, c))
                            .collect()
                    })
                    .collect();
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

/// The ops of block `l` as `layout.json` places them: the attention's with the heads they use
/// (a mov's pattern head and the self head; a division's self head), then the MLP's.
fn placed_ops(p: &Program, l: Layer, plan: &BlockPlan) -> LayerOps {
    let self_idx = plan.heads.self_index();
    let attn = plan
        .attn_ops
        .iter()
        .map(|&(k, h, part)| {
            let heads = match h {
                Some(h) => vec![h, self_idx],
                None => vec![self_idx],
            };
            placed(p, k, part, heads)
        })
        .collect();
    let mlp = plan
        .mlp_ops
        .iter()
        .map(|&(k, part)| placed(p, k, part, vec![]))
        .collect();
    LayerOps {
        index: l,
        attn,
        mlp,
    }
}

/// Size and sparsity of the compiled model.
fn stats(p: &Program, config: &ModelConfig, tensors: &NamedTensors) -> Stats {
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

/// Op `k` as `layout.json` places it: its source text and location, and the heads it uses.
fn placed(p: &Program, k: OpId, part: OpPart, heads: Vec<usize>) -> PlacedOp {
    let op = &p.ops[k];
    PlacedOp {
        op: k,
        part,
        text: op.text.clone(),
        // layout.json keeps the location as text (docs/FORMATS.md).
        at: p.location(op.span).to_string(),
        heads,
    }
}

/// The row the read-out reads: the output register's (an input's row, or the row of its last
/// live range), which must be a scalar.
fn output_row(p: &Program, alloc: &Allocation) -> Result<Row, LowerError> {
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
    let mut put = |row: Row, v: f64, who: String| {
        let row = row.index();
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

/// **Division constants**, one [`DivReport`] per `div` (see [`div_apply`] for the error
/// `δ + (1+δ)·R/(4P²den²)` they bound). R_max bounds R by Σ over non-payload rows of the square of
/// the largest |value| the row can hold (the maximum over every register that ever occupies it,
/// from the range analysis: `row_bounds`); P is the smallest power of two (≥ 1) with
/// `R_max/(4P²den_min²) ≤ eps/8`, and `division_gain` finds g·u with δ ≤ eps/16, so the relative
/// error stays below eps/4. Overflow: `Σ_r (h_r − μ)² ≤ L·(2M)²` with
/// `M = max(P·den_max, max_r bound_r)` must not exceed the dtype's largest finite value.
fn division_constants(
    p: &Program,
    ranges: &Ranges,
    alloc: &Allocation,
    sched: &Schedule,
    dtype: DType,
) -> Result<Vec<DivReport>, LowerError> {
    let has_div = p.ops.iter().any(|o| matches!(o.kind, OpKind::Div { .. }));
    if !has_div {
        return Ok(Vec::new());
    }
    let bounds = row_bounds(p, ranges, alloc);
    let mut out = Vec::new();
    for (k, op) in p.ops.iter().enumerate() {
        if let OpKind::Div { den, .. } = op.kind {
            let at = DivSite {
                p,
                k: OpId(k),
                layer: Layer(sched.block_of[k]),
                den,
            };
            out.push(division_report(at, ranges, alloc, &bounds, dtype)?);
        }
    }
    Ok(out)
}

/// The `div` a [`division_report`] is for: op `k` of `p` in block `layer`, dividing by `den`.
#[derive(Clone, Copy)]
struct DivSite<'a> {
    p: &'a Program,
    k: OpId,
    layer: Layer,
    den: RegId,
}

impl DivSite<'_> {
    fn error(self, msg: String) -> LowerError {
        let op = &self.p.ops[self.k];
        LowerError::Division {
            at: self.p.location(op.span),
            op: self.k,
            text: op.text.clone(),
            msg,
        }
    }
}

/// The constants of one division (the derivation is on [`division_constants`]).
fn division_report(
    site: DivSite,
    ranges: &Ranges,
    alloc: &Allocation,
    bounds: &[(f64, String)],
    dtype: DType,
) -> Result<DivReport, LowerError> {
    let (p, den) = (site.p, site.den);
    let den_name = &p.reg(den).name;
    let (r_max, m_rows) = non_payload_bound(bounds, alloc.payload).map_err(|(row, who)| {
        site.error(format!(
            "the range analysis gives no finite bound for hidden row {row} (`{who}`), \
             and every row enters the LayerNorm; state its range with an assumption \
             (e.g. `assume {} in [lo, hi]`)",
            who.split('[').next().unwrap_or(who)
        ))
    })?;
    let den_iv = ranges
        .before_op(site.k, den)
        .and_then(|v| v.first().copied())
        .ok_or_else(|| site.error(format!("no range for the divisor `{den_name}`")))?;
    let (den_min, den_max) = (den_iv.abs_min(), den_iv.abs_max());
    if den_min <= 0.0 || !den_max.is_finite() {
        return Err(site.error(format!(
            "the divisor `{den_name}` has range {den_iv}; the payload needs 0 < |den| ≤ a finite \
             bound (state it, e.g. `assume {den_name} in [1, 1000]`)",
        )));
    }
    let eps = dtype.epsilon();
    let pp = payload_scale(r_max, den_min, eps).ok_or_else(|| {
        site.error(format!(
            "no finite payload scale: R_max = {r_max:e}, min |den| = {den_min:e}"
        ))
    })?;
    let l = alloc.width as f64;
    let max_finite = match dtype {
        DType::F32 => f32::MAX as f64,
        DType::F64 => f64::MAX,
    };
    let m = (pp * den_max).max(m_rows);
    let sum_sq = 4.0 * l * m * m;
    if !sum_sq.is_finite() || sum_sq > max_finite {
        return Err(site.error(format!(
            "the payload P·|den| ≤ {:e} (P = {pp:e} chosen for {} precision with \
             R_max = {r_max:e}, |den| ∈ [{den_min:e}, {den_max:e}]) can overflow the {} \
             LayerNorm variance ({} rows); tighten the ranges of the registers or of `{den_name}`",
            pp * den_max,
            dtype.name(),
            dtype.name(),
            alloc.width,
        )));
    }
    // The relative error is δ + (1+δ)·R_max/(4P²den_min²) — the bound the certifier proves.
    let (gain, gain_up, delta) = division_gain(pp, l, dtype);
    if delta > eps / 16.0 {
        return Err(site.error(format!(
            "no gate weight and up bias in {} whose product is within {:e} of P·√(2/L) \
             (best δ = {delta:e})",
            dtype.name(),
            eps / 16.0
        )));
    }
    let rel =
        (delta + (1.0 + delta) * (r_max / (4.0 * pp * pp * den_min * den_min)).next_up()).next_up();
    let op = &p.ops[site.k];
    Ok(DivReport {
        op: site.k,
        layer: site.layer,
        text: op.text.clone(),
        at: p.location(op.span),
        payload_scale: pp,
        gain,
        gain_up,
        r_max,
        den_abs: [den_min, den_max],
        relative_error: rel,
        den: den_name.clone(),
    })
}

/// `(R_max, max bound)` over the rows outside the payload: R_max = Σ bound_r², rounded upward.
/// A row without a finite bound is returned as the error, with its register's name.
fn non_payload_bound(
    bounds: &[(f64, String)],
    payload: Option<[Row; 2]>,
) -> Result<(f64, f64), (Row, &str)> {
    let payload = payload.unwrap_or([Row(usize::MAX); 2]);
    let mut r_max = 0.0f64;
    let mut m_rows = 0.0f64;
    for (row, (v, who)) in bounds.iter().enumerate() {
        let row = Row(row);
        if payload.contains(&row) {
            continue;
        }
        if !v.is_finite() {
            return Err((row, who));
        }
        r_max = (r_max + (v * v).next_up()).next_up();
        m_rows = m_rows.max(*v);
    }
    Ok((r_max, m_rows))
}

/// Smallest P = 2^k ≥ 1 with R_max ≤ (eps/2)·P²·den_min² (⇔ R_max/(4P²den_min²) ≤ eps/8), or
/// `None` when no finite P reaches it.
fn payload_scale(r_max: f64, den_min: f64, eps: f64) -> Option<f64> {
    let mut pp = 1.0f64;
    while r_max > 0.5 * eps * pp * pp * den_min * den_min {
        pp *= 2.0;
        if !pp.is_finite() {
            return None;
        }
    }
    Some(pp)
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

/// `layout.json`: where every input and register lives, what every row holds over the layers,
/// the ops of every layer, the division constants and the output row.
fn build_layout(
    p: &Program,
    alloc: &Allocation,
    nblocks: usize,
    layers: Vec<LayerOps>,
    divs: &[DivReport],
    out_row: Row,
) -> Layout {
    let mut names: Vec<Vec<String>> = vec![Vec::new(); alloc.width];
    let (inputs, mut registers) = input_placements(p, alloc, &mut names);
    registers.extend(work_placements(p, alloc, nblocks, &mut names));
    if let Some([p1, p2]) = alloc.payload {
        names[p1.index()].push("div payload +P·den".into());
        names[p2.index()].push("div payload −P·den".into());
    }
    names[alloc.zero_row.index()].push("zero (never written)".into());
    let rows = names
        .into_iter()
        .enumerate()
        .map(|(row, mut names)| {
            if names.is_empty() {
                names.push("unused (always 0)".into());
            }
            RowNames {
                row: Row(row),
                names,
            }
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

/// The inputs' rows (y and x always, at rows 0..=d) and their register placements; names the
/// rows of inputs the program never reads (embedded as 0) and of every input it reads.
fn input_placements(
    p: &Program,
    alloc: &Allocation,
    names: &mut [Vec<String>],
) -> (BTreeMap<String, [Row; 2]>, Vec<RegisterPlacement>) {
    let mut inputs = BTreeMap::new();
    let mut registers = Vec::new();
    inputs.insert("y".to_string(), [Row(0), Row(1)]);
    inputs.insert("x".to_string(), [Row(1), Row(p.d + 1)]);
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
            last_read: alloc.input_last_read[reg].map(Layer),
        });
        for e in 0..size {
            names[(row + e).index()].push(format!("{} (input)", elem_name(&r.name, r.shape, e)));
        }
    }
    (inputs, registers)
}

/// The work registers' placements in order of first write (the output live until the last
/// layer), and per row the registers it holds with their layer spans (consecutive live ranges of
/// the same element merged).
fn work_placements(
    p: &Program,
    alloc: &Allocation,
    nblocks: usize,
    names: &mut [Vec<String>],
) -> Vec<RegisterPlacement> {
    let last_layer = nblocks.saturating_sub(1);
    let final_out_web = alloc.webs.iter().rposition(|w| w.reg == p.output);
    // Per row: (first layer, last layer, register, element) of every live range, merged below.
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
                written: Some(Layer(w.written_block)),
                last_read: None,
            });
        pl.last_read = pl.last_read.max(last_read.map(Layer));
        let until = last_read.unwrap_or(w.written_block);
        for e in 0..size {
            spans[(w.row + e).index()].push((w.written_block, until, w.reg, e));
        }
    }
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
    let mut placed: Vec<RegisterPlacement> = placements.into_values().collect();
    placed.sort_by_key(|pl| (pl.written, pl.rows[0]));
    placed
}

#[cfg(test)]
mod tests;
