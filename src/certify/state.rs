//! The symbolic state of the schedule: what every hidden row holds ([`Content`]) and a bound on
//! its error ([`RowState`]), the context every check reads ([`Ctx`]), and the checks that an
//! operation's operands hold the versions the program reads.

use super::error::{CertifyError, OpSite, Part};
use super::weights::Stored;
use crate::ir::{operand_index, Builtin, OpId, Program, RegId, RegKind, RegMap};
use crate::layout::{Layer, Layout, OpPart, PlacedOp, Row};
use crate::model::config::ModelConfig;
use crate::model::schema::Weights;
use crate::ranges::{Interval, Ranges};
use std::collections::BTreeMap;

/// What a hidden row holds at some point of the schedule (symbolically).
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Exactly 0 in every column.
    Zero,
    /// A built-in input the program does not read (its element).
    Builtin(Builtin, usize),
    /// Element `elem` of register `reg` as written by op `ver` (`None`: the embedding's input).
    Val {
        reg: RegId,
        elem: usize,
        ver: Option<OpId>,
    },
    /// Cleared (0) by the attention half of the division `op`, to be written by its MLP half.
    Cleared(OpId),
    /// A payload row of the division `op` (±P·den).
    Payload(OpId),
    /// A `paper`-target fixed row: a position code or a LayerNorm bypass row.
    Code(Code),
}

/// The `paper` target's fixed rows (layout.json `paper`): written by the embedding, never by a
/// layer (a division layer zeroes the bypass rows and restores them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Code {
    /// t/D.
    C1,
    /// t²/D².
    C2,
    /// t mod 2.
    Parity,
    One,
    /// The bypass rows ±N.
    Bypass(f64),
}

impl Code {
    /// The exact value at column t (code scale D).
    pub fn value(self, t: usize, d: usize) -> f64 {
        let (t, d) = (t as f64, d as f64);
        match self {
            Code::C1 => t / d,
            Code::C2 => t * t / (d * d),
            Code::Parity => t % 2.0,
            Code::One => 1.0,
            Code::Bypass(n) => n,
        }
    }
    pub fn name(self) -> String {
        match self {
            Code::C1 => "code c1 = t/D".into(),
            Code::C2 => "code c2 = t²/D²".into(),
            Code::Parity => "code parity".into(),
            Code::One => "code one".into(),
            Code::Bypass(n) => format!("LayerNorm bypass {n}"),
        }
    }
}

/// A row's content and a bound on |model value − program value| there (end-to-end analysis).
#[derive(Debug, Clone, PartialEq)]
pub struct RowState {
    pub content: Content,
    pub err: f64,
}

/// The symbolic state is indexed by hidden row.
impl std::ops::Index<Row> for [RowState] {
    type Output = RowState;
    fn index(&self, r: Row) -> &RowState {
        &self[r.index()]
    }
}

impl std::ops::IndexMut<Row> for [RowState] {
    fn index_mut(&mut self, r: Row) -> &mut RowState {
        &mut self[r.index()]
    }
}

impl std::ops::Index<Row> for Vec<RowState> {
    type Output = RowState;
    fn index(&self, r: Row) -> &RowState {
        &self[r.index()]
    }
}

impl std::ops::IndexMut<Row> for Vec<RowState> {
    fn index_mut(&mut self, r: Row) -> &mut RowState {
        &mut self[r.index()]
    }
}

/// Everything the per-part checks need.
pub struct Ctx<'a> {
    pub p: &'a Program,
    pub cfg: &'a ModelConfig,
    /// The stored tensors, resolved through the schema.
    pub weights: &'a Weights<Stored<'a>>,
    pub layout: &'a Layout,
    pub ranges: &'a Ranges,
    /// First row of every register.
    pub start: RegMap<Row>,
    /// Columns certified: every query column the position table and bias cover.
    pub cols: usize,
    pub width: usize,
}

