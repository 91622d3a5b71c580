//! Building the IR (phase 6), once every check passed: registers renumbered (the built-in
//! inputs the program references, in [`crate::ir::Builtin::ALL`] order, then every work register), the
//! operations and assumptions rewritten to the new ids, the final parameter values recorded.

use super::checker::Checker;
use super::consts::Value;
use super::diag::Diagnostic;
use crate::ir::{self, AffTerm, OpKind, Operand, ParamValue, RegId, RegKind, Register};
use std::collections::BTreeMap;

/// Marks a checker register that is not in the program (an unreferenced input).
const DROPPED: usize = usize::MAX;

impl Checker<'_> {
    /// The program named `name`, loaded with `overrides`, whose output is checker register
    /// `output`; `None` when a register's shape is still unknown (reported) or a parameter
    /// failed.
    pub(super) fn build(
        &mut self,
        name: &str,
        overrides: &[(String, String)],
        output: usize,
    ) -> Option<ir::Program> {
        let (map, registers) = self.registers()?;
        let m = |r: RegId| RegId(map[r.0]);
        let ops = self
            .ops
            .drain(..)
            .map(|mut op| {
                op.kind = renumber(op.kind, &map);
                op
            })
            .collect();
        let assumptions = self
            .assumptions
            .drain(..)
            .map(|mut a| {
                a.reg = m(a.reg);
                a
            })
            .collect();
        Some(ir::Program {
            source: ir::Source {
                name: name.to_string(),
                text: self.text.to_string(),
            },
            params: self.param_values()?,
            overrides: overrides.to_vec(),
            d: self.d,
            n: self.n,
            registers,
            ops,
            assumptions,
            output: m(RegId(output)),
        })
    }

    /// The program's registers and the map from checker ids to program ids ([`DROPPED`] for
    /// inputs the program never references). `None` when a register has no shape (reported).
    fn registers(&mut self) -> Option<(Vec<usize>, Vec<Register>)> {
        let mut map = vec![DROPPED; self.regs.len()];
        let mut registers = Vec::new();
        let mut missing = None;
        for (i, r) in self.regs.iter().enumerate() {
            let keep = match r.builtin {
                Some(_) => r.referenced,
                None => true,
            };
            if !keep {
                continue;
            }
            let Some(shape) = r.shape else {
                // A declared register never written keeps its declared shape; an implicit one
                // always gets a shape at its first write, so this is unreachable without errors.
                missing = Some((r.span, r.name.clone()));
                break;
            };
            map[i] = registers.len();
            registers.push(Register {
                name: r.name.clone(),
                shape,
                kind: match r.builtin {
                    Some(b) => RegKind::Input(b),
                    None => RegKind::Work,
                },
                pinned: r.pinned,
                span: r.span,
            });
        }
        if let Some((span, name)) = missing {
            self.err(
                Diagnostic::new(
                    "cannot-infer",
                    span,
                    format!("cannot infer the shape of `{name}`"),
                )
                .label("declare it with `reg`"),
            );
            return None;
        }
        Some((map, registers))
    }

    /// Every parameter's final value, by name; `None` if one failed (already reported).
    fn param_values(&self) -> Option<BTreeMap<String, ParamValue>> {
        let mut params = BTreeMap::new();
        for p in &self.params {
            let v = match p.value.clone()? {
                Value::Int(i) => ParamValue::Int(i),
                Value::Real(r) => ParamValue::Real(r),
                Value::Tensor { rows, cols, data } => ParamValue::Tensor { rows, cols, data },
                Value::Identity(_) => return None,
            };
            params.insert(p.name.clone(), v);
        }
        Some(params)
    }
}

/// `kind` with every register id `r` replaced by `map[r]`.
fn renumber(kind: OpKind, map: &[usize]) -> OpKind {
    let m = |r: RegId| RegId(map[r.0]);
    let mo = |o: Operand| Operand {
        reg: m(o.reg),
        transposed: o.transposed,
    };
    match kind {
        OpKind::Mov { dst, src, pattern } => OpKind::Mov {
            dst: m(dst),
            src: m(src),
            pattern,
        },
        OpKind::Mul { dst, a, b } => OpKind::Mul {
            dst: m(dst),
            a: mo(a),
            b: mo(b),
        },
        OpKind::Div { dst, num, den } => OpKind::Div {
            dst: m(dst),
            num: m(num),
            den: m(den),
        },
        OpKind::Aff { dst, terms, bias } => OpKind::Aff {
            dst: m(dst),
            terms: terms
                .into_iter()
                .map(|t| AffTerm {
                    src: mo(t.src),
                    coef: t.coef,
                })
                .collect(),
            bias,
        },
    }
}
