//! Lowering of a checked program to transformer weights.
//!
//! `exact` is the default target: attention-bias moves, bilinear products and affine maps (exact
//! in exact arithmetic), and LayerNorm division with a payload scale chosen from the range
//! analysis. Sub-modules: `schedule` (ops → blocks), `alloc` (registers → rows), `exact` (the
//! weights).

pub mod alloc;
pub mod exact;
pub mod schedule;

pub use exact::{compile, Compiled, DivReport, LowerOptions, Stats};

use crate::ir::{Program, Span};

/// A place in the program's source — the span of an op or of a register's declaration in the
/// file it came from — displayed as `file:line:col`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub span: Span,
}

impl Location {
    pub fn of(p: &Program, span: Span) -> Location {
        Location {
            file: p.source.name.clone(),
            span,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.span.line, self.span.col)
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LowerError {
    #[error("{at}: cannot lower: {msg}")]
    Unsupported { at: Location, msg: String },
    /// Op `op` (source text `text`) divides by a register whose range admits no constants.
    #[error("{at}: cannot choose the LayerNorm division constant for `{text}`: {msg}")]
    Division {
        at: Location,
        op: usize,
        text: String,
        msg: String,
    },
    /// Boxed: a range error carries its diagnostics and would make every `Result` large.
    #[error("range analysis failed: {0}")]
    Ranges(Box<crate::ranges::RangeError>),
    /// Op `op` (source text `text`) reads register `reg` before any op writes it.
    #[error(
        "internal error in the lowering: {at}: `{text}` reads `{reg}` before any write (the \
         checker should have caught this)"
    )]
    ReadBeforeWrite {
        at: Location,
        op: usize,
        text: String,
        reg: String,
    },
    #[error("internal error in the lowering: {msg}")]
    Internal { msg: String },
}

impl From<crate::ranges::RangeError> for LowerError {
    fn from(e: crate::ranges::RangeError) -> Self {
        LowerError::Ranges(Box::new(e))
    }
}
