//! icl — compile mov/mul/div/aff programs to transformer weights, prove every layer, run them
//! with Candle; train ordinary transformers on the same in-context regression task.
//!
//! The pipeline (docs/ARCHITECTURE.md):
//! `.icl text ─front→ ir::Program ─ir::validate→ ─lower::exact→ Compiled ─certify→ ─emit→ files`,
//! with `interp` the meaning, `ranges` the sound interval analysis, `certify` the per-layer proof
//! read back from the emitted files, `model` the one Candle transformer for compiled and trained
//! models, `solvers` the f64 ground truth, `prompt` the task, `train` the trained mode, `analysis`
//! the comparison of learners (prompt sets, metrics, `icl compare`, probes, experiments), `plot`
//! the figures.

pub mod analysis;
pub mod certify;
pub mod emit;
pub mod front;
pub mod interp;
pub mod ir;
pub mod layout;
pub mod lower;
pub mod model;
pub mod pipeline;
pub mod plot;
pub mod progress;
pub mod prompt;
pub mod ranges;
pub mod simd;
pub mod solvers;
pub mod tensors;
pub mod train;
