//! The hand-built model of tests/certify.rs: a small program using every operation (mov with two
//! patterns, mul, aff, div), compiled by hand with the exact target's constructions, each with
//! its derivation beside it. The tensors are filled through the schema's typed views
//! ([`icl::model::schema`]), so no tensor name is written here.
//!
//! Schedule: layer 0: attn {mov xp <- x from prev, mov m <- y from mean(y)}, MLP
//! {mul u <- xp * y}; layer 1: MLP {mul s}; layer 2: MLP {aff den}; layer 3: attn+norm+MLP
//! {div q}; layer 4: MLP {aff o}.

use icl::certify::ModelFiles;
use icl::ir::*;
use icl::layout::*;
use icl::model::config::*;
use icl::model::schema::{self, Attention, Linear, TensorSpec, Weights};
use icl::tensors::{NamedTensors, RawTensor};
use std::collections::BTreeMap;

pub const W: usize = 32;
pub const T: usize = 5; // 2n+1 with n = 2
pub const P_SCALE: f64 = 1048576.0; // 2^20
/// g = P·√2/√L = 2^20·√2/√32 = 2^20/4: then g²L/(2P²) = 1 exactly (δ = 0).
pub const GAIN: f64 = 262144.0;
pub const NEG: f64 = f64::NEG_INFINITY;

// Rows.
pub const Y: usize = 0;
pub const X: usize = 1; // 1, 2
pub const XP: usize = 3; // 3, 4
pub const U: usize = 5; // 5, 6
pub const S: usize = 7;
pub const DEN: usize = 8;
pub const Q: usize = 9; // 9, 10
pub const M: usize = 11;
pub const O: usize = 3; // reuses xp's first row (xp is dead after layer 0)
pub const ONE: usize = 13;
pub const PAY: [usize; 2] = [29, 30];
pub const ZERO: usize = 31;

// ---------------------------------------------------------------------------------------------
// The program.

fn span(line: u32) -> Span {
    Span {
        start: 0,
        end: 0,
        line,
        col: 1,
    }
}

fn reg(name: &str, shape: Shape, kind: RegKind) -> Register {
    Register::new(name, shape, kind)
}

fn op(kind: OpKind, text: &str, line: u32) -> Op {
    Op {
        kind,
        span: span(line),
        text: text.into(),
        iteration: vec![],
    }
}

fn o(reg: RegId) -> Operand {
    Operand {
        reg,
        transposed: false,
    }
}

fn aff(dst: RegId, terms: &[(RegId, &[f64])], bias: f64) -> OpKind {
    OpKind::Aff {
        dst,
        terms: terms
            .iter()
            .map(|(src, coef)| AffTerm {
                src: o(*src),
                coef: coef.to_vec(),
            })
            .collect(),
        bias: vec![bias],
    }
}

/// Registers: 0 y, 1 x, 2 xp, 3 u, 4 s, 5 den, 6 q, 7 m, 8 o.
const REG_Y: RegId = RegId(0);
const REG_X: RegId = RegId(1);
const REG_XP: RegId = RegId(2);
const REG_U: RegId = RegId(3);
const REG_S: RegId = RegId(4);
const REG_DEN: RegId = RegId(5);
const REG_Q: RegId = RegId(6);
const REG_M: RegId = RegId(7);
const REG_O: RegId = RegId(8);

fn registers() -> Vec<Register> {
    vec![
        reg("y", Shape::SCALAR, RegKind::Input(Builtin::Y)),
        reg("x", Shape::vec(2), RegKind::Input(Builtin::X)),
        reg("xp", Shape::vec(2), RegKind::Work),
        reg("u", Shape::vec(2), RegKind::Work),
        reg("s", Shape::SCALAR, RegKind::Work),
        reg("den", Shape::SCALAR, RegKind::Work),
        reg("q", Shape::vec(2), RegKind::Work),
        reg("m", Shape::SCALAR, RegKind::Work),
        reg("o", Shape::SCALAR, RegKind::Work),
    ]
}

