//! The invariants of a [`Program`] that every later stage relies on, checked in one place.
//!
//! The front end ([`crate::front::load_program`]) only ever builds programs that pass; programs
//! built by hand (tests, tools) or read back from files may not. Each stage that reads a
//! program calls [`validate`] first — the interpreter ([`crate::interp`]), the lowering
//! ([`crate::lower`]) and the certifier ([`crate::certify`]) — so that a malformed program is a
//! typed error naming what is wrong, never a panic or a silently wrong result (see
//! docs/ARCHITECTURE.md).
//!
//! Checked: `d` and `n` at least 1; every register non-empty (a size that fits a `usize`); each built-in input at most once,
//! with the shape `d` gives it; pinned registers above the input rows `0..=d`; the output a
//! scalar register; assumptions and operands naming registers that exist; no operation writing
//! an input; and the shapes of each operation as the front end guarantees them (`mov`: source
//! and destination alike, `col(c)` a column of the prompt; `mul`: (a×b)·(b×c) into a×c; `div`:
//! numerator and destination alike, a scalar denominator; `aff`: a |dst|-entry bias and
//! |dst|·|src| coefficients per term, |src| the size of the whole source register).

use super::{Builtin, OpId, OpKind, Pattern, Program, RegId, RegKind, Shape};
use std::fmt;

/// Where in an operation a register id stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Destination,
    /// The source of a `mov`.
    Source,
    /// The left factor of a `mul`.
    Left,
    /// The right factor of a `mul`.
    Right,
    Numerator,
    Denominator,
    /// The source of term `i` of an `aff` (0-based).
    Term(usize),
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Destination => write!(f, "the destination"),
            Role::Source => write!(f, "the source"),
            Role::Left => write!(f, "the left factor"),
            Role::Right => write!(f, "the right factor"),
            Role::Numerator => write!(f, "the numerator"),
            Role::Denominator => write!(f, "the denominator"),
            Role::Term(i) => write!(f, "the source of term {i}"),
        }
    }
}

/// A broken invariant, with the entity it is about: the operation (`op`, an index into
/// [`Program::ops`]), the register (`reg`, an index into [`Program::registers`]) or the
/// assumption (`index`, into [`Program::assumptions`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidateError {
    #[error("the program has d = {d} and n = {n}: both must be at least 1")]
    Dimensions { d: usize, n: usize },
    #[error("register {reg} (`{name}`) has the shape {}×{}: empty, or too large to count", .shape.rows, .shape.cols)]
    BadShape {
        reg: RegId,
        name: String,
        shape: Shape,
    },
    #[error("input `{name}` (register {reg}) is {found}, but d = {d} makes it {expected}")]
    InputShape {
        reg: RegId,
        name: String,
        found: Shape,
        expected: Shape,
        d: usize,
    },
    #[error("input `{}` appears twice: registers {first} and {second}", .input.name())]
    DuplicateInput {
        input: Builtin,
        first: RegId,
        second: RegId,
    },
    #[error("register {reg} (`{name}`) is pinned to row {row}, but rows 0..={d} hold the inputs")]
    PinnedOverInputs {
        reg: RegId,
        name: String,
        row: usize,
        d: usize,
    },
    #[error("the output is register {reg}, but there are {count} registers")]
    OutputOutOfRange { reg: RegId, count: usize },
    #[error("the output register {reg} (`{name}`) is {shape}, not a scalar")]
    OutputNotScalar {
        reg: RegId,
        name: String,
        shape: Shape,
    },
    #[error("assumption {index} names register {reg}, but there are {count} registers")]
    AssumptionOutOfRange {
        index: usize,
        reg: RegId,
        count: usize,
    },
    #[error("op {op}: {role} is register {reg}, but there are {count} registers")]
    RegisterOutOfRange {
        op: OpId,
        role: Role,
        reg: RegId,
        count: usize,
    },
    #[error("op {op} writes the input register {reg} (`{name}`)")]
    WritesInput { op: OpId, reg: RegId, name: String },
    #[error("op {op}: mov from a {src} register into a {dst} one")]
    MovShape { op: OpId, src: Shape, dst: Shape },
    #[error("op {op}: col({column}) is past the last column {}", .columns - 1)]
    ColumnOutOfRange {
        op: OpId,
        column: usize,
        columns: usize,
    },
    #[error("op {op}: mul of {a} by {b} does not give the destination's {dst}")]
    MulShape {
        op: OpId,
        a: Shape,
        b: Shape,
        dst: Shape,
    },
    #[error("op {op}: div of a {num} numerator into a {dst} destination")]
    DivShape { op: OpId, num: Shape, dst: Shape },
    #[error("op {op}: the denominator is {den}, not a scalar")]
    DivDenominator { op: OpId, den: Shape },
    #[error("op {op}: the bias has {found} entries, the destination {expected}")]
    AffBias {
        op: OpId,
        found: usize,
        expected: usize,
    },
    #[error("op {op}: term {term} has {found} coefficients, expected |dst|·|src| = {dst}·{src}")]
    AffCoefficients {
        op: OpId,
        term: usize,
        found: usize,
        dst: usize,
        src: usize,
    },
}

