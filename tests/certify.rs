//! The certifier accepts a correctly compiled model and rejects corrupted ones, naming the
//! layer and the operation (DESIGN §4.4).
//!
//! Until the compiler (`lower`) lands, the model is built by hand here: a small program using
//! every operation (mov with two patterns, mul, aff, div) compiled with the exact target's
//! constructions, each with its derivation beside it. A forward pass written from
//! docs/FORMATS.md alone checks that the hand-built model computes the program (so "accepted"
//! means something), then each corruption is asserted to be rejected.

mod common;

use icl::certify::{self, Certificate, Verdict};
use icl::ir::*;
use icl::layout::*;
use icl::model::config::*;
use icl::tensors::{NamedTensors, RawTensor};
use std::collections::BTreeMap;
use std::path::Path;

const W: usize = 32;
const T: usize = 5; // 2n+1 with n = 2
const P_SCALE: f64 = 1048576.0; // 2^20
                                // g = P·√2/√L = 2^20·√2/√32 = 2^20/4: then g²L/(2P²) = 1 exactly (δ = 0).
const GAIN: f64 = 262144.0;
const NEG: f64 = f64::NEG_INFINITY;

// Rows.
const Y: usize = 0;
const X: usize = 1; // 1, 2
const XP: usize = 3; // 3, 4
const U: usize = 5; // 5, 6
const S: usize = 7;
const DEN: usize = 8;
const Q: usize = 9; // 9, 10
const M: usize = 11;
const O: usize = 3; // reuses xp's first row (xp is dead after layer 0)
const ONE: usize = 13;
const PAY: [usize; 2] = [29, 30];
const ZERO: usize = 31;

fn reg(name: &str, shape: Shape, kind: RegKind) -> Register {
    Register {
        name: name.into(),
        shape,
        kind,
        pinned: None,
        span: Span::default(),
    }
}

