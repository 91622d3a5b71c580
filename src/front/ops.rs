//! The operations `mov`, `mul` and `div` (phase 4, per unrolled instance): names resolved,
//! reads checked against writes so far, shapes checked (or inferred for an implicit
//! destination), the checked [`ir::Op`] appended. `aff` has its own module.

use super::ast::{Ident, OperandAst, PatternAst, Stmt, StmtKind};
use super::checker::{Checker, DivCheck};
use super::diag::Diagnostic;
use crate::ir::{self, Builtin, OpKind, Operand, Pattern, RegId, Shape, Span};

impl Checker<'_> {
    /// Checks one operation instance and, when it is well formed, appends it to the program.
    pub(super) fn op(&mut self, s: &Stmt) {
        match &s.kind {
            StmtKind::Mov {
                dst,
                src,
                pattern,
                pattern_span,
            } => self.mov(s, dst, src, pattern, *pattern_span),
            StmtKind::Mul { dst, a, b } => self.mul(s, dst, a, b),
            StmtKind::Div { dst, num, den } => self.div(s, dst, num, den),
            StmtKind::Aff { dst, rhs } => self.aff(s, dst, rhs),
            _ => {}
        }
    }

    /// `mov dst <- src from P`: `dst` takes the shape of `src`; `col(c)` needs c in 0..=2n.
    fn mov(
        &mut self,
        s: &Stmt,
        dst: &Ident,
        src: &Ident,
        pattern: &PatternAst,
        pattern_span: Span,
    ) {
        let src_r = self.resolve(src);
        let src_shape = src_r.and_then(|r| self.read(r, src.span));
        let dst_r = self.write_target(dst);
        let pat = self.pattern(pattern, pattern_span);
        let mut ok = src_r.is_some() && dst_r.is_some() && pat.is_some();
        if let (Some(d), Some(ss)) = (dst_r, src_shape) {
            let why = format!("the source `{}`", src.name);
            ok &= self.dst_shape(d, Some(ss), "mov", s.span, &why).is_some();
        } else {
            ok = false;
        }
        if let (true, Some(d), Some(sr), Some(p)) = (ok, dst_r, src_r, pat) {
            self.push_op(
                s,
                OpKind::Mov {
                    dst: RegId(d),
                    src: RegId(sr),
                    pattern: p,
                },
            );
        }
        self.finish_write(dst_r);
    }

    /// The column pattern of a `mov`; `col(c)` must name a column of the prompt (0..=2n).
    fn pattern(&mut self, pattern: &PatternAst, pattern_span: Span) -> Option<Pattern> {
        match pattern {
            PatternAst::Prev => Some(Pattern::Prev),
            PatternAst::Mean(set) => Some(Pattern::Mean(*set)),
            PatternAst::Col(e) => match self.eval_int(e, "a column") {
                Some(c) if c >= 0 && c <= 2 * self.n as i64 => Some(Pattern::Col(c as usize)),
                Some(c) => {
                    let last = 2 * self.n;
                    let d = self.with_iter(
                        Diagnostic::new(
                            "col-range",
                            pattern_span,
                            format!(
                                "col({c}) is not a column of the prompt: columns are 0..={last} (T = 2n+1 = {})",
                                last + 1
                            ),
                        )
                        .label(if c < 0 {
                            "negative column"
                        } else {
                            "beyond the last column"
                        }),
                    );
                    self.err(d);
                    None
                }
                None => None,
            },
        }
    }

    /// The shape of a `mul` operand as seen after its transposition (`None` when unknown).
    fn operand_shape(&mut self, r: Option<usize>, o: &OperandAst) -> Option<Shape> {
        let sh = self.read(r?, o.reg.span)?;
        Some(if o.transposed { sh.transposed() } else { sh })
    }

    /// `mul dst <- A * B`: (a×b)·(b×c) gives an a×c `dst`.
    fn mul(&mut self, s: &Stmt, dst: &Ident, a: &OperandAst, b: &OperandAst) {
        let ar = self.resolve(&a.reg);
        let br = self.resolve(&b.reg);
        let ash = self.operand_shape(ar, a);
        let bsh = self.operand_shape(br, b);
        let dst_r = self.write_target(dst);
        let mut ok = ar.is_some() && br.is_some() && dst_r.is_some();
        match (ash, bsh) {
            (Some(x), Some(y)) if x.cols != y.rows => {
                let at = self.stmt_text(a.span);
                let bt = self.stmt_text(b.span);
                let d = self.with_iter(
                    Diagnostic::new(
                        "shape-mismatch",
                        Span {
                            end: b.span.end,
                            ..a.span
                        },
                        format!(
                            "shape mismatch in mul: `{at}` is {x} and `{bt}` is {y}; (a×b)·(b×c) needs {} = {}",
                            x.cols, y.rows
                        ),
                    )
                    .label("inner dimensions differ"),
                );
                self.err(d);
                ok = false;
            }
            (Some(x), Some(y)) => {
                if let Some(d) = dst_r {
                    let why = format!(
                        "the product ({}×{})·({}×{})",
                        x.rows, x.cols, y.rows, y.cols
                    );
                    let want = Some(Shape::mat(x.rows, y.cols));
                    ok &= self.dst_shape(d, want, "mul", s.span, &why).is_some();
                }
            }
            _ => ok = false,
        }
        if let (true, Some(d), Some(ar), Some(br)) = (ok, dst_r, ar, br) {
            let a = Operand {
                reg: RegId(ar),
                transposed: a.transposed,
            };
            let b = Operand {
                reg: RegId(br),
                transposed: b.transposed,
            };
            self.push_op(
                s,
                OpKind::Mul {
                    dst: RegId(d),
                    a,
                    b,
                },
            );
        }
        self.finish_write(dst_r);
    }

    /// `div dst <- num / |den|`: `den` is a scalar with an assumption that excludes 0 (checked
    /// once all assumptions are known); `dst` takes the shape of `num`.
    fn div(&mut self, s: &Stmt, dst: &Ident, num: &Ident, den: &Ident) {
        let nr = self.resolve(num);
        let dr = self.resolve(den);
        let nsh = nr.and_then(|r| self.read(r, num.span));
        let dsh = dr.and_then(|r| self.read(r, den.span));
        let dst_r = self.write_target(dst);
        let mut ok =
            nr.is_some() && dr.is_some() && dst_r.is_some() && nsh.is_some() && dsh.is_some();
        if let Some(ds) = dsh {
            if !ds.is_scalar() {
                let d = self.with_iter(
                    Diagnostic::new(
                        "non-scalar-divisor",
                        den.span,
                        format!("divisor `{}` is {ds}, not a scalar", den.name),
                    )
                    .label("div divides by the absolute value of a scalar register"),
                );
                self.err(d);
                ok = false;
            }
        }
        if let (Some(d), Some(ns)) = (dst_r, nsh) {
            let why = format!("the numerator `{}`", num.name);
            ok &= self.dst_shape(d, Some(ns), "div", s.span, &why).is_some();
        }
        if let Some(dr) = dr {
            let notes = self.iter_notes();
            self.div_checks.push(DivCheck {
                den: dr,
                span: den.span,
                notes,
            });
        }
        if let (true, Some(d), Some(nr), Some(dr)) = (ok, dst_r, nr, dr) {
            self.push_op(
                s,
                OpKind::Div {
                    dst: RegId(d),
                    num: RegId(nr),
                    den: RegId(dr),
                },
            );
        }
        self.finish_write(dst_r);
    }

    /// The destination of an operation: a work register.
    pub(super) fn write_target(&mut self, id: &Ident) -> Option<usize> {
        if Builtin::from_name(&id.name).is_some() {
            self.err(
                Diagnostic::new(
                    "write-to-input",
                    id.span,
                    format!("cannot write to the built-in input `{}`", id.name),
                )
                .label("inputs are read-only"),
            );
            return None;
        }
        if self.param_index.contains_key(&id.name) || id.name == "I" {
            self.err(
                Diagnostic::new(
                    "write-to-input",
                    id.span,
                    format!(
                        "cannot write to `{}`: it is a constant, not a register",
                        id.name
                    ),
                )
                .label("constants are read-only"),
            );
            return None;
        }
        self.reg_index.get(&id.name).copied()
    }

    /// Records (or checks) the shape of `dst` for this write; `None` when it cannot be known.
    pub(super) fn dst_shape(
        &mut self,
        dst: usize,
        want: Option<Shape>,
        op: &str,
        span: Span,
        why: &str,
    ) -> Option<Shape> {
        let have = if self.regs[dst].poisoned {
            return None;
        } else {
            self.regs[dst].shape
        };
        match (have, want) {
            (None, Some(w)) => {
                self.regs[dst].shape = Some(w);
                Some(w)
            }
            (Some(h), Some(w)) if h != w => {
                let name = self.regs[dst].name.clone();
                let d = self.with_iter(
                    Diagnostic::new(
                        "shape-mismatch",
                        span,
                        format!("shape mismatch in {op}: `{name}` is {h} but {why} is {w}"),
                    )
                    .label(format!("expected {h}")),
                );
                self.err(d);
                None
            }
            (h, _) => h,
        }
    }

    /// Appends the checked operation `kind` of statement `s`, in the current iteration.
    pub(super) fn push_op(&mut self, s: &Stmt, kind: OpKind) {
        let text = self.stmt_text(s.span);
        self.ops.push(ir::Op {
            kind,
            span: s.span,
            text,
            iteration: self.loop_vars.clone(),
        });
    }

    /// Marks `dst` written (later reads in the unrolled order are fine), whether or not this
    /// operation was well formed: one error does not cascade into use-before-write errors.
    pub(super) fn finish_write(&mut self, dst: Option<usize>) {
        if let Some(d) = dst {
            self.regs[d].written = true;
        }
    }
}
