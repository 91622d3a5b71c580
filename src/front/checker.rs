//! The state the checking phases share: what is known so far about every parameter and
//! register, the unrolled operations, and the diagnostics, with the helpers every phase uses
//! (constant evaluation in context, name resolution, reads in the unrolled order).
//!
//! Decisions where docs/LANGUAGE.md is silent:
//! - Integer contexts (dimensions, pins, `col`, loop bounds, `d`, `n`, integer `--set`) accept an
//!   integer-valued real (`4.0`). `n / 2` stays an integer when exact, else becomes a real.

use super::ast::{Expr, ExprKind, Ident};
use super::consts::{eval, EvalError, NameValue, Value};
use super::diag::{Diagnostic, Diagnostics, LineIndex};
use crate::ir::{self, Assumption, Builtin, Shape, Span};
use std::collections::{HashMap, HashSet};

pub(super) struct RegInfo {
    pub name: String,
    /// Known shape: declared, or inferred from the first write; `None` before the first write of
    /// an implicit register, or when the declaration was invalid.
    pub shape: Option<Shape>,
    pub builtin: Option<Builtin>,
    pub pinned: Option<usize>,
    pub span: Span,
    /// Written so far in the unrolled order (inputs count as written).
    pub written: bool,
    /// Read, assumed or output (decides which inputs go into the program).
    pub referenced: bool,
    /// Declaration was invalid: skip shape checks silently.
    pub poisoned: bool,
}

pub(super) struct ParamInfo {
    pub name: String,
    /// `None` when its definition failed (already reported).
    pub value: Option<Value>,
    /// Where the final value came from: (source index, span).
    pub origin: (usize, Span),
    pub name_span: Span,
}

/// A divisor seen while unrolling, checked against the assumptions once all are known.
pub(super) struct DivCheck {
    pub den: usize,
    pub span: Span,
    /// The unrolled iteration it was seen in (see [`Checker::iter_notes`]).
    pub notes: Vec<String>,
}

/// Everything the phases know so far about one program; `diags` collects every problem.
pub(super) struct Checker<'a> {
    pub text: &'a str,
    pub idx: LineIndex<'a>,
    pub diags: Diagnostics,
    pub params: Vec<ParamInfo>,
    pub param_index: HashMap<String, usize>,
    pub regs: Vec<RegInfo>,
    pub reg_index: HashMap<String, usize>,
    /// Span of the first textual write of each register name (for "first written at" notes).
    pub first_write: HashMap<String, Span>,
    /// Every name declared with `reg` or written by an operation.
    pub reg_names: HashSet<String>,
    pub loop_vars: Vec<(String, i64)>,
    pub ops: Vec<ir::Op>,
    pub assumptions: Vec<Assumption>,
    pub div_checks: Vec<DivCheck>,
    pub budget_used: usize,
    pub coefs_used: usize,
    pub aborted: bool,
    pub d: usize,
    pub n: usize,
}

/// True when some name in `e` satisfies `pred`.
pub(super) fn has_name(e: &Expr, pred: &dyn Fn(&str) -> bool) -> bool {
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

impl<'a> Checker<'a> {
    /// A checker for the program `text`, reporting into `diags` (which names its sources).
    pub(super) fn new(text: &'a str, diags: Diagnostics) -> Checker<'a> {
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

    /// Reports `d` (unless an unrolled copy of it was reported already).
    pub(super) fn err(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// Reports an evaluation error with `extra_notes`; a silent one was reported already.
    fn eval_err(&mut self, e: EvalError, extra_notes: &[String]) {
        if let EvalError::Diag(mut d) = e {
            d.notes.extend(extra_notes.iter().cloned());
            self.diags.push(*d);
        }
    }

    /// Notes naming the unrolled iteration, when inside a loop.
    pub(super) fn iter_notes(&self) -> Vec<String> {
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

    /// `d` with the notes of [`Checker::iter_notes`].
    pub(super) fn with_iter(&self, mut d: Diagnostic) -> Diagnostic {
        d.notes.extend(self.iter_notes());
        d
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

    /// The value of the constant expression `e` here (loop variables bound); `None` when it
    /// has none (reported).
    pub(super) fn eval(&mut self, e: &Expr) -> Option<Value> {
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

    /// [`Checker::eval`] in an integer context (`what` names it in the message): an integer or
    /// an integer-valued real.
    pub(super) fn eval_int(&mut self, e: &Expr, what: &str) -> Option<i64> {
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

    /// [`Checker::eval`] where a number is needed (`what` names it in the message).
    pub(super) fn eval_scalar(&mut self, e: &Expr, what: &str) -> Option<f64> {
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

    /// Checks a new parameter / register / loop-variable name against everything declared.
    pub(super) fn check_new_name(&mut self, name: &Ident, what: &str) -> bool {
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

    /// Registers `r` under its name; its id is its index in `regs`.
    pub(super) fn add_reg(&mut self, r: RegInfo) {
        self.reg_index.insert(r.name.clone(), self.regs.len());
        self.regs.push(r);
    }

    /// The source text at `span`, trimmed.
    pub(super) fn stmt_text(&self, span: Span) -> String {
        self.text
            .get(span.start..span.end)
            .unwrap_or("")
            .trim()
            .to_string()
    }

    /// The register named in a register position; `None` (reported) when `id` is not one.
    pub(super) fn resolve(&mut self, id: &Ident) -> Option<usize> {
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
    pub(super) fn read(&mut self, r: usize, span: Span) -> Option<Shape> {
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
}
