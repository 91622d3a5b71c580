//! Unrolling (phase 4): loops expanded in program order with their variables bound, each
//! operation instance checked as it is reached (see `ops` and `aff`), assumptions collected.
//!
//! Decisions where docs/LANGUAGE.md is silent:
//! - Assumptions are global per register; the same (register, bound) is kept once.

use super::ast::{AssumeAst, Expr, Ident, Stmt, StmtKind};
use super::checker::Checker;
use super::diag::Diagnostic;
use super::MAX_UNROLL;
use crate::ir::{Assumption, Bound, RegId, Span};

impl Checker<'_> {
    /// Spends one unit of the unrolling budget ([`MAX_UNROLL`]); false (reported once, and
    /// unrolling aborted) when it is exhausted.
    fn spend(&mut self, span: Span) -> bool {
        if self.aborted {
            return false;
        }
        self.budget_used += 1;
        if self.budget_used > MAX_UNROLL {
            self.aborted = true;
            let d = self.with_iter(
                Diagnostic::new(
                    "too-large",
                    span,
                    format!("the program unrolls to more than {MAX_UNROLL} loop iterations and operations"),
                )
                .label("unrolling stopped here"),
            );
            self.err(d);
            return false;
        }
        true
    }

    /// Checks `stmts` in program order, unrolling loops.
    pub(super) fn walk(&mut self, stmts: &[Stmt]) {
        for s in stmts {
            if self.aborted {
                return;
            }
            match &s.kind {
                StmtKind::For {
                    var,
                    lo,
                    hi,
                    inclusive,
                    range_span,
                    body,
                } => self.for_loop(s, var, lo, hi, *inclusive, *range_span, body),
                StmtKind::Assume { reg, bound } => self.assume(s, reg, bound),
                StmtKind::Mov { .. }
                | StmtKind::Mul { .. }
                | StmtKind::Div { .. }
                | StmtKind::Aff { .. } => {
                    if self.spend(s.span) {
                        self.op(s);
                    }
                }
                StmtKind::Param { .. } | StmtKind::Reg { .. } | StmtKind::Output { .. } => {}
            }
        }
    }

    /// A `for` loop: its bounds evaluated, its body walked once per value of `var`.
    #[allow(clippy::too_many_arguments)]
    fn for_loop(
        &mut self,
        s: &Stmt,
        var: &Ident,
        lo: &Expr,
        hi: &Expr,
        inclusive: bool,
        range_span: Span,
        body: &[Stmt],
    ) {
        let ok_name = self.check_new_name(var, "loop variable");
        let lo_v = self.eval_int(lo, "a loop bound");
        let hi_v = self.eval_int(hi, "a loop bound");
        let (Some(a), Some(b)) = (lo_v, hi_v) else {
            return;
        };
        if !ok_name {
            return;
        }
        let last = if inclusive { Some(b) } else { b.checked_sub(1) };
        let empty = match last {
            Some(l) => l < a,
            None => true,
        };
        if empty {
            let range = if inclusive {
                format!("{a}..={b}")
            } else {
                format!("{a}..{b}")
            };
            let d = self.with_iter(
                Diagnostic::new(
                    "empty-range",
                    range_span,
                    format!("loop range {range} is empty"),
                )
                .label("expected LO ≤ HI (LO < HI for `..`)"),
            );
            self.err(d);
            return;
        }
        let last = last.unwrap_or(a);
        let mut v = a;
        loop {
            if !self.spend(s.span) {
                return;
            }
            self.loop_vars.push((var.name.clone(), v));
            self.walk(body);
            self.loop_vars.pop();
            if v >= last || self.aborted {
                break;
            }
            v += 1;
        }
    }

    /// An `assume`: the bound evaluated and recorded once per (register, bound).
    fn assume(&mut self, s: &Stmt, reg: &Ident, bound: &AssumeAst) {
        let r = self.resolve(reg);
        let b = match bound {
            AssumeAst::In(lo, hi) => {
                let lo_v = self.eval_scalar(lo, "an assumed bound");
                let hi_v = self.eval_scalar(hi, "an assumed bound");
                let (Some(l), Some(h)) = (lo_v, hi_v) else {
                    return;
                };
                if l > h {
                    let d = self.with_iter(
                        Diagnostic::new(
                            "empty-assumption",
                            Span {
                                end: hi.span.end,
                                ..lo.span
                            },
                            format!("assumed range [{l}, {h}] is empty"),
                        )
                        .label("expected LO ≤ HI"),
                    );
                    self.err(d);
                    return;
                }
                Bound::Range { lo: l, hi: h }
            }
            AssumeAst::Ge(lo) => Bound::Range {
                lo: self.eval_scalar(lo, "an assumed bound").unwrap_or(f64::NAN),
                hi: f64::INFINITY,
            },
            AssumeAst::Le(hi) => Bound::Range {
                lo: f64::NEG_INFINITY,
                hi: self.eval_scalar(hi, "an assumed bound").unwrap_or(f64::NAN),
            },
            AssumeAst::AbsGe(lo) => Bound::AbsAtLeast {
                lo: self.eval_scalar(lo, "an assumed bound").unwrap_or(f64::NAN),
            },
        };
        let has_nan = match b {
            Bound::Range { lo, hi } => lo.is_nan() || hi.is_nan(),
            Bound::AbsAtLeast { lo } => lo.is_nan(),
        };
        let Some(r) = r else { return };
        if has_nan {
            return;
        }
        self.regs[r].referenced = true;
        if self
            .assumptions
            .iter()
            .any(|a| a.reg == RegId(r) && a.bound == b)
        {
            return;
        }
        let text = self.stmt_text(s.span);
        self.assumptions.push(Assumption {
            reg: RegId(r),
            bound: b,
            span: s.span,
            text,
        });
    }
}
