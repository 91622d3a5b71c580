//! Static checking: from `.icl` text to a checked, unrolled [`ir::Program`].
//!
//! Phases (every problem of a phase is reported; later phases run when earlier ones leave
//! enough to work with):
//! 1. lex + parse (all syntax errors; stop if any);
//! 2. parameters in textual order, with `--set` overrides applied as each is reached (so later
//!    parameters see overridden values); `d`, `n` validated (stop if unusable);
//! 3. register declarations (shapes, pins) and implicit registers (a name that is never declared
//!    but is the destination of some operation gets the shape of its first write);
//! 4. unrolling in program order, checking each operation instance: names, use before write
//!    (flow-sensitive over the unrolled order), shapes, column patterns, aff coefficients;
//!    unrolled copies of one diagnostic are reported once (the first iteration);
//! 5. whole-program checks: output, divisor assumptions, pinned-row collisions.
//!
//! Decisions where docs/LANGUAGE.md is silent:
//! - Implicit registers: a name never declared with `reg` but written by some operation is a
//!   work register whose shape is that of its first write (mov: the source; mul: the product;
//!   div: the numerator; aff: a non-scalar source under a scalar/`I` coefficient, else the rows
//!   of a matrix coefficient (a vector), else a literal bias's shape, else scalar when all is
//!   scalar; a bias-only `I` cannot be inferred). A name read but never written is unknown.
//! - `param`, `reg` and `output` are top level only; `assume` may sit in a loop (copies dedupe).
//! - Integer contexts (dimensions, pins, `col`, loop bounds, `d`, `n`, integer `--set`) accept an
//!   integer-valued real (`4.0`). `n / 2` stays an integer when exact, else becomes a real.
//! - Constants: `+ - * /`, unary minus, `^T` on literal matrices, `s * [..]`, `[..] / s`,
//!   `s * I`, tensor ± tensor of one shape; `[a, b]` is a vec, `[[..], [..]]` a matrix (rows).
//! - aff summands are split at top-level `+`/`-` (through unary minus and parentheses); each is
//!   a constant (bias), `REG`, `REG^T`, `COEF * REG`, `REG * c` or `REG / c` (c scalar).
//!   Repeated sources stay separate terms, in textual order. `I` as a coefficient needs
//!   |dst| = |src| (sizes, so it may reshape); a scalar coefficient needs equal shapes after
//!   transposition, or a scalar source (broadcast: a |dst|×1 column). A literal bias needs
//!   |dst| entries (any shape); a bias `I` needs a square dst.
//! - A `--set` value is a constant expression without names; a real parameter accepts an
//!   integer; a vector/matrix parameter accepts any literal (its shape may change with `d`);
//!   setting one name twice is an error. Overrides apply where the parameter is declared, so
//!   later parameters see the new value.
//! - Live range of a pinned register: from its first write to its last read or write (the
//!   output is read after the last op); two pinned registers collide when their rows overlap
//!   and these closed intervals intersect (touching at one op counts: conservative).
//! - Assumptions are global per register; the same (register, bound) is kept once. A divisor
//!   needs at least one assumption that excludes zero.
//! - After syntax errors nothing else is checked (a broken statement would cause noise); after
//!   unusable `d`/`n` only parameter errors are reported.
//! - Limits (errors, not crashes): expression/block depth 64, 200 000 unrolled iterations plus
//!   ops, 2^25 dense aff coefficient entries, register size ≤ 65536, d ≤ 65534, n ≤ 2^20.

use crate::front::ast::{
    AssumeAst, BinOp, Expr, ExprKind, Ident, PatternAst, ShapeAst, Stmt, StmtKind,
};
use crate::front::consts::{eval, EvalError, NameValue, Value};
use crate::front::diag::{Diagnostic, Diagnostics, LineIndex, SourceText};
use crate::front::{lexer, parser};
use crate::ir::{
    self, AffTerm, Assumption, Bound, Builtin, OpKind, Operand, ParamValue, Pattern, RegKind,
    Register, Shape, Span,
};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Hidden rows available to pinned registers: rows must be below this.
pub const MAX_ROWS: usize = 65536;
/// Largest `n` accepted (the prompt has 2n+1 columns).
pub const MAX_N: i64 = 1 << 20;
/// Unrolling budget: loop iterations plus operations.
pub const MAX_UNROLL: usize = 200_000;
/// Budget of dense aff coefficient entries over the whole unrolled program.
pub const MAX_COEFS: usize = 1 << 25;

/// Loads and checks a program given as text. `name` is used in `file:line:col`; `overrides`
/// are `--set NAME=VALUE` pairs as given on the command line.
pub fn load_program(
    name: &str,
    text: &str,
    overrides: &[(String, String)],
) -> Result<ir::Program, Diagnostics> {
    let mut sources = vec![SourceText {
        name: name.to_string(),
        text: text.to_string(),
    }];
    for (k, v) in overrides {
        sources.push(SourceText {
            name: "<command line>".to_string(),
            text: format!("--set {k}={v}"),
        });
    }
    let mut diags = Diagnostics::new(sources);
    let mut errs = Vec::new();
    let stmts = crate::front::parse(text, &mut errs);
    for e in errs {
        diags.push(e);
    }
    if !diags.is_empty() {
        diags.sort();
        return Err(diags);
    }
    let mut c = Checker::new(text, diags);
    let prog = c.run(name, &stmts, overrides);
    let mut diags = c.diags;
    match prog {
        Some(p) if diags.is_empty() => Ok(p),
        _ => {
            if diags.is_empty() {
                // Defensive: a phase stopped without saying why.
                diags.push(Diagnostic::new(
                    "internal",
                    Span::default(),
                    "program could not be checked",
                ));
            }
            diags.sort();
            Err(diags)
        }
    }
}

