//! The interpreter on hand-built `ir::Program`s: each operation against a direct computation
//! from the prompt's numbers, the exact and f64 paths against each other, and every error.

// Index loops mirror the formulas they check (Σ_j over explicit indices).
#![allow(clippy::needless_range_loop)]

use icl::interp::{run_batch_f64, run_exact, run_f64, InterpError};
use icl::ir::{
    AffTerm, Assumption, Bound, Builtin, ColumnSet, Op, OpKind, Operand, Pattern, Program, RegId,
    RegKind, Register, Shape, Source, Span,
};
use icl::prompt::{Prompt, PromptDistribution};
use num_traits::ToPrimitive;
use std::collections::BTreeMap;

/// A tiny program builder: every op and assumption gets its own source line, so locations are
/// checkable (`hand.icl:LINE:1`).
struct B {
    p: Program,
    line: u32,
}

impl B {
    fn new(d: usize, n: usize) -> B {
        let mut registers = Vec::new();
        for b in Builtin::ALL {
            registers.push(Register {
                name: b.name().into(),
                shape: b.shape(d),
                kind: RegKind::Input(b),
                pinned: None,
                span: Span::default(),
            });
        }
        B {
            p: Program {
                source: Source {
                    name: "hand.icl".into(),
                    text: String::new(),
                },
                params: BTreeMap::new(),
                overrides: vec![],
                d,
                n,
                registers,
                ops: vec![],
                assumptions: vec![],
                output: RegId(0),
            },
            line: 0,
        }
    }
    fn input(&self, b: Builtin) -> RegId {
        self.p.input(b).unwrap()
    }
    fn reg(&mut self, name: &str, shape: Shape) -> RegId {
        self.p.registers.push(Register {
            name: name.into(),
            shape,
            kind: RegKind::Work,
            pinned: None,
            span: Span::default(),
        });
        RegId(self.p.registers.len() - 1)
    }
    fn span(&mut self) -> Span {
        self.line += 1;
        Span {
            start: 0,
            end: 0,
            line: self.line,
            col: 1,
        }
    }
    fn op(&mut self, text: &str, kind: OpKind) {
        let span = self.span();
        self.p.ops.push(Op {
            kind,
            span,
            text: text.into(),
            iteration: vec![],
        });
    }
    fn assume(&mut self, reg: RegId, bound: Bound, text: &str) {
        let span = self.span();
        self.p.assumptions.push(Assumption {
            reg,
            bound,
            span,
            text: text.into(),
        });
    }
    fn finish(mut self, out: RegId) -> Program {
        self.p.output = out;
        self.p
    }
}

fn op(reg: RegId) -> Operand {
    Operand {
        reg,
        transposed: false,
    }
}
fn tr(reg: RegId) -> Operand {
    Operand {
        reg,
        transposed: true,
    }
}

fn prompt(d: usize, n: usize, seed: u64) -> Prompt {
    PromptDistribution::new(d, n)
        .sample_batch(1, seed)
        .remove(0)
}

/// Runs with a trace and returns register `r`'s values `[elem][col]` at the end.
fn final_values(p: &Program, pr: &Prompt, r: RegId) -> Vec<Vec<f64>> {
    let run = run_f64(p, pr, true).unwrap();
    run.trace.unwrap().last().unwrap()[r].clone().unwrap()
}

