//! Sound interval range analysis of a checked program (docs/ARCHITECTURE.md, "Meaning").
//!
//! Every element of every register is given an interval that contains its value in every column
//! of every prompt whose inputs satisfy the input assumptions (`assume x in [...]`), provided the
//! program's register assumptions hold (they are checked by the interpreter on every prompt it
//! runs, and listed in the certificate). Intervals are hulls over columns: a `mov` result lies in
//! the hull of its source and 0 (the "gets 0" case and means of values in a convex set).
//!
//! Soundness of the floating-point arithmetic: every bound is computed with round-to-nearest and
//! then widened outward by one ulp (`next_down`/`next_up`), which encloses the exact real result
//! of a single operation on exact endpoints. Sums are widened after every addition.

use crate::ir::{Bound, Builtin, Location, OpId, OpKind, Program, RegId, RegKind, RegMap};

/// A closed interval `[lo, hi]`; `lo` may be −∞ and `hi` +∞.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

impl Interval {
    pub const ZERO: Interval = Interval { lo: 0.0, hi: 0.0 };
    pub const EVERYTHING: Interval = Interval {
        lo: f64::NEG_INFINITY,
        hi: f64::INFINITY,
    };

    pub fn point(v: f64) -> Interval {
        Interval { lo: v, hi: v }
    }
    pub fn new(lo: f64, hi: f64) -> Interval {
        Interval { lo, hi }
    }
    /// Largest absolute value in the interval.
    pub fn abs_max(&self) -> f64 {
        self.lo.abs().max(self.hi.abs())
    }
    /// Smallest absolute value in the interval (0 if it contains 0).
    pub fn abs_min(&self) -> f64 {
        if self.lo <= 0.0 && self.hi >= 0.0 {
            0.0
        } else {
            self.lo.abs().min(self.hi.abs())
        }
    }
    pub fn contains(&self, v: f64) -> bool {
        self.lo <= v && v <= self.hi
    }
    pub fn is_finite(&self) -> bool {
        self.lo.is_finite() && self.hi.is_finite()
    }
    pub fn hull(self, o: Interval) -> Interval {
        Interval {
            lo: self.lo.min(o.lo),
            hi: self.hi.max(o.hi),
        }
    }
    /// Intersection; `None` if empty.
    pub fn meet(self, o: Interval) -> Option<Interval> {
        let lo = self.lo.max(o.lo);
        let hi = self.hi.min(o.hi);
        (lo <= hi).then_some(Interval { lo, hi })
    }
    fn widen(lo: f64, hi: f64) -> Interval {
        // NaN only arises from ∞ − ∞ or 0·∞: fall back to the whole line (sound).
        if lo.is_nan() || hi.is_nan() {
            return Interval::EVERYTHING;
        }
        Interval {
            lo: lo.next_down(),
            hi: hi.next_up(),
        }
    }
    /// Product, enclosing the exact product of the endpoints.
    pub fn times(self, o: Interval) -> Interval {
        // 0·∞ is treated as 0 (a zero factor is exactly zero whatever the other is).
        let m = |a: f64, b: f64| if a == 0.0 || b == 0.0 { 0.0 } else { a * b };
        let c = [
            m(self.lo, o.lo),
            m(self.lo, o.hi),
            m(self.hi, o.lo),
            m(self.hi, o.hi),
        ];
        let lo = c.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = c.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Interval::widen(lo, hi)
    }
    pub fn scale(self, c: f64) -> Interval {
        self.times(Interval::point(c))
    }
    /// `self / |den|` for a divisor interval that excludes 0.
    pub fn div_abs(self, den: Interval) -> Interval {
        let a = den.abs_min();
        let b = den.abs_max();
        debug_assert!(a > 0.0);
        // 1/|den| ∈ [1/b, 1/a], both positive.
        let inv = Interval {
            lo: (1.0 / b).next_down().max(0.0),
            hi: (1.0 / a).next_up(),
        };
        self.times(inv)
    }
}

/// Sum, enclosing the exact sum of the endpoints.
impl std::ops::Add for Interval {
    type Output = Interval;
    fn add(self, o: Interval) -> Interval {
        Interval::widen(self.lo + o.lo, self.hi + o.hi)
    }
}

impl std::ops::Neg for Interval {
    type Output = Interval;
    fn neg(self) -> Interval {
        Interval {
            lo: -self.hi,
            hi: -self.lo,
        }
    }
}

