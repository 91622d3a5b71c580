//! The reference interpreter: the meaning of a checked program (docs/LANGUAGE.md).
//!
//! The hidden state of one prompt is held per register, per element, per column: register `r`
//! element `e` (row-major flat index) at column `t` is `state[r][e][t]`. Columns are the prompt's
//! tokens x̃_1, ỹ_1, …, x̃_n, ỹ_n, x̃_{n+1} (T = 2n+1, no BOS). Built-in inputs are filled from
//! the prompt with [`ir::Builtin::value`]; work registers start unwritten (reading one is an
//! error).
//!
//! Every operation except `mov` acts on each column independently:
//! - `mov dst ← src from P`: `dst[e][t] = mean_{s ∈ P.sources(t)} src[e][s]` (0 when empty);
//! - `mul dst ← A·B`: per column the matrix product of the operands seen after their
//!   transposition (`ir::operand_index`);
//! - `div dst ← num / |den|`: per column, elementwise division by the absolute value of `den`;
//! - `aff dst ← Σ C_i·src_i + b`: per column, the dense coefficient matrices applied to the
//!   flattened (transposed) sources, plus the bias.
//!
//! All reads of an operation happen before its write, so in-place operations are well defined.
//! After every write, each assumption on the written register is checked in every column; the
//! assumptions on inputs are checked on the prompt before the first operation.
//!
//! The interpreter is generic over [`Scalar`]: `f64` (fast, used by proptests and validation) and
//! `BigRational` (exact: each f64 constant and input converts to its exact rational value).

// An error carries everything a message needs (texts, locations, the value); errors are the cold
// path, so the size of `Result` does not matter here.
#![allow(clippy::result_large_err)]

use crate::ir::{self, Bound, Location, OpKind, Program, RegId, RegKind, RegMap};
use crate::prompt::Prompt;
use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{Signed, ToPrimitive, Zero};
use std::fmt;

/// The arithmetic the interpreter needs.
pub trait Scalar: Clone + PartialOrd + fmt::Debug {
    fn zero() -> Self;
    /// The exact value of a finite double; `None` for NaN or ±∞ (only possible in exact mode).
    fn from_f64(v: f64) -> Option<Self>;
    fn from_usize(v: usize) -> Self;
    fn to_f64(&self) -> f64;
    fn add(&self, o: &Self) -> Self;
    fn sub(&self, o: &Self) -> Self;
    fn mul(&self, o: &Self) -> Self;
    /// `self / o`; callers guarantee `o != 0`.
    fn div(&self, o: &Self) -> Self;
    fn abs(&self) -> Self;
    fn is_zero(&self) -> bool;
    fn add_assign(&mut self, o: &Self) {
        *self = self.add(o);
    }
    /// `self += a * b`.
    fn add_prod(&mut self, a: &Self, b: &Self) {
        *self = self.add(&a.mul(b));
    }
}

impl Scalar for f64 {
    fn zero() -> Self {
        0.0
    }
    fn from_f64(v: f64) -> Option<Self> {
        Some(v)
    }
    fn from_usize(v: usize) -> Self {
        v as f64
    }
    fn to_f64(&self) -> f64 {
        *self
    }
    #[inline]
    fn add(&self, o: &Self) -> Self {
        self + o
    }
    #[inline]
    fn sub(&self, o: &Self) -> Self {
        self - o
    }
    #[inline]
    fn mul(&self, o: &Self) -> Self {
        self * o
    }
    #[inline]
    fn div(&self, o: &Self) -> Self {
        self / o
    }
    #[inline]
    fn abs(&self) -> Self {
        f64::abs(*self)
    }
    #[inline]
    fn is_zero(&self) -> bool {
        *self == 0.0
    }
    #[inline]
    fn add_assign(&mut self, o: &Self) {
        *self += o;
    }
    #[inline]
    fn add_prod(&mut self, a: &Self, b: &Self) {
        *self += a * b;
    }
}