impl ValidateError {
    /// The operation the error is about, if it is about one.
    pub fn op(&self) -> Option<OpId> {
        use ValidateError::*;
        match *self {
            RegisterOutOfRange { op, .. }
            | WritesInput { op, .. }
            | MovShape { op, .. }
            | ColumnOutOfRange { op, .. }
            | MulShape { op, .. }
            | DivShape { op, .. }
            | DivDenominator { op, .. }
            | AffBias { op, .. }
            | AffCoefficients { op, .. } => Some(op),
            _ => None,
        }
    }
}

/// Checks every invariant listed in the module documentation; the first one broken is the
/// error (registers first, then the output, the assumptions, and the operations in order).
pub fn validate(p: &Program) -> Result<(), ValidateError> {
    if p.d == 0 || p.n == 0 {
        return Err(ValidateError::Dimensions { d: p.d, n: p.n });
    }
    registers(p)?;
    let count = p.registers.len();
    if p.output.index() >= count {
        return Err(ValidateError::OutputOutOfRange {
            reg: p.output,
            count,
        });
    }
    let out = &p.registers[p.output];
    if !out.shape.is_scalar() {
        return Err(ValidateError::OutputNotScalar {
            reg: p.output,
            name: out.name.clone(),
            shape: out.shape,
        });
    }
    if let Some((index, a)) = p
        .assumptions
        .iter()
        .enumerate()
        .find(|(_, a)| a.reg.index() >= count)
    {
        return Err(ValidateError::AssumptionOutOfRange {
            index,
            reg: a.reg,
            count,
        });
    }
    p.op_ids().try_for_each(|i| op(p, i))
}

