//! Compile-time constants: values and the evaluation of constant expressions.
//!
//! Integers stay exact `i64` (checked arithmetic: overflow is an error); an integer quotient
//! that is not exact becomes a real. Reals are IEEE f64; a non-finite result is an error.

use super::ast::{BinOp, Expr, ExprKind};
use super::diag::Diagnostic;
use crate::ir::Span;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Real(f64),
    /// A literal vector (`cols == 1`) or matrix, row-major.
    Tensor {
        rows: usize,
        cols: usize,
        data: Vec<f64>,
    },
    /// `s · I`, the identity of whatever size its use needs.
    Identity(f64),
}

impl Value {
    pub fn scalar(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::Real(r) => Some(r),
            _ => None,
        }
    }
    /// An exact integer: an `Int`, or a real with an integral value in `i64` range.
    pub fn as_int(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            Value::Real(r) if r.fract() == 0.0 && r.abs() < 9.0e18 => Some(r as i64),
            _ => None,
        }
    }
    pub fn describe(&self) -> String {
        match self {
            Value::Int(i) => format!("the integer {i}"),
            Value::Real(r) => format!("the real {r}"),
            Value::Tensor { rows, cols: 1, .. } => format!("a vector of {rows} entries"),
            Value::Tensor { rows, cols, .. } => format!("a {rows}×{cols} matrix"),
            Value::Identity(_) => "the identity `I`".to_string(),
        }
    }
}

/// What a name in an expression stands for.
pub enum NameValue {
    Const(Value),
    /// A register: not allowed in a constant expression.
    Register,
    /// A parameter whose own definition failed (already reported): fail silently.
    Poisoned,
    Unknown,
}

/// Why evaluation failed: a new diagnostic, or an error already reported elsewhere.
pub enum EvalError {
    Diag(Box<Diagnostic>),
    Silent,
}

impl From<Diagnostic> for EvalError {
    fn from(d: Diagnostic) -> Self {
        EvalError::Diag(Box::new(d))
    }
}

pub type EvalResult = Result<Value, EvalError>;

fn err(code: &'static str, span: Span, msg: impl Into<String>) -> EvalError {
    EvalError::Diag(Box::new(Diagnostic::new(code, span, msg)))
}

/// Evaluates `e` with `lookup` resolving names (parameters, loop variables, `I`).
pub fn eval(e: &Expr, lookup: &dyn Fn(&str) -> NameValue) -> EvalResult {
    let v = eval_inner(e, lookup)?;
    if let Value::Real(r) = v {
        if !r.is_finite() {
            return Err(
                err("const-arith", e.span, "constant expression is not finite")
                    .with_label("overflows f64 or divides by zero"),
            );
        }
    }
    Ok(v)
}

trait WithLabel {
    fn with_label(self, l: &str) -> Self;
}
impl WithLabel for EvalError {
    fn with_label(self, l: &str) -> Self {
        match self {
            EvalError::Diag(d) => EvalError::Diag(Box::new(d.label(l))),
            s => s,
        }
    }
}

/// The error for an index or call in a constant expression. Kept out of the recursive
/// evaluator so that its stack frame stays small (deep nesting must be an error, not a crash).
#[inline(never)]
fn not_constant(e: &Expr) -> EvalError {
    match &e.kind {
        ExprKind::Index(..) => err(
            "bad-index",
            e.span,
            "indexing `NAME[…]` selects elements of a register and is allowed only in an aff term",
        )
        .with_label("not a constant expression"),
        ExprKind::Call(f, _) if f.name == "e" => err(
            "bad-unit",
            e.span,
            "the unit vector `e(k)` is allowed only as a bias summand of an aff",
        )
        .with_label("not a constant expression here"),
        ExprKind::Call(f, _) => err(
            "unknown-name",
            f.span,
            format!("unknown function `{}`: the only built-in is `e(k)`", f.name),
        )
        .with_label("not a built-in"),
        _ => unreachable!("only called on Index and Call"),
    }
}

