//! Lexer: `.icl` text to tokens with byte spans.
//!
//! Newlines are tokens (they end statements; the parser skips them inside literal `[ … ]`).
//! `#` starts a comment to the end of the line.

use super::diag::{Diagnostic, LineIndex};
use crate::ir::Span;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Ident(String),
    /// A number literal: its value, and `Some(i)` when written as an integer (no `.`, no `e`).
    Num(f64, Option<i64>),
    Newline,
    Arrow,    // <-
    Plus,     // +
    Minus,    // -
    Star,     // *
    Slash,    // /
    LParen,   // (
    RParen,   // )
    LBrack,   // [
    RBrack,   // ]
    LBrace,   // {
    RBrace,   // }
    Comma,    // ,
    Colon,    // :
    At,       // @
    Bar,      // |
    Caret,    // ^
    Eq,       // =
    Ge,       // >=
    Le,       // <=
    DotDot,   // ..
    DotDotEq, // ..=
    Eof,
}

impl Tok {
    /// How the token is named in "expected …, found …" messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("identifier `{s}`"),
            Tok::Num(..) => "a number".to_string(),
            Tok::Newline => "end of line".to_string(),
            Tok::Eof => "end of file".to_string(),
            other => format!("`{}`", other.symbol()),
        }
    }
    pub fn symbol(&self) -> &'static str {
        match self {
            Tok::Arrow => "<-",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBrack => "[",
            Tok::RBrack => "]",
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::Comma => ",",
            Tok::Colon => ":",
            Tok::At => "@",
            Tok::Bar => "|",
            Tok::Caret => "^",
            Tok::Eq => "=",
            Tok::Ge => ">=",
            Tok::Le => "<=",
            Tok::DotDot => "..",
            Tok::DotDotEq => "..=",
            Tok::Newline => "newline",
            Tok::Eof => "end of file",
            Tok::Ident(_) => "identifier",
            Tok::Num(..) => "number",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub span: Span,
}

/// Tokenizes `text`. Lexical errors are pushed to `errs` and the offending characters skipped;
/// the token list always ends with [`Tok::Eof`].
pub fn lex(text: &str, idx: &LineIndex, errs: &mut Vec<Diagnostic>) -> Vec<Token> {
    let bytes = text.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let simple = |t: Tok, len: usize| (t, len);
        let (tok, len) = match c {
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'\n' => simple(Tok::Newline, 1),
            b'<' if bytes.get(i + 1) == Some(&b'-') => simple(Tok::Arrow, 2),
            b'<' if bytes.get(i + 1) == Some(&b'=') => simple(Tok::Le, 2),
            b'>' if bytes.get(i + 1) == Some(&b'=') => simple(Tok::Ge, 2),
            b'.' if bytes.get(i + 1) == Some(&b'.') => {
                if bytes.get(i + 2) == Some(&b'=') {
                    simple(Tok::DotDotEq, 3)
                } else {
                    simple(Tok::DotDot, 2)
                }
            }
            b'+' => simple(Tok::Plus, 1),
            b'-' => simple(Tok::Minus, 1),
            b'*' => simple(Tok::Star, 1),
            b'/' => simple(Tok::Slash, 1),
            b'(' => simple(Tok::LParen, 1),
            b')' => simple(Tok::RParen, 1),
            b'[' => simple(Tok::LBrack, 1),
            b']' => simple(Tok::RBrack, 1),
            b'{' => simple(Tok::LBrace, 1),
            b'}' => simple(Tok::RBrace, 1),
            b',' => simple(Tok::Comma, 1),
            b':' => simple(Tok::Colon, 1),
            b'@' => simple(Tok::At, 1),
            b'|' => simple(Tok::Bar, 1),
            b'^' => simple(Tok::Caret, 1),
            b'=' => simple(Tok::Eq, 1),
            b'A'..=b'Z' | b'a'..=b'z' | b'_' => {
                let mut j = i;
                while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                    j += 1;
                }
                (Tok::Ident(text[i..j].to_string()), j - i)
            }
            b'0'..=b'9' => {
                let len = number_len(bytes, i);
                let tok = number(&text[i..i + len], idx.span(i, i + len), errs);
                (tok, len)
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                let len = ch.len_utf8();
                errs.push(
                    Diagnostic::new(
                        "unexpected-character",
                        idx.span(i, i + len),
                        format!("unexpected character {ch:?}"),
                    )
                    .label("not part of the language"),
                );
                i += len;
                continue;
            }
        };
        i += len;
        toks.push(Token {
            tok,
            span: idx.span(start, i),
        });
    }
    toks.push(Token {
        tok: Tok::Eof,
        span: idx.span(text.len(), text.len()),
    });
    toks
}

/// The token of number literal `s` at `span`: an integer when it is all digits (it must fit
/// an `i64`), else a real (it must be a finite double). A literal that does not fit is
/// reported and lexes as 0.
fn number(s: &str, span: Span, errs: &mut Vec<Diagnostic>) -> Tok {
    let is_int = s.bytes().all(|b| b.is_ascii_digit());
    if is_int {
        match s.parse::<i64>() {
            Ok(v) => Tok::Num(v as f64, Some(v)),
            Err(_) => {
                errs.push(
                    Diagnostic::new(
                        "number-too-large",
                        span,
                        format!("integer literal `{s}` does not fit in a 64-bit integer"),
                    )
                    .label("at most 9223372036854775807"),
                );
                Tok::Num(0.0, Some(0))
            }
        }
    } else {
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() => Tok::Num(v, None),
            _ => {
                errs.push(
                    Diagnostic::new(
                        "number-too-large",
                        span,
                        format!("number `{s}` is not a finite double"),
                    )
                    .label("overflows f64"),
                );
                Tok::Num(0.0, None)
            }
        }
    }
}

/// Length of the number literal at `i`: digits, an optional fraction (a `.` not followed by
/// another `.`, so `1..=n` lexes as `1`, `..=`, `n`), an optional exponent.
fn number_len(b: &[u8], i: usize) -> usize {
    let mut j = i;
    while j < b.len() && b[j].is_ascii_digit() {
        j += 1;
    }
    if j < b.len() && b[j] == b'.' && b.get(j + 1) != Some(&b'.') {
        j += 1;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
    }
    if j < b.len() && (b[j] == b'e' || b[j] == b'E') {
        let mut k = j + 1;
        if k < b.len() && (b[k] == b'+' || b[k] == b'-') {
            k += 1;
        }
        if k < b.len() && b[k].is_ascii_digit() {
            while k < b.len() && b[k].is_ascii_digit() {
                k += 1;
            }
            j = k;
        }
    }
    j - i
}