#[test]
fn mov_patterns_follow_their_definitions() {
    let (d, n) = (2, 3);
    let mut b = B::new(d, n);
    let (x, y) = (b.input(Builtin::X), b.input(Builtin::Y));
    let prev = b.reg("prev", Shape::vec(d));
    let c3 = b.reg("c3", Shape::SCALAR);
    let my = b.reg("my", Shape::SCALAR);
    let mx = b.reg("mx", Shape::vec(d));
    let ma = b.reg("ma", Shape::SCALAR);
    b.op(
        "mov prev <- x from prev",
        OpKind::Mov {
            dst: prev,
            src: x,
            pattern: Pattern::Prev,
        },
    );
    b.op(
        "mov c3 <- y from col(3)",
        OpKind::Mov {
            dst: c3,
            src: y,
            pattern: Pattern::Col(3),
        },
    );
    b.op(
        "mov my <- y from mean(y)",
        OpKind::Mov {
            dst: my,
            src: y,
            pattern: Pattern::Mean(ColumnSet::Y),
        },
    );
    b.op(
        "mov mx <- x from mean(x)",
        OpKind::Mov {
            dst: mx,
            src: x,
            pattern: Pattern::Mean(ColumnSet::X),
        },
    );
    b.op(
        "mov ma <- y from mean(all)",
        OpKind::Mov {
            dst: ma,
            src: y,
            pattern: Pattern::Mean(ColumnSet::All),
        },
    );
    let p = b.finish(c3);
    let pr = prompt(d, n, 3);
    let toks = pr.tokens();
    let cols = 2 * n + 1;

    let v = final_values(&p, &pr, prev);
    for e in 0..d {
        assert_eq!(v[e][0], 0.0);
        for t in 1..cols {
            assert_eq!(v[e][t], toks[t - 1][1 + e], "prev e={e} t={t}");
        }
    }
    // col(3) = ỹ_2: y_2 from column 3 on, 0 before.
    let v = final_values(&p, &pr, c3);
    assert_eq!(
        v[0],
        vec![0.0, 0.0, 0.0, pr.ys[1], pr.ys[1], pr.ys[1], pr.ys[1]]
    );
    // mean(y) at t: mean of y_1..y_m with m = number of ỹ columns ≤ t.
    let v = final_values(&p, &pr, my);
    for t in 0..cols {
        let m = t.div_ceil(2);
        let e = if m == 0 {
            0.0
        } else {
            pr.ys[..m].iter().sum::<f64>() / m as f64
        };
        assert!((v[0][t] - e).abs() < 1e-15, "mean(y) t={t}");
    }
    // mean(x) at t: mean of x_1..x_j, j = number of x̃ columns ≤ t = t/2 + 1.
    let v = final_values(&p, &pr, mx);
    for e in 0..d {
        for t in 0..cols {
            let j = t / 2 + 1;
            let m = pr.xs[..j].iter().map(|x| x[e]).sum::<f64>() / j as f64;
            assert!((v[e][t] - m).abs() < 1e-15, "mean(x) e={e} t={t}");
        }
    }
    // mean(all) of y at t: (sum of the y's shown so far) / (t + 1).
    let v = final_values(&p, &pr, ma);
    for t in 0..cols {
        let m = t.div_ceil(2);
        let e = pr.ys[..m].iter().sum::<f64>() / (t + 1) as f64;
        assert!((v[0][t] - e).abs() < 1e-15, "mean(all) t={t}");
    }
    // The output is read at the x̃ columns 0, 2, 4, 6.
    let run = run_f64(&p, &pr, false).unwrap();
    assert_eq!(run.outputs, vec![0.0, 0.0, pr.ys[1], pr.ys[1]]);
    assert!(run.trace.is_none());
}

