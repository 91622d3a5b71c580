//! Recursive-descent parser: tokens to [`ast::Stmt`]s.
//!
//! Grammar (one statement per line; `{ … }` blocks span lines):
//! ```text
//! program  := (stmt? NEWLINE)* EOF
//! stmt     := 'param' IDENT '=' expr
//!           | 'reg' IDENT ':' shape ('@' expr)?
//!           | 'assume' ( IDENT ('in' '[' expr ',' expr ']' | '>=' expr | '<=' expr)
//!                      | '|' IDENT '|' '>=' expr )
//!           | 'mov' IDENT '<-' IDENT 'from' ('prev' | 'col' '(' expr ')' | 'mean' '(' ('y'|'x'|'all') ')')
//!           | 'mul' IDENT '<-' operand '*' operand
//!           | 'div' IDENT '<-' IDENT '/' '|' IDENT '|'
//!           | 'aff' IDENT '<-' expr
//!           | 'for' IDENT 'in' expr ('..=' | '..') expr '{' (stmt? NEWLINE)* stmt? '}'
//!           | 'output' IDENT
//! shape    := 'scalar' | 'vec' '[' expr ']' | 'mat' '[' expr ',' expr ']'
//! operand  := IDENT ('^' 'T')?
//! expr     := term (('+'|'-') term)*
//! term     := unary (('*'|'/') unary)*
//! unary    := ('-'|'+') unary | postfix
//! postfix  := primary ('^' 'T')*
//! primary  := NUMBER | IDENT | '(' expr ')' | '[' expr (',' expr)* ','? ']'
//! ```
//! On a syntax error the parser reports "expected …, found …" and skips to the end of the line
//! (past any `{ … }` block opened on it), then continues, so every syntax error is reported.

use super::ast::*;
use super::diag::Diagnostic;
use super::lexer::{Tok, Token};
use crate::ir::{ColumnSet, Span};

/// Keywords that cannot name a parameter, register or loop variable.
pub const KEYWORDS: [&str; 11] = [
    "param", "reg", "assume", "output", "for", "in", "from", "mov", "mul", "div", "aff",
];

/// Deepest nesting of expressions and blocks accepted (deeper input is an error, not a stack
/// overflow).
pub const MAX_DEPTH: usize = 64;

pub struct Parser<'t> {
    toks: &'t [Token],
    pos: usize,
    /// Block nesting depth.
    depth: usize,
    /// Expression tree depth (parentheses, unary operators and operator chains all count),
    /// reset at each statement.
    edepth: usize,
    pub errs: Vec<Diagnostic>,
}

type PResult<T> = Result<T, ()>;

fn join(a: Span, b: Span) -> Span {
    if b.end >= a.start {
        Span {
            start: a.start,
            end: b.end.max(a.end),
            line: a.line,
            col: a.col,
        }
    } else {
        a
    }
}

impl<'t> Parser<'t> {
    /// `toks` must end with [`Tok::Eof`] (as [`super::lexer::lex`] guarantees).
    pub fn new(toks: &'t [Token]) -> Parser<'t> {
        Parser {
            toks,
            pos: 0,
            depth: 0,
            edepth: 0,
            errs: Vec::new(),
        }
    }

    /// True when only the end of input is left.
    pub fn at_eof(&self) -> bool {
        *self.peek() == Tok::Eof
    }

    fn skip_newlines(&mut self) {
        while *self.peek() == Tok::Newline {
            self.bump();
        }
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.pos.min(self.toks.len() - 1)].tok
    }
    fn span(&self) -> Span {
        self.toks[self.pos.min(self.toks.len() - 1)].span
    }
    fn prev_span(&self) -> Span {
        self.toks[self.pos.saturating_sub(1).min(self.toks.len() - 1)].span
    }
    fn bump(&mut self) -> Token {
        let t = self.toks[self.pos.min(self.toks.len() - 1)].clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn error<T>(&mut self, expected: &str) -> PResult<T> {
        let found = self.peek().describe();
        let span = self.span();
        self.errs.push(
            Diagnostic::new(
                "syntax",
                span,
                format!("expected {expected}, found {found}"),
            )
            .label(format!("expected {expected}")),
        );
        Err(())
    }

    fn expect(&mut self, t: Tok) -> PResult<Span> {
        if *self.peek() == t {
            Ok(self.bump().span)
        } else {
            self.error(&format!("`{}`", t.symbol()))
        }
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == kw)
    }

