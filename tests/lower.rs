//! The `exact` lowering: compiled weights run through an independent f64 forward pass agree with
//! the reference semantics; scheduling packs independent ops; allocation never overlaps live
//! registers; LayerNorm division meets its bound.

mod common;

use common::*;
use icl::ir::*;
use icl::layout::Row;
use icl::lower::{self, alloc, schedule, LowerError, LowerOptions};
use icl::model::config::DType;

/// Online ridge by Sherman–Morrison updates (programs/ridge.icl, by hand), with output the
/// prediction wᵀx at every column.
fn ridge(d: usize, n: usize, lambda: f64) -> Program {
    let mut b = Builder::new("ridge.icl", d, n);
    let y = b.input(Builtin::Y);
    let x = b.input(Builtin::X);
    let a = b.reg("A", d, d);
    let bv = b.reg("b", d, 1);
    let xp = b.reg("xp", d, 1);
    let xi = b.reg("xi", d, 1);
    let yi = b.reg("yi", 1, 1);
    let u = b.reg("u", d, 1);
    let s = b.reg("s", 1, 1);
    let den = b.reg("den", 1, 1);
    let o = b.reg("O", d, d);
    let q = b.reg("q", d, d);
    let yx = b.reg("yx", d, 1);
    let w = b.reg("w", d, 1);
    let out = b.reg("out", 1, 1);
    let mut ident = vec![0.0; d * d];
    for i in 0..d {
        ident[i * d + i] = 1.0 / lambda;
    }
    b.constant(a, ident);
    b.constant(bv, vec![0.0; d]);
    b.mov(xp, x, Pattern::Prev);
    for i in 1..=n {
        b.mov(xi, xp, Pattern::Col(2 * i - 1));
        b.mov(yi, y, Pattern::Col(2 * i - 1));
        b.mul(u, (a, false), (xi, false));
        b.mul(s, (xi, true), (u, false));
        b.aff(den, &[(1.0, s)], 1.0);
        b.mul(o, (u, false), (u, true));
        b.div(q, o, den);
        b.aff(a, &[(1.0, a), (-1.0, q)], 0.0);
        b.mul(yx, (xi, false), (yi, false));
        b.aff(bv, &[(1.0, bv), (1.0, yx)], 0.0);
    }
    b.mul(w, (a, false), (bv, false));
    b.mul(out, (w, true), (x, false));
    b.assume(x, -1.0, 1.0);
    b.assume(y, -(d as f64), d as f64);
    b.assume(a, -1.0 / lambda, 1.0 / lambda);
    b.assume(den, 1.0, 1.0 + d as f64 / lambda);
    b.assume(bv, -((n * d) as f64), (n * d) as f64);
    b.assume(o, -(d as f64) / lambda, d as f64 / lambda);
    b.output(out)
}

/// Movs of every pattern kind, built-ins from the position table, transposes, in-place aff and mul.
fn patterns(d: usize, n: usize) -> Program {
    let mut b = Builder::new("patterns.icl", d, n);
    let y = b.input(Builtin::Y);
    let x = b.input(Builtin::X);
    let one = b.input(Builtin::One);
    let isx = b.input(Builtin::IsX);
    let cnt = b.input(Builtin::Count);
    let my = b.reg("my", 1, 1);
    let mx = b.reg("mx", d, 1);
    let ma = b.reg("ma", d, 1);
    let xp = b.reg("xp", d, 1);
    let c0 = b.reg("c0", d, 1);
    let g = b.reg("G", d, d);
    let v = b.reg("v", d, 1);
    let out = b.reg("out", 1, 1);
    b.mov(my, y, Pattern::Mean(ColumnSet::Y));
    b.mov(mx, x, Pattern::Mean(ColumnSet::X));
    b.mov(ma, x, Pattern::Mean(ColumnSet::All));
    b.mov(xp, x, Pattern::Prev);
    b.mov(c0, x, Pattern::Col(2));
    b.mul(g, (mx, false), (xp, true)); // G = mx·xpᵀ
    b.mul(v, (g, true), (c0, false)); // v = Gᵀ·c0
    b.aff(v, &[(2.0, v), (-1.0, ma), (0.5, one)], 0.25); // in place
    b.mul(v, (v, false), (cnt, false)); // in place, scalar on the right
    b.mul(out, (v, true), (x, false));
    b.aff(out, &[(1.0, out), (3.0, my), (1.0, isx)], -1.0);
    b.mov(out, out, Pattern::Prev); // dst = src
    b.output(out)
}