/// A 2×3 constant M (by an aff bias) times x (d = 3), and Mᵀ·(M x), and xᵀ(MᵀM)x in
/// place-transposed forms, against direct sums.
#[test]
fn mul_with_transposed_operands() {
    let (d, n) = (3, 2);
    let mut b = B::new(d, n);
    let x = b.input(Builtin::X);
    let m = b.reg("M", Shape::mat(2, 3));
    let mx = b.reg("mx", Shape::vec(2));
    let mtmx = b.reg("mtmx", Shape::vec(3));
    let xt_mt = b.reg("xtmt", Shape::mat(1, 2));
    let s = b.reg("s", Shape::SCALAR);
    let mv = [1.0, -2.0, 0.5, 3.0, 0.25, -1.0]; // row-major 2×3
    b.op(
        "aff M <- [[...]]",
        OpKind::Aff {
            dst: m,
            terms: vec![],
            bias: mv.to_vec(),
        },
    );
    b.op(
        "mul mx <- M * x",
        OpKind::Mul {
            dst: mx,
            a: op(m),
            b: op(x),
        },
    );
    b.op(
        "mul mtmx <- M^T * mx",
        OpKind::Mul {
            dst: mtmx,
            a: tr(m),
            b: op(mx),
        },
    );
    b.op(
        "mul xtmt <- x^T * M^T",
        OpKind::Mul {
            dst: xt_mt,
            a: tr(x),
            b: tr(m),
        },
    );
    b.op(
        "mul s <- xtmt * mx",
        OpKind::Mul {
            dst: s,
            a: op(xt_mt),
            b: op(mx),
        },
    );
    let p = b.finish(s);
    let pr = prompt(d, n, 5);
    let run = run_f64(&p, &pr, true).unwrap();
    let last = run.trace.as_ref().unwrap().last().unwrap().clone();
    for (t, tok) in pr.tokens().iter().enumerate() {
        let xv = &tok[1..];
        let mxe: Vec<f64> = (0..2)
            .map(|i| (0..3).map(|j| mv[i * 3 + j] * xv[j]).sum())
            .collect();
        let mtmxe: Vec<f64> = (0..3)
            .map(|j| (0..2).map(|i| mv[i * 3 + j] * mxe[i]).sum())
            .collect();
        for i in 0..2 {
            assert!((last[mx].as_ref().unwrap()[i][t] - mxe[i]).abs() < 1e-14);
            assert!((last[xt_mt].as_ref().unwrap()[i][t] - mxe[i]).abs() < 1e-14);
        }
        for j in 0..3 {
            assert!((last[mtmx].as_ref().unwrap()[j][t] - mtmxe[j]).abs() < 1e-14);
        }
        let se: f64 = mxe.iter().map(|v| v * v).sum();
        assert!((last[s].as_ref().unwrap()[0][t] - se).abs() < 1e-13);
    }
    // Outputs at x̃ columns equal |M x_k|².
    for (k, o) in run.outputs.iter().enumerate() {
        let xv = &pr.xs[k];
        let e: f64 = (0..2)
            .map(|i| (0..3).map(|j| mv[i * 3 + j] * xv[j]).sum::<f64>().powi(2))
            .sum();
        assert!((o - e).abs() < 1e-13);
    }
}

#[test]
fn div_uses_the_absolute_value_and_aff_reads_before_writing() {
    let (d, n) = (2, 2);
    let mut b = B::new(d, n);
    let (x, count) = (b.input(Builtin::X), b.input(Builtin::Count));
    let den = b.reg("den", Shape::SCALAR);
    let v = b.reg("v", Shape::vec(2));
    let q = b.reg("q", Shape::vec(2));
    let out = b.reg("out", Shape::SCALAR);
    // den = −(count + 1) < 0: div must divide by count + 1.
    b.op(
        "aff den <- -1 * count - 1",
        OpKind::Aff {
            dst: den,
            terms: vec![AffTerm {
                src: op(count),
                coef: vec![-1.0],
            }],
            bias: vec![-1.0],
        },
    );
    b.assume(den, Bound::AbsAtLeast { lo: 1.0 }, "assume |den| >= 1");
    b.op(
        "div q <- x / |den|",
        OpKind::Div {
            dst: q,
            num: x,
            den,
        },
    );
    // v = x, then in place v ← [[0,1],[1,0]]·v + 2·v + [1, −1]: swap plus double, all from the old v.
    b.op(
        "aff v <- I * x",
        OpKind::Aff {
            dst: v,
            terms: vec![AffTerm {
                src: op(x),
                coef: vec![1.0, 0.0, 0.0, 1.0],
            }],
            bias: vec![0.0, 0.0],
        },
    );
    b.op(
        "aff v <- P * v + 2 * v + [1, -1]",
        OpKind::Aff {
            dst: v,
            terms: vec![
                AffTerm {
                    src: op(v),
                    coef: vec![0.0, 1.0, 1.0, 0.0],
                },
                AffTerm {
                    src: op(v),
                    coef: vec![2.0, 0.0, 0.0, 2.0],
                },
            ],
            bias: vec![1.0, -1.0],
        },
    );
    // out = q_0 + v_1 (a 1×2 coefficient).
    b.op(
        "aff out <- [[1, 0]] * q + [[0, 1]] * v",
        OpKind::Aff {
            dst: out,
            terms: vec![
                AffTerm {
                    src: op(q),
                    coef: vec![1.0, 0.0],
                },
                AffTerm {
                    src: op(v),
                    coef: vec![0.0, 1.0],
                },
            ],
            bias: vec![0.0],
        },
    );
    let p = b.finish(out);
    let pr = prompt(d, n, 11);
    let run = run_f64(&p, &pr, false).unwrap();
    for k in 1..=n + 1 {
        let t = 2 * k - 2;
        let c = t.div_ceil(2) as f64;
        let xv = &pr.xs[k - 1];
        // v_1 = x_0 + 2 x_1 − 1.
        let e = xv[0] / (c + 1.0) + (xv[0] + 2.0 * xv[1] - 1.0);
        assert!((run.outputs[k - 1] - e).abs() < 1e-14, "k={k}");
    }
    // The exact run agrees (these values are dyadic-rational up to the division).
    let ex = run_exact(&p, &pr, false).unwrap();
    for (a, b) in ex.outputs.iter().zip(&run.outputs) {
        assert!((a.to_f64().unwrap() - b).abs() <= 1e-15 * b.abs().max(1.0));
    }
}