/// Product, enclosing the exact product of the endpoints.
impl std::ops::Mul for Interval {
    type Output = Interval;
    fn mul(self, o: Interval) -> Interval {
        self.times(o)
    }
}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{:e}, {:e}]", self.lo, self.hi)
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RangeError {
    #[error(
        "{at}: the assumption `{assumption}` contradicts the range analysis: after `{op}` ({op_at}), \
         element {elem} of `{reg}` lies in {found}, which the assumption excludes entirely"
    )]
    Contradiction {
        at: Location,
        assumption: String,
        op: String,
        op_at: Location,
        reg: String,
        elem: usize,
        found: Interval,
    },
    #[error("{at}: `{op}` divides by `{den}`, whose range {found} contains 0 (state `assume {den} >= c` with c > 0)")]
    DivisorMayBeZero {
        at: Location,
        op: String,
        den: String,
        found: Interval,
    },
}

/// The result of the analysis.
#[derive(Debug, Clone)]
pub struct Ranges {
    /// `states[k][reg]`: per-element intervals just before op k (k = ops.len(): at the end).
    /// `None`: not written yet.
    states: Vec<RegMap<Option<Vec<Interval>>>>,
    /// Per register, per element: hull over every state.
    hulls: RegMap<Option<Vec<Interval>>>,
}

impl Ranges {
    /// Per-element intervals of `reg` just before op `k` (`k == ops.len()`: after the last op).
    pub fn before_op(&self, k: OpId, reg: RegId) -> Option<&[Interval]> {
        self.states.get(k.index())?.get(reg)?.as_deref()
    }
    /// Per-element intervals of `reg` over the whole run (every write, every column); a register
    /// never written gets `[0, 0]` per element.
    pub fn reg_hull(&self, reg: RegId) -> Vec<Interval> {
        self.hulls[reg].clone().unwrap_or_default()
    }
    /// Largest absolute value `reg` ever holds.
    pub fn reg_abs_max(&self, reg: RegId) -> f64 {
        self.hulls[reg]
            .as_ref()
            .map(|v| v.iter().map(Interval::abs_max).fold(0.0, f64::max))
            .unwrap_or(0.0)
    }
}

/// Interval a bound allows (hull of it, for `|v| >= lo` that is the whole line).
fn bound_interval(b: &Bound) -> Interval {
    match *b {
        Bound::Range { lo, hi } => Interval { lo, hi },
        Bound::AbsAtLeast { .. } => Interval::EVERYTHING,
    }
}

/// Intersect `iv` with a bound. For `|v| >= lo`, the part of `iv` outside (−lo, lo) is kept
/// (its hull, since the result must be an interval).
fn apply_bound(iv: Interval, b: &Bound) -> Option<Interval> {
    match *b {
        Bound::Range { .. } => iv.meet(bound_interval(b)),
        Bound::AbsAtLeast { lo } => {
            let neg = iv.meet(Interval {
                lo: f64::NEG_INFINITY,
                hi: -lo,
            });
            let pos = iv.meet(Interval {
                lo,
                hi: f64::INFINITY,
            });
            match (neg, pos) {
                (Some(a), Some(b)) => Some(a.hull(b)),
                (a, b) => a.or(b),
            }
        }
    }
}

/// Range of an input, from the embedding's definition and the program's assumptions.
fn input_range(p: &Program, reg: RegId, b: Builtin) -> Vec<Interval> {
    let base = match b {
        Builtin::Y | Builtin::X => Interval::EVERYTHING,
        Builtin::One => Interval::point(1.0),
        Builtin::IsX | Builtin::IsY => Interval::new(0.0, 1.0),
        Builtin::Count => Interval::new(0.0, p.n as f64),
    };
    let mut iv = base;
    for a in p.assumptions_on(reg) {
        // Inputs are checked against their assumptions on every prompt; an empty meet means
        // no prompt satisfies them, which the interpreter will report.
        iv = apply_bound(iv, &a.bound).unwrap_or(iv);
    }
    // x̃ columns have y = 0 and ỹ columns x = 0: 0 is always a possible value.
    let iv = iv.hull(Interval::ZERO);
    vec![iv; p.reg(reg).shape.size()]
}

