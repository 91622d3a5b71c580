//! `aff` (phase 4, per unrolled instance): `dst <- Σ ±COEF·src + bias` turned into dense
//! |dst|×|src| coefficient matrices and a |dst|-entry bias ([`AffTerm`]). The steps, one
//! function each: the right-hand side split into signed summands ([`summands`]), each summand
//! sorted into a term or a bias ([`Checker::aff_summand`]); the destination's shape known or
//! inferred ([`Checker::aff_dst_shape`]); each term's coefficient expanded and its selection
//! widened to the whole register ([`Checker::expand_term`]); the biases summed
//! ([`Checker::aff_bias`]).
//!
//! Decisions where docs/LANGUAGE.md is silent:
//! - aff summands are split at top-level `+`/`-` (through unary minus and parentheses); each is
//!   a constant (bias), `REG`, `REG^T`, `COEF * REG`, `REG * c` or `REG / c` (c scalar).
//!   Repeated sources stay separate terms, in textual order. `I` as a coefficient needs
//!   |dst| = |src| (sizes, so it may reshape); a scalar coefficient needs equal shapes after
//!   transposition, or a scalar source (broadcast: a |dst|×1 column). A literal bias needs
//!   |dst| entries (any shape); a bias `I` needs a square dst.
//! - The shape of an implicit destination at its first write: a non-scalar source under a
//!   scalar/`I` coefficient, else the rows of a matrix coefficient (a vector), else a literal
//!   bias's shape, else scalar when all is scalar; a bias-only `I` cannot be inferred.

use super::ast::{BinOp, Expr, ExprKind, Ident, Stmt};
use super::checker::{has_name, Checker};
use super::consts::Value;
use super::diag::Diagnostic;
use super::MAX_COEFS;
use crate::ir::{AffTerm, OpKind, Operand, RegId, Shape, Span};
use std::collections::HashSet;

/// An index list `[i, :]` of an aff source (`None` is `:`).
type IndexList<'e> = Option<&'e [Option<Expr>]>;

/// A coefficient or bias before expansion.
enum Coef {
    Scalar(f64),
    Identity(f64),
    /// `e(k)`: the unit vector with a 1 at element k (bias only; sized by the destination).
    Unit(i64),
    Matrix {
        rows: usize,
        cols: usize,
        data: Vec<f64>,
    },
}

impl From<Value> for Coef {
    fn from(v: Value) -> Coef {
        match v {
            Value::Int(i) => Coef::Scalar(i as f64),
            Value::Real(r) => Coef::Scalar(r),
            Value::Identity(s) => Coef::Identity(s),
            Value::Tensor { rows, cols, data } => Coef::Matrix { rows, cols, data },
        }
    }
}

/// The elements of a register an indexed operand (`S[i, :]`) picks.
struct Selection {
    /// Flat (row-major, untransposed) element indices of the register, in the operand's
    /// row-major order.
    flat: Vec<usize>,
    /// Number of elements of the whole register.
    reg_size: usize,
}

/// An aff term before expansion: `sign · coef · reg` (possibly transposed and selected).
struct Term {
    sign: f64,
    coef: Coef,
    reg: usize,
    transposed: bool,
    /// The summand's span.
    span: Span,
    /// Shape of the operand as written (after selection and transposition); `None` when
    /// unknown (reported).
    shape: Option<Shape>,
    selection: Option<Selection>,
}

/// A constant summand.
struct Bias {
    sign: f64,
    coef: Coef,
    span: Span,
}

/// The summands of one aff sorted into terms and biases; `ok` is false when one was rejected
/// (reported).
struct Summands {
    terms: Vec<Term>,
    biases: Vec<Bias>,
    ok: bool,
}

/// A register operand as written: `Name` or `Name[…]`, optionally `^T`.
struct OperandRef<'e> {
    name: &'e str,
    transposed: bool,
    index: IndexList<'e>,
}

/// Where the constant of a term stands; a matrix coefficient is accepted only on the left.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CoefPosition {
    /// `COEF * REG`.
    Left,
    /// `REG * c`.
    Right,
    /// `REG / c`.
    Divisor,
}

/// A summand that names a register: `REG`, `COEF * REG`, `REG * c` or `REG / c`.
struct TermForm<'e> {
    coef: Option<(&'e Expr, CoefPosition)>,
    operand: OperandRef<'e>,
}

/// The dense coefficients went over [`MAX_COEFS`] (reported; unrolling stops).
struct OverBudget;