fn run_and_compare(p: &Program, seeds: u64, tol: f64) -> f64 {
    let c = lower::compile(p, &LowerOptions::default()).expect("compiles");
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut worst: f64 = 0.0;
    for _ in 0..seeds {
        let toks = tokens(p.d, p.n, &mut rng);
        let want = interpret(p, &toks);
        let got = forward(&c.config, &c.tensors, &toks);
        assert_eq!(want.len(), got.len());
        for (t, (a, b)) in want.iter().zip(&got).enumerate() {
            let err = (a - b).abs() / a.abs().max(1.0);
            assert!(
                err <= tol,
                "{}: column {t}: interpreter {a}, compiled {b} (rel err {err:e})",
                p.source.name
            );
            worst = worst.max(err);
        }
    }
    worst
}

#[test]
fn patterns_program_matches_the_interpreter() {
    // Everything here is exact algebra; floating-point rounding of a few sums remains.
    run_and_compare(&patterns(2, 3), 8, 1e-13);
    run_and_compare(&patterns(3, 4), 4, 1e-13);
}

#[test]
fn ridge_matches_the_interpreter_and_the_closed_form() {
    let p = ridge(2, 3, 0.5);
    run_and_compare(&p, 8, 1e-12);
    // And the interpreter (hence the model) is ridge: at x̃_{k+1}, w = (λI + XᵀX)⁻¹Xᵀy.
    let c = lower::compile(&p, &LowerOptions::default()).unwrap();
    let mut rng = Rng(7);
    let toks = tokens(2, 3, &mut rng);
    let got = forward(&c.config, &c.tensors, &toks);
    for k in 0..=3usize {
        let t = 2 * k;
        let (mut m, mut r) = ([[0.5, 0.0], [0.0, 0.5]], [0.0, 0.0]);
        for i in 0..k {
            let xv = &toks[2 * i][1..];
            let yv = toks[2 * i + 1][0];
            for a in 0..2 {
                r[a] += yv * xv[a];
                for bb in 0..2 {
                    m[a][bb] += xv[a] * xv[bb];
                }
            }
        }
        let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
        let w = [
            (m[1][1] * r[0] - m[0][1] * r[1]) / det,
            (m[0][0] * r[1] - m[1][0] * r[0]) / det,
        ];
        let want = w[0] * toks[t][1] + w[1] * toks[t][2];
        assert!(
            (want - got[t]).abs() <= 1e-12 * want.abs().max(1.0),
            "column {t}: ridge {want}, compiled {}",
            got[t]
        );
    }
}

#[test]
fn division_constant_meets_the_dtype_epsilon() {
    let p = ridge(2, 3, 0.5);
    for dtype in [DType::F64, DType::F32] {
        let c = lower::compile(&p, &LowerOptions { dtype }).unwrap();
        assert_eq!(c.divs.len(), 3);
        for dv in &c.divs {
            assert!(dv.relative_error <= dtype.epsilon() / 4.0, "{dv:?}");
            // P is a power of two, and the smallest one meeting the bound.
            assert_eq!(dv.payload_scale.log2().fract(), 0.0);
            let half = dv.payload_scale / 2.0;
            if half >= 1.0 {
                let rel = dv.r_max / (4.0 * half * half * dv.den_abs[0] * dv.den_abs[0]);
                assert!(rel > dtype.epsilon() / 8.0);
            }
            // g·u ≈ P·√(2/L), both factors exact in the dtype.
            let l = c.config.width as f64;
            let gu = dv.gain * dv.gain_up;
            assert!((gu - dv.payload_scale * (2.0 / l).sqrt()).abs() <= 1e-6 * gu);
            if dtype == DType::F32 {
                assert_eq!(dv.gain as f32 as f64, dv.gain);
                assert_eq!(dv.gain_up as f32 as f64, dv.gain_up);
            }
            // The layer has LayerNorm on the MLP input and nothing else in its MLP.
            let layer = &c.config.layers[dv.layer.index()];
            assert_eq!(layer.norm.map(|n| n.eps), Some(0.0));
            assert_eq!(c.layout.layers[dv.layer.index()].mlp.len(), 1);
        }
    }
}

#[test]
fn division_without_finite_ranges_is_a_clear_error() {
    let mut p = ridge(2, 2, 0.5);
    // Drop the input range of x: nothing bounds the rows any more.
    p.assumptions.retain(|a| p.registers[a.reg].name != "x");
    let err = lower::compile(&p, &LowerOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LowerError::Division { .. }), "{msg}");
    assert!(
        msg.contains("no finite bound") && msg.contains("div q <- O / |den|"),
        "{msg}"
    );
}

#[test]
fn division_into_its_own_operand_is_rejected() {
    let mut b = Builder::new("self.icl", 1, 1);
    let x = b.input(Builtin::X);
    let v = b.reg("v", 1, 1);
    let den = b.reg("den", 1, 1);
    b.aff(v, &[(1.0, x)], 0.0);
    b.aff(den, &[], 2.0);
    b.div(v, v, den);
    b.assume(x, -1.0, 1.0);
    b.assume(den, 1.0, 3.0);
    let p = b.output(v);
    let err = lower::compile(&p, &LowerOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("writes its own numerator"),
        "{err}"
    );
}