/// A transposed matrix source in an aff: dst = flatten(Mᵀ).
#[test]
fn aff_on_a_transposed_source_uses_the_transposed_flattening() {
    let mut b = B::new(1, 1);
    let m = b.reg("M", Shape::mat(2, 3));
    let mt = b.reg("Mt", Shape::mat(3, 2));
    let out = b.reg("out", Shape::SCALAR);
    b.op(
        "aff M <- [[1,2,3],[4,5,6]]",
        OpKind::Aff {
            dst: m,
            terms: vec![],
            bias: vec![1., 2., 3., 4., 5., 6.],
        },
    );
    let ident: Vec<f64> = (0..36)
        .map(|i| if i % 7 == 0 { 1.0 } else { 0.0 })
        .collect();
    b.op(
        "aff Mt <- I * M^T",
        OpKind::Aff {
            dst: mt,
            terms: vec![AffTerm {
                src: tr(m),
                coef: ident,
            }],
            bias: vec![0.0; 6],
        },
    );
    // out = Mt(0,1) = M(1,0) = 4, read as flat element 1.
    b.op(
        "aff out <- e1 * Mt",
        OpKind::Aff {
            dst: out,
            terms: vec![AffTerm {
                src: op(mt),
                coef: vec![0., 1., 0., 0., 0., 0.],
            }],
            bias: vec![0.0],
        },
    );
    let p = b.finish(out);
    let pr = prompt(1, 1, 0);
    let mtv = final_values(&p, &pr, mt);
    let flat: Vec<f64> = mtv.iter().map(|c| c[0]).collect();
    assert_eq!(flat, vec![1., 4., 2., 5., 3., 6.]);
    assert_eq!(run_f64(&p, &pr, false).unwrap().outputs, vec![4.0, 4.0]);
}

/// Exact and f64 agree on a program mixing all four operations over random prompts; the exact
/// run of mean(y)·count reproduces the sum exactly.
#[test]
fn exact_and_f64_agree() {
    let (d, n) = (3, 4);
    let mut b = B::new(d, n);
    let (x, y, count) = (
        b.input(Builtin::X),
        b.input(Builtin::Y),
        b.input(Builtin::Count),
    );
    let xp = b.reg("xp", Shape::vec(d));
    let pp = b.reg("p", Shape::vec(d));
    let m = b.reg("m", Shape::vec(d));
    let s = b.reg("s", Shape::vec(d));
    let nn = b.reg("nn", Shape::SCALAR);
    let den = b.reg("den", Shape::SCALAR);
    let w = b.reg("w", Shape::vec(d));
    let out = b.reg("out", Shape::SCALAR);
    b.op(
        "mov xp <- x from prev",
        OpKind::Mov {
            dst: xp,
            src: x,
            pattern: Pattern::Prev,
        },
    );
    b.op(
        "mul p <- xp * y",
        OpKind::Mul {
            dst: pp,
            a: op(xp),
            b: op(y),
        },
    );
    b.op(
        "mov m <- p from mean(y)",
        OpKind::Mov {
            dst: m,
            src: pp,
            pattern: Pattern::Mean(ColumnSet::Y),
        },
    );
    b.op(
        "mul s <- m * count",
        OpKind::Mul {
            dst: s,
            a: op(m),
            b: op(count),
        },
    );
    b.op(
        "mul nn <- s^T * s",
        OpKind::Mul {
            dst: nn,
            a: tr(s),
            b: op(s),
        },
    );
    b.op(
        "aff den <- nn + 1",
        OpKind::Aff {
            dst: den,
            terms: vec![AffTerm {
                src: op(nn),
                coef: vec![1.0],
            }],
            bias: vec![1.0],
        },
    );
    b.assume(
        den,
        Bound::Range {
            lo: 1.0,
            hi: f64::INFINITY,
        },
        "assume den >= 1",
    );
    b.op(
        "div w <- s / |den|",
        OpKind::Div {
            dst: w,
            num: s,
            den,
        },
    );
    b.op(
        "mul out <- w^T * x",
        OpKind::Mul {
            dst: out,
            a: tr(w),
            b: op(x),
        },
    );
    let p = b.finish(out);
    let prompts = PromptDistribution::new(d, n).sample_batch(5, 42);
    let batch = run_batch_f64(&p, &prompts).unwrap();
    for (pr, fo) in prompts.iter().zip(&batch) {
        let ex = run_exact(&p, pr, true).unwrap();
        assert_eq!(ex.trace.as_ref().unwrap().len(), p.ops.len());
        // Independent f64 computation: s_k = Σ_{i<k} x_i y_i, w = s/(1+|s|²), out = wᵀx_k.
        for k in 1..=n + 1 {
            let mut sv = vec![0.0; d];
            for i in 0..k - 1 {
                for j in 0..d {
                    sv[j] += pr.xs[i][j] * pr.ys[i];
                }
            }
            let nrm: f64 = sv.iter().map(|v| v * v).sum();
            let e: f64 = sv
                .iter()
                .zip(&pr.xs[k - 1])
                .map(|(a, b)| a * b)
                .sum::<f64>()
                / (1.0 + nrm);
            let a = ex.outputs[k - 1].to_f64().unwrap();
            assert!(
                (a - e).abs() <= 1e-12 * e.abs().max(1.0),
                "exact k={k}: {a} vs {e}"
            );
            assert!(
                (fo[k - 1] - a).abs() <= 1e-12 * a.abs().max(1.0),
                "f64 k={k}"
            );
        }
    }
}

