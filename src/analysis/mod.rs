//! Analyses of trained and compiled models: what their hidden states hold.

pub mod probe;
