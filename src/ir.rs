//! The checked, unrolled program: the one representation every later stage reads
//! (interpreter, range analysis, lowering, certification).
//!
//! Produced by [`crate::front::load_program`] from `.icl` text (see `docs/LANGUAGE.md`). All
//! constants are f64 values computed at compile time; they are the program's exact constants
//! (the rational interpreter uses the exact rational value of each double). [`validate`] checks
//! the invariants the later stages rely on.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod validate;
pub use validate::{validate, Role, ValidateError};

/// A byte range in the source text, with its 1-based line and column for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub line: u32,
    pub col: u32,
}

/// Defines a `usize` index newtype, so that indices of different things (registers, operations,
/// layers, rows) cannot be mixed up: ordered and hashable, serialized, displayed and debug-printed
/// as the bare number (the file formats and messages do not see the type), `.index()` for the
/// raw position.
macro_rules! index_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub usize);

        impl $name {
            pub fn index(self) -> usize {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        /// The bare number, as in the files and messages.
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}
pub(crate) use index_type;

index_type!(
    /// Index of a register in [`Program::registers`].
    RegId
);

impl std::ops::Index<RegId> for [Register] {
    type Output = Register;
    fn index(&self, r: RegId) -> &Register {
        &self[r.0]
    }
}

impl std::ops::Index<RegId> for Vec<Register> {
    type Output = Register;
    fn index(&self, r: RegId) -> &Register {
        &self[r.0]
    }
}

impl std::ops::IndexMut<RegId> for Vec<Register> {
    fn index_mut(&mut self, r: RegId) -> &mut Register {
        &mut self[r.0]
    }
}

/// A table with one entry per register of a program, indexed by [`RegId`] (so a row, layer or
/// op number cannot be used where a register is meant).
#[derive(Debug, Clone, PartialEq)]
pub struct RegMap<T>(Vec<T>);

impl<T> RegMap<T> {
    /// One entry per register of `p`, `f(id)` for register `id`.
    pub fn from_fn(p: &Program, f: impl FnMut(RegId) -> T) -> RegMap<T> {
        RegMap(p.reg_ids().map(f).collect())
    }
    /// [`Self::from_fn`] with a fallible `f`: the first error is returned.
    pub fn try_from_fn<E>(
        p: &Program,
        f: impl FnMut(RegId) -> Result<T, E>,
    ) -> Result<RegMap<T>, E> {
        Ok(RegMap(p.reg_ids().map(f).collect::<Result<_, E>>()?))
    }
    /// The entry of `r`, if `r` is a register of the program.
    pub fn get(&self, r: RegId) -> Option<&T> {
        self.0.get(r.0)
    }
    /// Every register with its entry, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (RegId, &T)> {
        self.0.iter().enumerate().map(|(i, v)| (RegId(i), v))
    }
}

impl<T: Clone> RegMap<T> {
    /// `v` for every register of `p`.
    pub fn filled(p: &Program, v: T) -> RegMap<T> {
        RegMap(vec![v; p.registers.len()])
    }
}

impl<T> std::ops::Index<RegId> for RegMap<T> {
    type Output = T;
    fn index(&self, r: RegId) -> &T {
        &self.0[r.0]
    }
}

impl<T> std::ops::IndexMut<RegId> for RegMap<T> {
    fn index_mut(&mut self, r: RegId) -> &mut T {
        &mut self.0[r.0]
    }
}

/// Shape of a register: `rows × cols`, stored row-major (element (i,j) at i·cols + j).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shape {
    pub rows: usize,
    pub cols: usize,
}

impl Shape {
    pub const SCALAR: Shape = Shape { rows: 1, cols: 1 };
    pub fn vec(d: usize) -> Shape {
        Shape { rows: d, cols: 1 }
    }
    pub fn mat(rows: usize, cols: usize) -> Shape {
        Shape { rows, cols }
    }
    /// Number of elements (= hidden rows the register occupies).
    pub fn size(&self) -> usize {
        self.rows * self.cols
    }
    pub fn transposed(&self) -> Shape {
        Shape {
            rows: self.cols,
            cols: self.rows,
        }
    }
    pub fn is_scalar(&self) -> bool {
        self.rows == 1 && self.cols == 1
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.rows, self.cols) {
            (1, 1) => write!(f, "scalar"),
            (r, 1) => write!(f, "vec[{r}]"),
            (r, c) => write!(f, "mat[{r}, {c}]"),
        }
    }
}