/// The operations, at source lines 10 to 16.
fn ops() -> Vec<Op> {
    let mov = |dst, src, pattern| OpKind::Mov { dst, src, pattern };
    let u_t = Operand {
        reg: REG_U,
        transposed: true,
    };
    vec![
        op(
            mov(REG_XP, REG_X, Pattern::Prev),
            "mov xp <- x from prev",
            10,
        ),
        op(
            mov(REG_M, REG_Y, Pattern::Mean(ColumnSet::Y)),
            "mov m <- y from mean(y)",
            11,
        ),
        op(
            OpKind::Mul {
                dst: REG_U,
                a: o(REG_XP),
                b: o(REG_Y),
            },
            "mul u <- xp * y",
            12,
        ),
        op(
            OpKind::Mul {
                dst: REG_S,
                a: u_t,
                b: o(REG_U),
            },
            "mul s <- u^T * u",
            13,
        ),
        op(
            aff(REG_DEN, &[(REG_S, &[2.0])], 1.0),
            "aff den <- 2 * s + 1",
            14,
        ),
        op(
            OpKind::Div {
                dst: REG_Q,
                num: REG_U,
                den: REG_DEN,
            },
            "div q <- u / |den|",
            15,
        ),
        op(
            aff(REG_O, &[(REG_Q, &[1.0, -1.0]), (REG_M, &[3.0])], 0.5),
            "aff o <- [[1, -1]] * q + 3 * m + 0.5",
            16,
        ),
    ]
}

/// y ∈ [-2, 2], x ∈ [-1, 1], den ≥ 1.
fn assumptions() -> Vec<Assumption> {
    let assume = |reg, lo, hi, text: &str, line| Assumption {
        reg,
        bound: Bound::Range { lo, hi },
        span: span(line),
        text: text.into(),
    };
    vec![
        assume(REG_Y, -2.0, 2.0, "assume y in [-2, 2]", 3),
        assume(REG_X, -1.0, 1.0, "assume x in [-1, 1]", 4),
        assume(REG_DEN, 1.0, f64::INFINITY, "assume den >= 1", 17),
    ]
}

/// The program (d = 2, n = 2), output `o`.
pub fn program() -> Program {
    Program {
        source: Source {
            name: "t.icl".into(),
            text: "# hand-built test program\n".into(),
        },
        params: BTreeMap::new(),
        overrides: vec![],
        d: 2,
        n: 2,
        registers: registers(),
        ops: ops(),
        assumptions: assumptions(),
        output: REG_O,
    }
}

// ---------------------------------------------------------------------------------------------
// The model.

fn attn_cfg(heads: usize, head_dim: usize) -> AttnConfig {
    AttnConfig {
        heads,
        head_dim,
        qk: false,
        bias: true,
        zero_attn: true,
        momentum: None,
    }
}

fn layer(attn: Option<AttnConfig>, norm: bool, hidden: usize) -> LayerConfig {
    LayerConfig {
        attn_norm: None,
        attn,
        norm: norm.then_some(NormConfig { eps: 0.0 }),
        mlp: Some(MlpConfig {
            kind: MlpKind::Bilinear,
            hidden,
            activation: Activation::Gelu,
        }),
    }
}

/// Five layers: attention (3 heads) and MLP; MLP; MLP; attention (1 head), LayerNorm and MLP;
/// MLP. Each MLP has one hidden unit per unit its builder ([`Units`]) adds.
fn config() -> ModelConfig {
    ModelConfig {
        format: MODEL_FORMAT.into(),
        kind: ModelKind::Compiled,
        target: "exact".into(),
        dtype: DType::F64,
        d: 2,
        n: 2,
        max_len: T,
        width: W,
        layers: vec![
            layer(Some(attn_cfg(3, 4)), false, 4),
            layer(None, false, 3),
            layer(None, false, 1),
            layer(Some(attn_cfg(1, 5)), true, 2),
            layer(None, false, 1),
        ],
        final_norm: None,
        readout_row: Some(O),
    }
}

/// Bias pattern of one head: 0 on the keys `sources(t)`, the null key (column T) when there
/// are none, −∞ elsewhere: softmax is then uniform over exactly those keys.
fn set_pattern(bias: &mut RawTensor, h: usize, src: impl Fn(usize) -> Vec<usize>) {
    for t in 0..T {
        let s = src(t);
        for k in 0..=T {
            let v = if k == T { s.is_empty() } else { s.contains(&k) };
            bias.data[(h * T + t) * (T + 1) + k] = if v { 0.0 } else { NEG };
        }
    }
}