    fn expect_kw(&mut self, kw: &str) -> PResult<Span> {
        if self.is_kw(kw) {
            Ok(self.bump().span)
        } else {
            self.error(&format!("`{kw}`"))
        }
    }

    /// An identifier that is not a keyword.
    fn ident(&mut self, what: &str) -> PResult<Ident> {
        match self.peek().clone() {
            Tok::Ident(s) if !KEYWORDS.contains(&s.as_str()) => {
                let span = self.bump().span;
                Ok(Ident { name: s, span })
            }
            _ => self.error(what),
        }
    }

    /// Skips to the end of the current line: past a `{ … }` block opened on it, stopping before
    /// a `}` that closes an enclosing block.
    fn recover(&mut self) {
        let mut depth = 0usize;
        loop {
            match self.peek() {
                Tok::Eof => return,
                Tok::Newline if depth == 0 => return,
                Tok::RBrace if depth == 0 => return,
                Tok::LBrace => depth += 1,
                Tok::RBrace => depth -= 1,
                _ => {}
            }
            self.bump();
        }
    }

    /// Parses a whole program.
    pub fn program(&mut self) -> Vec<Stmt> {
        let mut out = Vec::new();
        loop {
            match self.peek() {
                Tok::Eof => return out,
                Tok::Newline => {
                    self.bump();
                }
                Tok::RBrace => {
                    let span = self.span();
                    self.errs.push(
                        Diagnostic::new("syntax", span, "unexpected `}` with no open block")
                            .label("no `{` to close"),
                    );
                    self.bump();
                }
                _ => self.stmt_then_end(&mut out, false),
            }
        }
    }

    /// One statement, then a line end (or, inside a block, a `}` that is left unconsumed).
    fn stmt_then_end(&mut self, out: &mut Vec<Stmt>, in_block: bool) {
        match self.stmt() {
            Ok(s) => {
                out.push(s);
                match self.peek() {
                    Tok::Newline | Tok::Eof => {}
                    Tok::RBrace if in_block => {}
                    _ => {
                        let _ = self.error::<()>("end of line");
                        self.recover();
                    }
                }
            }
            Err(()) => self.recover(),
        }
    }

    fn stmt(&mut self) -> PResult<Stmt> {
        self.edepth = 0;
        let start = self.span();
        let kw = match self.peek() {
            Tok::Ident(s) => s.clone(),
            _ => {
                return self
                    .error("a statement (param, reg, assume, mov, mul, div, aff, for, output)")
            }
        };
        let kind = match kw.as_str() {
            "param" => {
                self.bump();
                let name = self.ident("a parameter name")?;
                self.expect(Tok::Eq)?;
                let value = self.expr()?;
                StmtKind::Param { name, value }
            }
            "reg" => {
                self.bump();
                let name = self.ident("a register name")?;
                self.expect(Tok::Colon)?;
                let shape = self.shape()?;
                let pin = if *self.peek() == Tok::At {
                    self.bump();
                    Some(self.expr()?)
                } else {
                    None
                };
                StmtKind::Reg { name, shape, pin }
            }
            "assume" => {
                self.bump();
                self.assume_body()?
            }
            "mov" => {
                self.bump();
                let dst = self.ident("a destination register")?;
                self.expect(Tok::Arrow)?;
                let src = self.ident("a source register")?;
                self.expect_kw("from")?;
                let pstart = self.span();
                let pattern = self.column_pattern()?;
                let pattern_span = join(pstart, self.prev_span());
                StmtKind::Mov {
                    dst,
                    src,
                    pattern,
                    pattern_span,
                }
            }
            "mul" => {
                self.bump();
                let dst = self.ident("a destination register")?;
                self.expect(Tok::Arrow)?;
                let a = self.operand()?;
                self.expect(Tok::Star)?;
                let b = self.operand()?;
                StmtKind::Mul { dst, a, b }
            }
            "div" => {
                self.bump();
                let dst = self.ident("a destination register")?;
                self.expect(Tok::Arrow)?;
                let num = self.ident("a numerator register")?;
                self.expect(Tok::Slash)?;
                self.expect(Tok::Bar)?;
                let den = self.ident("a denominator register")?;
                self.expect(Tok::Bar)?;
                StmtKind::Div { dst, num, den }
            }
            "aff" => {
                self.bump();
                let dst = self.ident("a destination register")?;
                self.expect(Tok::Arrow)?;
                let rhs = self.expr()?;
                StmtKind::Aff { dst, rhs }
            }
            "output" => {
                self.bump();
                let reg = self.ident("a register name")?;
                StmtKind::Output { reg }
            }
            "for" => return self.for_stmt(),
            _ => {
                return self
                    .error("a statement (param, reg, assume, mov, mul, div, aff, for, output)")
            }
        };
        Ok(Stmt {
            kind,
            span: join(start, self.prev_span()),
        })
    }