fn op(kind: OpKind, text: &str, line: u32) -> Op {
    Op {
        kind,
        span: Span {
            start: 0,
            end: 0,
            line,
            col: 1,
        },
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

/// The program, registers: 0 y, 1 x, 2 xp, 3 u, 4 s, 5 den, 6 q, 7 m, 8 o.
fn program() -> Program {
    let registers = vec![
        reg("y", Shape::SCALAR, RegKind::Input(Builtin::Y)),
        reg("x", Shape::vec(2), RegKind::Input(Builtin::X)),
        reg("xp", Shape::vec(2), RegKind::Work),
        reg("u", Shape::vec(2), RegKind::Work),
        reg("s", Shape::SCALAR, RegKind::Work),
        reg("den", Shape::SCALAR, RegKind::Work),
        reg("q", Shape::vec(2), RegKind::Work),
        reg("m", Shape::SCALAR, RegKind::Work),
        reg("o", Shape::SCALAR, RegKind::Work),
    ];
    let ops = vec![
        op(
            OpKind::Mov {
                dst: 2,
                src: 1,
                pattern: Pattern::Prev,
            },
            "mov xp <- x from prev",
            10,
        ),
        op(
            OpKind::Mov {
                dst: 7,
                src: 0,
                pattern: Pattern::Mean(ColumnSet::Y),
            },
            "mov m <- y from mean(y)",
            11,
        ),
        op(
            OpKind::Mul {
                dst: 3,
                a: o(2),
                b: o(0),
            },
            "mul u <- xp * y",
            12,
        ),
        op(
            OpKind::Mul {
                dst: 4,
                a: Operand {
                    reg: 3,
                    transposed: true,
                },
                b: o(3),
            },
            "mul s <- u^T * u",
            13,
        ),
        op(
            OpKind::Aff {
                dst: 5,
                terms: vec![AffTerm {
                    src: o(4),
                    coef: vec![2.0],
                }],
                bias: vec![1.0],
            },
            "aff den <- 2 * s + 1",
            14,
        ),
        op(
            OpKind::Div {
                dst: 6,
                num: 3,
                den: 5,
            },
            "div q <- u / |den|",
            15,
        ),
        op(
            OpKind::Aff {
                dst: 8,
                terms: vec![
                    AffTerm {
                        src: o(6),
                        coef: vec![1.0, -1.0],
                    },
                    AffTerm {
                        src: o(7),
                        coef: vec![3.0],
                    },
                ],
                bias: vec![0.5],
            },
            "aff o <- [[1, -1]] * q + 3 * m + 0.5",
            16,
        ),
    ];
    let assume = |reg, bound, text: &str, line| Assumption {
        reg,
        bound,
        span: Span {
            start: 0,
            end: 0,
            line,
            col: 1,
        },
        text: text.into(),
    };
    Program {
        source: Source {
            name: "t.icl".into(),
            text: "# hand-built test program\n".into(),
        },
        params: BTreeMap::new(),
        overrides: vec![],
        d: 2,
        n: 2,
        registers,
        ops,
        assumptions: vec![
            assume(
                0,
                Bound::Range { lo: -2.0, hi: 2.0 },
                "assume y in [-2, 2]",
                3,
            ),
            assume(
                1,
                Bound::Range { lo: -1.0, hi: 1.0 },
                "assume x in [-1, 1]",
                4,
            ),
            assume(
                5,
                Bound::Range {
                    lo: 1.0,
                    hi: f64::INFINITY,
                },
                "assume den >= 1",
                17,
            ),
        ],
        output: 8,
    }
}

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
struct Mlp {
    units: Vec<(Sparse, f64, Sparse, f64, usize, f64)>,
}

impl Mlp {
    fn new() -> Self {
        Mlp { units: vec![] }
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
    fn emit(&self, t: &mut NamedTensors, l: usize) {
        let h = self.units.len();
        let mut gw = RawTensor::zeros(&[h, W]);
        let mut gb = RawTensor::zeros(&[h]);
        let mut uw = RawTensor::zeros(&[h, W]);
        let mut ub = RawTensor::zeros(&[h]);
        let mut dw = RawTensor::zeros(&[W, h]);
        for (k, (g, bg, u, bu, dst, dc)) in self.units.iter().enumerate() {
            for &(i, v) in g {
                gw.set2(k, i, gw.at2(k, i) + v);
            }
            gb.data[k] = *bg;
            for &(i, v) in u {
                uw.set2(k, i, uw.at2(k, i) + v);
            }
            ub.data[k] = *bu;
            dw.set2(*dst, k, *dc);
        }
        let pre = format!("layers.{l}.mlp");
        t.insert(format!("{pre}.gate.weight"), gw);
        t.insert(format!("{pre}.gate.bias"), gb);
        t.insert(format!("{pre}.up.weight"), uw);
        t.insert(format!("{pre}.up.bias"), ub);
        t.insert(format!("{pre}.down.weight"), dw);
        t.insert(format!("{pre}.down.bias"), RawTensor::zeros(&[W]));
    }
}

/// Attention of one layer from (head, head-dim, source row, weight, destination row): the value
/// v_{h,j} = weight·h[source], written by W_O into the destination row.
fn emit_attn(
    t: &mut NamedTensors,
    l: usize,
    cfg: &AttnConfig,
    moves: &[(usize, usize, usize, f64, usize, f64)],
    bias: RawTensor,
) {
    let inner = cfg.inner();
    let mut vw = RawTensor::zeros(&[inner, W]);
    let mut ow = RawTensor::zeros(&[W, inner]);
    for &(h, j, src, wv, dst, wo) in moves {
        let c = h * cfg.head_dim + j;
        vw.set2(c, src, wv);
        ow.set2(dst, c, ow.at2(dst, c) + wo);
    }
    let pre = format!("layers.{l}.attn");
    t.insert(format!("{pre}.v.weight"), vw);
    t.insert(format!("{pre}.v.bias"), RawTensor::zeros(&[inner]));
    t.insert(format!("{pre}.o.weight"), ow);
    t.insert(format!("{pre}.o.bias"), RawTensor::zeros(&[W]));
    t.insert(format!("{pre}.bias"), bias);
}

fn placed(p: &Program, k: usize, part: OpPart, heads: Vec<usize>) -> PlacedOp {
    PlacedOp {
        op: k,
        part,
        text: p.ops[k].text.clone(),
        at: p.location(p.ops[k].span),
        heads,
    }
}

/// Compile `program()` by hand. Schedule:
/// layer 0: attn {mov xp <- x from prev, mov m <- y from mean(y)}, MLP {mul u <- xp * y};
/// layer 1: MLP {mul s}; layer 2: MLP {aff den}; layer 3: attn+norm+MLP {div q};
/// layer 4: MLP {aff o}.
fn build() -> (ModelConfig, NamedTensors, Layout) {
    let p = program();
    let mut t = NamedTensors::new();
    // Embedding: y → row 0, x → rows 1, 2 (identity); `one` row from the bias.
    let mut ew = RawTensor::zeros(&[W, 3]);
    ew.set2(Y, 0, 1.0);
    ew.set2(X, 1, 1.0);
    ew.set2(X + 1, 2, 1.0);
    let mut eb = RawTensor::zeros(&[W]);
    eb.data[ONE] = 1.0;
    t.insert("embed.weight".into(), ew);
    t.insert("embed.bias".into(), eb);
    t.insert("pos.weight".into(), RawTensor::zeros(&[T, W]));
    let mut rw = RawTensor::zeros(&[1, W]);
    rw.data[O] = 1.0;
    t.insert("readout.weight".into(), rw);
    t.insert("readout.bias".into(), RawTensor::zeros(&[1]));

    // Layer 0 attention. Head 0: prev, reads x[0], x[1] into xp[0], xp[1]. Head 1: mean(y),
    // reads y into m. Head 2: self, value −xp, −m: subtracting the old value makes both moves
    // overwrites (h + (src − dst_old) = src at dst).
    let a0 = attn_cfg(3, 4);
    let mut b0 = RawTensor::zeros(&[3, T, T + 1]);
    set_pattern(&mut b0, 0, |t| Pattern::Prev.sources(t));
    set_pattern(&mut b0, 1, |t| Pattern::Mean(ColumnSet::Y).sources(t));
    set_pattern(&mut b0, 2, |t| vec![t]);
    emit_attn(
        &mut t,
        0,
        &a0,
        &[
            (0, 0, X, 1.0, XP, 1.0),
            (0, 1, X + 1, 1.0, XP + 1, 1.0),
            (1, 0, Y, 1.0, M, 1.0),
            (2, 0, XP, -1.0, XP, 1.0),
            (2, 1, XP + 1, -1.0, XP + 1, 1.0),
            (2, 2, M, -1.0, M, 1.0),
        ],
        b0,
    );
    // Layer 0 MLP: u_i = xp_i·y, minus the old u_i (overwrite).
    let mut m0 = Mlp::new();
    for i in 0..2 {
        m0.product(U + i, XP + i, Y);
        m0.affine(U + i, vec![(U + i, -1.0)], 0.0);
    }
    m0.emit(&mut t, 0);
    // Layer 1 MLP: s = u_0·u_0 + u_1·u_1 − s_old.
    let mut m1 = Mlp::new();
    m1.product(S, U, U);
    m1.product(S, U + 1, U + 1);
    m1.affine(S, vec![(S, -1.0)], 0.0);
    m1.emit(&mut t, 1);
    // Layer 2 MLP: den = 2s + 1 − den_old, one unit.
    let mut m2 = Mlp::new();
    m2.affine(DEN, vec![(S, 2.0), (DEN, -1.0)], 1.0);
    m2.emit(&mut t, 2);
    // Layer 3 attention (self head): payload rows get +P·den, −P·den (minus their old value),
    // q is cleared (minus its old value).
    let a3 = attn_cfg(1, 5);
    let mut b3 = RawTensor::zeros(&[1, T, T + 1]);
    set_pattern(&mut b3, 0, |t| vec![t]);
    let mut moves = vec![
        (0, 0, DEN, 1.0, PAY[0], P_SCALE),
        (0, 1, PAY[0], -1.0, PAY[0], 1.0),
        (0, 2, PAY[1], -1.0, PAY[1], 1.0),
        (0, 3, Q, -1.0, Q, 1.0),
        (0, 4, Q + 1, -1.0, Q + 1, 1.0),
    ];
    // W_O column 0 also writes −P into payload row 2.
    moves.push((0, 0, DEN, 1.0, PAY[1], -P_SCALE));
    emit_attn(&mut t, 3, &a3, &moves, b3);
    // Layer 3 LayerNorm (weight 1, bias 0) and MLP: q_e = g·(LN[u_e] − LN[zero]).
    let mut nw = RawTensor::zeros(&[W]);
    nw.data.iter_mut().for_each(|v| *v = 1.0);
    t.insert("layers.3.norm.weight".into(), nw);
    t.insert("layers.3.norm.bias".into(), RawTensor::zeros(&[W]));
    let mut m3 = Mlp::new();
    for e in 0..2 {
        m3.affine(Q + e, vec![(U + e, GAIN), (ZERO, -GAIN)], 0.0);
    }
    m3.emit(&mut t, 3);
    // Layer 4 MLP: o = q_0 − q_1 + 3m + 0.5 − o_old.
    let mut m4 = Mlp::new();
    m4.affine(O, vec![(Q, 1.0), (Q + 1, -1.0), (M, 3.0), (O, -1.0)], 0.5);
    m4.emit(&mut t, 4);

    let cfg = ModelConfig {
        format: MODEL_FORMAT.into(),
        kind: ModelKind::Compiled,
        target: "exact".into(),
        dtype: DType::F64,
        d: 2,
        n: 2,
        max_len: T,
        width: W,
        layers: vec![
            layer(Some(a0), false, 4),
            layer(None, false, 3),
            layer(None, false, 1),
            layer(Some(a3), true, 2),
            layer(None, false, 1),
        ],
        final_norm: None,
        readout_row: Some(O),
    };
    let rp = |name: &str,
              shape: [usize; 2],
              start: usize,
              written: Option<usize>,
              last: Option<usize>| {
        RegisterPlacement {
            name: name.into(),
            shape,
            rows: [start, start + shape[0] * shape[1]],
            written,
            last_read: last,
        }
    };
    let registers = vec![
        rp("y", [1, 1], Y, None, Some(0)),
        rp("x", [2, 1], X, None, Some(0)),
        rp("xp", [2, 1], XP, Some(0), Some(0)),
        rp("u", [2, 1], U, Some(0), Some(3)),
        rp("s", [1, 1], S, Some(1), Some(2)),
        rp("den", [1, 1], DEN, Some(2), Some(3)),
        rp("q", [2, 1], Q, Some(3), Some(4)),
        rp("m", [1, 1], M, Some(0), Some(4)),
        rp("o", [1, 1], O, Some(4), None),
    ];
    let layers = vec![
        LayerOps {
            index: 0,
            attn: vec![
                placed(&p, 0, OpPart::Whole, vec![0, 2]),
                placed(&p, 1, OpPart::Whole, vec![1, 2]),
            ],
            mlp: vec![placed(&p, 2, OpPart::Whole, vec![])],
        },
        LayerOps {
            index: 1,
            attn: vec![],
            mlp: vec![placed(&p, 3, OpPart::Whole, vec![])],
        },
        LayerOps {
            index: 2,
            attn: vec![],
            mlp: vec![placed(&p, 4, OpPart::Whole, vec![])],
        },
        LayerOps {
            index: 3,
            attn: vec![placed(&p, 5, OpPart::DivPrep, vec![0])],
            mlp: vec![placed(&p, 5, OpPart::DivApply, vec![])],
        },
        LayerOps {
            index: 4,
            attn: vec![],
            mlp: vec![placed(&p, 6, OpPart::Whole, vec![])],
        },
    ];
    let layout = Layout {
        format: LAYOUT_FORMAT.into(),
        width: W,
        inputs: [
            ("y".to_string(), [Y, Y + 1]),
            ("x".to_string(), [X, X + 2]),
            ("one".to_string(), [ONE, ONE + 1]),
        ]
        .into_iter()
        .collect(),
        zero_row: ZERO,
        div_payload: Some(PAY),
        div_constants: vec![DivConstants {
            layer: 3,
            payload_scale: P_SCALE,
            gain: GAIN,
            gain_up: 1.0,
        }],
        registers,
        rows: (0..W)
            .map(|r| RowNames {
                row: r,
                names: vec![],
            })
            .collect(),
        layers,
        output: OutputPlacement {
            register: "o".into(),
            row: O,
        },
        encoding: "columns x̃_1, ỹ_1, …".into(),
    };
    (cfg, t, layout)
}

fn files() -> certify::ModelFiles {
    let (config, tensors, layout) = build();
    certify::ModelFiles {
        config,
        tensors,
        dtype: DType::F64,
        layout,
    }
}

/// Write a model directory (with the certificate the checker proves for the untouched model).
fn write_dir(dir: &Path, f: &certify::ModelFiles, cert: &Certificate) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&f.config).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("layout.json"),
        serde_json::to_string_pretty(&f.layout).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("certificate.json"),
        serde_json::to_string_pretty(cert).unwrap(),
    )
    .unwrap();
    icl::tensors::save(&dir.join("model.safetensors"), &f.tensors, f.dtype).unwrap();
}