impl<'a> Ctx<'a> {
    /// Row of element `elem` (row-major storage index) of register `reg`.
    pub fn row(&self, reg: RegId, elem: usize) -> Row {
        self.start[reg] + elem
    }
    /// Row of element (i, j) of an operand as seen after its transposition.
    pub fn operand_row(&self, reg: RegId, transposed: bool, i: usize, j: usize) -> Row {
        self.row(reg, operand_index(self.p.reg(reg).shape, transposed, i, j))
    }
    /// The rows of register `reg`, element by element.
    pub fn rows(&self, reg: RegId) -> impl Iterator<Item = Row> {
        let start = self.start[reg];
        (0..self.p.reg(reg).shape.size()).map(move |e| start + e)
    }
    pub fn elem_name(&self, reg: RegId, elem: usize) -> String {
        let r = self.p.reg(reg);
        match (r.shape.rows, r.shape.cols) {
            (1, 1) => r.name.clone(),
            (_, 1) => format!("{}[{elem}]", r.name),
            (_, c) => format!("{}[{},{}]", r.name, elem / c, elem % c),
        }
    }
    /// A human name for row `r` holding `c`.
    pub fn content_name(&self, r: Row, c: &Content) -> String {
        match c {
            Content::Zero if r == self.layout.zero_row => format!("row {r} (zero row)"),
            Content::Zero => format!("row {r} (unused, 0)"),
            Content::Builtin(b, e) => {
                if b.shape(self.p.d).is_scalar() {
                    format!("row {r} ({})", b.name())
                } else {
                    format!("row {r} ({}[{e}])", b.name())
                }
            }
            Content::Val { reg, elem, .. } => format!("row {r} ({})", self.elem_name(*reg, *elem)),
            Content::Cleared(_) => format!("row {r} (div destination, cleared)"),
            Content::Payload(_) => format!("row {r} (division payload)"),
            Content::Code(c) => format!("row {r} ({})", c.name()),
        }
    }
    /// Short name of what row `r` holds, for monomials: `A[2,1]`, `x[0]`, `one`, `row 7`.
    pub fn short_name(&self, r: Row, c: &Content) -> String {
        match c {
            Content::Val { reg, elem, .. } => self.elem_name(*reg, *elem),
            Content::Builtin(b, _) if b.shape(self.p.d).is_scalar() => b.name().to_string(),
            Content::Builtin(b, e) => format!("{}[{e}]", b.name()),
            Content::Zero if r == self.layout.zero_row => format!("zero row {r}"),
            Content::Zero => format!("row {r} (unused)"),
            Content::Cleared(_) => format!("row {r} (cleared)"),
            Content::Payload(_) => format!("payload row {r}"),
            Content::Code(c) => c.name(),
        }
    }
    /// `text, file:line:col` of operation `k` (as the certificate lists it).
    pub fn op_label(&self, k: OpId) -> String {
        OpSite::of(self.p, k).to_string()
    }
    /// An error about op `k` in layer `l`.
    pub fn op_err(&self, l: Layer, part: Part, k: Option<OpId>, msg: String) -> CertifyError {
        CertifyError {
            layer: Some(l),
            part,
            op: k.map(|k| OpSite::of(self.p, k)),
            message: msg,
        }
    }
    /// Range (hull over columns) of the value `content` stands for, in the program's semantics.
    pub fn content_range(&self, c: &Content) -> Interval {
        match c {
            Content::Zero | Content::Cleared(_) => Interval::ZERO,
            Content::Builtin(b, _) => builtin_range(self.p, *b),
            Content::Val { reg, elem, ver } => {
                // The value written by op `ver` is the state just before op ver+1.
                let k = ver.map_or(OpId(0), OpId::next);
                self.ranges
                    .before_op(k, *reg)
                    .and_then(|v| v.get(*elem).copied())
                    .unwrap_or(Interval::EVERYTHING)
            }
            // Payload rows are not bounded by the program (±P·den); callers exclude them.
            Content::Payload(_) => Interval::EVERYTHING,
            Content::Code(Code::Bypass(n)) => Interval::point(*n),
            Content::Code(Code::One) => Interval::point(1.0),
            // c1, c2, parity: in [0, 1] (t < D).
            Content::Code(_) => Interval::new(0.0, 1.0),
        }
    }
}

/// Range of a built-in input the program does not read (so has no assumption on it).
fn builtin_range(p: &Program, b: Builtin) -> Interval {
    match b {
        Builtin::Y | Builtin::X => Interval::EVERYTHING,
        Builtin::One => Interval::point(1.0),
        Builtin::IsX | Builtin::IsY => Interval::new(0.0, 1.0),
        Builtin::Count => Interval::new(0.0, p.n as f64),
    }
}

/// The version of `reg` operation `k` reads in the program: the last write before k.
pub fn version_read(p: &Program, k: OpId, reg: RegId) -> Option<OpId> {
    p.ops[..k.index()]
        .iter()
        .rposition(|o| o.kind.dst() == reg)
        .map(OpId)
}