    /// The rest of `assume`: `|REG| >= E`, `REG >= E`, `REG <= E` or `REG in [E, E]`.
    fn assume_body(&mut self) -> PResult<StmtKind> {
        Ok(if *self.peek() == Tok::Bar {
            self.bump();
            let reg = self.ident("a register name")?;
            self.expect(Tok::Bar)?;
            self.expect(Tok::Ge)?;
            let lo = self.expr()?;
            StmtKind::Assume {
                reg,
                bound: AssumeAst::AbsGe(lo),
            }
        } else {
            let reg = self.ident("a register name or `|`")?;
            let bound = match self.peek() {
                Tok::Ge => {
                    self.bump();
                    AssumeAst::Ge(self.expr()?)
                }
                Tok::Le => {
                    self.bump();
                    AssumeAst::Le(self.expr()?)
                }
                Tok::Ident(s) if s == "in" => {
                    self.bump();
                    self.expect(Tok::LBrack)?;
                    let lo = self.expr()?;
                    self.expect(Tok::Comma)?;
                    let hi = self.expr()?;
                    self.expect(Tok::RBrack)?;
                    AssumeAst::In(lo, hi)
                }
                _ => return self.error("`in`, `>=` or `<=`"),
            };
            StmtKind::Assume { reg, bound }
        })
    }

    /// A column pattern: `prev`, `col(E)` or `mean(y|x|all)`.
    fn column_pattern(&mut self) -> PResult<PatternAst> {
        Ok(match self.peek() {
            Tok::Ident(s) if s == "prev" => {
                self.bump();
                PatternAst::Prev
            }
            Tok::Ident(s) if s == "col" => {
                self.bump();
                self.expect(Tok::LParen)?;
                let e = self.expr()?;
                self.expect(Tok::RParen)?;
                PatternAst::Col(e)
            }
            Tok::Ident(s) if s == "mean" => {
                self.bump();
                self.expect(Tok::LParen)?;
                let set = match self.peek() {
                    Tok::Ident(s) if s == "y" => ColumnSet::Y,
                    Tok::Ident(s) if s == "x" => ColumnSet::X,
                    Tok::Ident(s) if s == "all" => ColumnSet::All,
                    _ => return self.error("`y`, `x` or `all`"),
                };
                self.bump();
                self.expect(Tok::RParen)?;
                PatternAst::Mean(set)
            }
            _ => return self.error("a column pattern (`prev`, `col(E)`, `mean(y|x|all)`)"),
        })
    }

    fn for_stmt(&mut self) -> PResult<Stmt> {
        let start = self.bump().span;
        let var = self.ident("a loop variable")?;
        self.expect_kw("in")?;
        let lo = self.expr()?;
        let inclusive = match self.peek() {
            Tok::DotDotEq => true,
            Tok::DotDot => false,
            _ => return self.error("`..=` or `..`"),
        };
        self.bump();
        let hi = self.expr()?;
        let range_span = join(lo.span, hi.span);
        let header = join(start, self.prev_span());
        self.expect(Tok::LBrace)?;
        if self.depth >= MAX_DEPTH {
            let span = self.prev_span();
            self.errs.push(
                Diagnostic::new(
                    "too-deep",
                    span,
                    format!("blocks nested more than {MAX_DEPTH} deep"),
                )
                .label("too deep"),
            );
            return Err(());
        }
        self.depth += 1;
        let mut body = Vec::new();
        let res = loop {
            match self.peek() {
                Tok::RBrace => {
                    self.bump();
                    break Ok(());
                }
                Tok::Eof => {
                    break self.error("`}` to close the `for` block");
                }
                Tok::Newline => {
                    self.bump();
                }
                _ => self.stmt_then_end(&mut body, true),
            }
        };
        self.depth -= 1;
        res?;
        Ok(Stmt {
            kind: StmtKind::For {
                var,
                lo,
                hi,
                inclusive,
                range_span,
                body,
            },
            span: header,
        })
    }