fn check_dir(dir: &Path) -> anyhow::Result<Certificate> {
    certify::run_check_with(dir, |rec| {
        assert_eq!(rec.name, "t.icl");
        Ok(program())
    })
}

/// Apply a corruption to a fresh copy of the model, write it, run the checker.
fn corrupted(f: impl FnOnce(&mut certify::ModelFiles)) -> String {
    let good = files();
    let cert = certify::certify_model(&program(), &good).expect("the untouched model certifies");
    let mut bad = good.clone();
    f(&mut bad);
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), &bad, &cert);
    match check_dir(dir.path()) {
        Ok(_) => panic!("the corrupted model was accepted"),
        Err(e) => e.to_string(),
    }
}

fn assert_names(msg: &str, layer_part: &str, op_text: &str) {
    assert!(
        msg.contains(layer_part) && msg.contains(op_text),
        "expected the rejection to name `{layer_part}` and `{op_text}`, got: {msg}"
    );
}

#[test]
fn the_hand_built_model_computes_the_program() {
    // Deterministic pseudo-random prompts inside the assumed ranges (x ∈ [-1,1], y ∈ [-2,2]).
    let f = files();
    let p = program();
    let mut seed = 12345u64;
    let mut rnd = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    };
    for _ in 0..20 {
        let tokens: Vec<Vec<f64>> = (0..T)
            .map(|c| {
                if c % 2 == 0 {
                    vec![0.0, rnd(), rnd()]
                } else {
                    vec![2.0 * rnd(), 0.0, 0.0]
                }
            })
            .collect();
        let a = common::forward(&f.config, &f.tensors, &tokens);
        let b = common::interpret(&p, &tokens);
        for c in (0..T).step_by(2) {
            assert!(
                (a[c] - b[c]).abs() <= 1e-9 * (1.0 + b[c].abs()),
                "column {c}: model {} program {}",
                a[c],
                b[c]
            );
        }
    }
}

