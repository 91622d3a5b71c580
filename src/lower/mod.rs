//! Lowering of a checked program to transformer weights.
//!
//! `exact` is the default target: attention-bias moves, bilinear products and affine maps (exact
//! in exact arithmetic), and LayerNorm division with a payload scale chosen from the range
//! analysis. Sub-modules: `schedule` (ops → blocks), `alloc` (registers → rows), `exact` (the
//! weights).

pub mod alloc;
pub mod exact;
pub mod paper;
pub mod schedule;

pub use exact::{compile, Compiled, DivReport, LowerOptions, Stats};

use crate::ir::{Location, OpId};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LowerError {
    #[error("{at}: cannot lower: {msg}")]
    Unsupported { at: Location, msg: String },
    /// Op `op` (source text `text`) divides by a register whose range admits no constants.
    #[error("{at}: cannot choose the LayerNorm division constant for `{text}`: {msg}")]
    Division {
        at: Location,
        op: OpId,
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
        op: OpId,
        text: String,
        reg: String,
    },
    #[error("internal error in the lowering: {msg}")]
    Internal { msg: String },
    /// The program breaks an IR invariant (possible only for a program built by hand).
    #[error("the program is malformed: {0}")]
    Malformed(#[from] crate::ir::ValidateError),
}

impl From<crate::ranges::RangeError> for LowerError {
    fn from(e: crate::ranges::RangeError) -> Self {
        LowerError::Ranges(Box::new(e))
    }
}
