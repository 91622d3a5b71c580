//! A rejection, cranelift-verifier style: one error type carrying what it is about — the layer,
//! the part, the operation — as typed values; `file:line:col` is formatted only when displayed.

use crate::ir::{Program, Span};

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
    pub index: usize,
    pub text: String,
    /// The program's file name, as given.
    pub file: String,
    pub span: Span,
}

impl OpSite {
    /// Operation `k` of `p`.
    pub fn of(p: &Program, k: usize) -> Box<OpSite> {
        let op = &p.ops[k];
        Box::new(OpSite {
            index: k,
            text: op.text.clone(),
            file: p.source.name.clone(),
            span: op.span,
        })
    }
}

/// `text, file:line:col` (the location as [`Program::location`] writes it).
impl std::fmt::Display for OpSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, {}:{}:{}",
            self.text, self.file, self.span.line, self.span.col
        )
    }
}

/// A rejection: which layer and part, which operation, what differs.
#[derive(Debug, Clone, PartialEq)]
pub struct CertifyError {
    pub layer: Option<usize>,
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