/// Reads `path` and loads it with [`load_program`] (the path, as given, names the file in
/// messages). An unreadable or non-UTF-8 file is a [`Diagnostics`] too.
pub fn load_file(
    path: &std::path::Path,
    overrides: &[(String, String)],
) -> Result<ir::Program, Diagnostics> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| {
        Diagnostics::bare("io", &name, format!("cannot read the program file: {e}"))
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Diagnostics::bare(
            "io",
            &name,
            format!(
                "the program file is not valid UTF-8 (at byte {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    load_program(&name, &text, overrides)
}

// ---------------------------------------------------------------------------------------------

struct RegInfo {
    name: String,
    /// Known shape: declared, or inferred from the first write; `None` before the first write of
    /// an implicit register, or when the declaration was invalid.
    shape: Option<Shape>,
    builtin: Option<Builtin>,
    pinned: Option<usize>,
    span: Span,
    /// Written so far in the unrolled order (inputs count as written).
    written: bool,
    /// Read, assumed or output (decides which inputs go into the program).
    referenced: bool,
    /// Declaration was invalid: skip shape checks silently.
    poisoned: bool,
}

struct ParamInfo {
    name: String,
    /// `None` when its definition failed (already reported).
    value: Option<Value>,
    /// Where the final value came from: (source index, span).
    origin: (usize, Span),
    name_span: Span,
}

struct Override {
    value: Option<Value>,
    source: usize,
    name_span: Span,
    value_span: Span,
    used: bool,
}

struct DivCheck {
    den: usize,
    span: Span,
    notes: Vec<String>,
}

struct Checker<'a> {
    text: &'a str,
    idx: LineIndex<'a>,
    diags: Diagnostics,
    params: Vec<ParamInfo>,
    param_index: HashMap<String, usize>,
    regs: Vec<RegInfo>,
    reg_index: HashMap<String, usize>,
    /// Span of the first textual write of each register name (for "first written at" notes).
    first_write: HashMap<String, Span>,
    /// Every name declared with `reg` or written by an operation.
    reg_names: HashSet<String>,
    loop_vars: Vec<(String, i64)>,
    ops: Vec<ir::Op>,
    assumptions: Vec<Assumption>,
    div_checks: Vec<DivCheck>,
    budget_used: usize,
    coefs_used: usize,
    aborted: bool,
    d: usize,
    n: usize,
}

fn has_name(e: &Expr, pred: &dyn Fn(&str) -> bool) -> bool {
    match &e.kind {
        ExprKind::Num(..) => false,
        ExprKind::Name(n) => pred(n),
        ExprKind::Neg(a) | ExprKind::Transpose(a) => has_name(a, pred),
        ExprKind::Bin(_, a, b) => has_name(a, pred) || has_name(b, pred),
        ExprKind::List(items) | ExprKind::Call(_, items) => items.iter().any(|i| has_name(i, pred)),
        ExprKind::Index(a, idx) => {
            has_name(a, pred) || idx.iter().flatten().any(|i| has_name(i, pred))
        }
    }
}

/// An index list `[i, :]` of an aff source (`None` is `:`).
type IndexList<'e> = Option<&'e [Option<Expr>]>;

/// An aff term before expansion: (sign, coefficient, register, transposed, span of the
/// summand, shape of the operand as written (after selection and transposition), selection).
/// The selection lists the flat (row-major, untransposed) element indices of the register that
/// the operand `S[i, :]` etc. picks, in the operand's row-major order, and the register's size.
type PreTerm = (
    f64,
    Coef,
    usize,
    bool,
    Span,
    Option<Shape>,
    Option<(Vec<usize>, usize)>,
);

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

/// `Name`, `Name[…]`, optionally `^T`: the register name, transposition flag, span, indices.
fn as_operand(e: &Expr) -> Option<(&str, bool, Span, IndexList<'_>)> {
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
    match &e.kind {
        ExprKind::Transpose(a) => base(a).map(|(n, i)| (n, true, e.span, i)),
        _ => base(e).map(|(n, i)| (n, false, e.span, i)),
    }
}

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

impl<'a> Checker<'a> {
    fn new(text: &'a str, diags: Diagnostics) -> Checker<'a> {
        Checker {
            text,
            idx: LineIndex::new(text),
            diags,
            params: Vec::new(),
            param_index: HashMap::new(),
            regs: Vec::new(),
            reg_index: HashMap::new(),
            first_write: HashMap::new(),
            reg_names: HashSet::new(),
            loop_vars: Vec::new(),
            ops: Vec::new(),
            assumptions: Vec::new(),
            div_checks: Vec::new(),
            budget_used: 0,
            coefs_used: 0,
            aborted: false,
            d: 0,
            n: 0,
        }
    }

    fn err(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn eval_err(&mut self, e: EvalError, extra_notes: &[String]) {
        if let EvalError::Diag(mut d) = e {
            d.notes.extend(extra_notes.iter().cloned());
            self.diags.push(*d);
        }
    }

    /// Notes naming the unrolled iteration, when inside a loop.
    fn iter_notes(&self) -> Vec<String> {
        if self.loop_vars.is_empty() {
            return Vec::new();
        }
        let vars: Vec<String> = self
            .loop_vars
            .iter()
            .map(|(n, v)| format!("{n} = {v}"))
            .collect();
        vec![format!(
            "in the unrolled iteration {} (first one with this error)",
            vars.join(", ")
        )]
    }

    fn with_iter(&self, mut d: Diagnostic) -> Diagnostic {
        d.notes.extend(self.iter_notes());
        d
    }

    fn location(&self, s: Span) -> String {
        format!("{}:{}", s.line, s.col)
    }

    /// Resolves a name in a constant expression: loop variables, parameters, `I`, registers.
    fn lookup(&self, name: &str) -> NameValue {
        if let Some((_, v)) = self.loop_vars.iter().rev().find(|(n, _)| n == name) {
            return NameValue::Const(Value::Int(*v));
        }
        if let Some(&i) = self.param_index.get(name) {
            return match &self.params[i].value {
                Some(v) => NameValue::Const(v.clone()),
                None => NameValue::Poisoned,
            };
        }
        if name == "I" {
            return NameValue::Const(Value::Identity(1.0));
        }
        if self.reg_index.contains_key(name)
            || self.reg_names.contains(name)
            || Builtin::from_name(name).is_some()
        {
            return NameValue::Register;
        }
        NameValue::Unknown
    }

    fn eval(&mut self, e: &Expr) -> Option<Value> {
        let r = {
            let lk = |n: &str| self.lookup(n);
            eval(e, &lk)
        };
        match r {
            Ok(v) => Some(v),
            Err(err) => {
                let notes = self.iter_notes();
                self.eval_err(err, &notes);
                None
            }
        }
    }

    fn eval_int(&mut self, e: &Expr, what: &str) -> Option<i64> {
        let v = self.eval(e)?;
        match v.as_int() {
            Some(i) => Some(i),
            None => {
                let d = Diagnostic::new(
                    "not-integer",
                    e.span,
                    format!("{what} must be an integer, found {}", v.describe()),
                )
                .label("expected an integer");
                let d = self.with_iter(d);
                self.err(d);
                None
            }
        }
    }

    fn eval_scalar(&mut self, e: &Expr, what: &str) -> Option<f64> {
        let v = self.eval(e)?;
        match v.scalar() {
            Some(x) => Some(x),
            None => {
                let d = Diagnostic::new(
                    "not-scalar-constant",
                    e.span,
                    format!("{what} must be a scalar constant, found {}", v.describe()),
                )
                .label("expected a number");
                let d = self.with_iter(d);
                self.err(d);
                None
            }
        }
    }

    // ----------------------------------------------------------------------------- driver

    fn run(
        &mut self,
        name: &str,
        stmts: &[Stmt],
        overrides: &[(String, String)],
    ) -> Option<ir::Program> {
        // Names of registers declared anywhere and of every operation destination: needed to
        // tell registers from constants in parameter expressions.
        let mut reg_names: Vec<Ident> = Vec::new();
        let mut dst_names: Vec<Ident> = Vec::new();
        collect_names(stmts, &mut reg_names, &mut dst_names);
        for id in &dst_names {
            self.first_write.entry(id.name.clone()).or_insert(id.span);
        }
        self.reg_names = reg_names
            .iter()
            .chain(&dst_names)
            .map(|i| i.name.clone())
            .collect();
        self.misplaced(stmts, false);

        let ovs = self.parse_overrides(overrides);
        self.params_phase(stmts, ovs)?;
        self.decl_phase(stmts, &dst_names);
        self.walk(stmts);
        if self.aborted {
            return None;
        }
        let output = self.output_phase(stmts);
        self.div_phase();
        self.pin_phase(output);
        if !self.diags.is_empty() {
            return None;
        }
        self.build(name, overrides, output?)
    }

    /// `param`, `reg` and `output` are top-level statements.
    fn misplaced(&mut self, stmts: &[Stmt], in_loop: bool) {
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

    // ----------------------------------------------------------------------------- params

    fn parse_overrides(&mut self, overrides: &[(String, String)]) -> HashMap<String, Override> {
        let mut out: HashMap<String, Override> = HashMap::new();
        for (i, (k, v)) in overrides.iter().enumerate() {
            let source = i + 1;
            let full = format!("--set {k}={v}");
            let fidx = LineIndex::new(&full);
            let name_span = fidx.span(6, 6 + k.len());
            let off = 6 + k.len() + 1;
            let value_span = fidx.span(off, full.len());
            if let Some(prev) = out.get(k) {
                let d = Diagnostic::new(
                    "duplicate-override",
                    name_span,
                    format!("parameter `{k}` is set twice on the command line"),
                )
                .label("second `--set` of this name")
                .note(format!(
                    "the first is argument {} of the `--set` list",
                    prev.source
                ))
                .in_source(source);
                self.err(d);
                continue;
            }
            let value = self.parse_override_value(v, off, &fidx, source);
            out.insert(
                k.clone(),
                Override {
                    value,
                    source,
                    name_span,
                    value_span,
                    used: false,
                },
            );
        }
        out
    }

    fn parse_override_value(
        &mut self,
        v: &str,
        off: usize,
        fidx: &LineIndex,
        source: usize,
    ) -> Option<Value> {
        let vidx = LineIndex::new(v);
        let mut errs = Vec::new();
        let mut toks = lexer::lex(v, &vidx, &mut errs);
        for t in &mut toks {
            t.span = fidx.span(t.span.start + off, t.span.end + off);
        }
        let remap = |mut d: Diagnostic| {
            d.span = fidx.span(d.span.start + off, d.span.end + off);
            d.code = "bad-override";
            d.message = format!("cannot parse the `--set` value: {}", d.message);
            d.in_source(source)
        };
        let mut p = parser::Parser::new(&toks);
        let e = if p.at_eof() {
            let sp = fidx.span(off, off);
            p.errs.push(
                Diagnostic::new(
                    "syntax",
                    sp,
                    "expected a number or a literal `[…]`, found nothing",
                )
                .label("empty value"),
            );
            None
        } else {
            p.expr().ok()
        };
        let trailing = e.is_some() && p.errs.is_empty() && !p.at_eof();
        let mut all: Vec<Diagnostic> = errs.into_iter().map(remap).collect();
        all.extend(p.errs.drain(..).map(|mut d| {
            d.code = "bad-override";
            d.message = format!("cannot parse the `--set` value: {}", d.message);
            d.in_source(source)
        }));
        if trailing {
            let sp = fidx.span(off, off + v.len());
            all.push(
                Diagnostic::new(
                    "bad-override",
                    sp,
                    "cannot parse the `--set` value: unexpected text after the value",
                )
                .label("expected a single number or literal `[…]`")
                .in_source(source),
            );
        }
        let had_errs = !all.is_empty();
        for d in all {
            self.err(d);
        }
        if had_errs {
            return None;
        }
        let e = e?;
        if has_name(&e, &|_| true) {
            self.err(
                Diagnostic::new(
                    "bad-override",
                    e.span,
                    "a `--set` value must be a number or a literal `[…]`, not a name",
                )
                .label("names are not allowed here")
                .in_source(source),
            );
            return None;
        }
        let lk = |_: &str| NameValue::Unknown;
        match eval(&e, &lk) {
            Ok(v) => Some(v),
            Err(EvalError::Diag(d)) => {
                self.err(d.in_source(source));
                None
            }
            Err(EvalError::Silent) => None,
        }
    }

    fn params_phase(&mut self, stmts: &[Stmt], mut ovs: HashMap<String, Override>) -> Option<()> {
        for s in stmts {
            let StmtKind::Param { name, value } = &s.kind else {
                continue;
            };
            if !self.check_new_name(name, "parameter") {
                continue;
            }
            let mut v = self.eval(value);
            if let Some(Value::Identity(_)) = v {
                self.err(
                    Diagnostic::new(
                        "bad-param",
                        value.span,
                        "a parameter cannot be the identity `I`",
                    )
                    .label("use `I` directly in an `aff`"),
                );
                v = None;
            }
            let mut origin = (0, value.span);
            if let Some(ov) = ovs.get_mut(&name.name) {
                ov.used = true;
                origin = (ov.source, ov.value_span);
                v = match (v, ov.value.clone()) {
                    (_, None) => None,
                    (None, Some(o)) => Some(o),
                    (Some(def), Some(o)) => {
                        self.override_value(&name.name, &def, o, ov.source, ov.value_span)
                    }
                };
            }
            let i = self.params.len();
            self.params.push(ParamInfo {
                name: name.name.clone(),
                value: v,
                origin,
                name_span: name.span,
            });
            self.param_index.insert(name.name.clone(), i);
        }
        // Unknown `--set` names.
        let known: Vec<String> = self.params.iter().map(|p| p.name.clone()).collect();
        let mut unused: Vec<(&String, &Override)> = ovs.iter().filter(|(_, o)| !o.used).collect();
        unused.sort_by_key(|(_, o)| o.source);
        for (k, o) in unused {
            self.err(
                Diagnostic::new(
                    "unknown-override",
                    o.name_span,
                    format!("`--set {k}`: the program has no parameter `{k}`"),
                )
                .label("unknown parameter")
                .note(format!(
                    "the program's parameters are: {}",
                    known.join(", ")
                ))
                .in_source(o.source),
            );
        }
        // d and n.
        let d = self.required_int("d", 65534);
        let n = self.required_int("n", MAX_N);
        self.d = d? as usize;
        self.n = n? as usize;
        Some(())
    }

    /// Applies an override to a parameter whose default is `def`: integer parameters take only
    /// integers; real parameters take any scalar; vector/matrix parameters take a literal `[…]`.
    fn override_value(
        &mut self,
        name: &str,
        def: &Value,
        o: Value,
        source: usize,
        span: Span,
    ) -> Option<Value> {
        let bad = |msg: String, label: &str| {
            Diagnostic::new("bad-override", span, msg)
                .label(label)
                .in_source(source)
        };
        match (def, &o) {
            (Value::Int(_), _) => match o.as_int() {
                Some(i) => Some(Value::Int(i)),
                None => {
                    let d = Diagnostic::new(
                        "int-override",
                        span,
                        format!(
                            "parameter `{name}` is an integer parameter; `--set` gave {}",
                            o.describe()
                        ),
                    )
                    .label("expected an integer")
                    .in_source(source);
                    self.err(d);
                    None
                }
            },
            (Value::Real(_), Value::Int(i)) => Some(Value::Real(*i as f64)),
            (Value::Real(_), Value::Real(_)) => Some(o),
            (Value::Tensor { .. }, Value::Tensor { .. }) => Some(o),
            (Value::Tensor { .. }, _) => {
                self.err(bad(
                    format!(
                        "parameter `{name}` is {}; `--set` gave {}",
                        def.describe(),
                        o.describe()
                    ),
                    "expected a literal `[…]`",
                ));
                None
            }
            _ => {
                self.err(bad(
                    format!(
                        "parameter `{name}` is {}; `--set` gave {}",
                        def.describe(),
                        o.describe()
                    ),
                    "expected a number",
                ));
                None
            }
        }
    }

    fn required_int(&mut self, name: &str, max: i64) -> Option<i64> {
        let Some(&i) = self.param_index.get(name) else {
            let sp = self.idx.span(0, 0);
            self.err(
                Diagnostic::new(
                    "missing-param",
                    sp,
                    format!("the program does not declare the required parameter `{name}`"),
                )
                .label(format!("expected `param {name} = …` (an integer ≥ 1)")),
            );
            return None;
        };
        let p = &self.params[i];
        let (source, span) = p.origin;
        let v = p.value.clone()?;
        match v.as_int() {
            Some(k) if (1..=max).contains(&k) => {
                self.params[i].value = Some(Value::Int(k));
                Some(k)
            }
            _ => {
                let d = Diagnostic::new(
                    "bad-param",
                    span,
                    format!(
                        "parameter `{name}` must be an integer in 1..={max}, found {}",
                        v.describe()
                    ),
                )
                .label("expected an integer ≥ 1")
                .in_source(source);
                self.err(d);
                None
            }
        }
    }

    /// Checks a new parameter / register / loop-variable name against everything declared.
    fn check_new_name(&mut self, name: &Ident, what: &str) -> bool {
        let n = name.name.as_str();
        let conflict: Option<(String, Option<Span>)> = if n == "I" {
            Some(("`I` is reserved for the identity".to_string(), None))
        } else if Builtin::from_name(n).is_some() {
            Some((format!("`{n}` is a built-in input"), None))
        } else if let Some(&i) = self.param_index.get(n) {
            Some((
                format!("`{n}` is already a parameter"),
                Some(self.params[i].name_span),
            ))
        } else if let Some(&i) = self.reg_index.get(n) {
            Some((
                format!("`{n}` is already a register"),
                Some(self.regs[i].span),
            ))
        } else if self.loop_vars.iter().any(|(v, _)| v == n) {
            Some((
                format!("`{n}` is already a loop variable of an enclosing loop"),
                None,
            ))
        } else {
            None
        };
        match conflict {
            None => true,
            Some((why, prev)) => {
                let mut d = Diagnostic::new(
                    "duplicate-declaration",
                    name.span,
                    format!("cannot declare {what} `{n}`: {why}"),
                )
                .label("duplicate name");
                if let Some(p) = prev {
                    d = d.also(p, "first declared here");
                }
                self.err(d);
                false
            }
        }
    }

    // ----------------------------------------------------------------------------- registers

    fn decl_phase(&mut self, stmts: &[Stmt], dst_names: &[Ident]) {
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
                match self.eval_int(pe, "a pinned row") {
                    Some(p) => {
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
                                    format!("register `{}` pinned to rows {p}..{end} (exclusive): {why}", name.name),
                                )
                                .label(format!("expected a first row in {}..={}", d + 1, MAX_ROWS as i64 - size)),
                            );
                            poisoned = true;
                        } else {
                            pinned = Some(p as usize);
                        }
                    }
                    None => poisoned = true,
                }
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

    fn add_reg(&mut self, r: RegInfo) {
        self.reg_index.insert(r.name.clone(), self.regs.len());
        self.regs.push(r);
    }

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

    // ----------------------------------------------------------------------------- unrolling

    fn spend(&mut self, span: Span) -> bool {
        if self.aborted {
            return false;
        }
        self.budget_used += 1;
        if self.budget_used > MAX_UNROLL {
            self.aborted = true;
            let d = self.with_iter(
                Diagnostic::new(
                    "too-large",
                    span,
                    format!("the program unrolls to more than {MAX_UNROLL} loop iterations and operations"),
                )
                .label("unrolling stopped here"),
            );
            self.err(d);
            return false;
        }
        true
    }

    fn walk(&mut self, stmts: &[Stmt]) {
        for s in stmts {
            if self.aborted {
                return;
            }
            match &s.kind {
                StmtKind::For {
                    var,
                    lo,
                    hi,
                    inclusive,
                    range_span,
                    body,
                } => self.for_loop(s, var, lo, hi, *inclusive, *range_span, body),
                StmtKind::Assume { reg, bound } => self.assume(s, reg, bound),
                StmtKind::Mov { .. }
                | StmtKind::Mul { .. }
                | StmtKind::Div { .. }
                | StmtKind::Aff { .. } => {
                    if self.spend(s.span) {
                        self.op(s);
                    }
                }
                StmtKind::Param { .. } | StmtKind::Reg { .. } | StmtKind::Output { .. } => {}
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn for_loop(
        &mut self,
        s: &Stmt,
        var: &Ident,
        lo: &Expr,
        hi: &Expr,
        inclusive: bool,
        range_span: Span,
        body: &[Stmt],
    ) {
        let ok_name = self.check_new_name(var, "loop variable");
        let lo_v = self.eval_int(lo, "a loop bound");
        let hi_v = self.eval_int(hi, "a loop bound");
        let (Some(a), Some(b)) = (lo_v, hi_v) else {
            return;
        };
        if !ok_name {
            return;
        }
        let last = if inclusive { Some(b) } else { b.checked_sub(1) };
        let empty = match last {
            Some(l) => l < a,
            None => true,
        };
        if empty {
            let range = if inclusive {
                format!("{a}..={b}")
            } else {
                format!("{a}..{b}")
            };
            let d = self.with_iter(
                Diagnostic::new(
                    "empty-range",
                    range_span,
                    format!("loop range {range} is empty"),
                )
                .label("expected LO ≤ HI (LO < HI for `..`)"),
            );
            self.err(d);
            return;
        }
        let last = last.unwrap_or(a);
        let mut v = a;
        loop {
            if !self.spend(s.span) {
                return;
            }
            self.loop_vars.push((var.name.clone(), v));
            self.walk(body);
            self.loop_vars.pop();
            if v >= last || self.aborted {
                break;
            }
            v += 1;
        }
    }

    fn assume(&mut self, s: &Stmt, reg: &Ident, bound: &AssumeAst) {
        let r = self.resolve(reg);
        let b = match bound {
            AssumeAst::In(lo, hi) => {
                let lo_v = self.eval_scalar(lo, "an assumed bound");
                let hi_v = self.eval_scalar(hi, "an assumed bound");
                let (Some(l), Some(h)) = (lo_v, hi_v) else {
                    return;
                };
                if l > h {
                    let d = self.with_iter(
                        Diagnostic::new(
                            "empty-assumption",
                            Span {
                                end: hi.span.end,
                                ..lo.span
                            },
                            format!("assumed range [{l}, {h}] is empty"),
                        )
                        .label("expected LO ≤ HI"),
                    );
                    self.err(d);
                    return;
                }
                Bound::Range { lo: l, hi: h }
            }
            AssumeAst::Ge(lo) => Bound::Range {
                lo: self.eval_scalar(lo, "an assumed bound").unwrap_or(f64::NAN),
                hi: f64::INFINITY,
            },
            AssumeAst::Le(hi) => Bound::Range {
                lo: f64::NEG_INFINITY,
                hi: self.eval_scalar(hi, "an assumed bound").unwrap_or(f64::NAN),
            },
            AssumeAst::AbsGe(lo) => Bound::AbsAtLeast {
                lo: self.eval_scalar(lo, "an assumed bound").unwrap_or(f64::NAN),
            },
        };
        let has_nan = match b {
            Bound::Range { lo, hi } => lo.is_nan() || hi.is_nan(),
            Bound::AbsAtLeast { lo } => lo.is_nan(),
        };
        let Some(r) = r else { return };
        if has_nan {
            return;
        }
        self.regs[r].referenced = true;
        if self.assumptions.iter().any(|a| a.reg == r && a.bound == b) {
            return;
        }
        let text = self.stmt_text(s.span);
        self.assumptions.push(Assumption {
            reg: r,
            bound: b,
            span: s.span,
            text,
        });
    }

    fn stmt_text(&self, span: Span) -> String {
        self.text
            .get(span.start..span.end)
            .unwrap_or("")
            .trim()
            .to_string()
    }

    /// A register named in a register position.
    fn resolve(&mut self, id: &Ident) -> Option<usize> {
        if let Some(&r) = self.reg_index.get(&id.name) {
            return Some(r);
        }
        let what = if self.param_index.contains_key(&id.name) {
            format!("`{}` is a parameter, not a register", id.name)
        } else if self.loop_vars.iter().any(|(n, _)| *n == id.name) {
            format!("`{}` is a loop variable, not a register", id.name)
        } else if id.name == "I" {
            "`I` is the identity, not a register".to_string()
        } else {
            format!("unknown register `{}`", id.name)
        };
        let d = Diagnostic::new("unknown-register", id.span, what)
            .label("not declared with `reg`, not a built-in input, and never written");
        self.err(d);
        None
    }

    /// A read of register `r` at `span`: must be written before (in the unrolled order).
    /// Returns its shape when known.
    fn read(&mut self, r: usize, span: Span) -> Option<Shape> {
        self.regs[r].referenced = true;
        if !self.regs[r].written {
            let name = self.regs[r].name.clone();
            let mut d = Diagnostic::new(
                "use-before-write",
                span,
                format!("register `{name}` is read before it is written"),
            )
            .label("read here");
            match self.first_write.get(&name).copied() {
                Some(w) => d = d.also(w, "first written here (later in the unrolled order)"),
                None => d = d.note(format!("no operation writes `{name}`")),
            }
            let d = self.with_iter(d);
            self.err(d);
            return None;
        }
        if self.regs[r].poisoned {
            return None;
        }
        self.regs[r].shape
    }

    /// The destination of an operation: a work register.
    fn write_target(&mut self, id: &Ident) -> Option<usize> {
        if Builtin::from_name(&id.name).is_some() {
            self.err(
                Diagnostic::new(
                    "write-to-input",
                    id.span,
                    format!("cannot write to the built-in input `{}`", id.name),
                )
                .label("inputs are read-only"),
            );
            return None;
        }
        if self.param_index.contains_key(&id.name) || id.name == "I" {
            self.err(
                Diagnostic::new(
                    "write-to-input",
                    id.span,
                    format!(
                        "cannot write to `{}`: it is a constant, not a register",
                        id.name
                    ),
                )
                .label("constants are read-only"),
            );
            return None;
        }
        self.reg_index.get(&id.name).copied()
    }

    /// Records (or checks) the shape of `dst` for this write; `None` when it cannot be known.
    fn dst_shape(
        &mut self,
        dst: usize,
        want: Option<Shape>,
        op: &str,
        span: Span,
        why: &str,
    ) -> Option<Shape> {
        let have = if self.regs[dst].poisoned {
            return None;
        } else {
            self.regs[dst].shape
        };
        match (have, want) {
            (None, Some(w)) => {
                self.regs[dst].shape = Some(w);
                Some(w)
            }
            (Some(h), Some(w)) if h != w => {
                let name = self.regs[dst].name.clone();
                let d = self.with_iter(
                    Diagnostic::new(
                        "shape-mismatch",
                        span,
                        format!("shape mismatch in {op}: `{name}` is {h} but {why} is {w}"),
                    )
                    .label(format!("expected {h}")),
                );
                self.err(d);
                None
            }
            (h, _) => h,
        }
    }

    fn push_op(&mut self, s: &Stmt, kind: OpKind) {
        let text = self.stmt_text(s.span);
        self.ops.push(ir::Op {
            kind,
            span: s.span,
            text,
            iteration: self.loop_vars.clone(),
        });
    }

    fn finish_write(&mut self, dst: Option<usize>) {
        if let Some(d) = dst {
            self.regs[d].written = true;
        }
    }

    fn op(&mut self, s: &Stmt) {
        match &s.kind {
            StmtKind::Mov {
                dst,
                src,
                pattern,
                pattern_span,
            } => {
                let src_r = self.resolve(src);
                let src_shape = src_r.and_then(|r| self.read(r, src.span));
                let dst_r = self.write_target(dst);
                let pat = match pattern {
                    PatternAst::Prev => Some(Pattern::Prev),
                    PatternAst::Mean(set) => Some(Pattern::Mean(*set)),
                    PatternAst::Col(e) => match self.eval_int(e, "a column") {
                        Some(c) if c >= 0 && c <= 2 * self.n as i64 => {
                            Some(Pattern::Col(c as usize))
                        }
                        Some(c) => {
                            let last = 2 * self.n;
                            let d = self.with_iter(
                                Diagnostic::new(
                                    "col-range",
                                    *pattern_span,
                                    format!("col({c}) is not a column of the prompt: columns are 0..={last} (T = 2n+1 = {})", last + 1),
                                )
                                .label(if c < 0 { "negative column" } else { "beyond the last column" }),
                            );
                            self.err(d);
                            None
                        }
                        None => None,
                    },
                };
                let mut ok = src_r.is_some() && dst_r.is_some() && pat.is_some();
                if let (Some(d), Some(ss)) = (dst_r, src_shape) {
                    let why = format!("the source `{}`", src.name);
                    ok &= self.dst_shape(d, Some(ss), "mov", s.span, &why).is_some();
                } else {
                    ok = false;
                }
                if let (true, Some(d), Some(sr), Some(p)) = (ok, dst_r, src_r, pat) {
                    self.push_op(
                        s,
                        OpKind::Mov {
                            dst: d,
                            src: sr,
                            pattern: p,
                        },
                    );
                }
                self.finish_write(dst_r);
            }
            StmtKind::Mul { dst, a, b } => {
                let ar = self.resolve(&a.reg);
                let br = self.resolve(&b.reg);
                let ash = ar.and_then(|r| self.read(r, a.reg.span)).map(|sh| {
                    if a.transposed {
                        sh.transposed()
                    } else {
                        sh
                    }
                });
                let bsh = br.and_then(|r| self.read(r, b.reg.span)).map(|sh| {
                    if b.transposed {
                        sh.transposed()
                    } else {
                        sh
                    }
                });
                let dst_r = self.write_target(dst);
                let mut ok = ar.is_some() && br.is_some() && dst_r.is_some();
                match (ash, bsh) {
                    (Some(x), Some(y)) if x.cols != y.rows => {
                        let at = self.stmt_text(a.span);
                        let bt = self.stmt_text(b.span);
                        let d = self.with_iter(
                            Diagnostic::new(
                                "shape-mismatch",
                                Span { end: b.span.end, ..a.span },
                                format!("shape mismatch in mul: `{at}` is {x} and `{bt}` is {y}; (a×b)·(b×c) needs {} = {}", x.cols, y.rows),
                            )
                            .label("inner dimensions differ"),
                        );
                        self.err(d);
                        ok = false;
                    }
                    (Some(x), Some(y)) => {
                        if let Some(d) = dst_r {
                            let why = format!(
                                "the product ({}×{})·({}×{})",
                                x.rows, x.cols, y.rows, y.cols
                            );
                            ok &= self
                                .dst_shape(d, Some(Shape::mat(x.rows, y.cols)), "mul", s.span, &why)
                                .is_some();
                        }
                    }
                    _ => ok = false,
                }
                if let (true, Some(d), Some(ar), Some(br)) = (ok, dst_r, ar, br) {
                    self.push_op(
                        s,
                        OpKind::Mul {
                            dst: d,
                            a: Operand {
                                reg: ar,
                                transposed: a.transposed,
                            },
                            b: Operand {
                                reg: br,
                                transposed: b.transposed,
                            },
                        },
                    );
                }
                self.finish_write(dst_r);
            }
            StmtKind::Div { dst, num, den } => {
                let nr = self.resolve(num);
                let dr = self.resolve(den);
                let nsh = nr.and_then(|r| self.read(r, num.span));
                let dsh = dr.and_then(|r| self.read(r, den.span));
                let dst_r = self.write_target(dst);
                let mut ok = nr.is_some()
                    && dr.is_some()
                    && dst_r.is_some()
                    && nsh.is_some()
                    && dsh.is_some();
                if let Some(ds) = dsh {
                    if !ds.is_scalar() {
                        let d = self.with_iter(
                            Diagnostic::new(
                                "non-scalar-divisor",
                                den.span,
                                format!("divisor `{}` is {ds}, not a scalar", den.name),
                            )
                            .label("div divides by the absolute value of a scalar register"),
                        );
                        self.err(d);
                        ok = false;
                    }
                }
                if let (Some(d), Some(ns)) = (dst_r, nsh) {
                    let why = format!("the numerator `{}`", num.name);
                    ok &= self.dst_shape(d, Some(ns), "div", s.span, &why).is_some();
                }
                if let Some(dr) = dr {
                    let notes = self.iter_notes();
                    self.div_checks.push(DivCheck {
                        den: dr,
                        span: den.span,
                        notes,
                    });
                }
                if let (true, Some(d), Some(nr), Some(dr)) = (ok, dst_r, nr, dr) {
                    self.push_op(
                        s,
                        OpKind::Div {
                            dst: d,
                            num: nr,
                            den: dr,
                        },
                    );
                }
                self.finish_write(dst_r);
            }
            StmtKind::Aff { dst, rhs } => self.aff(s, dst, rhs),
            _ => {}
        }
    }

    fn aff(&mut self, s: &Stmt, dst: &Ident, rhs: &Expr) {
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
        // (sign, coefficient, register, transposed, span of the summand)
        let mut terms: Vec<PreTerm> = Vec::new();
        let mut biases: Vec<(f64, Coef, Span)> = Vec::new();
        let mut ok = true;
        for (sign, e) in parts {
            // `e(k)`: a unit-vector bias, sized once the destination's shape is known.
            if let ExprKind::Call(f, args) = &e.kind {
                if f.name == "e" && !has_name(e, &is_reg) {
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
                        ok = false;
                    } else {
                        match self.eval_int(&args[0], "the index of `e(k)`") {
                            Some(k) => biases.push((sign, Coef::Unit(k), args[0].span)),
                            None => ok = false,
                        }
                    }
                    continue;
                }
            }
            if !has_name(e, &is_reg) {
                match self.eval(e).map(to_coef) {
                    Some(Some(c)) => biases.push((sign, c, e.span)),
                    Some(None) => {}
                    None => ok = false,
                }
                continue;
            }
            // Forms: REG, REG^T, COEF * REG, REG * c, REG / c (COEF, c constant); REG may be
            // indexed (`S[i, :]`).
            #[allow(clippy::type_complexity)]
            let (coef_expr, opnd, inverse): (
                Option<&Expr>,
                Option<(&str, bool, Span, IndexList)>,
                bool,
            ) = match &e.kind {
                _ if as_operand(e).is_some() => (None, as_operand(e), false),
                ExprKind::Bin(BinOp::Mul, c, r)
                    if !has_name(c, &is_reg) && as_operand(r).is_some() =>
                {
                    (Some(&**c), as_operand(r), false)
                }
                ExprKind::Bin(BinOp::Mul, r, c)
                    if !has_name(c, &is_reg) && as_operand(r).is_some() =>
                {
                    (Some(&**c), as_operand(r), false)
                }
                ExprKind::Bin(BinOp::Div, r, c)
                    if !has_name(c, &is_reg) && as_operand(r).is_some() =>
                {
                    (Some(&**c), as_operand(r), true)
                }
                _ => (None, None, false),
            };
            let Some((rname, transposed, _, index)) = opnd else {
                let mut d = Diagnostic::new(
                    "bad-aff-term",
                    e.span,
                    "an aff term must be `COEF * REGISTER` with a constant COEF",
                )
                .label("not a constant multiple of one register");
                if let ExprKind::Bin(BinOp::Mul | BinOp::Div, a, b) = &e.kind {
                    if has_name(a, &is_reg) && has_name(b, &is_reg) {
                        d = d.note("products of registers need `mul`");
                    }
                }
                let d = self.with_iter(d);
                self.err(d);
                ok = false;
                continue;
            };
            let coef = match coef_expr {
                None => Some(Coef::Scalar(1.0)),
                Some(ce) => match self.eval(ce) {
                    None => None,
                    Some(v) => {
                        let c = to_coef(v.clone());
                        match (c, inverse) {
                            (Some(Coef::Scalar(0.0)), true) => {
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
                            (Some(Coef::Scalar(x)), true) => Some(Coef::Scalar(1.0 / x)),
                            (Some(Coef::Scalar(x)), false) => Some(Coef::Scalar(x)),
                            (Some(c), false) if std::ptr::eq(ce, coef_left(e)) => Some(c),
                            (_, _) => {
                                let d = self.with_iter(
                                    Diagnostic::new(
                                        "bad-aff-term",
                                        ce.span,
                                        format!("a coefficient after the register must be a scalar, found {}", v.describe()),
                                    )
                                    .label("write matrix coefficients before the register: `W * r`"),
                                );
                                self.err(d);
                                None
                            }
                        }
                    }
                },
            };
            let r = self.reg_index.get(rname).copied();
            let rsh = r.and_then(|r| self.read(r, e.span));
            // Element selection: the operand's shape and the flat indices it picks.
            let (sh, sel) = match (rsh, index) {
                (Some(rsh), Some(idx)) => match self.select(rname, rsh, idx, e.span) {
                    Some((sh, flat)) => (Some(sh), Some((flat, rsh.size()))),
                    None => {
                        ok = false;
                        (None, None)
                    }
                },
                (rsh, _) => (rsh, None),
            };
            let sh = sh.map(|sh| if transposed { sh.transposed() } else { sh });
            match (coef, r) {
                (Some(c), Some(r)) => terms.push((sign, c, r, transposed, e.span, sh, sel)),
                _ => ok = false,
            }
        }
        let dst_r = self.write_target(dst);
        let Some(dr) = dst_r else { return };
        if !ok || terms.iter().any(|t| t.5.is_none()) {
            self.finish_write(dst_r);
            return;
        }
        // Infer the destination shape on its first write (implicit registers).
        let inferred = self.infer_aff_shape(&terms, &biases);
        let dsh = if self.regs[dr].poisoned {
            None
        } else if let Some(sh) = self.regs[dr].shape {
            Some(sh)
        } else if let Some(sh) = inferred {
            self.regs[dr].shape = Some(sh);
            Some(sh)
        } else {
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
        };
        let Some(dsh) = dsh else {
            self.finish_write(dst_r);
            return;
        };
        let dsize = dsh.size();
        let mut out_terms = Vec::new();
        for (sign, c, r, transposed, span, sh, sel) in &terms {
            let ssh = sh.unwrap_or(Shape::SCALAR);
            let ssize = ssh.size();
            // Budget the dense |dst|×|src| coefficient (src: the whole register) before
            // allocating it.
            let need = dsize.saturating_mul(sel.as_ref().map_or(ssize, |s| s.1));
            if self.coefs_used.saturating_add(need) > MAX_COEFS {
                let d = self.with_iter(
                    Diagnostic::new("too-large", s.span, format!("the dense aff coefficients exceed {MAX_COEFS} entries over the program"))
                        .label("unrolling stopped here"),
                );
                self.err(d);
                self.aborted = true;
                return;
            }
            let name = &self.regs[*r].name;
            let src_txt = if sel.is_some() {
                format!("{name}[…]{}", if *transposed { "^T" } else { "" })
            } else {
                format!("{name}{}", if *transposed { "^T" } else { "" })
            };
            let coef: Option<Vec<f64>> = match c {
                Coef::Scalar(x) => {
                    if ssh == dsh {
                        // x·I over the flattened source: coef[i·|src| + i] = x.
                        Some(diag_matrix(dsize, x * sign))
                    } else if ssh.is_scalar() {
                        // Broadcast: every element of dst gets x·src (a |dst|×1 column).
                        Some(vec![x * sign; dsize])
                    } else {
                        let d = self.with_iter(
                            Diagnostic::new(
                                "shape-mismatch",
                                *span,
                                format!("shape mismatch in aff: a scalar coefficient needs `{src_txt}` ({ssh}) to have the shape of `{}` ({dsh}) or to be a scalar", dst.name),
                            )
                            .label("source shape differs from the destination"),
                        );
                        self.err(d);
                        None
                    }
                }
                Coef::Identity(x) => {
                    if ssize == dsize {
                        Some(diag_matrix(dsize, x * sign))
                    } else {
                        let d = self.with_iter(
                            Diagnostic::new(
                                "shape-mismatch",
                                *span,
                                format!("shape mismatch in aff: `I` needs |{}| = |{src_txt}|, found {dsize} and {ssize} elements", dst.name),
                            )
                            .label("identity of mismatched sizes"),
                        );
                        self.err(d);
                        None
                    }
                }
                Coef::Matrix { rows, cols, data } => {
                    if *rows == dsize && *cols == ssize {
                        Some(data.iter().map(|v| v * sign).collect())
                    } else {
                        let mut d = Diagnostic::new(
                            "shape-mismatch",
                            *span,
                            format!(
                                "shape mismatch in aff: coefficient is {rows}×{cols} but `{}` ← `{src_txt}` needs |dst|×|src| = {dsize}×{ssize}",
                                dst.name
                            ),
                        )
                        .label("coefficient has the wrong shape");
                        if *rows == ssize && *cols == dsize {
                            d = d.note("the transposed coefficient fits: write `W^T`");
                        }
                        let d = self.with_iter(d);
                        self.err(d);
                        None
                    }
                }
                Coef::Unit(_) => None, // only ever a bias (never built for a term)
            };
            // A selection is the constant linear map "pick these elements": the |dst|×|sel|
            // coefficient C becomes the |dst|×|reg| matrix whose column flat[s] is C's column s
            // (other columns 0), over the whole, untransposed register. Transposing a selected
            // row/column/element does not change its row-major flattening, so only the shape
            // rules above saw the transposition.
            let (coef, src_transposed) = match (coef, sel) {
                (Some(c), Some((flat, rsize))) => {
                    let mut full = vec![0.0; dsize * rsize];
                    for i in 0..dsize {
                        for (s, &f) in flat.iter().enumerate() {
                            full[i * rsize + f] += c[i * ssize + s];
                        }
                    }
                    (Some(full), false)
                }
                (c, _) => (c, *transposed),
            };
            match coef {
                Some(coef) => {
                    self.coefs_used = self.coefs_used.saturating_add(coef.len());
                    out_terms.push(AffTerm {
                        src: Operand {
                            reg: *r,
                            transposed: src_transposed,
                        },
                        coef,
                    });
                }
                None => ok = false,
            }
        }
        let mut bias = vec![0.0; dsize];
        for (sign, c, span) in &biases {
            match c {
                Coef::Scalar(x) => bias.iter_mut().for_each(|b| *b += sign * x),
                Coef::Identity(x) if dsh.rows == dsh.cols => {
                    for i in 0..dsh.rows {
                        bias[i * dsh.cols + i] += sign * x;
                    }
                }
                Coef::Identity(_) => {
                    let d = self.with_iter(
                        Diagnostic::new("shape-mismatch", *span, format!("shape mismatch in aff: bias `I` needs a square destination, `{}` is {dsh}", dst.name))
                            .label("identity bias"),
                    );
                    self.err(d);
                    ok = false;
                }
                // e(k) = the k-th unit vector (0-based) of the vector destination.
                Coef::Unit(k) if dsh.cols == 1 && *k >= 0 && (*k as usize) < dsh.rows => {
                    bias[*k as usize] += sign;
                }
                Coef::Unit(k) if dsh.cols == 1 => {
                    let d = self.with_iter(
                        Diagnostic::new(
                            "index-range",
                            *span,
                            format!(
                                "index out of range: `e({k})` needs 0 <= k < {} (the size of `{}`)",
                                dsh.rows, dst.name
                            ),
                        )
                        .label(format!("k = {k}")),
                    );
                    self.err(d);
                    ok = false;
                }
                Coef::Unit(_) => {
                    let d = self.with_iter(
                        Diagnostic::new("shape-mismatch", *span, format!("shape mismatch in aff: the unit vector `e(k)` needs a vector destination, `{}` is {dsh}", dst.name))
                            .label("unit-vector bias"),
                    );
                    self.err(d);
                    ok = false;
                }
                Coef::Matrix { rows, cols, data } if rows * cols == dsize => {
                    bias.iter_mut().zip(data).for_each(|(b, v)| *b += sign * v);
                }
                Coef::Matrix { rows, cols, .. } => {
                    let d = self.with_iter(
                        Diagnostic::new(
                            "shape-mismatch",
                            *span,
                            format!("shape mismatch in aff: bias has {} entries ({rows}×{cols}), `{}` has {dsize}", rows * cols, dst.name),
                        )
                        .label("bias size differs from the destination"),
                    );
                    self.err(d);
                    ok = false;
                }
            }
        }
        if ok {
            self.push_op(
                s,
                OpKind::Aff {
                    dst: dr,
                    terms: out_terms,
                    bias,
                },
            );
        }
        self.finish_write(dst_r);
    }

    /// Shape of an implicit aff destination: a non-scalar source under a scalar or identity
    /// coefficient; else the rows of a matrix coefficient (a vector); else the bias's shape;
    /// else scalar when everything is scalar.
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

    fn infer_aff_shape(&self, terms: &[PreTerm], biases: &[(f64, Coef, Span)]) -> Option<Shape> {
        for t in terms {
            if let (Coef::Scalar(_) | Coef::Identity(_), Some(sh)) = (&t.1, t.5) {
                if !sh.is_scalar() {
                    return Some(sh);
                }
            }
        }
        for t in terms {
            if let Coef::Matrix { rows, .. } = &t.1 {
                return Some(Shape::vec(*rows));
            }
        }
        for b in biases {
            if let Coef::Matrix { rows, cols, .. } = &b.1 {
                return Some(Shape::mat(*rows, *cols));
            }
        }
        let all_scalar = terms.iter().all(|t| matches!(t.1, Coef::Scalar(_)))
            && biases.iter().all(|b| matches!(b.1, Coef::Scalar(_)));
        all_scalar.then_some(Shape::SCALAR)
    }

    // ----------------------------------------------------------------------------- whole program

    fn output_phase(&mut self, stmts: &[Stmt]) -> Option<usize> {
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

    fn div_phase(&mut self) {
        let checks = std::mem::take(&mut self.div_checks);
        for c in checks {
            let ok = self
                .assumptions
                .iter()
                .any(|a| a.reg == c.den && a.bound.excludes_zero());
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
                for a in self.assumptions.iter().filter(|a| a.reg == c.den) {
                    d = d.also(a.span, "this assumption allows 0");
                }
                d.notes.extend(c.notes);
                self.err(d);
            }
        }
    }

    /// Live range of each register over the unrolled ops: first write to last access
    /// (a read, a later write, or the output read after the last op).
    fn pin_phase(&mut self, output: Option<usize>) {
        let pinned: Vec<usize> = (0..self.regs.len())
            .filter(|&r| self.regs[r].pinned.is_some() && self.regs[r].shape.is_some())
            .collect();
        if pinned.len() < 2 {
            return;
        }
        let mut live: HashMap<usize, (usize, usize)> = HashMap::new();
        for (i, op) in self.ops.iter().enumerate() {
            for r in op.kind.reads() {
                if let Some(e) = live.get_mut(&r) {
                    e.1 = i;
                }
            }
            let dst = op.kind.dst();
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
                        Some(op) => format!("op #{i} ({})", self.location(op.span)),
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

    fn build(
        &mut self,
        name: &str,
        overrides: &[(String, String)],
        output: usize,
    ) -> Option<ir::Program> {
        // New ids: the referenced inputs (in Builtin::ALL order), then every work register.
        let mut map = vec![usize::MAX; self.regs.len()];
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
        let m = |r: usize| map[r];
        let mo = |o: Operand| Operand {
            reg: map[o.reg],
            transposed: o.transposed,
        };
        let ops = self
            .ops
            .drain(..)
            .map(|mut op| {
                op.kind = match op.kind {
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
                };
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
        Some(ir::Program {
            source: ir::Source {
                name: name.to_string(),
                text: self.text.to_string(),
            },
            params,
            overrides: overrides.to_vec(),
            d: self.d,
            n: self.n,
            registers,
            ops,
            assumptions,
            output: m(output),
        })
    }
}

/// The left factor of `COEF * REG` (so a matrix coefficient is accepted only on the left).
fn coef_left(e: &Expr) -> *const Expr {
    match &e.kind {
        ExprKind::Bin(BinOp::Mul, c, _) => &**c as *const Expr,
        _ => std::ptr::null(),
    }
}

fn diag_matrix(n: usize, x: f64) -> Vec<f64> {
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        m[i * n + i] = x;
    }
    m
}

fn to_coef(v: Value) -> Option<Coef> {
    Some(match v {
        Value::Int(i) => Coef::Scalar(i as f64),
        Value::Real(r) => Coef::Scalar(r),
        Value::Identity(s) => Coef::Identity(s),
        Value::Tensor { rows, cols, data } => Coef::Matrix { rows, cols, data },
    })
}

fn collect_names(stmts: &[Stmt], regs: &mut Vec<Ident>, dsts: &mut Vec<Ident>) {
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