impl Scalar for BigRational {
    fn zero() -> Self {
        <BigRational as Zero>::zero()
    }
    fn from_f64(v: f64) -> Option<Self> {
        BigRational::from_float(v)
    }
    fn from_usize(v: usize) -> Self {
        BigRational::from_integer(BigInt::from(v))
    }
    fn to_f64(&self) -> f64 {
        ToPrimitive::to_f64(self).unwrap_or(f64::NAN)
    }
    fn add(&self, o: &Self) -> Self {
        self + o
    }
    fn sub(&self, o: &Self) -> Self {
        self - o
    }
    fn mul(&self, o: &Self) -> Self {
        self * o
    }
    fn div(&self, o: &Self) -> Self {
        self / o
    }
    fn abs(&self) -> Self {
        Signed::abs(self)
    }
    fn is_zero(&self) -> bool {
        Zero::is_zero(self)
    }
    fn add_assign(&mut self, o: &Self) {
        *self += o;
    }
    fn add_prod(&mut self, a: &Self, b: &Self) {
        *self += a * b;
    }
}

/// The values of one register: `values[element][column]`.
pub type RegValues<T> = Vec<Vec<T>>;

/// The hidden state: per register (indexed like [`Program::registers`]), `None` while unwritten,
/// else per element, per column.
pub type State<T> = RegMap<Option<RegValues<T>>>;

/// The result of running a program on one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Run<T> {
    /// The output register at every x̃ column: n+1 values (x̃_1 … x̃_{n+1}); `outputs[k-1]` is the
    /// prediction for x_k from examples 1..k−1.
    pub outputs: Vec<T>,
    /// When requested: the state after each operation (`trace[i]` after `program.ops[i]`).
    pub trace: Option<Vec<State<T>>>,
}

/// Where a value that broke an assumption was written.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenBy {
    /// The operation's source text, with its loop iteration, e.g. `mov xi <- xp from col(2*i - 1) [i=3]`.
    pub text: String,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InterpError {
    #[error("prompt does not fit the program: expected d = {expected_d}, n = {expected_n}, found d = {found_d}, n = {found_n}")]
    DimensionMismatch {
        expected_d: usize,
        expected_n: usize,
        found_d: usize,
        found_n: usize,
    },
    #[error("malformed prompt: {0}")]
    MalformedPrompt(String),
    /// The program breaks an invariant of [`ir::validate`] (possible only for hand-built
    /// programs; the front end builds valid ones).
    #[error("malformed program: {0}")]
    MalformedProgram(#[from] ir::ValidateError),
    #[error("{location}: `{op}` reads register `{register}` before it is written")]
    Unwritten {
        register: String,
        op: String,
        location: Location,
    },
    #[error("{location}: `{op}` divides by zero at column {column} (element {element})")]
    DivisionByZero {
        op: String,
        location: Location,
        column: usize,
        element: usize,
    },
    #[error("{location}: `{op}` uses a constant that is not a finite number ({value})")]
    NonFiniteConstant {
        op: String,
        location: Location,
        value: f64,
    },
    #[error("{}: assumption `{assumption}` violated by register `{register}` element {element} at column {column}: value {value}, {}",
        .assumption_location,
        match .written_by { Some(w) => format!("written by `{}` at {}", w.text, w.location), None => "from the prompt".to_string() })]
    AssumptionViolated {
        /// The assumption's source text, e.g. `assume den >= 1`.
        assumption: String,
        assumption_location: Location,
        register: String,
        element: usize,
        column: usize,
        /// The offending value (as f64; exact mode shows the nearest double).
        value: f64,
        /// The operation that wrote the register; `None` for an input checked on the prompt.
        written_by: Option<WrittenBy>,
    },
}

/// Run a program in f64.
pub fn run_f64(p: &Program, prompt: &Prompt, trace: bool) -> Result<Run<f64>, InterpError> {
    run_generic::<f64>(p, prompt, trace)
}

