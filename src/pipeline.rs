//! The compile pipeline (placeholder).