#[test]
fn the_untouched_model_is_accepted_with_the_right_verdicts() {
    let f = files();
    let cert = certify::certify_model(&program(), &f).unwrap_or_else(|e| panic!("{e}"));
    let verdicts: Vec<Verdict> = cert.layers.iter().map(|l| l.verdict).collect();
    assert_eq!(
        verdicts,
        vec![
            Verdict::Exact,
            Verdict::Exact,
            Verdict::Exact,
            Verdict::Bounded,
            Verdict::Exact
        ]
    );
    assert_eq!(cert.verdict, Verdict::Bounded);
    // δ = 0 (g²L/(2P²) = 1), so ε = R/(4P²den_min²) with den_min = 1 and R ≤ Σ row bounds²:
    // rows y ≤ 2, x ≤ 1 (×2), xp ≤ 1 (×2), u ≤ 2 (×2), s ≤ 8, den ≤ 17, m ≤ 2, one = 1:
    // R ≤ 4 + 2 + 2 + 8 + 64 + 289 + 4 + 1 = 374 (up to outward rounding of the ranges).
    let eps = cert.layers[3].relative_error.unwrap();
    let expect = 374.0 / (4.0 * P_SCALE * P_SCALE);
    assert!(
        eps >= expect && eps <= expect * (1.0 + 1e-9),
        "ε = {eps:e}, expected ≈ {expect:e}"
    );
    // End to end: o = q_0 − q_1 + …, |q_e| ≤ 2 so the error is at most about 2·2·ε.
    let e2e = cert.end_to_end.bound.0;
    assert!(
        e2e > 0.0 && e2e <= 4.0 * eps * (1.0 + 1e-6),
        "bound {e2e:e}"
    );
    assert!(cert.end_to_end.unbounded_from.is_none());
    let back = cert
        .end_to_end
        .backward
        .as_ref()
        .expect("one division: a backward error");
    assert_eq!((back.divisions, back.max_relative), (1, eps));
    // And through the files.
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), &f, &cert);
    let again = check_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, cert);
}