/// A sparse row of weights: (column, value) pairs.
type Sparse = Vec<(usize, f64)>;

/// A bilinear MLP under construction: units (gate row, gate bias, up row, up bias, down row,
/// down coefficient).
struct Units {
    units: Vec<(Sparse, f64, Sparse, f64, usize, f64)>,
}

impl Units {
    fn new() -> Self {
        Units { units: vec![] }
    }
    /// out[dst] += m[a]·m[b]: gate e_a, up e_b, down e_dst.
    fn product(&mut self, dst: usize, a: usize, b: usize) {
        self.units
            .push((vec![(a, 1.0)], 0.0, vec![(b, 1.0)], 0.0, dst, 1.0));
    }
    /// out[dst] += Σ c·m[src] + bias: gate = that affine form, up = 0 with bias 1 (so the
    /// product is the affine form itself).
    fn affine(&mut self, dst: usize, terms: Vec<(usize, f64)>, bias: f64) {
        self.units.push((terms, bias, vec![], 1.0, dst, 1.0));
    }
    /// Write the units into the (zero) tensors of an MLP; the down bias stays 0.
    fn emit(&self, m: &mut schema::Mlp<RawTensor>) {
        let gate = m.gate.as_mut().expect("a bilinear MLP");
        assert_eq!(gate.weight.shape[0], self.units.len(), "hidden = units");
        for (k, (g, bg, u, bu, dst, dc)) in self.units.iter().enumerate() {
            for &(i, v) in g {
                gate.weight.set2(k, i, gate.weight.at2(k, i) + v);
            }
            gate.bias.data[k] = *bg;
            for &(i, v) in u {
                m.up.weight.set2(k, i, m.up.weight.at2(k, i) + v);
            }
            m.up.bias.data[k] = *bu;
            m.down.weight.set2(*dst, k, *dc);
        }
    }
}

/// One value channel of a head: (head, head-dim, source row, weight, destination row, weight):
/// the value v_{h,j} = weight·h[source], written by W_O into the destination row.
type Channel = (usize, usize, usize, f64, usize, f64);

/// Write the value and output projections of `channels` into a (zero) attention.
fn emit_attn(a: &mut Attention<RawTensor>, head_dim: usize, channels: &[Channel]) {
    for &(h, j, src, wv, dst, wo) in channels {
        let c = h * head_dim + j;
        a.v.weight.set2(c, src, wv);
        a.o.weight.set2(dst, c, a.o.weight.at2(dst, c) + wo);
    }
}

/// Embedding: y → row 0, x → rows 1, 2 (identity); `one` row from the bias; no position
/// table. Read-out: the one-hot of o's row.
fn embed_and_readout(embed: &mut Linear<RawTensor>, readout: &mut Linear<RawTensor>) {
    embed.weight.set2(Y, 0, 1.0);
    embed.weight.set2(X, 1, 1.0);
    embed.weight.set2(X + 1, 2, 1.0);
    embed.bias.data[ONE] = 1.0;
    readout.weight.data[O] = 1.0;
}

/// Layer 0 attention. Head 0: prev, reads x[0], x[1] into xp[0], xp[1]. Head 1: mean(y), reads
/// y into m. Head 2: self, value −xp, −m: subtracting the old value makes both moves
/// overwrites (h + (src − dst_old) = src at dst).
fn layer0_attention(a: &mut Attention<RawTensor>) {
    let bias = a.bias.as_mut().expect("a score bias");
    set_pattern(bias, 0, |t| Pattern::Prev.sources(t));
    set_pattern(bias, 1, |t| Pattern::Mean(ColumnSet::Y).sources(t));
    set_pattern(bias, 2, |t| vec![t]);
    emit_attn(
        a,
        4,
        &[
            (0, 0, X, 1.0, XP, 1.0),
            (0, 1, X + 1, 1.0, XP + 1, 1.0),
            (1, 0, Y, 1.0, M, 1.0),
            (2, 0, XP, -1.0, XP, 1.0),
            (2, 1, XP + 1, -1.0, XP + 1, 1.0),
            (2, 2, M, -1.0, M, 1.0),
        ],
    );
}