#[test]
fn assumption_violation_names_the_operation_column_and_value() {
    let (d, n) = (2, 2);
    let mut b = B::new(d, n);
    let count = b.input(Builtin::Count);
    let c = b.reg("c", Shape::SCALAR);
    let out = b.reg("out", Shape::SCALAR);
    b.op(
        "aff c <- 2 * count - 1",
        OpKind::Aff {
            dst: c,
            terms: vec![AffTerm {
                src: op(count),
                coef: vec![2.0],
            }],
            bias: vec![-1.0],
        },
    );
    b.assume(c, Bound::Range { lo: 0.0, hi: 2.5 }, "assume c in [0, 2.5]");
    b.op(
        "div out <- c / |c|",
        OpKind::Div {
            dst: out,
            num: c,
            den: c,
        },
    );
    let p = b.finish(out);
    let pr = prompt(d, n, 1);
    // count at columns 0..5 = 0,1,1,2,2: c = −1 at column 0 is the first violation.
    let err = run_f64(&p, &pr, false).unwrap_err();
    match &err {
        InterpError::AssumptionViolated {
            assumption,
            assumption_location,
            register,
            column,
            value,
            written_by,
            ..
        } => {
            assert_eq!(assumption, "assume c in [0, 2.5]");
            assert_eq!(assumption_location.to_string(), "hand.icl:2:1");
            assert_eq!(register, "c");
            assert_eq!(*column, 0);
            assert_eq!(*value, -1.0);
            let w = written_by.as_ref().unwrap();
            assert_eq!(w.text, "aff c <- 2 * count - 1");
            assert_eq!(w.location.to_string(), "hand.icl:1:1");
        }
        e => panic!("wrong error {e:?}"),
    }
    let msg = err.to_string();
    for part in [
        "hand.icl:2:1",
        "assume c in [0, 2.5]",
        "column 0",
        "-1",
        "aff c <- 2 * count - 1",
        "hand.icl:1:1",
    ] {
        assert!(msg.contains(part), "message {msg:?} lacks {part:?}");
    }
    // The exact interpreter reports the same violation.
    assert_eq!(run_exact(&p, &pr, false).unwrap_err(), err);

    // A violation in a later column: c ≤ 2.5 fails at column 3 (count 2, c = 3) once the lower end is −1.
    let mut p2 = p.clone();
    p2.assumptions[0].bound = Bound::Range { lo: -1.0, hi: 2.5 };
    p2.assumptions[0].text = "assume c in [-1, 2.5]".into();
    match run_f64(&p2, &pr, false).unwrap_err() {
        InterpError::AssumptionViolated { column, value, .. } => {
            assert_eq!((column, value), (3, 3.0))
        }
        e => panic!("wrong error {e:?}"),
    }
}