#[test]
fn one_changed_weight_is_rejected() {
    // mul s <- u^T * u: the unit for u_0·u_0 gets gate weight 2.
    let msg = corrupted(|f| {
        let g = f.tensors.get_mut("layers.1.mlp.gate.weight").unwrap();
        g.set2(0, U, 2.0);
    });
    assert_names(&msg, "layer 1 MLP", "mul s <- u^T * u, t.icl:13:1");
    assert!(msg.contains("coefficient of u[0]²"), "{msg}");
}

#[test]
fn a_tiny_change_is_rejected() {
    // One ulp in the aff's bias: exact comparison sees it.
    let msg = corrupted(|f| {
        let g = f.tensors.get_mut("layers.2.mlp.gate.bias").unwrap();
        g.data[0] = 1.0f64.next_up();
    });
    assert_names(&msg, "layer 2 MLP", "aff den <- 2 * s + 1");
}

#[test]
fn swapped_rows_are_rejected() {
    // Swap the value rows of head 0 (x[0] and x[1]): xp[0] would read x[1].
    let msg = corrupted(|f| {
        let v = f.tensors.get_mut("layers.0.attn.v.weight").unwrap();
        for c in 0..W {
            let (a, b) = (v.at2(0, c), v.at2(1, c));
            v.set2(0, c, b);
            v.set2(1, c, a);
        }
    });
    assert_names(
        &msg,
        "layer 0 attention",
        "mov xp <- x from prev, t.icl:10:1",
    );
}