#[test]
fn a_malformed_hand_built_program_is_rejected_before_lowering() {
    let mut b = Builder::new("bad.icl", 1, 1);
    let x = b.input(Builtin::X);
    let v = b.reg("v", 1, 1);
    b.aff(v, &[(1.0, x)], 0.0);
    b.assume(x, -1.0, 1.0);
    let mut p = b.output(v);
    // The mov writes the input: the front end never builds this, ir::validate must catch it.
    p.ops.push(Op {
        kind: OpKind::Mov {
            dst: x,
            src: v,
            pattern: Pattern::Prev,
        },
        span: Span::default(),
        text: "mov x <- v from prev".into(),
        iteration: vec![],
    });
    match lower::compile(&p, &LowerOptions::default()) {
        Err(LowerError::Malformed(ValidateError::WritesInput {
            op: OpId(1), reg, ..
        })) => {
            assert_eq!(reg, x)
        }
        other => panic!("expected the validator's WritesInput, got {other:?}"),
    }
}

#[test]
fn overflowing_payload_is_a_clear_error() {
    let mut b = Builder::new("big.icl", 1, 1);
    let x = b.input(Builtin::X);
    let den = b.reg("den", 1, 1);
    let q = b.reg("q", 1, 1);
    b.aff(den, &[(1.0, x)], 0.0);
    b.div(q, x, den);
    b.assume(x, 1e-30, 1e30);
    b.assume(den, 1e-30, 1e30);
    let p = b.output(q);
    let err = lower::compile(&p, &LowerOptions { dtype: DType::F32 }).unwrap_err();
    assert!(err.to_string().contains("overflow"), "{err}");
}

#[test]
fn independent_ops_share_a_block_and_dependent_ones_do_not() {
    let mut b = Builder::new("sched.icl", 2, 2);
    let x = b.input(Builtin::X);
    let y = b.input(Builtin::Y);
    let a = b.reg("a", 2, 1);
    let c = b.reg("c", 1, 1);
    let e = b.reg("e", 2, 1);
    let f = b.reg("f", 1, 1);
    let g = b.reg("g", 1, 1);
    b.mov(a, x, Pattern::Prev); // 0: attn of block 0
    b.aff(c, &[(2.0, y)], 1.0); // 1: mlp of block 0 (independent)
    b.mul(f, (a, true), (a, false)); // 2: reads a (attn, block 0) → mlp of block 0
    b.aff(e, &[(1.0, a)], 0.0); // 3: mlp of block 0 too
    b.aff(g, &[(1.0, f), (1.0, c)], 0.0); // 4: reads f → block 1
    b.aff(c, &[(1.0, g)], 0.0); // 5: reads g (mlp 1) → block 2
    b.mov(a, x, Pattern::Col(1)); // 6: WAR on a (read at mlp 0) → attn of block 1
    let p = b.output(c);
    let s = schedule::schedule(&p);
    assert_eq!(s.block_of, vec![0, 0, 0, 0, 1, 2, 1]);
    assert_eq!(s.blocks, 3);
    // A div's MLP holds nothing else, and two divs never share a block.
    let mut b = Builder::new("divs.icl", 1, 1);
    let x = b.input(Builtin::X);
    let one = b.input(Builtin::One);
    let q1 = b.reg("q1", 1, 1);
    let q2 = b.reg("q2", 1, 1);
    let z = b.reg("z", 1, 1);
    b.div(q1, x, one);
    b.div(q2, x, one);
    b.aff(z, &[(1.0, x)], 0.0);
    b.assume(x, -1.0, 1.0);
    let p = b.output(z);
    let s = schedule::schedule(&p);
    assert_eq!(s.block_of, vec![0, 1, 2]);
}