/// The per-column inputs supplied by the embedding (docs/LANGUAGE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Builtin {
    /// Row 0 of the token: y_k at ỹ_k, 0 at x̃ columns.
    Y,
    /// Rows 1..=d of the token: x_k at x̃_k, 0 at ỹ columns.
    X,
    /// The constant 1.
    One,
    /// 1 at x̃ columns (t even).
    IsX,
    /// 1 at ỹ columns (t odd).
    IsY,
    /// Number of examples whose ỹ column is ≤ t.
    Count,
}

impl Builtin {
    pub const ALL: [Builtin; 6] = [
        Builtin::Y,
        Builtin::X,
        Builtin::One,
        Builtin::IsX,
        Builtin::IsY,
        Builtin::Count,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Y => "y",
            Builtin::X => "x",
            Builtin::One => "one",
            Builtin::IsX => "is_x",
            Builtin::IsY => "is_y",
            Builtin::Count => "count",
        }
    }
    pub fn from_name(s: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == s)
    }
    pub fn shape(self, d: usize) -> Shape {
        match self {
            Builtin::X => Shape::vec(d),
            _ => Shape::SCALAR,
        }
    }
    /// Value of element `elem` of this input at column `t` of a prompt with `d` features, given
    /// the column's token `tok` (length d+1: row 0 = y, rows 1..=d = x).
    pub fn value(self, t: usize, tok: &[f64], elem: usize) -> f64 {
        match self {
            Builtin::Y => tok[0],
            Builtin::X => tok[1 + elem],
            Builtin::One => 1.0,
            Builtin::IsX => t.is_multiple_of(2) as u8 as f64,
            Builtin::IsY => (t % 2 == 1) as u8 as f64,
            Builtin::Count => t.div_ceil(2) as f64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RegKind {
    /// A read-only input supplied by the embedding.
    Input(Builtin),
    /// A register the program writes.
    Work,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Register {
    pub name: String,
    pub shape: Shape,
    pub kind: RegKind,
    /// First hidden row, when pinned with `@`; the register then occupies
    /// `pinned .. pinned + shape.size()`.
    pub pinned: Option<usize>,
    pub span: Span,
}

impl Register {
    /// An unpinned register without a source location (for programs built in code).
    pub fn new(name: &str, shape: Shape, kind: RegKind) -> Register {
        Register {
            name: name.into(),
            shape,
            kind,
            pinned: None,
            span: Span::default(),
        }
    }
}

/// A place in a program's source — the span of an op, an assumption or a declaration in the file
/// it came from. Errors carry it typed; it becomes `file:line:col` only when displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The program's file name, as given.
    pub file: String,
    pub span: Span,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.span.line, self.span.col)
    }
}

index_type!(
    /// Index of an operation in [`Program::ops`] (the unrolled program order).
    OpId
);

impl OpId {
    /// The operation after this one (or the end of the program).
    pub fn next(self) -> OpId {
        OpId(self.0 + 1)
    }
}

impl std::ops::Index<OpId> for [Op] {
    type Output = Op;
    fn index(&self, k: OpId) -> &Op {
        &self[k.0]
    }
}

impl std::ops::Index<OpId> for Vec<Op> {
    type Output = Op;
    fn index(&self, k: OpId) -> &Op {
        &self[k.0]
    }
}

/// A register read, possibly transposed (free: an index map).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operand {
    pub reg: RegId,
    pub transposed: bool,
}

/// Which columns a `mean` pattern averages over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnSet {
    /// ỹ columns (odd t).
    Y,
    /// x̃ columns (even t).
    X,
    /// Every column.
    All,
}

impl ColumnSet {
    pub fn contains(self, t: usize) -> bool {
        match self {
            ColumnSet::Y => t % 2 == 1,
            ColumnSet::X => t.is_multiple_of(2),
            ColumnSet::All => true,
        }
    }
}

/// Column pattern of a `mov` (docs/LANGUAGE.md). Every pattern reads only columns ≤ t.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// Column t−1; column 0 gets 0.
    Prev,
    /// Fixed column c: columns t ≥ c read c, columns t < c get 0.
    Col(usize),
    /// Mean over the columns s ≤ t in the set; 0 if none.
    Mean(ColumnSet),
}