/// Splits an aff right-hand side into signed summands: `a - (b + 2)` → `+a, -b, -2`.
fn summands<'e>(e: &'e Expr, sign: f64, out: &mut Vec<(f64, &'e Expr)>) {
    match &e.kind {
        ExprKind::Bin(BinOp::Add, a, b) => {
            summands(a, sign, out);
            summands(b, sign, out);
        }
        ExprKind::Bin(BinOp::Sub, a, b) => {
            summands(a, sign, out);
            summands(b, -sign, out);
        }
        ExprKind::Neg(a) => summands(a, -sign, out),
        _ => out.push((sign, e)),
    }
}

/// `Name`, `Name[…]`, optionally `^T`.
fn as_operand(e: &Expr) -> Option<OperandRef<'_>> {
    fn base(e: &Expr) -> Option<(&str, IndexList<'_>)> {
        match &e.kind {
            ExprKind::Name(n) => Some((n, None)),
            ExprKind::Index(b, idx) => match &b.kind {
                ExprKind::Name(n) => Some((n, Some(&idx[..]))),
                _ => None,
            },
            _ => None,
        }
    }
    let (inner, transposed) = match &e.kind {
        ExprKind::Transpose(a) => (&**a, true),
        _ => (e, false),
    };
    base(inner).map(|(name, index)| OperandRef {
        name,
        transposed,
        index,
    })
}

/// The form of a summand that names a register (`is_reg`); `None` when it has none of the
/// forms `REG`, `COEF * REG`, `REG * c`, `REG / c` (COEF, c constant).
fn term_form<'e>(e: &'e Expr, is_reg: &dyn Fn(&str) -> bool) -> Option<TermForm<'e>> {
    if let Some(operand) = as_operand(e) {
        return Some(TermForm {
            coef: None,
            operand,
        });
    }
    let (c, r, position) = match &e.kind {
        ExprKind::Bin(BinOp::Mul, c, r) if !has_name(c, is_reg) && as_operand(r).is_some() => {
            (c, r, CoefPosition::Left)
        }
        ExprKind::Bin(BinOp::Mul, r, c) => (c, r, CoefPosition::Right),
        ExprKind::Bin(BinOp::Div, r, c) => (c, r, CoefPosition::Divisor),
        _ => return None,
    };
    if has_name(c, is_reg) {
        return None;
    }
    Some(TermForm {
        coef: Some((&**c, position)),
        operand: as_operand(r)?,
    })
}

/// `x` on the diagonal of an n×n matrix (row-major).
fn diag_matrix(n: usize, x: f64) -> Vec<f64> {
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        m[i * n + i] = x;
    }
    m
}

/// A selection is the constant linear map "pick these elements": the |dst|×|sel| coefficient
/// `c` becomes the |dst|×|reg| matrix whose column `flat[s]` is `c`'s column s (other columns
/// 0), over the whole, untransposed register. Transposing a selected row/column/element does not
/// change its row-major flattening, so only the shape rules saw the transposition.
fn widen_selection(c: &[f64], sel: &Selection, dsize: usize) -> Vec<f64> {
    let ssize = sel.flat.len();
    let mut full = vec![0.0; dsize * sel.reg_size];
    for i in 0..dsize {
        for (s, &f) in sel.flat.iter().enumerate() {
            full[i * sel.reg_size + f] += c[i * ssize + s];
        }
    }
    full
}