#[test]
fn live_ranges_never_share_rows() {
    for p in [ridge(2, 3, 0.5), ridge(3, 2, 1.0), patterns(2, 3)] {
        let s = schedule::schedule(&p);
        let a = alloc::allocate(&p, &s).unwrap();
        let fixed: Vec<Row> = a
            .input_rows
            .iter()
            .flat_map(|&(_, reg, row)| (0..p.reg(reg).shape.size()).map(move |e| row + e))
            .collect();
        for (i, w) in a.webs.iter().enumerate() {
            let size = p.reg(w.reg).shape.size();
            let rows = w.row.index()..w.row.index() + size;
            assert!(rows.end <= a.width);
            for r in rows.clone().map(Row) {
                assert!(
                    r.index() > p.d && !fixed.contains(&r),
                    "web {i} on an input row {r}"
                );
                assert!(Some(r) != a.payload.map(|x| x[0]) && Some(r) != a.payload.map(|x| x[1]));
                assert_ne!(r, a.zero_row);
            }
            for (j, v) in a.webs.iter().enumerate().skip(i + 1) {
                let vs = v.row.index()..v.row.index() + p.reg(v.reg).shape.size();
                let overlap_rows = rows.start < vs.end && vs.start < rows.end;
                let overlap_time = w.start < v.end && v.start < w.end;
                assert!(
                    !(overlap_rows && overlap_time),
                    "{}: live ranges {i} ({}) and {j} ({}) share rows while both live",
                    p.source.name,
                    p.reg(w.reg).name,
                    p.reg(v.reg).name
                );
            }
        }
        // Reuse happens: fewer rows than the sum of all live ranges.
        let total: usize = a.webs.iter().map(|w| p.reg(w.reg).shape.size()).sum();
        assert!(
            a.width < total,
            "{}: width {} vs {total}",
            p.source.name,
            a.width
        );
    }
}

#[test]
fn pinned_registers_keep_their_rows_and_collisions_are_reported() {
    let mut p = patterns(2, 3);
    let g = p.reg_by_name("G").unwrap();
    p.registers[g].pinned = Some(40);
    let c = lower::compile(&p, &LowerOptions::default()).unwrap();
    for r in c.layout.registers.iter().filter(|r| r.name == "G") {
        assert_eq!(r.rows, [Row(40), Row(44)]);
    }
    run_and_compare(&p, 2, 1e-13);
    // Pinning onto the input rows is rejected.
    p.registers[g].pinned = Some(1);
    assert!(lower::compile(&p, &LowerOptions::default()).is_err());
}

#[test]
fn layout_names_every_row_and_places_every_op() {
    let p = ridge(2, 2, 0.5);
    let c = lower::compile(&p, &LowerOptions::default()).unwrap();
    let l = &c.layout;
    assert_eq!(l.rows.len(), c.config.width);
    for (i, r) in l.rows.iter().enumerate() {
        assert_eq!(r.row, Row(i));
        assert!(!r.names.is_empty());
    }
    let mut seen = vec![0; p.ops.len()];
    for layer in &l.layers {
        for po in layer.attn.iter().chain(&layer.mlp) {
            seen[po.op.index()] += 1;
        }
    }
    for (k, op) in p.ops.iter().enumerate() {
        let want = if matches!(op.kind, OpKind::Div { .. }) {
            2
        } else {
            1
        };
        assert_eq!(seen[k], want, "op {k} `{}`", op.text);
    }
    assert_eq!(c.config.readout_row, Some(l.output.row.index()));
    assert_eq!(c.stats.layers, c.config.layers.len());
    assert!(c.stats.layers < c.stats.primitives);
}

#[test]
fn compiling_is_deterministic() {
    let p = ridge(2, 3, 0.5);
    let a = lower::compile(&p, &LowerOptions::default()).unwrap();
    let b = lower::compile(&p, &LowerOptions::default()).unwrap();
    let cert = |c| icl::pipeline::certify_compiled(&p, c).unwrap();
    assert_eq!(
        icl::emit::files(&a, &cert(&a)).unwrap(),
        icl::emit::files(&b, &cert(&b)).unwrap()
    );
}

#[test]
fn emitted_directory_round_trips_and_replaces_atomically() {
    let p = ridge(2, 2, 0.5);
    let c = lower::compile(&p, &LowerOptions { dtype: DType::F32 }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("ridge");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("stale.txt"), b"old").unwrap();
    let cert = icl::pipeline::certify_compiled(&p, &c).unwrap();
    icl::emit::write_dir(&target, &c, &cert).unwrap();
    assert!(!target.join("stale.txt").exists());
    let (t, dt) = icl::tensors::load(&target.join("model.safetensors")).unwrap();
    assert_eq!(dt, DType::F32);
    assert_eq!(t.len(), c.tensors.len());
    let cfg: icl::model::config::ModelConfig =
        serde_json::from_slice(&std::fs::read(target.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg, c.config);
    let lay: icl::layout::Layout =
        serde_json::from_slice(&std::fs::read(target.join("layout.json")).unwrap()).unwrap();
    assert_eq!(lay, c.layout);
    // Only the target is left in the parent: no temporary folders.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
    // The f32 weights still compute ridge to f32 accuracy.
    let mut rng = Rng(3);
    let toks = tokens(2, 2, &mut rng);
    let want = interpret(&p, &toks);
    let got = forward(&cfg, &t, &toks);
    for (a, b) in want.iter().zip(&got) {
        assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{a} vs {b}");
    }
}