/// Run a program in exact rational arithmetic.
pub fn run_exact(
    p: &Program,
    prompt: &Prompt,
    trace: bool,
) -> Result<Run<BigRational>, InterpError> {
    run_generic::<BigRational>(p, prompt, trace)
}

/// Outputs only, for many prompts (f64).
pub fn run_batch_f64(p: &Program, prompts: &[Prompt]) -> Result<Vec<Vec<f64>>, InterpError> {
    prompts
        .iter()
        .map(|q| run_f64(p, q, false).map(|r| r.outputs))
        .collect()
}

fn op_text(op: &ir::Op) -> String {
    if op.iteration.is_empty() {
        op.text.clone()
    } else {
        let it: Vec<String> = op
            .iteration
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("{} [{}]", op.text, it.join(", "))
    }
}

/// Checks the prompt's shape against the program's d and n.
fn check_prompt(p: &Program, prompt: &Prompt) -> Result<(), InterpError> {
    if prompt.xs.is_empty() {
        return Err(InterpError::MalformedPrompt(
            "no feature vectors (need n+1)".into(),
        ));
    }
    let d = prompt.xs[0].len();
    if let Some(k) = prompt.xs.iter().position(|x| x.len() != d) {
        return Err(InterpError::MalformedPrompt(format!(
            "feature vector {} has length {}, the first has {d}",
            k + 1,
            prompt.xs[k].len()
        )));
    }
    if prompt.ys.len() != prompt.xs.len() {
        return Err(InterpError::MalformedPrompt(format!(
            "{} labels for {} feature vectors (need one label per vector)",
            prompt.ys.len(),
            prompt.xs.len()
        )));
    }
    let n = prompt.xs.len() - 1;
    if d != p.d || n != p.n {
        return Err(InterpError::DimensionMismatch {
            expected_d: p.d,
            expected_n: p.n,
            found_d: d,
            found_n: n,
        });
    }
    Ok(())
}

fn convert<T: Scalar>(v: f64, p: &Program, op: &ir::Op) -> Result<T, InterpError> {
    T::from_f64(v).ok_or_else(|| InterpError::NonFiniteConstant {
        op: op_text(op),
        location: p.location(op.span),
        value: v,
    })
}

/// Checks every assumption on `reg` over all its elements and columns.
fn check_assumptions<T: Scalar>(
    p: &Program,
    reg: RegId,
    vals: &RegValues<T>,
    written_by: Option<&ir::Op>,
) -> Result<(), InterpError> {
    for a in p.assumptions_on(reg) {
        for (e, col) in vals.iter().enumerate() {
            for (t, v) in col.iter().enumerate() {
                if !holds(&a.bound, v) {
                    return Err(InterpError::AssumptionViolated {
                        assumption: a.text.clone(),
                        assumption_location: p.location(a.span),
                        register: p.registers[reg].name.clone(),
                        element: e,
                        column: t,
                        value: v.to_f64(),
                        written_by: written_by.map(|op| WrittenBy {
                            text: op_text(op),
                            location: p.location(op.span),
                        }),
                    });
                }
            }
        }
    }
    Ok(())
}

/// `bound` holds for `v`, compared exactly (the bound's f64 ends are exact rationals; infinite
/// ends impose nothing). For f64, NaN never satisfies a bound.
fn holds<T: Scalar>(bound: &Bound, v: &T) -> bool {
    let ge = |lo: f64, x: &T| -> bool {
        if lo == f64::NEG_INFINITY {
            // Every value (except an f64 NaN) is ≥ −∞.
            return x.partial_cmp(x).is_some();
        }
        match T::from_f64(lo) {
            Some(l) => x >= &l,
            None => false,
        }
    };
    let le = |hi: f64, x: &T| -> bool {
        if hi == f64::INFINITY {
            return x.partial_cmp(x).is_some();
        }
        match T::from_f64(hi) {
            Some(h) => x <= &h,
            None => false,
        }
    };
    match *bound {
        Bound::Range { lo, hi } => ge(lo, v) && le(hi, v),
        Bound::AbsAtLeast { lo } => ge(lo, &v.abs()),
    }
}