/// How a message names the writer of a version: `as written by …` or `from the embedding`.
fn written_by(p: &Program, ver: Option<OpId>, with_index: bool) -> String {
    match ver {
        Some(v) if with_index => format!("as written by op {v} (`{}`)", p.ops[v].text),
        Some(v) => format!("as written by `{}`", p.ops[v].text),
        None => "from the embedding".into(),
    }
}

/// Check that every row of register `reg` holds the version op `k` reads, in `state`.
pub fn check_operand(
    ctx: &Ctx,
    l: Layer,
    part: Part,
    k: OpId,
    reg: RegId,
    state: &[RowState],
) -> Result<(), CertifyError> {
    let ver = version_read(ctx.p, k, reg);
    if ver.is_none() && ctx.p.reg(reg).kind == RegKind::Work {
        return Err(ctx.op_err(
            l,
            part,
            Some(k),
            format!("reads `{}` before any write", ctx.p.reg(reg).name),
        ));
    }
    for (e, r) in ctx.rows(reg).enumerate() {
        let want = Content::Val { reg, elem: e, ver };
        if state[r].content != want {
            let holds = match &state[r].content {
                Content::Val {
                    reg: r2,
                    elem,
                    ver: v2,
                } => format!(
                    "`{}` {}",
                    ctx.elem_name(*r2, *elem),
                    written_by(ctx.p, *v2, true)
                ),
                other => ctx.content_name(r, other),
            };
            return Err(ctx.op_err(
                l,
                part,
                Some(k),
                format!(
                    "row {r} must hold `{}` {}, but holds {holds}",
                    ctx.elem_name(reg, e),
                    written_by(ctx.p, ver, false)
                ),
            ));
        }
    }
    Ok(())
}

/// The rows operation `po` writes: its destination's, and the payload rows for the attention
/// half of a division (`None` when layout.json has no payload rows).
pub fn written_rows(ctx: &Ctx, po: &PlacedOp) -> Option<Vec<Row>> {
    let mut rows: Vec<Row> = ctx.rows(ctx.p.ops[po.op].kind.dst()).collect();
    if po.part == OpPart::DivPrep {
        rows.extend(ctx.layout.div_payload?);
    }
    Some(rows)
}

/// Map from a hidden row to the op (of a list) whose destination covers it.
pub fn writer_of(ctx: &Ctx, ops: &[PlacedOp]) -> BTreeMap<Row, OpId> {
    let mut m = BTreeMap::new();
    for po in ops {
        let dst = ctx.p.ops[po.op].kind.dst();
        m.extend(ctx.rows(dst).map(|r| (r, po.op)));
        if po.part == OpPart::DivPrep {
            if let Some(pl) = ctx.layout.div_payload {
                m.extend(pl.map(|r| (r, po.op)));
            }
        }
    }
    m
}

/// The operations of one step — a layer's attention or its MLP — and the rows they write.
pub struct Step<'c, 'a> {
    pub ctx: &'c Ctx<'a>,
    pub layer: Layer,
    pub part: Part,
    pub ops: &'c [PlacedOp],
    /// Row → the operation of the step writing it ([`writer_of`]).
    pub writer: BTreeMap<Row, OpId>,
}

impl<'c, 'a> Step<'c, 'a> {
    pub fn new(ctx: &'c Ctx<'a>, layer: Layer, part: Part, ops: &'c [PlacedOp]) -> Self {
        Step {
            ctx,
            layer,
            part,
            ops,
            writer: writer_of(ctx, ops),
        }
    }
    /// The step's first operation (what a layer-wide error cites).
    pub fn first_op(&self) -> Option<OpId> {
        self.ops.first().map(|o| o.op)
    }
    /// An error about operation `k` of this step.
    pub fn err(&self, k: Option<OpId>, msg: String) -> CertifyError {
        self.ctx.op_err(self.layer, self.part, k, msg)
    }
    /// An error about row `r`, citing the operation of this step that writes it (if any).
    pub fn row_err(&self, r: Row, msg: String) -> CertifyError {
        self.err(self.writer.get(&r).copied(), msg)
    }
    /// `row r (element)` for a row an operation of this step writes (`row r (division
    /// payload)` for a payload row); `None` for the other rows.
    pub fn written_name(&self, r: Row) -> Option<String> {
        let (p, ctx) = (self.ctx.p, self.ctx);
        let dst = p.ops[*self.writer.get(&r)?].kind.dst();
        let s = ctx.start[dst];
        Some(if r >= s && r < s + p.reg(dst).shape.size() {
            format!("row {r} ({})", ctx.elem_name(dst, r - s))
        } else {
            format!("row {r} (division payload)")
        })
    }
}
