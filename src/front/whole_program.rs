//! Whole-program checks (phase 5), once every operation is unrolled: the output, the divisor
//! assumptions and pinned-row collisions.
//!
//! Decisions where docs/LANGUAGE.md is silent:
//! - A divisor needs at least one assumption on its register that excludes zero (assumptions
//!   are global per register, so one anywhere in the program counts).
//! - Live range of a pinned register: from its first write to its last read or write (the
//!   output is read after the last op); two pinned registers collide when their rows overlap
//!   and these closed intervals intersect (touching at one op counts: conservative).

use super::ast::{Ident, Stmt, StmtKind};
use super::checker::Checker;
use super::diag::Diagnostic;
use crate::ir::RegId;
use std::collections::HashMap;

impl Checker<'_> {
    /// The one `output` statement: a register written by some operation, scalar. Its id, or
    /// `None` (reported).
    pub(super) fn output_phase(&mut self, stmts: &[Stmt]) -> Option<usize> {
        let outs: Vec<&Ident> = stmts
            .iter()
            .filter_map(|s| match &s.kind {
                StmtKind::Output { reg } => Some(reg),
                _ => None,
            })
            .collect();
        let Some(first) = outs.first() else {
            let sp = self.idx.span(self.text.len(), self.text.len());
            self.err(
                Diagnostic::new(
                    "missing-output",
                    sp,
                    "the program has no `output` statement",
                )
                .label("expected `output REG` (a scalar register) somewhere"),
            );
            return None;
        };
        for o in &outs[1..] {
            self.err(
                Diagnostic::new("duplicate-output", o.span, "a second `output` statement")
                    .label("only one `output` is allowed")
                    .also(first.span, "first `output` here"),
            );
        }
        let r = self.resolve(first)?;
        self.regs[r].referenced = true;
        if !self.regs[r].written {
            self.err(
                Diagnostic::new(
                    "use-before-write",
                    first.span,
                    format!("output register `{}` is never written", first.name),
                )
                .label("no operation writes it"),
            );
            return None;
        }
        match self.regs[r].shape {
            Some(sh) if !sh.is_scalar() => {
                self.err(
                    Diagnostic::new(
                        "output-not-scalar",
                        first.span,
                        format!(
                            "the output must be a scalar register, `{}` is {sh}",
                            first.name
                        ),
                    )
                    .label("expected a scalar"),
                );
                None
            }
            _ => Some(r),
        }
    }

    /// Every divisor seen while unrolling needs an assumption that excludes zero.
    pub(super) fn div_phase(&mut self) {
        let checks = std::mem::take(&mut self.div_checks);
        for c in checks {
            let ok = self
                .assumptions
                .iter()
                .any(|a| a.reg == RegId(c.den) && a.bound.excludes_zero());
            if !ok {
                let name = self.regs[c.den].name.clone();
                let mut d = Diagnostic::new(
                    "divisor-assumption",
                    c.span,
                    format!("divisor `{name}` has no assumption that keeps it away from 0"),
                )
                .label(format!(
                    "add e.g. `assume {name} >= 1` or `assume |{name}| >= 1e-3`"
                ));
                for a in self.assumptions.iter().filter(|a| a.reg == RegId(c.den)) {
                    d = d.also(a.span, "this assumption allows 0");
                }
                d.notes.extend(c.notes);
                self.err(d);
            }
        }
    }

    /// Two pinned registers whose rows overlap must not be live at the same time. The live
    /// range of a register over the unrolled ops: first write to last access (a read, a later
    /// write, or the output read after the last op).
    pub(super) fn pin_phase(&mut self, output: Option<usize>) {
        let pinned: Vec<usize> = (0..self.regs.len())
            .filter(|&r| self.regs[r].pinned.is_some() && self.regs[r].shape.is_some())
            .collect();
        if pinned.len() < 2 {
            return;
        }
        let mut live: HashMap<usize, (usize, usize)> = HashMap::new();
        for (i, op) in self.ops.iter().enumerate() {
            for r in op.kind.reads() {
                if let Some(e) = live.get_mut(&r.0) {
                    e.1 = i;
                }
            }
            let dst = op.kind.dst().0;
            live.entry(dst).and_modify(|e| e.1 = i).or_insert((i, i));
        }
        if let Some(o) = output {
            if let Some(e) = live.get_mut(&o) {
                e.1 = self.ops.len();
            }
        }
        for (ai, &a) in pinned.iter().enumerate() {
            for &b in &pinned[ai + 1..] {
                let (ra, rb) = (&self.regs[a], &self.regs[b]);
                let (pa, pb) = (ra.pinned.unwrap_or(0), rb.pinned.unwrap_or(0));
                let (ea, eb) = (
                    pa + ra.shape.map_or(0, |s| s.size()),
                    pb + rb.shape.map_or(0, |s| s.size()),
                );
                if pa >= eb || pb >= ea {
                    continue;
                }
                let (Some(&la), Some(&lb)) = (live.get(&a), live.get(&b)) else {
                    continue;
                };
                if la.0 > lb.1 || lb.0 > la.1 {
                    continue;
                }
                let op_loc = |i: usize| -> String {
                    match self.ops.get(i) {
                        Some(op) => format!("op #{i} ({}:{})", op.span.line, op.span.col),
                        None => "the output read".to_string(),
                    }
                };
                let d = Diagnostic::new(
                    "pin-collision",
                    rb.span,
                    format!(
                        "pinned registers `{}` (rows {pa}..{ea}) and `{}` (rows {pb}..{eb}) share rows while both are live",
                        ra.name, rb.name
                    ),
                )
                .label("overlapping rows")
                .also(ra.span, "overlaps this register")
                .note(format!("`{}` is live from {} to {}", ra.name, op_loc(la.0), op_loc(la.1)))
                .note(format!("`{}` is live from {} to {}", rb.name, op_loc(lb.0), op_loc(lb.1)));
                self.err(d);
            }
        }
    }
}
