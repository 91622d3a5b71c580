//! The one Candle transformer used by compiled and trained models (docs/FORMATS.md).
pub mod config;