    fn shape(&mut self) -> PResult<ShapeAst> {
        match self.peek() {
            Tok::Ident(s) if s == "scalar" => {
                self.bump();
                Ok(ShapeAst::Scalar)
            }
            Tok::Ident(s) if s == "vec" => {
                self.bump();
                self.expect(Tok::LBrack)?;
                let e = self.expr()?;
                self.expect(Tok::RBrack)?;
                Ok(ShapeAst::Vec(e))
            }
            Tok::Ident(s) if s == "mat" => {
                self.bump();
                self.expect(Tok::LBrack)?;
                let r = self.expr()?;
                self.expect(Tok::Comma)?;
                let c = self.expr()?;
                self.expect(Tok::RBrack)?;
                Ok(ShapeAst::Mat(r, c))
            }
            _ => self.error("a shape (`scalar`, `vec[E]`, `mat[E, E]`)"),
        }
    }

    fn operand(&mut self) -> PResult<OperandAst> {
        let reg = self.ident("a register")?;
        let mut span = reg.span;
        let mut transposed = false;
        if *self.peek() == Tok::Caret {
            self.bump();
            if matches!(self.peek(), Tok::Ident(s) if s == "T") {
                span = join(span, self.bump().span);
                transposed = true;
            } else {
                return self.error("`T` after `^`");
            }
        }
        Ok(OperandAst {
            reg,
            transposed,
            span,
        })
    }

    fn enter(&mut self) -> PResult<()> {
        if self.edepth >= MAX_DEPTH {
            let span = self.span();
            self.errs.push(
                Diagnostic::new(
                    "too-deep",
                    span,
                    format!("expression nested more than {MAX_DEPTH} deep"),
                )
                .label("too deep"),
            );
            return Err(());
        }
        self.edepth += 1;
        Ok(())
    }

    /// One expression; on error the diagnostic is in `errs`.
    #[allow(clippy::result_unit_err)]
    pub fn expr(&mut self) -> PResult<Expr> {
        self.enter()?;
        let r = self.expr_inner();
        self.edepth -= 1;
        r
    }

    fn expr_inner(&mut self) -> PResult<Expr> {
        let additive = |t: &Tok| match t {
            Tok::Plus => Some(BinOp::Add),
            Tok::Minus => Some(BinOp::Sub),
            _ => None,
        };
        self.left_chain(additive, Self::term)
    }

    fn term(&mut self) -> PResult<Expr> {
        let multiplicative = |t: &Tok| match t {
            Tok::Star => Some(BinOp::Mul),
            Tok::Slash => Some(BinOp::Div),
            _ => None,
        };
        self.left_chain(multiplicative, Self::unary)
    }

    /// `operand (op operand)*`, left-nested, for the operators `op_of` accepts. Each operator
    /// of a chain deepens the tree by one, so it counts against the depth limit.
    fn left_chain(
        &mut self,
        op_of: fn(&Tok) -> Option<BinOp>,
        operand: fn(&mut Self) -> PResult<Expr>,
    ) -> PResult<Expr> {
        let mut lhs = operand(self)?;
        let mut chain = 0;
        loop {
            let Some(op) = op_of(self.peek()) else {
                self.edepth -= chain;
                return Ok(lhs);
            };
            self.bump();
            self.enter()?;
            chain += 1;
            let rhs = operand(self)?;
            let span = join(lhs.span, rhs.span);
            lhs = Expr {
                kind: ExprKind::Bin(op, Box::new(lhs), Box::new(rhs)),
                span,
            };
        }
    }

    fn unary(&mut self) -> PResult<Expr> {
        self.enter()?;
        let r = self.unary_inner();
        self.edepth -= 1;
        r
    }

