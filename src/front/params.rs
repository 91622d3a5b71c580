//! Parameters and `--set` overrides (phase 2): each `param` evaluated in textual order, with its
//! override applied where it is declared; then `d` and `n` validated.
//!
//! Decisions where docs/LANGUAGE.md is silent:
//! - A `--set` value is a constant expression without names; a real parameter accepts an
//!   integer; a vector/matrix parameter accepts any literal (its shape may change with `d`);
//!   setting one name twice is an error. Overrides apply where the parameter is declared, so
//!   later parameters see the new value.
//! - A parameter cannot be the identity `I`.

use super::ast::{Stmt, StmtKind};
use super::checker::{has_name, Checker, ParamInfo};
use super::consts::{eval, EvalError, NameValue, Value};
use super::diag::{Diagnostic, LineIndex};
use super::{lexer, parser, MAX_N};
use crate::ir::Span;
use std::collections::HashMap;

/// One `--set NAME=VALUE`, parsed; its text is source `source` of the diagnostics.
pub(super) struct Override {
    value: Option<Value>,
    source: usize,
    name_span: Span,
    value_span: Span,
    used: bool,
}

impl Checker<'_> {
    /// Parses every `--set` value (reporting each problem); a name set twice keeps the first.
    pub(super) fn parse_overrides(
        &mut self,
        overrides: &[(String, String)],
    ) -> HashMap<String, Override> {
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

    /// The value of `--set …=v` (source `source`; `v` starts at byte `off` of its text, whose
    /// lines `fidx` indexes): a constant expression without names. `None` when it has errors
    /// (each reported, located in the `--set` text).
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

    /// Every `param` in textual order, each with its override `ovs` applied; unused overrides
    /// reported; then `d` and `n`. `None` when `d` or `n` is unusable (stop: nothing else can
    /// be checked).
    pub(super) fn params_phase(
        &mut self,
        stmts: &[Stmt],
        mut ovs: HashMap<String, Override>,
    ) -> Option<()> {
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

    /// The required integer parameter `name`, in 1..=`max`; `None` (reported) otherwise.
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
}