#[test]
fn a_dropped_head_is_rejected() {
    // Zero head 1's output projection: m is no longer written.
    let msg = corrupted(|f| {
        let o = f.tensors.get_mut("layers.0.attn.o.weight").unwrap();
        for r in 0..W {
            for j in 4..8 {
                o.set2(r, j, 0.0);
            }
        }
    });
    assert_names(&msg, "layer 0 attention", "mov m <- y from mean(y)");
    // Or zero its bias rows: it then attends every key s ≤ t and the null key uniformly.
    let msg = corrupted(|f| {
        let b = f.tensors.get_mut("layers.0.attn.bias").unwrap();
        for i in T * (T + 1)..2 * T * (T + 1) {
            b.data[i] = 0.0;
        }
    });
    assert_names(&msg, "layer 0 attention", "mov m <- y from mean(y)");
}

#[test]
fn an_altered_bias_pattern_is_rejected() {
    // Head 0 (prev) at query column 3 also attends key 0: a −∞ becomes 0.
    let msg = corrupted(|f| {
        let b = f.tensors.get_mut("layers.0.attn.bias").unwrap();
        assert_eq!(b.data[3 * (T + 1)], NEG);
        b.data[3 * (T + 1)] = 0.0;
    });
    assert_names(&msg, "layer 0 attention", "mov xp <- x from prev");
    assert!(msg.contains("query column 3"), "{msg}");
    // And a 0 becomes −∞ on the mean head (column 3 loses key 1).
    let msg = corrupted(|f| {
        let b = f.tensors.get_mut("layers.0.attn.bias").unwrap();
        let i = (T + 3) * (T + 1) + 1;
        assert_eq!(b.data[i], 0.0);
        b.data[i] = NEG;
    });
    assert_names(&msg, "layer 0 attention", "mov m <- y from mean(y)");
}

