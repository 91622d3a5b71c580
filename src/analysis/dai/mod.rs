//! Attention as implicit finetuning (Dai et al. 2023; docs/ANALYSIS.md, "Attention as implicit
//! finetuning").

pub mod finetune;