#[test]
fn input_assumptions_are_checked_on_the_prompt() {
    let mut b = B::new(2, 1);
    let (x, y) = (b.input(Builtin::X), b.input(Builtin::Y));
    let out = b.reg("out", Shape::SCALAR);
    b.assume(x, Bound::Range { lo: -1.0, hi: 1.0 }, "assume x in [-1, 1]");
    b.op(
        "mov out <- y from prev",
        OpKind::Mov {
            dst: out,
            src: y,
            pattern: Pattern::Prev,
        },
    );
    let p = b.finish(out);
    let pr = Prompt {
        xs: vec![vec![0.5, -0.5], vec![0.0, 1.5]],
        ys: vec![1.0, 0.0],
        w: vec![0.0; 2],
    };
    match run_f64(&p, &pr, false).unwrap_err() {
        InterpError::AssumptionViolated {
            register,
            element,
            column,
            value,
            written_by,
            ..
        } => {
            assert_eq!(
                (register.as_str(), element, column, value),
                ("x", 1, 2, 1.5)
            );
            assert!(written_by.is_none());
        }
        e => panic!("wrong error {e:?}"),
    }
    let _ = x;
}

#[test]
fn dimension_mismatch_unwritten_registers_and_division_by_zero_are_errors() {
    let mut b = B::new(2, 2);
    let (x, y) = (b.input(Builtin::X), b.input(Builtin::Y));
    let a = b.reg("a", Shape::vec(2));
    let out = b.reg("out", Shape::SCALAR);
    b.op(
        "mul out <- a^T * x",
        OpKind::Mul {
            dst: out,
            a: tr(a),
            b: op(x),
        },
    );
    let p = b.finish(out);
    // Wrong n, wrong d.
    for (d, n) in [(2, 3), (3, 2)] {
        match run_f64(&p, &prompt(d, n, 0), false).unwrap_err() {
            InterpError::DimensionMismatch {
                expected_d,
                expected_n,
                found_d,
                found_n,
            } => {
                assert_eq!((expected_d, expected_n, found_d, found_n), (2, 2, d, n))
            }
            e => panic!("wrong error {e:?}"),
        }
    }
    // Ragged prompt.
    let bad = Prompt {
        xs: vec![vec![1.0, 2.0], vec![1.0], vec![0.0, 0.0]],
        ys: vec![0.0; 3],
        w: vec![],
    };
    assert!(matches!(
        run_f64(&p, &bad, false),
        Err(InterpError::MalformedPrompt(_))
    ));
    // `a` is never written.
    let err = run_f64(&p, &prompt(2, 2, 0), false).unwrap_err();
    assert!(
        matches!(&err, InterpError::Unwritten { register, .. } if register == "a"),
        "{err:?}"
    );
    assert!(err.to_string().contains("hand.icl:1:1"));

    // Division by an (unassumed) zero denominator: y is 0 at x̃ columns.
    let mut b = B::new(2, 2);
    let y2 = b.input(Builtin::Y);
    let q = b.reg("q", Shape::SCALAR);
    b.op(
        "div q <- y / |y|",
        OpKind::Div {
            dst: q,
            num: y2,
            den: y2,
        },
    );
    let p = b.finish(q);
    assert!(matches!(
        run_exact(&p, &prompt(2, 2, 0), false),
        Err(InterpError::DivisionByZero { column: 0, .. })
    ));
    assert!(matches!(
        run_f64(&p, &prompt(2, 2, 0), false),
        Err(InterpError::DivisionByZero { column: 0, .. })
    ));
    let _ = y;

    // A malformed hand-built program (shape mismatch) is an error, not a panic.
    let mut b = B::new(2, 1);
    let x = b.input(Builtin::X);
    let s = b.reg("s", Shape::SCALAR);
    b.op(
        "mul s <- x * x",
        OpKind::Mul {
            dst: s,
            a: op(x),
            b: op(x),
        },
    );
    let p = b.finish(s);
    assert!(matches!(
        run_f64(&p, &prompt(2, 1, 0), false),
        Err(InterpError::MalformedProgram(_))
    ));
}