#[test]
fn a_mislabelled_row_is_rejected() {
    // layout.json moves u to rows 14, 15: the weights still write rows 5, 6.
    let msg = corrupted(|f| {
        let u = f
            .layout
            .registers
            .iter_mut()
            .find(|r| r.name == "u")
            .unwrap();
        u.rows = [14, 16];
    });
    assert_names(&msg, "layer 0 MLP", "mul u <- xp * y");
    // Two live registers on one row: s moved onto m's row (m is read in layer 4).
    let msg = corrupted(|f| {
        let s = f
            .layout
            .registers
            .iter_mut()
            .find(|r| r.name == "s")
            .unwrap();
        s.rows = [M, M + 1];
    });
    assert!(msg.contains("layer 1 MLP"), "{msg}");
}

#[test]
fn a_write_to_an_unclaimed_row_is_rejected() {
    // The aff of layer 2 also writes 1 into an unused row.
    let msg = corrupted(|f| {
        let d = f.tensors.get_mut("layers.2.mlp.down.bias").unwrap();
        d.data[20] = 1.0;
    });
    assert!(
        msg.contains("layer 2 MLP") && msg.contains("row 20"),
        "{msg}"
    );
    assert!(msg.contains("written by no operation"), "{msg}");
}

#[test]
fn a_broken_division_is_rejected() {
    // LayerNorm weight ≠ 1.
    let msg = corrupted(|f| {
        f.tensors.get_mut("layers.3.norm.weight").unwrap().data[0] = 2.0;
    });
    assert_names(&msg, "layer 3 MLP", "div q <- u / |den|");
    // Payload rows not opposite: row 30 gets −P/2·den.
    let msg = corrupted(|f| {
        let o = f.tensors.get_mut("layers.3.attn.o.weight").unwrap();
        o.set2(PAY[1], 0, -P_SCALE / 2.0);
    });
    assert_names(&msg, "layer 3 attention", "div q <- u / |den|");
    // Gain of the second element differs.
    let msg = corrupted(|f| {
        let g = f.tensors.get_mut("layers.3.mlp.gate.weight").unwrap();
        g.set2(1, U + 1, GAIN * 2.0);
    });
    assert_names(&msg, "layer 3 MLP", "div q <- u / |den|");
}

#[test]
fn a_wrong_schedule_is_rejected() {
    // Swap the layers of `mul s` and `aff den`: den would read s before it is written.
    let msg = corrupted(|f| {
        let (a, b) = (
            f.layout.layers[1].mlp.clone(),
            f.layout.layers[2].mlp.clone(),
        );
        f.layout.layers[1].mlp = b;
        f.layout.layers[2].mlp = a;
    });
    assert!(
        msg.contains("layer 1 MLP") && msg.contains("aff den <- 2 * s + 1"),
        "{msg}"
    );
}

#[test]
fn an_embedding_or_readout_change_is_rejected() {
    let msg = corrupted(|f| {
        f.tensors.get_mut("pos.weight").unwrap().set2(2, ONE, 0.5);
    });
    assert!(
        msg.contains("embedding") && msg.contains("column 2"),
        "{msg}"
    );
    let msg = corrupted(|f| {
        f.tensors.get_mut("readout.weight").unwrap().data[M] = 1.0;
    });
    assert!(msg.contains("readout"), "{msg}");
}