fn eval_inner(e: &Expr, lookup: &dyn Fn(&str) -> NameValue) -> EvalResult {
    match &e.kind {
        ExprKind::Num(v, Some(i)) => {
            let _ = v;
            Ok(Value::Int(*i))
        }
        ExprKind::Num(v, None) => Ok(Value::Real(*v)),
        ExprKind::Name(n) => match lookup(n) {
            NameValue::Const(v) => Ok(v),
            NameValue::Poisoned => Err(EvalError::Silent),
            NameValue::Register => Err(err(
                "not-constant",
                e.span,
                format!("register `{n}` used where a constant is expected"),
            )
            .with_label(
                "a constant expression may use only numbers, parameters and loop variables",
            )),
            NameValue::Unknown => Err(err(
                "unknown-name",
                e.span,
                format!("unknown name `{n}`: not a parameter or loop variable"),
            )
            .with_label("not defined (parameters must be declared before use)")),
        },
        ExprKind::Neg(a) => {
            let a = eval(a, lookup)?;
            neg(a, e.span)
        }
        ExprKind::Transpose(a) => match eval(a, lookup)? {
            Value::Tensor { rows, cols, data } => {
                // (Aᵀ)(i, j) = A(j, i): entry i·rows + j of the result is data[j·cols + i].
                let mut out = vec![0.0; data.len()];
                for i in 0..cols {
                    for j in 0..rows {
                        out[i * rows + j] = data[j * cols + i];
                    }
                }
                Ok(Value::Tensor {
                    rows: cols,
                    cols: rows,
                    data: out,
                })
            }
            other => Ok(other),
        },
        ExprKind::Bin(op, a, b) => {
            let a = eval(a, lookup)?;
            let b = eval(b, lookup)?;
            binop(*op, a, b, e.span)
        }
        ExprKind::List(items) => {
            let mut vals = Vec::with_capacity(items.len());
            for it in items {
                vals.push((eval(it, lookup)?, it.span));
            }
            list(vals, e.span)
        }
        ExprKind::Index(..) | ExprKind::Call(..) => Err(not_constant(e)),
    }
}

fn neg(a: Value, span: Span) -> EvalResult {
    Ok(match a {
        Value::Int(i) => Value::Int(i.checked_neg().ok_or_else(|| overflow(span))?),
        Value::Real(r) => Value::Real(-r),
        Value::Tensor { rows, cols, data } => Value::Tensor {
            rows,
            cols,
            data: data.into_iter().map(|x| -x).collect(),
        },
        Value::Identity(s) => Value::Identity(-s),
    })
}

fn overflow(span: Span) -> EvalError {
    err(
        "const-arith",
        span,
        "integer overflow in constant expression",
    )
    .with_label("the exact value does not fit in a 64-bit integer")
}

fn division_by_zero(span: Span) -> EvalError {
    err(
        "const-arith",
        span,
        "division by zero in constant expression",
    )
    .with_label("divisor is 0")
}

/// `x op y` on integers: checked (overflow is an error); an exact quotient stays an integer,
/// another becomes a real.
fn int_binop(op: BinOp, x: i64, y: i64, span: Span) -> EvalResult {
    let r = match op {
        BinOp::Add => x.checked_add(y),
        BinOp::Sub => x.checked_sub(y),
        BinOp::Mul => x.checked_mul(y),
        BinOp::Div => {
            if y == 0 {
                return Err(division_by_zero(span));
            }
            // Exact quotients stay integers; others become reals.
            match x.checked_rem(y) {
                Some(0) => x.checked_div(y),
                Some(_) => return Ok(Value::Real(x as f64 / y as f64)),
                None => None,
            }
        }
    };
    r.map(Value::Int).ok_or_else(|| overflow(span))
}