    fn unary_inner(&mut self) -> PResult<Expr> {
        match self.peek() {
            Tok::Minus => {
                let start = self.bump().span;
                let e = self.unary()?;
                let span = join(start, e.span);
                Ok(Expr {
                    kind: ExprKind::Neg(Box::new(e)),
                    span,
                })
            }
            Tok::Plus => {
                self.bump();
                self.unary()
            }
            _ => self.postfix(),
        }
    }

    /// `NAME[…]` or `NAME(…)` after the name `e`. Kept out of [`Self::postfix`] so that the
    /// frame of the recursive expression parser stays small (deep nesting must give an error,
    /// not a stack overflow).
    #[inline(never)]
    fn index_or_call(&mut self, mut e: Expr) -> PResult<Expr> {
        let ExprKind::Name(name) = &e.kind else {
            return Ok(e);
        };
        let name = name.clone();
        match self.peek() {
            Tok::LBrack => {
                self.bump();
                let mut idx = Vec::new();
                loop {
                    if *self.peek() == Tok::Colon {
                        self.bump();
                        idx.push(None);
                    } else {
                        idx.push(Some(self.expr()?));
                    }
                    match self.peek() {
                        Tok::Comma => {
                            self.bump();
                        }
                        Tok::RBrack => break,
                        _ => return self.error("`,` or `]` in an index"),
                    }
                }
                let end = self.bump().span;
                e = Expr {
                    span: join(e.span, end),
                    kind: ExprKind::Index(Box::new(e), idx),
                };
            }
            Tok::LParen => {
                let id = Ident { name, span: e.span };
                self.bump();
                let mut args = Vec::new();
                loop {
                    args.push(self.expr()?);
                    match self.peek() {
                        Tok::Comma => {
                            self.bump();
                        }
                        Tok::RParen => break,
                        _ => return self.error("`,` or `)` in a call"),
                    }
                }
                let end = self.bump().span;
                e = Expr {
                    span: join(e.span, end),
                    kind: ExprKind::Call(id, args),
                };
            }
            _ => {}
        }
        Ok(e)
    }

    fn postfix(&mut self) -> PResult<Expr> {
        let mut e = self.primary()?;
        // `NAME[…]` (index) and `NAME(…)` (built-in call) bind directly to a name.
        if matches!(e.kind, ExprKind::Name(_)) && matches!(self.peek(), Tok::LBrack | Tok::LParen) {
            e = self.index_or_call(e)?;
        }
        let mut chain = 0;
        while *self.peek() == Tok::Caret {
            self.bump();
            self.enter()?;
            chain += 1;
            if matches!(self.peek(), Tok::Ident(s) if s == "T") {
                let span = join(e.span, self.bump().span);
                e = Expr {
                    kind: ExprKind::Transpose(Box::new(e)),
                    span,
                };
            } else {
                return self.error("`T` after `^`");
            }
        }
        self.edepth -= chain;
        Ok(e)
    }

    fn primary(&mut self) -> PResult<Expr> {
        match self.peek().clone() {
            Tok::Num(v, i) => {
                let span = self.bump().span;
                Ok(Expr {
                    kind: ExprKind::Num(v, i),
                    span,
                })
            }
            Tok::Ident(s) if !KEYWORDS.contains(&s.as_str()) => {
                let span = self.bump().span;
                Ok(Expr {
                    kind: ExprKind::Name(s),
                    span,
                })
            }
            Tok::LParen => {
                self.bump();
                let e = self.expr()?;
                self.expect(Tok::RParen)?;
                Ok(e)
            }
            Tok::LBrack => {
                // Literal vectors/matrices may span lines: newlines between elements are skipped.
                let start = self.bump().span;
                let mut items = Vec::new();
                loop {
                    self.skip_newlines();
                    if *self.peek() == Tok::RBrack && !items.is_empty() {
                        break;
                    }
                    items.push(self.expr()?);
                    self.skip_newlines();
                    match self.peek() {
                        Tok::Comma => {
                            self.bump();
                        }
                        Tok::RBrack => break,
                        _ => return self.error("`,` or `]`"),
                    }
                }
                let end = self.bump().span;
                Ok(Expr {
                    kind: ExprKind::List(items),
                    span: join(start, end),
                })
            }
            _ => self.error("an expression"),
        }
    }
}
