//! Declarations (phase 3): the built-in inputs, the registers declared with `reg` (shapes and
//! pins) and the implicit registers.
//!
//! Decisions where docs/LANGUAGE.md is silent:
//! - Implicit registers: a name never declared with `reg` but written by some operation is a
//!   work register whose shape is that of its first write (mov: the source; mul: the product;
//!   div: the numerator; aff: see `aff`). A name read but never written is unknown.
//! - `param`, `reg` and `output` are top level only; `assume` may sit in a loop (copies dedupe).

use super::ast::{Expr, Ident, ShapeAst, Stmt, StmtKind};
use super::checker::{Checker, RegInfo};
use super::diag::Diagnostic;
use super::MAX_ROWS;
use crate::ir::{Builtin, Shape, Span};

impl Checker<'_> {
    /// Registers every built-in input, then each `reg` declaration, then the implicit registers
    /// (the destinations `dst_names` never declared), in that order (their ids in the checker).
    pub(super) fn decl_phase(&mut self, stmts: &[Stmt], dst_names: &[Ident]) {
        let d = self.d;
        for b in Builtin::ALL {
            self.add_reg(RegInfo {
                name: b.name().to_string(),
                shape: Some(b.shape(d)),
                builtin: Some(b),
                pinned: None,
                span: Span::default(),
                written: true,
                referenced: false,
                poisoned: false,
            });
        }
        for s in stmts {
            let StmtKind::Reg { name, shape, pin } = &s.kind else {
                continue;
            };
            if !self.check_new_name(name, "register") {
                continue;
            }
            let shape = self.eval_shape(shape);
            let mut poisoned = shape.is_none();
            let mut pinned = None;
            if let Some(pe) = pin {
                pinned = self.eval_pin(name, pe, shape);
                poisoned |= pinned.is_none();
            }
            self.add_reg(RegInfo {
                name: name.name.clone(),
                shape,
                builtin: None,
                pinned,
                span: name.span,
                written: false,
                referenced: false,
                poisoned,
            });
        }
        // Implicit registers: destinations never declared.
        for id in dst_names {
            let n = &id.name;
            if self.reg_index.contains_key(n) || self.param_index.contains_key(n) || n == "I" {
                continue;
            }
            self.add_reg(RegInfo {
                name: n.clone(),
                shape: None,
                builtin: None,
                pinned: None,
                span: id.span,
                written: false,
                referenced: false,
                poisoned: false,
            });
        }
    }

    /// The first row of register `name` pinned with `@ pe`: above the input rows `0..=d` and,
    /// with its `shape` (one row when unknown), below [`MAX_ROWS`]; `None` (reported) otherwise.
    fn eval_pin(&mut self, name: &Ident, pe: &Expr, shape: Option<Shape>) -> Option<usize> {
        let d = self.d;
        let p = self.eval_int(pe, "a pinned row")?;
        let size = shape.map_or(1, |s| s.size()) as i64;
        let end = p.saturating_add(size);
        if p <= d as i64 || end > MAX_ROWS as i64 {
            let why = if p < 0 {
                "rows cannot be negative".to_string()
            } else if p <= d as i64 {
                format!("rows 0..={d} hold the inputs y and x")
            } else {
                format!("rows must be below {MAX_ROWS}")
            };
            self.err(
                Diagnostic::new(
                    "pin-range",
                    pe.span,
                    format!(
                        "register `{}` pinned to rows {p}..{end} (exclusive): {why}",
                        name.name
                    ),
                )
                .label(format!(
                    "expected a first row in {}..={}",
                    d + 1,
                    MAX_ROWS as i64 - size
                )),
            );
            return None;
        }
        Some(p as usize)
    }

    /// The shape of a declaration: dimensions in 1..=[`MAX_ROWS`], at most [`MAX_ROWS`]
    /// elements in all; `None` (reported) otherwise.
    fn eval_shape(&mut self, s: &ShapeAst) -> Option<Shape> {
        let dim = |c: &mut Self, e: &Expr| -> Option<usize> {
            let v = c.eval_int(e, "a dimension")?;
            if !(1..=MAX_ROWS as i64).contains(&v) {
                c.err(
                    Diagnostic::new(
                        "bad-shape",
                        e.span,
                        format!("dimension {v} is out of range"),
                    )
                    .label(format!("expected an integer in 1..={MAX_ROWS}")),
                );
                return None;
            }
            Some(v as usize)
        };
        let (shape, span) = match s {
            ShapeAst::Scalar => return Some(Shape::SCALAR),
            ShapeAst::Vec(e) => (Shape::vec(dim(self, e)?), e.span),
            ShapeAst::Mat(r, c) => {
                let r2 = dim(self, r);
                let c2 = dim(self, c);
                (
                    Shape::mat(r2?, c2?),
                    Span {
                        end: c.span.end,
                        ..r.span
                    },
                )
            }
        };
        if shape.size() > MAX_ROWS {
            self.err(
                Diagnostic::new(
                    "bad-shape",
                    span,
                    format!(
                        "register of {} elements does not fit in {MAX_ROWS} rows",
                        shape.size()
                    ),
                )
                .label("too large"),
            );
            return None;
        }
        Some(shape)
    }

    /// `param`, `reg` and `output` are top-level statements.
    pub(super) fn misplaced(&mut self, stmts: &[Stmt], in_loop: bool) {
        for s in stmts {
            match &s.kind {
                StmtKind::For { body, .. } => self.misplaced(body, true),
                StmtKind::Param { .. } | StmtKind::Reg { .. } | StmtKind::Output { .. }
                    if in_loop =>
                {
                    let text = self.text;
                    let kw = text
                        .get(s.span.start..s.span.end)
                        .unwrap_or("")
                        .split_whitespace()
                        .next()
                        .unwrap_or("");
                    self.err(
                        Diagnostic::new(
                            "decl-in-loop",
                            s.span,
                            format!("`{kw}` is not allowed inside a `for` loop"),
                        )
                        .label("move this statement to the top level"),
                    );
                }
                _ => {}
            }
        }
    }
}

/// The names declared with `reg` (`regs`) and the destinations of every operation (`dsts`),
/// in textual order, loop bodies included.
pub(super) fn collect_names(stmts: &[Stmt], regs: &mut Vec<Ident>, dsts: &mut Vec<Ident>) {
    for s in stmts {
        match &s.kind {
            StmtKind::Reg { name, .. } => regs.push(name.clone()),
            StmtKind::For { body, .. } => collect_names(body, regs, dsts),
            k => {
                if let Some(d) = k.op_dst() {
                    dsts.push(d.clone());
                }
            }
        }
    }
}
