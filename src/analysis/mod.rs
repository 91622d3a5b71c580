//! Analysis: which algorithm does a learner run? Prompt sets as files, learners (models,
//! programs, solvers) behind one interface, the paper's metrics, `icl compare`, probes and the
//! experiments (docs/ANALYSIS.md).

pub mod compare;
pub mod dai;
pub mod experiment;
pub mod figures;
pub mod learner;
pub mod metrics;
pub mod probe;
pub mod prompt_set;
pub mod stats;
pub mod tables;

use prompt_set::PromptSet;
use std::path::{Path, PathBuf};

/// Where an analysis command's prompts come from (`--prompts FILE`, `--dist SPEC`, or the task
/// of the first model directory among the learners).
#[derive(Debug, Clone)]
pub enum PromptSource {
    File(PathBuf),
    Dist {
        spec: String,
        count: usize,
        seed: u64,
    },
    ModelTask {
        dir: PathBuf,
        count: usize,
        seed: u64,
    },
}

impl PromptSource {
    /// Load or sample the prompts; returns them with a description for reports.
    pub fn resolve(&self) -> anyhow::Result<(PromptSet, String)> {
        use anyhow::Context;
        match self {
            PromptSource::File(path) => Ok((
                PromptSet::load(path).with_context(|| "--prompts")?,
                path.display().to_string(),
            )),
            PromptSource::Dist { spec, count, seed } => {
                let dist = crate::prompt::PromptDistribution::parse_spec(spec)
                    .with_context(|| "--dist")?;
                Ok((
                    PromptSet::sample(&dist, *count, *seed)?,
                    "sampled from --dist".into(),
                ))
            }
            PromptSource::ModelTask { dir, count, seed } => {
                let dist = learner::default_distribution(dir)
                    .with_context(|| format!("the task of {}", dir.display()))?;
                Ok((
                    PromptSet::sample(&dist, *count, *seed)?,
                    format!("sampled from the task of {}", dir.display()),
                ))
            }
        }
    }

    /// The first model directory among learner SPECs (for the default prompts).
    pub fn first_model_dir(specs: &[String]) -> Option<PathBuf> {
        specs
            .iter()
            .map(Path::new)
            .find(|p| p.is_dir())
            .map(Path::to_path_buf)
    }
}