/// Run the analysis.
// The error carries the locations a user needs; it is built once, on the failure path.
#[allow(clippy::result_large_err)]
pub fn analyze(p: &Program) -> Result<Ranges, RangeError> {
    let mut state: RegMap<Option<Vec<Interval>>> = RegMap::from_fn(p, |id| match p.reg(id).kind {
        RegKind::Input(b) => Some(input_range(p, id, b)),
        RegKind::Work => None,
    });
    let mut states = Vec::with_capacity(p.ops.len() + 1);
    for op in &p.ops {
        states.push(state.clone());
        let get = |reg: RegId| -> Vec<Interval> {
            // The checker guarantees every read register was written; be total anyway.
            state[reg]
                .clone()
                .unwrap_or_else(|| vec![Interval::EVERYTHING; p.reg(reg).shape.size()])
        };
        let dst = op.kind.dst();
        let mut out: Vec<Interval> = match &op.kind {
            OpKind::Mov { src, .. } => get(*src)
                .into_iter()
                .map(|iv| iv.hull(Interval::ZERO))
                .collect(),
            OpKind::Mul { a, b, .. } => {
                let (sa, sb) = (p.operand_shape(*a), p.operand_shape(*b));
                let (va, vb) = (get(a.reg), get(b.reg));
                let (ra, rb) = (p.reg(a.reg).shape, p.reg(b.reg).shape);
                let mut out = Vec::with_capacity(sa.rows * sb.cols);
                for i in 0..sa.rows {
                    for c in 0..sb.cols {
                        let mut acc = Interval::ZERO;
                        for j in 0..sa.cols {
                            let x = va[crate::ir::operand_index(ra, a.transposed, i, j)];
                            let y = vb[crate::ir::operand_index(rb, b.transposed, j, c)];
                            acc = acc + x * y;
                        }
                        out.push(acc);
                    }
                }
                out
            }
            OpKind::Div { num, den, .. } => {
                let d = get(*den)[0];
                if d.abs_min() <= 0.0 {
                    return Err(RangeError::DivisorMayBeZero {
                        at: p.location(op.span),
                        op: op.text.clone(),
                        den: p.reg(*den).name.clone(),
                        found: d,
                    });
                }
                get(*num).into_iter().map(|iv| iv.div_abs(d)).collect()
            }
            OpKind::Aff { terms, bias, .. } => {
                let mut out: Vec<Interval> = bias.iter().map(|&b| Interval::point(b)).collect();
                let srcs: Vec<Vec<Interval>> = terms.iter().map(|t| get(t.src.reg)).collect();
                for (e, acc) in out.iter_mut().enumerate() {
                    for (ti, _, elem, c) in p.aff_coefficients(terms, e) {
                        *acc = *acc + srcs[ti][elem].scale(c);
                    }
                }
                out
            }
        };
        // The register's assumptions hold after every write (checked at run time).
        for a in p.assumptions_on(dst) {
            for (elem, iv) in out.iter_mut().enumerate() {
                *iv = apply_bound(*iv, &a.bound).ok_or_else(|| RangeError::Contradiction {
                    at: p.location(a.span),
                    assumption: a.text.clone(),
                    op: op.text.clone(),
                    op_at: p.location(op.span),
                    reg: p.reg(dst).name.clone(),
                    elem,
                    found: *iv,
                })?;
            }
        }
        state[dst] = Some(out);
    }
    states.push(state);
    let mut hulls: RegMap<Option<Vec<Interval>>> = RegMap::filled(p, None);
    for st in &states {
        for (reg, v) in st.iter() {
            if let Some(v) = v {
                hulls[reg] = Some(match hulls[reg].take() {
                    None => v.clone(),
                    Some(h) => h.iter().zip(v).map(|(a, b)| a.hull(*b)).collect(),
                });
            }
        }
    }
    Ok(Ranges { states, hulls })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::*;

    fn reg(name: &str, shape: Shape, kind: RegKind) -> Register {
        Register::new(name, shape, kind)
    }
    fn op(kind: OpKind, text: &str) -> Op {
        Op {
            kind,
            span: Span::default(),
            text: text.into(),
            iteration: vec![],
        }
    }

    /// y, x inputs with ranges; u = x·y (vec), s = uᵀu, den = s + 1, q = u/|den|.
    fn program() -> Program {
        let d = 2;
        let registers = vec![
            reg("y", Shape::SCALAR, RegKind::Input(Builtin::Y)),
            reg("x", Shape::vec(d), RegKind::Input(Builtin::X)),
            reg("u", Shape::vec(d), RegKind::Work),
            reg("s", Shape::SCALAR, RegKind::Work),
            reg("den", Shape::SCALAR, RegKind::Work),
            reg("q", Shape::vec(d), RegKind::Work),
        ];
        let o = |r| Operand {
            reg: RegId(r),
            transposed: false,
        };
        let ops = vec![
            op(
                OpKind::Mul {
                    dst: RegId(2),
                    a: o(1),
                    b: o(0),
                },
                "mul u <- x * y",
            ),
            op(
                OpKind::Mul {
                    dst: RegId(3),
                    a: Operand {
                        reg: RegId(2),
                        transposed: true,
                    },
                    b: o(2),
                },
                "mul s <- u^T * u",
            ),
            op(
                OpKind::Aff {
                    dst: RegId(4),
                    terms: vec![AffTerm {
                        src: o(3),
                        coef: vec![1.0],
                    }],
                    bias: vec![1.0],
                },
                "aff den <- s + 1",
            ),
            op(
                OpKind::Div {
                    dst: RegId(5),
                    num: RegId(2),
                    den: RegId(4),
                },
                "div q <- u / |den|",
            ),
        ];
        let assume = |reg, bound| Assumption {
            reg: RegId(reg),
            bound,
            span: Span::default(),
            text: String::new(),
        };
        Program {
            source: Source {
                name: "t.icl".into(),
                text: String::new(),
            },
            params: Default::default(),
            overrides: vec![],
            d,
            n: 2,
            registers,
            ops,
            assumptions: vec![
                assume(0, Bound::Range { lo: -3.0, hi: 2.0 }),
                assume(1, Bound::Range { lo: -1.0, hi: 1.0 }),
                assume(
                    4,
                    Bound::Range {
                        lo: 1.0,
                        hi: f64::INFINITY,
                    },
                ),
            ],
            output: RegId(3),
        }
    }

    #[test]
    fn intervals_enclose_the_exact_results() {
        let p = program();
        let r = analyze(&p).unwrap();
        // u = x·y ∈ [-1,1]·[-3,2] = [-3, 3]; s = Σ u_i² ∈ [-18, 18] by plain interval
        // arithmetic (u_i·u_i is not known to be a square), den ∈ [1, 19] after the assumption.
        let u = r.reg_hull(RegId(2));
        assert!(u[0].contains(-3.0) && u[0].contains(3.0) && u[0].hi < 3.0 + 1e-12);
        let den = r.reg_hull(RegId(4))[0];
        assert_eq!(den.lo, 1.0);
        assert!(den.hi >= 19.0 && den.hi < 19.0 + 1e-12);
        let q = r.reg_hull(RegId(5));
        assert!(q[1].abs_max() >= 3.0 && q[1].abs_max() < 3.0 + 1e-12);
        assert!(r.before_op(OpId(0), RegId(2)).is_none());
        assert!(r.before_op(OpId(1), RegId(2)).is_some());
    }

    #[test]
    fn a_divisor_without_a_usable_assumption_is_an_error() {
        let mut p = program();
        p.assumptions.pop();
        assert!(matches!(
            analyze(&p),
            Err(RangeError::DivisorMayBeZero { .. })
        ));
    }

    #[test]
    fn an_assumption_the_analysis_excludes_is_a_contradiction() {
        let mut p = program();
        p.assumptions[2].bound = Bound::Range {
            lo: 100.0,
            hi: 200.0,
        };
        assert!(matches!(analyze(&p), Err(RangeError::Contradiction { .. })));
    }

    #[test]
    fn outward_rounding_encloses_inexact_sums() {
        let a = Interval::point(0.1) + Interval::point(0.2);
        // 0.1 + 0.2 in exact rationals of the two doubles lies inside.
        assert!(a.lo < 0.30000000000000004 && a.hi > 0.3);
        let abs = Interval::new(-2.0, -0.5);
        assert_eq!(abs.abs_min(), 0.5);
        assert_eq!(Interval::new(-1.0, 3.0).abs_min(), 0.0);
        let iv = apply_bound(Interval::new(-5.0, 5.0), &Bound::AbsAtLeast { lo: 1.0 }).unwrap();
        assert_eq!(iv, Interval::new(-5.0, 5.0));
        assert!(apply_bound(Interval::new(-0.5, 0.5), &Bound::AbsAtLeast { lo: 1.0 }).is_none());
    }
}