/// Each register non-empty (and its size an integer); each input once, shaped by `d`; pinned rows above the inputs.
fn registers(p: &Program) -> Result<(), ValidateError> {
    let mut seen: Vec<(Builtin, RegId)> = Vec::new();
    for reg in p.reg_ids() {
        let r = p.reg(reg);
        let size = r.shape.rows.checked_mul(r.shape.cols);
        if size.is_none() || size == Some(0) {
            return Err(ValidateError::BadShape {
                reg,
                name: r.name.clone(),
                shape: r.shape,
            });
        }
        if let RegKind::Input(b) = r.kind {
            if r.shape != b.shape(p.d) {
                return Err(ValidateError::InputShape {
                    reg,
                    name: r.name.clone(),
                    found: r.shape,
                    expected: b.shape(p.d),
                    d: p.d,
                });
            }
            if let Some(&(_, first)) = seen.iter().find(|(s, _)| *s == b) {
                return Err(ValidateError::DuplicateInput {
                    input: b,
                    first,
                    second: reg,
                });
            }
            seen.push((b, reg));
        }
        match r.pinned {
            Some(row) if row <= p.d => {
                return Err(ValidateError::PinnedOverInputs {
                    reg,
                    name: r.name.clone(),
                    row,
                    d: p.d,
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// The register ids an operation names, and where each stands in it.
fn roles(kind: &OpKind) -> Vec<(Role, RegId)> {
    let mut out = vec![(Role::Destination, kind.dst())];
    match kind {
        OpKind::Mov { src, .. } => out.push((Role::Source, *src)),
        OpKind::Mul { a, b, .. } => out.extend([(Role::Left, a.reg), (Role::Right, b.reg)]),
        OpKind::Div { num, den, .. } => {
            out.extend([(Role::Numerator, *num), (Role::Denominator, *den)])
        }
        OpKind::Aff { terms, .. } => out.extend(
            terms
                .iter()
                .enumerate()
                .map(|(i, t)| (Role::Term(i), t.src.reg)),
        ),
    }
    out
}

/// Operation `i`: its registers exist, its destination is not an input, its shapes agree
/// ([`op_shapes`]).
fn op(p: &Program, i: OpId) -> Result<(), ValidateError> {
    let kind = &p.ops[i].kind;
    let count = p.registers.len();
    if let Some((role, reg)) = roles(kind).into_iter().find(|(_, r)| r.index() >= count) {
        return Err(ValidateError::RegisterOutOfRange {
            op: i,
            role,
            reg,
            count,
        });
    }
    let dst = kind.dst();
    if let RegKind::Input(_) = p.registers[dst].kind {
        return Err(ValidateError::WritesInput {
            op: i,
            reg: dst,
            name: p.registers[dst].name.clone(),
        });
    }
    op_shapes(p, i)
}

/// The shapes of operation `i` (whose register ids exist) as the front end guarantees them.
fn op_shapes(p: &Program, i: OpId) -> Result<(), ValidateError> {
    let kind = &p.ops[i].kind;
    let dshape = p.registers[kind.dst()].shape;
    let shape = |r: RegId| p.registers[r].shape;
    match kind {
        OpKind::Mov { src, pattern, .. } => {
            if shape(*src) != dshape {
                return Err(ValidateError::MovShape {
                    op: i,
                    src: shape(*src),
                    dst: dshape,
                });
            }
            if let Pattern::Col(c) = *pattern {
                if c >= p.columns() {
                    return Err(ValidateError::ColumnOutOfRange {
                        op: i,
                        column: c,
                        columns: p.columns(),
                    });
                }
            }
        }
        OpKind::Mul { a, b, .. } => {
            let (sa, sb) = (p.operand_shape(*a), p.operand_shape(*b));
            if sa.cols != sb.rows || dshape != Shape::mat(sa.rows, sb.cols) {
                return Err(ValidateError::MulShape {
                    op: i,
                    a: sa,
                    b: sb,
                    dst: dshape,
                });
            }
        }
        OpKind::Div { num, den, .. } => {
            if shape(*num) != dshape {
                return Err(ValidateError::DivShape {
                    op: i,
                    num: shape(*num),
                    dst: dshape,
                });
            }
            if !shape(*den).is_scalar() {
                return Err(ValidateError::DivDenominator {
                    op: i,
                    den: shape(*den),
                });
            }
        }
        OpKind::Aff { terms, bias, .. } => {
            if bias.len() != dshape.size() {
                return Err(ValidateError::AffBias {
                    op: i,
                    found: bias.len(),
                    expected: dshape.size(),
                });
            }
            for (term, t) in terms.iter().enumerate() {
                let src = shape(t.src.reg).size();
                if Some(t.coef.len()) != dshape.size().checked_mul(src) {
                    return Err(ValidateError::AffCoefficients {
                        op: i,
                        term,
                        found: t.coef.len(),
                        dst: dshape.size(),
                        src,
                    });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{AffTerm, Assumption, Bound, Op, Operand, Register, Source, Span};
    use std::collections::BTreeMap;

    const Y: RegId = RegId(0);
    const X: RegId = RegId(1);
    const S: RegId = RegId(2);
    const V: RegId = RegId(3);

    fn reg(name: &str, shape: Shape, kind: RegKind) -> Register {
        Register::new(name, shape, kind)
    }

    fn op(kind: OpKind) -> Op {
        Op {
            kind,
            span: Span::default(),
            text: String::new(),
            iteration: vec![],
        }
    }

    fn opnd(reg: RegId, transposed: bool) -> Operand {
        Operand { reg, transposed }
    }

    /// A valid program with d = 2, n = 2 (5 columns) and one operation of each kind:
    /// 0 `mov v <- x from prev`, 1 `mul s <- x^T * v`, 2 `div v <- v / |s|`,
    /// 3 `aff s <- [1, 1] v + 0.5`, 4 `mov s <- s from col(4)`; `assume s >= 1`; `output s`.
    fn base() -> Program {
        let ops = vec![
            OpKind::Mov {
                dst: V,
                src: X,
                pattern: Pattern::Prev,
            },
            OpKind::Mul {
                dst: S,
                a: opnd(X, true),
                b: opnd(V, false),
            },
            OpKind::Div {
                dst: V,
                num: V,
                den: S,
            },
            OpKind::Aff {
                dst: S,
                terms: vec![AffTerm {
                    src: opnd(V, false),
                    coef: vec![1.0, 1.0],
                }],
                bias: vec![0.5],
            },
            OpKind::Mov {
                dst: S,
                src: S,
                pattern: Pattern::Col(4),
            },
        ];
        Program {
            source: Source {
                name: "hand.icl".into(),
                text: String::new(),
            },
            params: BTreeMap::new(),
            overrides: vec![],
            d: 2,
            n: 2,
            registers: vec![
                reg("y", Shape::SCALAR, RegKind::Input(Builtin::Y)),
                reg("x", Shape::vec(2), RegKind::Input(Builtin::X)),
                reg("s", Shape::SCALAR, RegKind::Work),
                reg("v", Shape::vec(2), RegKind::Work),
            ],
            ops: ops.into_iter().map(op).collect(),
            assumptions: vec![Assumption {
                reg: S,
                bound: Bound::Range {
                    lo: 1.0,
                    hi: f64::INFINITY,
                },
                span: Span::default(),
                text: "assume s >= 1".into(),
            }],
            output: S,
        }
    }

    /// `base()` changed by `f` is rejected with `want`, which names operation `op` (if any).
    fn rejects(f: impl FnOnce(&mut Program), want: ValidateError) {
        let mut p = base();
        f(&mut p);
        let err = validate(&p).unwrap_err();
        assert_eq!(err, want);
        if let Some(i) = want.op() {
            assert!(err.to_string().starts_with(&format!("op {i}")), "{err}");
        }
    }

    fn kind(p: &mut Program, i: usize) -> &mut OpKind {
        &mut p.ops[i].kind
    }

    #[test]
    fn the_base_program_is_valid() {
        assert_eq!(validate(&base()), Ok(()));
    }

    #[test]
    fn dimensions_must_be_positive() {
        rejects(|p| p.n = 0, ValidateError::Dimensions { d: 2, n: 0 });
    }

    #[test]
    fn registers_are_non_empty() {
        rejects(
            |p| p.registers[V].shape = Shape::vec(0),
            ValidateError::BadShape {
                reg: V,
                name: "v".into(),
                shape: Shape::vec(0),
            },
        );
        rejects(
            |p| p.registers[V].shape = Shape::mat(usize::MAX, 2),
            ValidateError::BadShape {
                reg: V,
                name: "v".into(),
                shape: Shape::mat(usize::MAX, 2),
            },
        );
    }

    #[test]
    fn inputs_are_shaped_by_d_and_appear_once() {
        rejects(
            |p| p.d = 3,
            ValidateError::InputShape {
                reg: X,
                name: "x".into(),
                found: Shape::vec(2),
                expected: Shape::vec(3),
                d: 3,
            },
        );
        rejects(
            |p| {
                p.registers
                    .push(reg("y2", Shape::SCALAR, RegKind::Input(Builtin::Y)))
            },
            ValidateError::DuplicateInput {
                input: Builtin::Y,
                first: Y,
                second: RegId(4),
            },
        );
    }

    #[test]
    fn pinned_rows_stay_above_the_inputs() {
        rejects(
            |p| p.registers[V].pinned = Some(2),
            ValidateError::PinnedOverInputs {
                reg: V,
                name: "v".into(),
                row: 2,
                d: 2,
            },
        );
        let mut p = base();
        p.registers[V].pinned = Some(3);
        assert_eq!(validate(&p), Ok(()));
    }

    #[test]
    fn the_output_is_a_scalar_register() {
        rejects(
            |p| p.output = RegId(9),
            ValidateError::OutputOutOfRange {
                reg: RegId(9),
                count: 4,
            },
        );
        rejects(
            |p| p.output = V,
            ValidateError::OutputNotScalar {
                reg: V,
                name: "v".into(),
                shape: Shape::vec(2),
            },
        );
    }

    #[test]
    fn assumptions_name_registers() {
        rejects(
            |p| p.assumptions[0].reg = RegId(7),
            ValidateError::AssumptionOutOfRange {
                index: 0,
                reg: RegId(7),
                count: 4,
            },
        );
    }

    #[test]
    fn operands_name_registers() {
        rejects(
            |p| {
                if let OpKind::Div { den, .. } = kind(p, 2) {
                    *den = RegId(4);
                }
            },
            ValidateError::RegisterOutOfRange {
                op: OpId(2),
                role: Role::Denominator,
                reg: RegId(4),
                count: 4,
            },
        );
        rejects(
            |p| {
                if let OpKind::Aff { terms, .. } = kind(p, 3) {
                    terms.push(AffTerm {
                        src: opnd(RegId(5), false),
                        coef: vec![],
                    });
                }
            },
            ValidateError::RegisterOutOfRange {
                op: OpId(3),
                role: Role::Term(1),
                reg: RegId(5),
                count: 4,
            },
        );
    }

    #[test]
    fn inputs_are_never_written() {
        rejects(
            |p| {
                if let OpKind::Mov { dst, .. } = kind(p, 0) {
                    *dst = X;
                }
            },
            ValidateError::WritesInput {
                op: OpId(0),
                reg: X,
                name: "x".into(),
            },
        );
    }

    #[test]
    fn mov_keeps_the_shape_and_reads_a_column_of_the_prompt() {
        rejects(
            |p| {
                if let OpKind::Mov { src, .. } = kind(p, 0) {
                    *src = Y;
                }
            },
            ValidateError::MovShape {
                op: OpId(0),
                src: Shape::SCALAR,
                dst: Shape::vec(2),
            },
        );
        rejects(
            |p| {
                if let OpKind::Mov { pattern, .. } = kind(p, 4) {
                    *pattern = Pattern::Col(5);
                }
            },
            ValidateError::ColumnOutOfRange {
                op: OpId(4),
                column: 5,
                columns: 5,
            },
        );
    }

    #[test]
    fn mul_dimensions_agree() {
        rejects(
            |p| {
                if let OpKind::Mul { a, .. } = kind(p, 1) {
                    a.transposed = false;
                }
            },
            ValidateError::MulShape {
                op: OpId(1),
                a: Shape::vec(2),
                b: Shape::vec(2),
                dst: Shape::SCALAR,
            },
        );
        // Inner dimensions agree, the destination does not: (2×1)·(1×2) is 2×2.
        rejects(
            |p| {
                if let OpKind::Mul { a, b, .. } = kind(p, 1) {
                    a.transposed = false;
                    b.transposed = true;
                }
            },
            ValidateError::MulShape {
                op: OpId(1),
                a: Shape::vec(2),
                b: Shape::mat(1, 2),
                dst: Shape::SCALAR,
            },
        );
    }

    #[test]
    fn div_keeps_the_shape_and_divides_by_a_scalar() {
        rejects(
            |p| {
                if let OpKind::Div { num, .. } = kind(p, 2) {
                    *num = S;
                }
            },
            ValidateError::DivShape {
                op: OpId(2),
                num: Shape::SCALAR,
                dst: Shape::vec(2),
            },
        );
        rejects(
            |p| {
                if let OpKind::Div { den, .. } = kind(p, 2) {
                    *den = V;
                }
            },
            ValidateError::DivDenominator {
                op: OpId(2),
                den: Shape::vec(2),
            },
        );
    }

    #[test]
    fn aff_sizes_follow_the_destination_and_sources() {
        rejects(
            |p| {
                if let OpKind::Aff { bias, .. } = kind(p, 3) {
                    bias.push(0.0);
                }
            },
            ValidateError::AffBias {
                op: OpId(3),
                found: 2,
                expected: 1,
            },
        );
        rejects(
            |p| {
                if let OpKind::Aff { terms, .. } = kind(p, 3) {
                    terms[0].coef.pop();
                }
            },
            ValidateError::AffCoefficients {
                op: OpId(3),
                term: 0,
                found: 1,
                dst: 1,
                src: 2,
            },
        );
    }

    /// Every program in `programs/`, at its default sizes and at d = 3, n = 4, is valid.
    #[test]
    fn every_shipped_program_is_valid() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("programs");
        let mut files = Vec::new();
        let mut dirs = vec![root];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "icl") {
                    files.push(path);
                }
            }
        }
        assert!(files.len() >= 6, "{files:?}");
        let sizes = [("d", "3"), ("n", "4")].map(|(k, v)| (k.to_string(), v.to_string()));
        for path in files {
            for sets in [&[][..], &sizes[..]] {
                let p = crate::front::load_file(&path, sets)
                    .unwrap_or_else(|e| panic!("{} {sets:?}:\n{e}", path.display()));
                assert_eq!(validate(&p), Ok(()), "{} {sets:?}", path.display());
            }
        }
    }
}