/// Layer 3 attention (self head): payload rows get +P·den, −P·den (minus their old value), q
/// is cleared (minus its old value).
fn layer3_attention(a: &mut Attention<RawTensor>) {
    set_pattern(a.bias.as_mut().expect("a score bias"), 0, |t| vec![t]);
    emit_attn(
        a,
        5,
        &[
            (0, 0, DEN, 1.0, PAY[0], P_SCALE),
            (0, 1, PAY[0], -1.0, PAY[0], 1.0),
            (0, 2, PAY[1], -1.0, PAY[1], 1.0),
            (0, 3, Q, -1.0, Q, 1.0),
            (0, 4, Q + 1, -1.0, Q + 1, 1.0),
            // W_O column 0 also writes −P into payload row 2.
            (0, 0, DEN, 1.0, PAY[1], -P_SCALE),
        ],
    );
}

/// The MLP units of every layer.
fn mlp_units() -> [Units; 5] {
    // Layer 0: u_i = xp_i·y, minus the old u_i (overwrite).
    let mut m0 = Units::new();
    for i in 0..2 {
        m0.product(U + i, XP + i, Y);
        m0.affine(U + i, vec![(U + i, -1.0)], 0.0);
    }
    // Layer 1: s = u_0·u_0 + u_1·u_1 − s_old.
    let mut m1 = Units::new();
    m1.product(S, U, U);
    m1.product(S, U + 1, U + 1);
    m1.affine(S, vec![(S, -1.0)], 0.0);
    // Layer 2: den = 2s + 1 − den_old, one unit.
    let mut m2 = Units::new();
    m2.affine(DEN, vec![(S, 2.0), (DEN, -1.0)], 1.0);
    // Layer 3 (after the LayerNorm): q_e = g·(LN[u_e] − LN[zero]).
    let mut m3 = Units::new();
    for e in 0..2 {
        m3.affine(Q + e, vec![(U + e, GAIN), (ZERO, -GAIN)], 0.0);
    }
    // Layer 4: o = q_0 − q_1 + 3m + 0.5 − o_old.
    let mut m4 = Units::new();
    m4.affine(O, vec![(Q, 1.0), (Q + 1, -1.0), (M, 3.0), (O, -1.0)], 0.5);
    [m0, m1, m2, m3, m4]
}

/// Every tensor of `cfg`, zero, then filled by the constructions above; layer 3's LayerNorm
/// has weight 1, bias 0.
fn tensors(cfg: &ModelConfig) -> NamedTensors {
    let spec = Weights::spec(cfg);
    let mut w = spec.map(|s| RawTensor::zeros(&s.shape));
    embed_and_readout(&mut w.embed, &mut w.readout);
    layer0_attention(w.layers[0].attn.as_mut().expect("layer 0 attention"));
    layer3_attention(w.layers[3].attn.as_mut().expect("layer 3 attention"));
    let norm = w.layers[3].norm.as_mut().expect("layer 3 LayerNorm");
    norm.weight.data.iter_mut().for_each(|v| *v = 1.0);
    for (block, units) in w.layers.iter_mut().zip(mlp_units()) {
        units.emit(block.mlp.as_mut().expect("every layer has an MLP"));
    }
    spec.into_named(w)
}

fn placed(p: &Program, k: usize, part: OpPart, heads: Vec<usize>) -> PlacedOp {
    PlacedOp {
        op: OpId(k),
        part,
        text: p.ops[k].text.clone(),
        at: p.location(p.ops[k].span).to_string(),
        heads,
    }
}

