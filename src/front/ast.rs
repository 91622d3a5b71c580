//! Syntax tree of a `.icl` program (before parameter substitution and unrolling).

use crate::ir::{ColumnSet, Span};

/// A name with its location.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// A literal: value, and the exact integer when written as one.
    Num(f64, Option<i64>),
    /// A parameter, loop variable, register, or `I`.
    Name(String),
    Neg(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    /// `[e, e, …]`: a vector, or a matrix when the elements are vectors (its rows).
    List(Vec<Expr>),
    /// `e^T`.
    Transpose(Box<Expr>),
    /// `NAME[i]`, `NAME[i, j]`, `NAME[i, :]`, `NAME[:, j]`: element/row/column selection of a
    /// register in an `aff` term; `None` is `:` (the whole axis).
    Index(Box<Expr>, Vec<Option<Expr>>),
    /// `NAME(args)`: a built-in constant; only `e(k)` (the unit vector of an `aff` bias).
    Call(Ident, Vec<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ShapeAst {
    Scalar,
    Vec(Expr),
    Mat(Expr, Expr),
}

/// A register operand, possibly transposed.
#[derive(Debug, Clone, PartialEq)]
pub struct OperandAst {
    pub reg: Ident,
    pub transposed: bool,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PatternAst {
    Prev,
    Col(Expr),
    Mean(ColumnSet),
}

#[derive(Debug, Clone, PartialEq)]
pub enum AssumeAst {
    In(Expr, Expr),
    Ge(Expr),
    Le(Expr),
    AbsGe(Expr),
}

#[derive(Debug, Clone, PartialEq)]
pub enum StmtKind {
    Param {
        name: Ident,
        value: Expr,
    },
    Reg {
        name: Ident,
        shape: ShapeAst,
        pin: Option<Expr>,
    },
    Assume {
        reg: Ident,
        bound: AssumeAst,
    },
    Mov {
        dst: Ident,
        src: Ident,
        pattern: PatternAst,
        pattern_span: Span,
    },
    Mul {
        dst: Ident,
        a: OperandAst,
        b: OperandAst,
    },
    Div {
        dst: Ident,
        num: Ident,
        den: Ident,
    },
    /// `aff DST <- RHS`; the RHS is split into terms and bias by the checker.
    Aff {
        dst: Ident,
        rhs: Expr,
    },
    For {
        var: Ident,
        lo: Expr,
        hi: Expr,
        inclusive: bool,
        range_span: Span,
        body: Vec<Stmt>,
    },
    Output {
        reg: Ident,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stmt {
    pub kind: StmtKind,
    /// The whole statement (for `for`: the header up to `{`).
    pub span: Span,
}

impl StmtKind {
    /// The register an operation writes, if this is an operation.
    pub fn op_dst(&self) -> Option<&Ident> {
        match self {
            StmtKind::Mov { dst, .. }
            | StmtKind::Mul { dst, .. }
            | StmtKind::Div { dst, .. }
            | StmtKind::Aff { dst, .. } => Some(dst),
            _ => None,
        }
    }
}