/// The checker on real compiler output: `icl check` accepts a fresh compile of ridge.icl and
/// rejects one changed weight, naming the layer, and one mislabelled register in layout.json.
#[test]
fn real_compiled_ridge_is_accepted_and_corruptions_are_rejected() {
    let (_dir, out, _) = common::compile_ridge(2, 3);
    icl::certify::run_check(&out).expect("the untouched compile is certified");

    // One weight of the first MLP that multiplies: change a gate entry by one.
    let st = out.join("model.safetensors");
    let (mut t, dtype) = icl::tensors::load(&st).unwrap();
    let (name, layer) = t
        .keys()
        .filter(|k| k.ends_with("mlp.gate.weight"))
        .map(|k| {
            (
                k.clone(),
                k.split('.').nth(1).unwrap().parse::<usize>().unwrap(),
            )
        })
        .min_by_key(|(_, l)| *l)
        .unwrap();
    let w = t.get_mut(&name).unwrap();
    let i = w.data.iter().position(|v| *v != 0.0).unwrap();
    w.data[i] += 1.0;
    icl::tensors::save(&st, &t, dtype).unwrap();
    let err = icl::certify::run_check(&out).unwrap_err().to_string();
    assert!(err.contains(&format!("layer {layer}")), "{err}");

    // Restore the weights; then move a register in layout.json onto other rows.
    let (_dir2, out, _) = common::compile_ridge(2, 3);
    let lp = out.join("layout.json");
    let mut layout: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&lp).unwrap()).unwrap();
    let regs = layout["registers"].as_array_mut().unwrap();
    let a = regs.iter().position(|r| r["name"] == "A").unwrap();
    let rows = regs[a]["rows"].clone();
    let (s, e) = (rows[0].as_u64().unwrap(), rows[1].as_u64().unwrap());
    regs[a]["rows"] = serde_json::json!([s + 1, e + 1]);
    std::fs::write(&lp, serde_json::to_string_pretty(&layout).unwrap()).unwrap();
    assert!(icl::certify::run_check(&out).is_err());
}

/// Where the forward propagation diverges (ridge.icl's Sherman–Morrison chain at n = 6), the
/// certificate says from which layer, and still gives the backward error: one entry per
/// division, each below f64's epsilon. A certificate.json that claims a smaller backward error
/// than the check proves is rejected.
#[test]
fn a_diverging_forward_bound_names_its_layer_and_keeps_the_backward_error() {
    let (_dir, out, outcome) = common::compile_ridge(2, 6);
    let cert = icl::certify::run_check(&out).expect("the untouched compile is certified");
    let e2e = &cert.end_to_end;
    assert!(e2e.bound.0.is_infinite(), "bound {:e}", e2e.bound.0);
    let from = e2e
        .unbounded_from
        .as_deref()
        .expect("the diverging layer is named");
    assert!(
        from.starts_with("layer ") && from.contains("div q <- O / |den|"),
        "{from}"
    );
    let back = e2e.backward.as_ref().expect("a backward error");
    assert_eq!(back.divisions, 6, "one division per example");
    assert!(
        back.max_relative > 0.0 && back.max_relative < f64::EPSILON,
        "{}",
        back.max_relative
    );
    let summary = outcome.certificate.end_to_end.summary();
    assert!(summary.contains("no finite end-to-end bound"), "{summary}");
    assert!(summary.contains("backward error"), "{summary}");

    let cp = out.join("certificate.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cp).unwrap()).unwrap();
    c["end_to_end"]["backward"]["max_relative"] = serde_json::json!(back.max_relative / 2.0);
    std::fs::write(&cp, serde_json::to_string_pretty(&c).unwrap()).unwrap();
    let err = icl::certify::run_check(&out).unwrap_err().to_string();
    assert!(err.contains("backward error"), "{err}");
}
