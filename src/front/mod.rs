//! The `.icl` front end: lexer, parser, syntax tree, constant evaluation and diagnostics.
//! [`crate::check`] turns the syntax tree into a checked, unrolled [`crate::ir::Program`].

pub mod ast;
pub mod consts;
pub mod diag;
pub mod lexer;
pub mod parser;

use diag::{Diagnostic, LineIndex};

/// Lexes and parses `text`; syntax errors are returned (all of them) in `errs`.
pub fn parse(text: &str, errs: &mut Vec<Diagnostic>) -> Vec<ast::Stmt> {
    let idx = LineIndex::new(text);
    let toks = lexer::lex(text, &idx, errs);
    let mut p = parser::Parser::new(&toks);
    let stmts = p.program();
    errs.append(&mut p.errs);
    stmts
}