impl Pattern {
    /// The columns column `t` reads (each with equal weight 1/len); empty means "gets 0".
    pub fn sources(self, t: usize) -> Vec<usize> {
        match self {
            Pattern::Prev => t.checked_sub(1).into_iter().collect(),
            Pattern::Col(c) => {
                if t >= c {
                    vec![c]
                } else {
                    vec![]
                }
            }
            Pattern::Mean(set) => (0..=t).filter(|&s| set.contains(s)).collect(),
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Prev => write!(f, "prev"),
            Pattern::Col(c) => write!(f, "col({c})"),
            Pattern::Mean(ColumnSet::Y) => write!(f, "mean(y)"),
            Pattern::Mean(ColumnSet::X) => write!(f, "mean(x)"),
            Pattern::Mean(ColumnSet::All) => write!(f, "mean(all)"),
        }
    }
}

/// One term `C · src` of an `aff`: `coef` is a dense |dst| × |src| matrix (row-major,
/// `coef[i * src_size + j]`) applied to the flattened (row-major, after transposition) source.
/// Scalar and identity coefficients are expanded to this form by the front end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AffTerm {
    pub src: Operand,
    pub coef: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// `dst[t] = src[P(t)]`.
    Mov {
        dst: RegId,
        src: RegId,
        pattern: Pattern,
    },
    /// `dst = a · b` per column ((r×k)·(k×c), operands possibly transposed).
    Mul { dst: RegId, a: Operand, b: Operand },
    /// `dst = num / |den|` per column; `den` is scalar.
    Div { dst: RegId, num: RegId, den: RegId },
    /// `dst = Σ coef_i · src_i + bias` per column; bias has |dst| entries (row-major).
    Aff {
        dst: RegId,
        terms: Vec<AffTerm>,
        bias: Vec<f64>,
    },
}

impl OpKind {
    pub fn dst(&self) -> RegId {
        match self {
            OpKind::Mov { dst, .. }
            | OpKind::Mul { dst, .. }
            | OpKind::Div { dst, .. }
            | OpKind::Aff { dst, .. } => *dst,
        }
    }
    /// Registers read by this operation (in operand order, possibly repeated).
    pub fn reads(&self) -> Vec<RegId> {
        match self {
            OpKind::Mov { src, .. } => vec![*src],
            OpKind::Mul { a, b, .. } => vec![a.reg, b.reg],
            OpKind::Div { num, den, .. } => vec![*num, *den],
            OpKind::Aff { terms, .. } => terms.iter().map(|t| t.src.reg).collect(),
        }
    }
    pub fn mnemonic(&self) -> &'static str {
        match self {
            OpKind::Mov { .. } => "mov",
            OpKind::Mul { .. } => "mul",
            OpKind::Div { .. } => "div",
            OpKind::Aff { .. } => "aff",
        }
    }
}

/// One unrolled operation with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    pub kind: OpKind,
    pub span: Span,
    /// The statement's source text, e.g. `mov xi <- xp from col(2*i - 1)`.
    pub text: String,
    /// Loop variables and their values at this unrolled instance, outermost first.
    pub iteration: Vec<(String, i64)>,
}

/// A range a register (or input) is assumed to stay in, after every write, in every column.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// Every element in `[lo, hi]` (either end may be infinite).
    Range { lo: f64, hi: f64 },
    /// Every element has `|v| >= lo`.
    AbsAtLeast { lo: f64 },
}

impl Bound {
    pub fn holds(&self, v: f64) -> bool {
        match *self {
            Bound::Range { lo, hi } => lo <= v && v <= hi,
            Bound::AbsAtLeast { lo } => v.abs() >= lo,
        }
    }
    /// True when the bound excludes zero (required of every divisor).
    pub fn excludes_zero(&self) -> bool {
        match *self {
            Bound::Range { lo, hi } => lo > 0.0 || hi < 0.0,
            Bound::AbsAtLeast { lo } => lo > 0.0,
        }
    }
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Bound::Range { lo, hi } if hi == f64::INFINITY => write!(f, ">= {lo}"),
            Bound::Range { lo, hi } if lo == f64::NEG_INFINITY => write!(f, "<= {hi}"),
            Bound::Range { lo, hi } => write!(f, "in [{lo}, {hi}]"),
            Bound::AbsAtLeast { lo } => write!(f, "|.| >= {lo}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assumption {
    pub reg: RegId,
    pub bound: Bound,
    pub span: Span,
    /// Source text, e.g. `assume den >= 1`.
    pub text: String,
}

/// A resolved parameter value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    Int(i64),
    Real(f64),
    /// A literal vector or matrix: `rows × cols`, row-major.
    Tensor {
        rows: usize,
        cols: usize,
        data: Vec<f64>,
    },
}