fn run_generic<T: Scalar>(
    p: &Program,
    prompt: &Prompt,
    trace: bool,
) -> Result<Run<T>, InterpError> {
    ir::validate(p)?;
    check_prompt(p, prompt)?;
    let mut state = input_state::<T>(p, prompt)?;
    let mut tr = if trace {
        Some(Vec::with_capacity(p.ops.len()))
    } else {
        None
    };
    for op in &p.ops {
        let dst = op.kind.dst();
        let new = eval_op(p, op, &state)?;
        check_assumptions(p, dst, &new, Some(op))?;
        state[dst] = Some(new);
        if let Some(tr) = tr.as_mut() {
            tr.push(state.clone());
        }
    }

    let out = state[p.output]
        .as_ref()
        .ok_or_else(|| InterpError::Unwritten {
            register: p.registers[p.output].name.clone(),
            op: "output".into(),
            // The output register's declaration is the best location there is for `output`.
            location: p.location(p.registers[p.output].span),
        })?;
    let outputs = (1..=p.n + 1)
        .map(|k| out[0][crate::prompt::x_column(k)].clone())
        .collect();
    Ok(Run { outputs, trace: tr })
}

/// The state before the first operation: every input register filled from the prompt (exact
/// conversion of each double, its assumptions checked), every work register unwritten.
fn input_state<T: Scalar>(p: &Program, prompt: &Prompt) -> Result<State<T>, InterpError> {
    let tokens = prompt.tokens();
    let mut state: State<T> = RegMap::filled(p, None);
    for id in p.reg_ids() {
        let r = p.reg(id);
        if let RegKind::Input(b) = r.kind {
            let mut vals = Vec::with_capacity(r.shape.size());
            for e in 0..r.shape.size() {
                let mut col = Vec::with_capacity(tokens.len());
                for (t, tok) in tokens.iter().enumerate() {
                    let v = b.value(t, tok, e);
                    col.push(T::from_f64(v).ok_or_else(|| {
                        InterpError::MalformedPrompt(format!(
                            "input `{}` element {e} at column {t} is not finite ({v})",
                            r.name
                        ))
                    })?);
                }
                vals.push(col);
            }
            check_assumptions(p, id, &vals, None)?;
            state[id] = Some(vals);
        }
    }
    Ok(state)
}

/// The new value of `op`'s destination, from the registers it reads in `state`.
fn eval_op<T: Scalar>(
    p: &Program,
    op: &ir::Op,
    state: &State<T>,
) -> Result<RegValues<T>, InterpError> {
    let read = |r: RegId| -> Result<&RegValues<T>, InterpError> {
        state[r].as_ref().ok_or_else(|| InterpError::Unwritten {
            register: p.registers[r].name.clone(),
            op: op_text(op),
            location: p.location(op.span),
        })
    };
    match &op.kind {
        OpKind::Mov { src, pattern, .. } => Ok(mov_values(p, *pattern, read(*src)?)),
        OpKind::Mul { dst, a, b } => {
            Ok(mul_values(p, *dst, (*a, read(a.reg)?), (*b, read(b.reg)?)))
        }
        OpKind::Div { num, den, .. } => div_values(p, op, read(*num)?, read(*den)?),
        OpKind::Aff { terms, bias, .. } => {
            let srcs = terms
                .iter()
                .map(|t| read(t.src.reg))
                .collect::<Result<Vec<_>, _>>()?;
            aff_values(p, op, terms, &srcs, bias)
        }
    }
}