/// Where each register lives, with the layers that write it first and read it last.
fn register_placements() -> Vec<RegisterPlacement> {
    let rp = |name: &str, shape: [usize; 2], start: usize, written, last_read| RegisterPlacement {
        name: name.into(),
        shape,
        rows: [Row(start), Row(start + shape[0] * shape[1])],
        written,
        last_read,
    };
    vec![
        rp("y", [1, 1], Y, None, Some(Layer(0))),
        rp("x", [2, 1], X, None, Some(Layer(0))),
        rp("xp", [2, 1], XP, Some(Layer(0)), Some(Layer(0))),
        rp("u", [2, 1], U, Some(Layer(0)), Some(Layer(3))),
        rp("s", [1, 1], S, Some(Layer(1)), Some(Layer(2))),
        rp("den", [1, 1], DEN, Some(Layer(2)), Some(Layer(3))),
        rp("q", [2, 1], Q, Some(Layer(3)), Some(Layer(4))),
        rp("m", [1, 1], M, Some(Layer(0)), Some(Layer(4))),
        rp("o", [1, 1], O, Some(Layer(4)), None),
    ]
}

/// The schedule (module comment): the operations each layer's attention and MLP carry.
fn layer_ops(p: &Program) -> Vec<LayerOps> {
    let whole = |k| placed(p, k, OpPart::Whole, vec![]);
    let layer = |index, attn, mlp| LayerOps {
        index: Layer(index),
        attn,
        mlp,
    };
    vec![
        layer(
            0,
            vec![
                placed(p, 0, OpPart::Whole, vec![0, 2]),
                placed(p, 1, OpPart::Whole, vec![1, 2]),
            ],
            vec![whole(2)],
        ),
        layer(1, vec![], vec![whole(3)]),
        layer(2, vec![], vec![whole(4)]),
        layer(
            3,
            vec![placed(p, 5, OpPart::DivPrep, vec![0])],
            vec![placed(p, 5, OpPart::DivApply, vec![])],
        ),
        layer(4, vec![], vec![whole(6)]),
    ]
}

/// layout.json of the hand-built model.
fn layout() -> Layout {
    Layout {
        format: LAYOUT_FORMAT.into(),
        width: W,
        inputs: [
            ("y".to_string(), [Row(Y), Row(Y + 1)]),
            ("x".to_string(), [Row(X), Row(X + 2)]),
            ("one".to_string(), [Row(ONE), Row(ONE + 1)]),
        ]
        .into_iter()
        .collect(),
        zero_row: Row(ZERO),
        div_payload: Some(PAY.map(Row)),
        div_constants: vec![DivConstants {
            layer: Layer(3),
            payload_scale: P_SCALE,
            gain: GAIN,
            gain_up: 1.0,
        }],
        registers: register_placements(),
        rows: (0..W)
            .map(|r| RowNames {
                row: Row(r),
                names: vec![],
            })
            .collect(),
        layers: layer_ops(&program()),
        output: OutputPlacement {
            register: "o".into(),
            row: Row(O),
        },
        encoding: "columns x̃_1, ỹ_1, …".into(),
        paper: None,
    }
}

/// The hand-built model of [`program`]: config, tensors, layout.
pub fn files() -> ModelFiles {
    let config = config();
    ModelFiles {
        tensors: tensors(&config),
        config,
        dtype: DType::F64,
        layout: layout(),
    }
}

/// The stored tensor the schema of `f`'s config names by `pick` (for corrupting it).
pub fn tensor_mut(
    f: &mut ModelFiles,
    pick: impl FnOnce(&Weights<TensorSpec>) -> &TensorSpec,
) -> &mut RawTensor {
    let spec = Weights::spec(&f.config);
    let name = &pick(&spec).name;
    f.tensors
        .get_mut(name)
        .unwrap_or_else(|| panic!("no tensor `{name}`"))
}

/// Layer `l`'s attention in a spec.
pub fn attn(s: &Weights<TensorSpec>, l: usize) -> &Attention<TensorSpec> {
    s.layers[l].attn.as_ref().expect("an attention")
}

/// Layer `l`'s MLP in a spec.
pub fn mlp(s: &Weights<TensorSpec>, l: usize) -> &schema::Mlp<TensorSpec> {
    s.layers[l].mlp.as_ref().expect("an MLP")
}

/// Layer `l`'s MLP gate in a spec.
pub fn gate(s: &Weights<TensorSpec>, l: usize) -> &Linear<TensorSpec> {
    mlp(s, l).gate.as_ref().expect("a bilinear MLP")
}