/// The source a program came from, kept so that certificates can name locations and so that
/// `icl check` can rebuild the program from a model directory alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// File name as given by the user (used in `file:line:col`).
    pub name: String,
    pub text: String,
}

/// A checked, unrolled program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Program {
    pub source: Source,
    /// Final parameter values (defaults with `--set` overrides applied), by name.
    pub params: BTreeMap<String, ParamValue>,
    /// The `--set` overrides that were applied, as given (`name`, `value text`).
    pub overrides: Vec<(String, String)>,
    /// Feature dimension (param `d`).
    pub d: usize,
    /// Number of in-context examples (param `n`); the prompt has T = 2n+1 columns.
    pub n: usize,
    /// All registers: every built-in input the program reads, then the work registers.
    pub registers: Vec<Register>,
    /// The unrolled operations, in program order.
    pub ops: Vec<Op>,
    pub assumptions: Vec<Assumption>,
    /// The scalar register read at every x̃ column.
    pub output: RegId,
}

impl Program {
    /// Number of columns of a prompt: x̃_1, ỹ_1, …, x̃_n, ỹ_n, x̃_{n+1}.
    pub fn columns(&self) -> usize {
        2 * self.n + 1
    }
    pub fn reg(&self, id: RegId) -> &Register {
        &self.registers[id]
    }
    /// Every register id, in order.
    pub fn reg_ids(&self) -> impl Iterator<Item = RegId> {
        (0..self.registers.len()).map(RegId)
    }
    pub fn reg_by_name(&self, name: &str) -> Option<RegId> {
        self.registers
            .iter()
            .position(|r| r.name == name)
            .map(RegId)
    }
    pub fn input(&self, b: Builtin) -> Option<RegId> {
        self.registers
            .iter()
            .position(|r| r.kind == RegKind::Input(b))
            .map(RegId)
    }
    /// The non-zero coefficients of output element `e` of an `aff` with these `terms`, in term
    /// then operand order: (term index, source register, element of that register, coefficient).
    /// Term t's coefficient row `e` runs over the flattened (transposed) operand, so operand
    /// element j is register element `operand_index(shape, transposed, j / cols, j % cols)`.
    pub fn aff_coefficients<'a>(
        &'a self,
        terms: &'a [AffTerm],
        e: usize,
    ) -> impl Iterator<Item = (usize, RegId, usize, f64)> + 'a {
        terms.iter().enumerate().flat_map(move |(ti, t)| {
            let seen = self.operand_shape(t.src);
            let rs = self.registers[t.src.reg].shape;
            let n = seen.size();
            t.coef[e * n..(e + 1) * n]
                .iter()
                .enumerate()
                .filter(|(_, c)| **c != 0.0)
                .map(move |(j, &c)| {
                    let elem = operand_index(rs, t.src.transposed, j / seen.cols, j % seen.cols);
                    (ti, t.src.reg, elem, c)
                })
        })
    }
    /// Shape of an operand after its (free) transposition.
    pub fn operand_shape(&self, o: Operand) -> Shape {
        let s = self.registers[o.reg].shape;
        if o.transposed {
            s.transposed()
        } else {
            s
        }
    }
    /// Assumptions about register `reg`.
    pub fn assumptions_on(&self, reg: RegId) -> impl Iterator<Item = &Assumption> {
        self.assumptions.iter().filter(move |a| a.reg == reg)
    }
    /// Where `span` is in this program's source (displayed as `file:line:col`).
    pub fn location(&self, span: Span) -> Location {
        Location {
            file: self.source.name.clone(),
            span,
        }
    }
    /// Operation `k` of the unrolled program.
    pub fn op(&self, k: OpId) -> &Op {
        &self.ops[k.0]
    }
    /// Every operation id, in program order.
    pub fn op_ids(&self) -> impl Iterator<Item = OpId> {
        (0..self.ops.len()).map(OpId)
    }
}

/// Flat index into a register's storage of element (i, j) of the operand as seen after its
/// transposition: `A^T(i, j) = A(j, i)`.
pub fn operand_index(reg_shape: Shape, transposed: bool, i: usize, j: usize) -> usize {
    if transposed {
        j * reg_shape.cols + i
    } else {
        i * reg_shape.cols + j
    }
}