impl Checker<'_> {
    /// `aff dst <- rhs`: checks every summand, then (when all are well formed) the shapes, and
    /// appends the expanded operation.
    pub(super) fn aff(&mut self, s: &Stmt, dst: &Ident, rhs: &Expr) {
        let sum = self.aff_summands(rhs);
        let dst_r = self.write_target(dst);
        let Some(dr) = dst_r else { return };
        if !sum.ok || sum.terms.iter().any(|t| t.shape.is_none()) {
            self.finish_write(dst_r);
            return;
        }
        let Some(dsh) = self.aff_dst_shape(dr, dst, &sum) else {
            self.finish_write(dst_r);
            return;
        };
        let mut ok = true;
        let mut terms = Vec::new();
        for t in &sum.terms {
            match self.expand_term(t, dst, dsh, s.span) {
                Ok(Some(term)) => terms.push(term),
                Ok(None) => ok = false,
                Err(OverBudget) => return,
            }
        }
        let bias = self.aff_bias(&sum.biases, dst, dsh);
        if let (true, Some(bias)) = (ok, bias) {
            self.push_op(
                s,
                OpKind::Aff {
                    dst: RegId(dr),
                    terms,
                    bias,
                },
            );
        }
        self.finish_write(dst_r);
    }

    /// The summands of `rhs`, each checked and sorted into a term or a bias.
    fn aff_summands(&mut self, rhs: &Expr) -> Summands {
        let mut parts = Vec::new();
        summands(rhs, 1.0, &mut parts);
        // Names that denote registers here (loop variables and parameters are constants).
        let regset: HashSet<String> = self
            .reg_index
            .keys()
            .filter(|n| {
                !self.loop_vars.iter().any(|(v, _)| v == *n) && !self.param_index.contains_key(*n)
            })
            .cloned()
            .collect();
        let is_reg = |n: &str| -> bool { regset.contains(n) };
        let mut out = Summands {
            terms: Vec::new(),
            biases: Vec::new(),
            ok: true,
        };
        for (sign, e) in parts {
            let ok = self.aff_summand(sign, e, &is_reg, &mut out);
            out.ok &= ok;
        }
        out
    }

    /// One summand `sign · e`: a unit-vector bias `e(k)`, a constant bias, or a term
    /// `COEF · REG` (its register read, its selection resolved). False when rejected.
    fn aff_summand(
        &mut self,
        sign: f64,
        e: &Expr,
        is_reg: &dyn Fn(&str) -> bool,
        out: &mut Summands,
    ) -> bool {
        // `e(k)`: a unit-vector bias, sized once the destination's shape is known.
        if let ExprKind::Call(f, args) = &e.kind {
            if f.name == "e" && !has_name(e, is_reg) {
                return self.unit_bias(sign, e, args, &mut out.biases);
            }
        }
        if !has_name(e, is_reg) {
            let Some(v) = self.eval(e) else { return false };
            out.biases.push(Bias {
                sign,
                coef: v.into(),
                span: e.span,
            });
            return true;
        }
        let Some(form) = term_form(e, is_reg) else {
            self.bad_aff_term(e, is_reg);
            return false;
        };
        let coef = match form.coef {
            None => Some(Coef::Scalar(1.0)),
            Some((ce, position)) => self.term_coef(ce, position),
        };
        let OperandRef {
            name,
            transposed,
            index,
        } = form.operand;
        let r = self.reg_index.get(name).copied();
        let rsh = r.and_then(|r| self.read(r, e.span));
        // Element selection: the operand's shape and the flat indices it picks.
        let (shape, selection, ok) = match (rsh, index) {
            (Some(rsh), Some(idx)) => match self.select(name, rsh, idx, e.span) {
                Some((sh, flat)) => {
                    let reg_size = rsh.size();
                    (Some(sh), Some(Selection { flat, reg_size }), true)
                }
                None => (None, None, false),
            },
            (rsh, _) => (rsh, None, true),
        };
        let shape = shape.map(|sh| if transposed { sh.transposed() } else { sh });
        let (Some(coef), Some(reg)) = (coef, r) else {
            return false;
        };
        out.terms.push(Term {
            sign,
            coef,
            reg,
            transposed,
            span: e.span,
            shape,
            selection,
        });
        ok
    }

    /// `e(k)` with k an integer constant: a unit-vector bias.
    fn unit_bias(&mut self, sign: f64, e: &Expr, args: &[Expr], out: &mut Vec<Bias>) -> bool {
        if args.len() != 1 {
            let d = self.with_iter(
                Diagnostic::new(
                    "bad-unit",
                    e.span,
                    format!("`e(k)` takes one index, found {}", args.len()),
                )
                .label("write `e(k)` with k an integer constant expression"),
            );
            self.err(d);
            return false;
        }
        let Some(k) = self.eval_int(&args[0], "the index of `e(k)`") else {
            return false;
        };
        out.push(Bias {
            sign,
            coef: Coef::Unit(k),
            span: args[0].span,
        });
        true
    }

    /// Reports a summand that is neither constant nor a constant multiple of one register.
    fn bad_aff_term(&mut self, e: &Expr, is_reg: &dyn Fn(&str) -> bool) {
        let mut d = Diagnostic::new(
            "bad-aff-term",
            e.span,
            "an aff term must be `COEF * REGISTER` with a constant COEF",
        )
        .label("not a constant multiple of one register");
        if let ExprKind::Bin(BinOp::Mul | BinOp::Div, a, b) = &e.kind {
            if has_name(a, is_reg) && has_name(b, is_reg) {
                d = d.note("products of registers need `mul`");
            }
        }
        let d = self.with_iter(d);
        self.err(d);
    }

    /// The coefficient `ce` of a term: any constant on the left (`W * r`); a scalar on the
    /// right (`r * c`); a non-zero scalar as a divisor (`r / c`, the coefficient 1/c).
    fn term_coef(&mut self, ce: &Expr, position: CoefPosition) -> Option<Coef> {
        let v = self.eval(ce)?;
        match (Coef::from(v.clone()), position) {
            (Coef::Scalar(0.0), CoefPosition::Divisor) => {
                let d = self.with_iter(
                    Diagnostic::new(
                        "const-arith",
                        ce.span,
                        "division by zero in an aff coefficient",
                    )
                    .label("divisor is 0"),
                );
                self.err(d);
                None
            }
            (Coef::Scalar(x), CoefPosition::Divisor) => Some(Coef::Scalar(1.0 / x)),
            (Coef::Scalar(x), _) => Some(Coef::Scalar(x)),
            (c, CoefPosition::Left) => Some(c),
            (_, _) => {
                let d = self.with_iter(
                    Diagnostic::new(
                        "bad-aff-term",
                        ce.span,
                        format!(
                            "a coefficient after the register must be a scalar, found {}",
                            v.describe()
                        ),
                    )
                    .label("write matrix coefficients before the register: `W * r`"),
                );
                self.err(d);
                None
            }
        }
    }

    /// The shape of the destination `dr`: declared or known from an earlier write, else
    /// inferred from this aff (an implicit register's first write); `None` when poisoned or
    /// not inferable (reported).
    fn aff_dst_shape(&mut self, dr: usize, dst: &Ident, sum: &Summands) -> Option<Shape> {
        let inferred = infer_aff_shape(&sum.terms, &sum.biases);
        if self.regs[dr].poisoned {
            return None;
        }
        if let Some(sh) = self.regs[dr].shape {
            return Some(sh);
        }
        if let Some(sh) = inferred {
            self.regs[dr].shape = Some(sh);
            return Some(sh);
        }
        let d = self.with_iter(
            Diagnostic::new(
                "cannot-infer",
                dst.span,
                format!("cannot infer the shape of `{}` from this aff", dst.name),
            )
            .label(format!("declare it: `reg {}: …`", dst.name)),
        );
        self.err(d);
        None
    }

    /// Term `t` of an aff into `dst` (shape `dsh`) as a dense |dst|×|reg| coefficient over its
    /// whole register: the coefficient expanded ([`Checker::term_matrix`]), a selection widened
    /// ([`widen_selection`]). `Ok(None)` when the shapes do not fit (reported); `Err` when the
    /// coefficient budget [`MAX_COEFS`] is exhausted (reported; unrolling stops).
    fn expand_term(
        &mut self,
        t: &Term,
        dst: &Ident,
        dsh: Shape,
        stmt: Span,
    ) -> Result<Option<AffTerm>, OverBudget> {
        let dsize = dsh.size();
        let ssh = t.shape.unwrap_or(Shape::SCALAR);
        // Budget the dense |dst|×|src| coefficient (src: the whole register) before
        // allocating it.
        let need = dsize.saturating_mul(t.selection.as_ref().map_or(ssh.size(), |s| s.reg_size));
        if self.coefs_used.saturating_add(need) > MAX_COEFS {
            let d = self.with_iter(
                Diagnostic::new(
                    "too-large",
                    stmt,
                    format!(
                        "the dense aff coefficients exceed {MAX_COEFS} entries over the program"
                    ),
                )
                .label("unrolling stopped here"),
            );
            self.err(d);
            self.aborted = true;
            return Err(OverBudget);
        }
        let Some(coef) = self.term_matrix(t, dst, ssh, dsh) else {
            return Ok(None);
        };
        let (coef, transposed) = match &t.selection {
            Some(sel) => (widen_selection(&coef, sel, dsize), false),
            None => (coef, t.transposed),
        };
        self.coefs_used = self.coefs_used.saturating_add(coef.len());
        Ok(Some(AffTerm {
            src: Operand {
                reg: RegId(t.reg),
                transposed,
            },
            coef,
        }))
    }

    /// The |dst|×|src| matrix of term `t` (operand shape `ssh`) into `dst` (shape `dsh`):
    /// scalar x on equal shapes is x·I over the flattened source (coef[i·|src| + i] = x), on a
    /// scalar source a broadcast |dst|×1 column of x; `x·I` needs |dst| = |src|; a matrix
    /// needs exactly |dst|×|src|. The sign of the summand is applied.
    fn term_matrix(&mut self, t: &Term, dst: &Ident, ssh: Shape, dsh: Shape) -> Option<Vec<f64>> {
        let (dsize, ssize, sign, span) = (dsh.size(), ssh.size(), t.sign, t.span);
        let name = &self.regs[t.reg].name;
        let tr = if t.transposed { "^T" } else { "" };
        let src_txt = if t.selection.is_some() {
            format!("{name}[…]{tr}")
        } else {
            format!("{name}{tr}")
        };
        let d = match &t.coef {
            Coef::Scalar(x) if ssh == dsh => return Some(diag_matrix(dsize, x * sign)),
            Coef::Scalar(x) if ssh.is_scalar() => return Some(vec![x * sign; dsize]),
            Coef::Scalar(_) => Diagnostic::new(
                "shape-mismatch",
                span,
                format!(
                    "shape mismatch in aff: a scalar coefficient needs `{src_txt}` ({ssh}) to have the shape of `{}` ({dsh}) or to be a scalar",
                    dst.name
                ),
            )
            .label("source shape differs from the destination"),
            Coef::Identity(x) if ssize == dsize => return Some(diag_matrix(dsize, x * sign)),
            Coef::Identity(_) => Diagnostic::new(
                "shape-mismatch",
                span,
                format!(
                    "shape mismatch in aff: `I` needs |{}| = |{src_txt}|, found {dsize} and {ssize} elements",
                    dst.name
                ),
            )
            .label("identity of mismatched sizes"),
            Coef::Matrix { rows, cols, data } if *rows == dsize && *cols == ssize => {
                return Some(data.iter().map(|v| v * sign).collect())
            }
            Coef::Matrix { rows, cols, .. } => {
                let d = Diagnostic::new(
                    "shape-mismatch",
                    span,
                    format!(
                        "shape mismatch in aff: coefficient is {rows}×{cols} but `{}` ← `{src_txt}` needs |dst|×|src| = {dsize}×{ssize}",
                        dst.name
                    ),
                )
                .label("coefficient has the wrong shape");
                if *rows == ssize && *cols == dsize {
                    d.note("the transposed coefficient fits: write `W^T`")
                } else {
                    d
                }
            }
            Coef::Unit(_) => return None, // only ever a bias (never built for a term)
        };
        let d = self.with_iter(d);
        self.err(d);
        None
    }

    /// The bias of an aff into `dst` (shape `dsh`): the sum of its constant summands, each
    /// with |dst| entries (any shape), `s·I` on a square dst, or `e(k)` on a vector dst with
    /// 0 ≤ k < |dst|. `None` when one does not fit (every one is reported).
    fn aff_bias(&mut self, biases: &[Bias], dst: &Ident, dsh: Shape) -> Option<Vec<f64>> {
        let dsize = dsh.size();
        let mut bias = vec![0.0; dsize];
        let mut ok = true;
        for Bias { sign, coef, span } in biases {
            let (sign, span) = (*sign, *span);
            let d = match coef {
                Coef::Scalar(x) => {
                    bias.iter_mut().for_each(|b| *b += sign * x);
                    continue;
                }
                Coef::Identity(x) if dsh.rows == dsh.cols => {
                    for i in 0..dsh.rows {
                        bias[i * dsh.cols + i] += sign * x;
                    }
                    continue;
                }
                Coef::Identity(_) => Diagnostic::new(
                    "shape-mismatch",
                    span,
                    format!(
                        "shape mismatch in aff: bias `I` needs a square destination, `{}` is {dsh}",
                        dst.name
                    ),
                )
                .label("identity bias"),
                // e(k) = the k-th unit vector (0-based) of the vector destination.
                Coef::Unit(k) if dsh.cols == 1 && *k >= 0 && (*k as usize) < dsh.rows => {
                    bias[*k as usize] += sign;
                    continue;
                }
                Coef::Unit(k) if dsh.cols == 1 => Diagnostic::new(
                    "index-range",
                    span,
                    format!(
                        "index out of range: `e({k})` needs 0 <= k < {} (the size of `{}`)",
                        dsh.rows, dst.name
                    ),
                )
                .label(format!("k = {k}")),
                Coef::Unit(_) => Diagnostic::new(
                    "shape-mismatch",
                    span,
                    format!(
                        "shape mismatch in aff: the unit vector `e(k)` needs a vector destination, `{}` is {dsh}",
                        dst.name
                    ),
                )
                .label("unit-vector bias"),
                Coef::Matrix { rows, cols, data } if rows * cols == dsize => {
                    bias.iter_mut().zip(data).for_each(|(b, v)| *b += sign * v);
                    continue;
                }
                Coef::Matrix { rows, cols, .. } => Diagnostic::new(
                    "shape-mismatch",
                    span,
                    format!(
                        "shape mismatch in aff: bias has {} entries ({rows}×{cols}), `{}` has {dsize}",
                        rows * cols,
                        dst.name
                    ),
                )
                .label("bias size differs from the destination"),
            };
            let d = self.with_iter(d);
            self.err(d);
            ok = false;
        }
        ok.then_some(bias)
    }

    /// The selection `name[idx]` of a register of shape `rsh`: the selected shape and the flat
    /// (row-major) element indices, in the selection's row-major order. `v[i]` on a vector,
    /// `S[i, j]` / `S[i, :]` / `S[:, j]` / `S[:, :]` on any register (a vector is d×1).
    fn select(
        &mut self,
        name: &str,
        rsh: Shape,
        idx: &[Option<Expr>],
        span: Span,
    ) -> Option<(Shape, Vec<usize>)> {
        let axes: Vec<(usize, &Option<Expr>)> = match idx {
            [i] if rsh.cols == 1 => vec![(rsh.rows, i), (1, &None)],
            [i, j] => vec![(rsh.rows, i), (rsh.cols, j)],
            _ => {
                let d = self.with_iter(
                    Diagnostic::new(
                        "bad-index",
                        span,
                        format!(
                            "`{name}` is {rsh}: index it with {}, found {} index(es)",
                            if rsh.cols == 1 {
                                "`[i]` or `[i, j]`"
                            } else {
                                "`[i, j]` (each an integer or `:`)"
                            },
                            idx.len()
                        ),
                    )
                    .label("wrong number of indices"),
                );
                self.err(d);
                return None;
            }
        };
        // Per axis: the selected positions, and whether the axis is kept (`:`).
        let mut pos: Vec<(Vec<usize>, bool)> = Vec::new();
        for (n, ix) in axes {
            match ix {
                None => pos.push(((0..n).collect(), true)),
                Some(ex) => {
                    let k = self.eval_int(ex, "an index")?;
                    if k < 0 || k as usize >= n {
                        let d = self.with_iter(
                            Diagnostic::new("index-range", ex.span, format!("index out of range: `{name}` is {rsh}, this axis has {n} element(s) (0-based), found {k}"))
                                .label(format!("needs 0 <= index < {n}")),
                        );
                        self.err(d);
                        return None;
                    }
                    pos.push((vec![k as usize], false));
                }
            }
        }
        let (rs, rkeep) = &pos[0];
        let (cs, ckeep) = &pos[1];
        let flat = rs
            .iter()
            .flat_map(|&r| cs.iter().map(move |&c| r * rsh.cols + c))
            .collect();
        let sh = match (rkeep, ckeep) {
            (true, true) => rsh,
            (true, false) => Shape::vec(rs.len()),
            (false, true) => Shape::vec(cs.len()),
            (false, false) => Shape::SCALAR,
        };
        Some((sh, flat))
    }
}

/// Shape of an implicit aff destination: a non-scalar source under a scalar or identity
/// coefficient; else the rows of a matrix coefficient (a vector); else the bias's shape;
/// else scalar when everything is scalar.
fn infer_aff_shape(terms: &[Term], biases: &[Bias]) -> Option<Shape> {
    for t in terms {
        if let (Coef::Scalar(_) | Coef::Identity(_), Some(sh)) = (&t.coef, t.shape) {
            if !sh.is_scalar() {
                return Some(sh);
            }
        }
    }
    for t in terms {
        if let Coef::Matrix { rows, .. } = &t.coef {
            return Some(Shape::vec(*rows));
        }
    }
    for b in biases {
        if let Coef::Matrix { rows, cols, .. } = &b.coef {
            return Some(Shape::mat(*rows, *cols));
        }
    }
    let all_scalar = terms.iter().all(|t| matches!(t.coef, Coef::Scalar(_)))
        && biases.iter().all(|b| matches!(b.coef, Coef::Scalar(_)));
    all_scalar.then_some(Shape::SCALAR)
}
