//! The `.icl` front end: from program text to a checked, unrolled [`ir::Program`].
//!
//! [`load_program`] (and [`load_file`], which reads the text first) is the one entry point. Its
//! phases, each in its own module (every problem of a phase is reported; later phases run when
//! earlier ones leave enough to work with):
//! 1. lex + parse ([`lexer`], [`parser`], into the syntax tree of [`ast`]; all syntax errors;
//!    stop if any);
//! 2. parameters in textual order, with `--set` overrides applied as each is reached (so later
//!    parameters see overridden values); `d`, `n` validated, stop if unusable (`params`);
//! 3. register declarations (shapes, pins) and implicit registers (`decls`);
//! 4. unrolling in program order, checking each operation instance: names, use before write
//!    (flow-sensitive over the unrolled order), shapes, column patterns (`unroll`, `ops`), aff
//!    coefficients (`aff`); unrolled copies of one diagnostic are reported once (the first
//!    iteration);
//! 5. whole-program checks: output, divisor assumptions, pinned-row collisions
//!    (`whole_program`);
//! 6. building the IR: registers renumbered, inputs the program never references dropped
//!    (`build`).
//!
//! Constant expressions are evaluated by [`consts`]; problems are [`diag::Diagnostic`]s with
//! typed spans, rendered to text only by [`diag::Diagnostics::render`]. The state shared by the
//! phases is the `Checker` of `checker`.
//!
//! Decisions where docs/LANGUAGE.md is silent (those of one phase are in its module):
//! - After syntax errors nothing else is checked (a broken statement would cause noise); after
//!   unusable `d`/`n` only parameter errors are reported.
//! - Limits (errors, not crashes): expression/block depth 64, [`MAX_UNROLL`] unrolled
//!   iterations plus ops, [`MAX_COEFS`] dense aff coefficient entries, register size ≤
//!   [`MAX_ROWS`], d ≤ 65534, n ≤ [`MAX_N`].

pub mod ast;
pub mod consts;
pub mod diag;
pub mod lexer;
pub mod parser;

mod aff;
mod build;
mod checker;
mod decls;
mod ops;
mod params;
mod unroll;
mod whole_program;

use crate::ir::{self, Span};
use ast::{Ident, Stmt};
use checker::Checker;
use diag::{Diagnostic, Diagnostics, LineIndex, SourceText};

/// Hidden rows available to pinned registers: rows must be below this.
pub const MAX_ROWS: usize = 65536;
/// Largest `n` accepted (the prompt has 2n+1 columns).
pub const MAX_N: i64 = 1 << 20;
/// Unrolling budget: loop iterations plus operations.
pub const MAX_UNROLL: usize = 200_000;
/// Budget of dense aff coefficient entries over the whole unrolled program.
pub const MAX_COEFS: usize = 1 << 25;

/// Lexes and parses `text`; syntax errors are returned (all of them) in `errs`.
pub fn parse(text: &str, errs: &mut Vec<Diagnostic>) -> Vec<ast::Stmt> {
    let idx = LineIndex::new(text);
    let toks = lexer::lex(text, &idx, errs);
    let mut p = parser::Parser::new(&toks);
    let stmts = p.program();
    errs.append(&mut p.errs);
    stmts
}

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
    let stmts = parse(text, &mut errs);
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

impl Checker<'_> {
    /// Phases 2 to 6 over the parsed `stmts`; `None` when a phase found a problem (reported).
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
        decls::collect_names(stmts, &mut reg_names, &mut dst_names);
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
}
