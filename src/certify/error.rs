//! A rejection, cranelift-verifier style: one error type carrying what it is about — the layer,
//! the part, the operation — as typed values; `file:line:col` is formatted only when displayed.

use crate::ir::{Location, OpId, Program};
use crate::layout::Layer;

/// Which part of the model an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Files,
    Layout,
    Embedding,
    Attention,
    Mlp,
    Readout,
    /// A whole layer (e.g. a part with no exact normal form).
    Layer,
}

/// An operation of the unrolled program, as an error cites it: its index, its source text and
/// where it stands in the source.
#[derive(Debug, Clone, PartialEq)]
pub struct OpSite {
    /// Index of the operation in the unrolled program.
    pub index: OpId,
    pub text: String,
    pub at: Location,
}

impl OpSite {
    /// Operation `k` of `p`.
    pub fn of(p: &Program, k: OpId) -> Box<OpSite> {
        let op = p.op(k);
        Box::new(OpSite {
            index: k,
            text: op.text.clone(),
            at: p.location(op.span),
        })
    }
}

/// `text, file:line:col`.
impl std::fmt::Display for OpSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, {}", self.text, self.at)
    }
}

/// A rejection: which layer and part, which operation, what differs.
#[derive(Debug, Clone, PartialEq)]
pub struct CertifyError {
    pub layer: Option<Layer>,
    pub part: Part,
    /// The operation concerned, when there is one (boxed: errors travel in every `Result`).
    pub op: Option<Box<OpSite>>,
    pub message: String,
}

impl CertifyError {
    /// An error about no particular layer or operation.
    pub fn new(part: Part, message: impl Into<String>) -> CertifyError {
        CertifyError {
            layer: None,
            part,
            op: None,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for CertifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.layer, self.part) {
            (Some(l), Part::Attention) => write!(f, "layer {l} attention: ")?,
            (Some(l), Part::Mlp) => write!(f, "layer {l} MLP: ")?,
            (Some(l), _) => write!(f, "layer {l}: ")?,
            (None, Part::Embedding) => write!(f, "embedding: ")?,
            (None, Part::Readout) => write!(f, "readout: ")?,
            (None, Part::Layout) => write!(f, "layout.json: ")?,
            (None, _) => {}
        }
        write!(f, "{}", self.message)?;
        if let Some(op) = &self.op {
            write!(f, " ({op})")?;
        }
        Ok(())
    }
}

impl std::error::Error for CertifyError {}