/// `mov`: column t gets the exact mean of `src` over `pattern.sources(t)` (0 when empty).
fn mov_values<T: Scalar>(p: &Program, pattern: ir::Pattern, src: &RegValues<T>) -> RegValues<T> {
    // Source columns of each column, computed once.
    let sources: Vec<Vec<usize>> = (0..p.columns()).map(|t| pattern.sources(t)).collect();
    src.iter()
        .map(|col| {
            sources
                .iter()
                .map(|srcs| match srcs.len() {
                    0 => T::zero(),
                    1 => col[srcs[0]].clone(),
                    len => {
                        let mut acc = T::zero();
                        for &c in srcs {
                            acc.add_assign(&col[c]);
                        }
                        acc.div(&T::from_usize(len))
                    }
                })
                .collect()
        })
        .collect()
}

/// `mul`: dst(i, j) = Σ_k A(i, k) · B(k, j), column by column (operands as seen after their
/// transposition).
fn mul_values<T: Scalar>(
    p: &Program,
    dst: RegId,
    (a, va): (ir::Operand, &RegValues<T>),
    (b, vb): (ir::Operand, &RegValues<T>),
) -> RegValues<T> {
    let columns = p.columns();
    let (sa, sb) = (p.operand_shape(a), p.operand_shape(b));
    let (ra, rb) = (p.registers[a.reg].shape, p.registers[b.reg].shape);
    let mut out = vec![vec![T::zero(); columns]; p.registers[dst].shape.size()];
    for i in 0..sa.rows {
        for j in 0..sb.cols {
            let o = &mut out[i * sb.cols + j];
            for k in 0..sa.cols {
                let ca = &va[ir::operand_index(ra, a.transposed, i, k)];
                let cb = &vb[ir::operand_index(rb, b.transposed, k, j)];
                for t in 0..columns {
                    o[t].add_prod(&ca[t], &cb[t]);
                }
            }
        }
    }
    out
}

/// `div`: every element of `num` divided by |den| (a scalar); a zero divisor is an error naming
/// the column.
fn div_values<T: Scalar>(
    p: &Program,
    op: &ir::Op,
    num: &RegValues<T>,
    den: &RegValues<T>,
) -> Result<RegValues<T>, InterpError> {
    let dabs: Vec<T> = den[0].iter().map(|v| v.abs()).collect();
    if let Some(t) = dabs.iter().position(|v| v.is_zero()) {
        return Err(InterpError::DivisionByZero {
            op: op_text(op),
            location: p.location(op.span),
            column: t,
            element: 0,
        });
    }
    Ok(num
        .iter()
        .map(|col| col.iter().zip(&dabs).map(|(x, d)| x.div(d)).collect())
        .collect())
}

/// `aff`: dst_i = Σ_terms Σ_j C[i, j] · src'_j + b_i, src' the flattened (transposed) source;
/// zero coefficients contribute exactly 0 and are skipped.
fn aff_values<T: Scalar>(
    p: &Program,
    op: &ir::Op,
    terms: &[ir::AffTerm],
    srcs: &[&RegValues<T>],
    bias: &[f64],
) -> Result<RegValues<T>, InterpError> {
    let columns = p.columns();
    let mut out: RegValues<T> = Vec::with_capacity(bias.len());
    for &bi in bias {
        out.push(vec![convert::<T>(bi, p, op)?; columns]);
    }
    for (term, vs) in terms.iter().zip(srcs) {
        let rs = p.registers[term.src.reg].shape;
        let seen = p.operand_shape(term.src);
        let n = rs.size();
        for (i, o) in out.iter_mut().enumerate() {
            for j in 0..n {
                let c = term.coef[i * n + j];
                if c == 0.0 {
                    continue;
                }
                let c = convert::<T>(c, p, op)?;
                let (si, sj) = (j / seen.cols, j % seen.cols);
                let col = &vs[ir::operand_index(rs, term.src.transposed, si, sj)];
                for t in 0..columns {
                    o[t].add_prod(&c, &col[t]);
                }
            }
        }
    }
    Ok(out)
}
