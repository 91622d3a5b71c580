//! Lowering of a checked program to transformer weights.
//!
//! `exact` (DESIGN §3) is the default target: attention-bias moves, bilinear products and affine
//! maps (exact in exact arithmetic), and LayerNorm division with a payload scale chosen from the
//! range analysis. Sub-modules: `schedule` (ops → blocks), `alloc` (registers → rows),
//! `exact` (the weights).

pub mod alloc;
pub mod exact;
pub mod schedule;

pub use exact::{compile, Compiled, DivReport, LowerOptions, Stats};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LowerError {
    #[error("{at}: cannot lower: {msg}")]
    Unsupported { at: String, msg: String },
    #[error("{at}: cannot choose the LayerNorm division constant for `{op}`: {msg}")]
    Division { at: String, op: String, msg: String },
    /// Boxed: a range error carries its diagnostics and would make every `Result` large.
    #[error("range analysis failed: {0}")]
    Ranges(Box<crate::ranges::RangeError>),
    #[error("internal error in the lowering: {msg}")]
    Internal { msg: String },
}

impl From<crate::ranges::RangeError> for LowerError {
    fn from(e: crate::ranges::RangeError) -> Self {
        LowerError::Ranges(Box::new(e))
    }
}