/// `a op b` on constants: integers ([`int_binop`]), reals, a tensor or `I` scaled by a scalar,
/// tensors of one shape or two `I`s added or subtracted; anything else is a type error.
fn binop(op: BinOp, a: Value, b: Value, span: Span) -> EvalResult {
    use Value::*;
    let sym = match op {
        BinOp::Add => "+",
        BinOp::Sub => "-",
        BinOp::Mul => "*",
        BinOp::Div => "/",
    };
    match (a, b) {
        (Int(x), Int(y)) => int_binop(op, x, y, span),
        (a @ (Int(_) | Real(_)), b @ (Int(_) | Real(_))) => {
            let (x, y) = (a.scalar().unwrap_or(0.0), b.scalar().unwrap_or(0.0));
            if op == BinOp::Div && y == 0.0 {
                return Err(division_by_zero(span));
            }
            Ok(Real(match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::Mul => x * y,
                BinOp::Div => x / y,
            }))
        }
        // Scaling of tensors and of I by a scalar.
        (s @ (Int(_) | Real(_)), Tensor { rows, cols, data }) if op == BinOp::Mul => {
            let s = s.scalar().unwrap_or(0.0);
            Ok(Tensor {
                rows,
                cols,
                data: data.into_iter().map(|x| s * x).collect(),
            })
        }
        (Tensor { rows, cols, data }, s @ (Int(_) | Real(_)))
            if matches!(op, BinOp::Mul | BinOp::Div) =>
        {
            let s = s.scalar().unwrap_or(0.0);
            if op == BinOp::Div && s == 0.0 {
                return Err(division_by_zero(span));
            }
            let f = |x: f64| if op == BinOp::Mul { x * s } else { x / s };
            Ok(Tensor {
                rows,
                cols,
                data: data.into_iter().map(f).collect(),
            })
        }
        (s @ (Int(_) | Real(_)), Identity(k)) if op == BinOp::Mul => {
            Ok(Identity(s.scalar().unwrap_or(0.0) * k))
        }
        (Identity(k), s @ (Int(_) | Real(_))) if matches!(op, BinOp::Mul | BinOp::Div) => {
            let s = s.scalar().unwrap_or(0.0);
            if op == BinOp::Div && s == 0.0 {
                return Err(division_by_zero(span));
            }
            Ok(Identity(if op == BinOp::Mul { k * s } else { k / s }))
        }
        (Identity(x), Identity(y)) if matches!(op, BinOp::Add | BinOp::Sub) => {
            Ok(Identity(if op == BinOp::Add { x + y } else { x - y }))
        }
        (
            Tensor { rows, cols, data },
            Tensor {
                rows: r2,
                cols: c2,
                data: d2,
            },
        ) if matches!(op, BinOp::Add | BinOp::Sub) && rows == r2 && cols == c2 => {
            let data = data
                .iter()
                .zip(&d2)
                .map(|(x, y)| if op == BinOp::Add { x + y } else { x - y })
                .collect();
            Ok(Tensor { rows, cols, data })
        }
        (a, b) => Err(err(
            "const-type",
            span,
            format!("cannot compute {} {sym} {}", a.describe(), b.describe()),
        )
        .with_label("constants combine as scalars, scaled tensors/I, or tensors of equal shape")),
    }
}

/// A literal `[…]`: scalars make a vector; vectors of equal length make a matrix (its rows).
fn list(vals: Vec<(Value, Span)>, span: Span) -> EvalResult {
    if vals.iter().all(|(v, _)| v.scalar().is_some()) {
        let data: Vec<f64> = vals
            .iter()
            .map(|(v, _)| v.scalar().unwrap_or(0.0))
            .collect();
        return Ok(Value::Tensor {
            rows: data.len(),
            cols: 1,
            data,
        });
    }
    let mut width = None;
    let mut data = Vec::new();
    for (v, s) in &vals {
        match v {
            Value::Tensor {
                rows,
                cols: 1,
                data: row,
            } => {
                if *width.get_or_insert(*rows) != *rows {
                    return Err(err(
                        "const-type",
                        *s,
                        format!(
                            "matrix row has {rows} entries, the first row has {}",
                            width.unwrap_or(0)
                        ),
                    )
                    .with_label("rows of a literal matrix must have equal length"));
                }
                data.extend_from_slice(row);
            }
            other => {
                return Err(err(
                    "const-type",
                    *s,
                    format!(
                        "expected a row (a vector) in a literal matrix, found {}",
                        other.describe()
                    ),
                )
                .with_label("mix of scalars and rows, or nesting deeper than a matrix"));
            }
        }
    }
    let _ = span;
    Ok(Value::Tensor {
        rows: vals.len(),
        cols: width.unwrap_or(0),
        data,
    })
}
