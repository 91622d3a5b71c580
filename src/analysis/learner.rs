//! Learners: anything that predicts at every x̃ column of a prompt, behind one interface —
//! a model directory (compiled or trained), an `.icl` program run by the interpreter, or a
//! solver named on the command line (docs/ANALYSIS.md, "Learners").
//!
//! A learner SPEC is, in this order:
//! - an existing directory: a model directory (`config.json` + `model.safetensors`);
//! - an existing `.icl` file, optionally followed by `:name=value,…` parameter overrides; the
//!   program's `d` and `n` are set from the prompts;
//! - a solver: `ols`, `ridge:λ`, `bayes` (ridge with λ = σ²/τ² of the prompt distribution),
//!   `gd:α`, `sgd:α` (or `sgd:α:λ`), `knn:k`, `knn:k:dist` (1/d² weights), `moments`, `zero`.

use crate::ir::Program;
use crate::model::config::{DType, ModelKind};
use crate::model::Transformer;
use crate::prompt::{Prompt, PromptDistribution};
use crate::solvers::Solver;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LearnerError {
    #[error("learner `{spec}`: {msg}")]
    Spec { spec: String, msg: String },
    #[error("learner `{spec}`: {source:#}")]
    Load { spec: String, source: anyhow::Error },
    #[error("learner `{spec}` does not fit the prompts: {msg}")]
    Fit { spec: String, msg: String },
    #[error("learner `{spec}`: {count} of {total} prompts (or their ILWD probe inputs) fall outside the certified input ranges ({ranges}); the certificate does not cover them. Pass --uncertified to run them anyway (marked as uncertified in the output)")]
    OutsideRanges {
        spec: String,
        count: usize,
        total: usize,
        ranges: String,
    },
}

/// What kind of learner, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LearnerKind {
    Solver,
    Compiled,
    Trained,
    Program,
}

/// The certified input ranges of a compiled model (`certificate.json` → `input_ranges`).
#[derive(Debug, Clone, PartialEq)]
pub struct InputRanges {
    pub x: Option<[f64; 2]>,
    pub y: Option<[f64; 2]>,
}

impl InputRanges {
    /// Whether every input the model reads — the n examples' x and y and the query's x — lies
    /// in the ranges.
    pub fn covers(&self, p: &Prompt) -> bool {
        let inside = |r: Option<[f64; 2]>, v: f64| r.is_none_or(|[lo, hi]| lo <= v && v <= hi);
        p.xs.iter().flatten().all(|&v| inside(self.x, v))
            && p.ys[..p.n()].iter().all(|&v| inside(self.y, v))
    }

    /// Whether a query input x lies in the x range.
    pub fn covers_x(&self, x: &[f64]) -> bool {
        self.x
            .is_none_or(|[lo, hi]| x.iter().all(|&v| lo <= v && v <= hi))
    }

    fn describe(&self) -> String {
        let f = |n: &str, r: Option<[f64; 2]>| r.map(|[lo, hi]| format!("{n} in [{lo}, {hi}]"));
        [f("x", self.x), f("y", self.y)]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Where a learner's predictions come from.
pub enum Source {
    Solver(Solver),
    Model {
        dir: PathBuf,
        model: Box<Transformer>,
        ranges: Option<InputRanges>,
        /// The sparse executor, when it runs this model (see [`Executor`]).
        sparse: Option<Box<crate::model::sparse::AnySparse>>,
    },
    Program {
        path: PathBuf,
        program: Box<Program>,
    },
}

/// A learner: its label in tables, the SPEC it was given and its source.
pub struct Learner {
    pub label: String,
    pub spec: String,
    pub source: Source,
}

/// How model learners are loaded.
pub struct LoadOptions {
    pub device: candle_core::Device,
    /// Runtime dtype of model learners (default: each model file's).
    pub dtype: Option<DType>,
    /// Which forward pass runs compiled models.
    pub executor: Executor,
}

/// The forward pass of compiled models: the sparse executor (`crate::model::sparse`) where it
/// applies (f64 `exact`-target models on the CPU), else the dense Candle forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Executor {
    /// Sparse for compiled f64 exact-target models on the CPU, dense otherwise.
    #[default]
    Auto,
    /// Always the dense forward (the reference).
    Dense,
    /// The sparse executor; an error for a model it does not run.
    Sparse,
}

/// Parse a solver SPEC (`None`: not a solver name). `dist` resolves `bayes`.
pub fn parse_solver(spec: &str, dist: &PromptDistribution) -> Result<Option<Solver>, LearnerError> {
    let err = |msg: String| LearnerError::Spec {
        spec: spec.into(),
        msg,
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let num = |i: usize, what: &str| -> Result<f64, LearnerError> {
        let raw = parts
            .get(i)
            .ok_or_else(|| err(format!("expected {what} after `{}:`", parts[0])))?;
        match raw.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
            _ => Err(err(format!(
                "{what} must be a finite number ≥ 0, found `{raw}`"
            ))),
        }
    };
    let arity = |n: &[usize]| -> Result<(), LearnerError> {
        if n.contains(&parts.len()) {
            Ok(())
        } else {
            Err(err(format!(
                "wrong number of `:` fields for `{}`",
                parts[0]
            )))
        }
    };
    let solver = match parts[0] {
        "ols" => arity(&[1]).map(|_| Solver::Ols)?,
        "zero" => arity(&[1]).map(|_| Solver::Zero)?,
        "moments" => arity(&[1]).map(|_| Solver::Moments)?,
        "ridge" => arity(&[2])
            .and_then(|_| num(1, "λ"))
            .map(|lambda| Solver::Ridge { lambda })?,
        "gd" => arity(&[2])
            .and_then(|_| num(1, "α"))
            .map(|alpha| Solver::Gd { alpha })?,
        "sgd" => {
            arity(&[2, 3])?;
            let lambda = if parts.len() == 3 { num(2, "λ")? } else { 0.0 };
            Solver::Sgd {
                alpha: num(1, "α")?,
                lambda,
            }
        }
        "knn" => {
            arity(&[2, 3])?;
            let k = parts[1]
                .parse::<usize>()
                .ok()
                .filter(|&k| k >= 1)
                .ok_or_else(|| {
                    err(format!(
                        "k must be a whole number ≥ 1, found `{}`",
                        parts[1]
                    ))
                })?;
            let weighted = match parts.get(2) {
                None => false,
                Some(&"dist") => true,
                Some(w) => return Err(err(format!("unknown kNN weighting `{w}` (only `dist`)"))),
            };
            Solver::Knn { k, weighted }
        }
        "bayes" => {
            arity(&[1])?;
            let lambda = dist.bayes_lambda().ok_or_else(|| {
                err(format!(
                    "the Bayes predictor needs w ~ N(0, τ²I) with τ > 0; the prompts are from {}",
                    dist.spec()
                ))
            })?;
            Solver::Ridge { lambda }
        }
        _ => return Ok(None),
    };
    Ok(Some(solver))
}

/// Load a learner from its SPEC (see the module doc). `dist` is the prompt distribution (for
/// `bayes` and a program's d and n).
pub fn load(
    spec: &str,
    dist: &PromptDistribution,
    opts: &LoadOptions,
) -> Result<Learner, LearnerError> {
    let (path_part, overrides) = match spec.split_once(".icl:") {
        Some((head, tail)) => (format!("{head}.icl"), Some(tail)),
        None => (spec.to_string(), None),
    };
    let path = Path::new(&path_part);
    if path.is_dir() {
        return load_model(spec, path, dist, opts);
    }
    if path.is_file() && path.extension().is_some_and(|e| e == "icl") {
        return load_program(spec, path, overrides, dist);
    }
    if path.exists() {
        return Err(LearnerError::Spec {
            spec: spec.into(),
            msg: "a file that is not an .icl program (a learner is a model directory, an .icl program or a solver)".into(),
        });
    }
    match parse_solver(spec, dist)? {
        Some(s) => Ok(Learner {
            label: match s {
                // λ* = σ²/τ² rounded for the label (0.1² is 0.010000000000000002 in f64).
                Solver::Ridge { lambda } if spec == "bayes" => {
                    format!("bayes(λ={})", (lambda * 1e12).round() / 1e12)
                }
                _ => s.name(),
            },
            spec: spec.into(),
            source: Source::Solver(s),
        }),
        None => Err(LearnerError::Spec {
            spec: spec.into(),
            msg: "no such directory or .icl file, and not a solver (ols, ridge:λ, bayes, gd:α, sgd:α, knn:k, knn:k:dist, moments, zero)".into(),
        }),
    }
}

fn load_model(
    spec: &str,
    dir: &Path,
    dist: &PromptDistribution,
    opts: &LoadOptions,
) -> Result<Learner, LearnerError> {
    let lerr = |source: anyhow::Error| LearnerError::Load {
        spec: spec.into(),
        source,
    };
    let model = Transformer::load(dir, &opts.device, opts.dtype).map_err(|e| lerr(e.into()))?;
    // A compiled-kind directory without certificate.json (e.g. hand-built) claims nothing, so
    // there is nothing to refuse; one with a certificate is held to its ranges.
    let ranges = match model.config.kind {
        ModelKind::Compiled if dir.join("certificate.json").exists() => {
            Some(read_input_ranges(dir).map_err(lerr)?)
        }
        _ => None,
    };
    let sparse = sparse_executor(spec, &model, dist, opts)?;
    Ok(Learner {
        label: dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| spec.into()),
        spec: spec.into(),
        source: Source::Model {
            dir: dir.into(),
            model: Box::new(model),
            ranges,
            sparse,
        },
    })
}

/// The sparse executor for `model` on prompts of `dist`, as `opts.executor` asks.
fn sparse_executor(
    spec: &str,
    model: &Transformer,
    dist: &PromptDistribution,
    opts: &LoadOptions,
) -> Result<Option<Box<crate::model::sparse::AnySparse>>, LearnerError> {
    let c = &model.config;
    // The executor computes in the file's dtype, like the dense forward without --dtype.
    let eligible = c.kind == ModelKind::Compiled
        && opts.dtype.is_none_or(|d| d == c.dtype)
        && matches!(opts.device, candle_core::Device::Cpu);
    let built = match (opts.executor, eligible) {
        (Executor::Dense, _) | (Executor::Auto, false) => None,
        (Executor::Auto | Executor::Sparse, true) => {
            // The weights the dense model already loaded (in the file's dtype, widened exactly).
            let named = model.to_named().map_err(|e| LearnerError::Load {
                spec: spec.into(),
                source: e.into(),
            })?;
            crate::model::sparse::AnySparse::new(c, &named, 2 * dist.n + 1).map(Box::new)
        }
        (Executor::Sparse, false) => None,
    };
    if opts.executor == Executor::Sparse && built.is_none() {
        return Err(LearnerError::Spec {
            spec: spec.into(),
            msg: "--executor sparse runs only compiled exact-target models on the CPU in their file's dtype"
                .into(),
        });
    }
    Ok(built)
}

/// `input_ranges` of a compiled model's `certificate.json`.
fn read_input_ranges(dir: &Path) -> anyhow::Result<InputRanges> {
    #[derive(serde::Deserialize)]
    struct Partial {
        input_ranges: BTreeMap<String, [crate::certify::report::ExtF64; 2]>,
    }
    let path = dir.join("certificate.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (a compiled model needs its certificate)",
            path.display()
        )
    })?;
    let p: Partial =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let get = |k: &str| p.input_ranges.get(k).map(|[lo, hi]| [lo.0, hi.0]);
    Ok(InputRanges {
        x: get("x"),
        y: get("y"),
    })
}

fn load_program(
    spec: &str,
    path: &Path,
    overrides: Option<&str>,
    dist: &PromptDistribution,
) -> Result<Learner, LearnerError> {
    let mut sets = vec![
        ("d".to_string(), dist.d.to_string()),
        ("n".to_string(), dist.n.to_string()),
    ];
    for kv in overrides.into_iter().flat_map(|o| o.split(',')) {
        let (k, v) = kv.split_once('=').ok_or_else(|| LearnerError::Spec {
            spec: spec.into(),
            msg: format!("`{kv}`: program overrides are name=value"),
        })?;
        sets.retain(|(name, _)| name != k.trim());
        sets.push((k.trim().into(), v.trim().into()));
    }
    let program = crate::front::load_file(path, &sets).map_err(|e| LearnerError::Load {
        spec: spec.into(),
        source: anyhow::anyhow!("{e}"),
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| spec.into());
    Ok(Learner {
        label: match overrides {
            Some(o) => format!("{stem}.icl({o})"),
            None => format!("{stem}.icl"),
        },
        spec: spec.into(),
        source: Source::Program {
            path: path.into(),
            program: Box::new(program),
        },
    })
}

impl Learner {
    pub fn kind(&self) -> LearnerKind {
        match &self.source {
            Source::Solver(_) => LearnerKind::Solver,
            Source::Program { .. } => LearnerKind::Program,
            Source::Model { model, .. } => match model.config.kind {
                ModelKind::Compiled => LearnerKind::Compiled,
                ModelKind::Trained => LearnerKind::Trained,
            },
        }
    }

    /// A learner whose algorithm is in question (a model or a program), as opposed to a solver.
    pub fn is_subject(&self) -> bool {
        !matches!(self.source, Source::Solver(_))
    }

    /// The solver, for solver learners.
    pub fn solver(&self) -> Option<Solver> {
        match self.source {
            Source::Solver(s) => Some(s),
            _ => None,
        }
    }

    /// Checks that the learner can read prompts of this distribution's d and n.
    pub fn check_fits(&self, dist: &PromptDistribution) -> Result<(), LearnerError> {
        let fit = |msg: String| {
            Err(LearnerError::Fit {
                spec: self.spec.clone(),
                msg,
            })
        };
        match &self.source {
            Source::Solver(_) => Ok(()),
            Source::Program { program, .. } => {
                if (program.d, program.n) != (dist.d, dist.n) {
                    return fit(format!(
                        "the program has d = {}, n = {}; the prompts d = {}, n = {}",
                        program.d, program.n, dist.d, dist.n
                    ));
                }
                Ok(())
            }
            Source::Model { model, .. } => {
                let c = &model.config;
                if c.d != dist.d {
                    return fit(format!(
                        "the model reads d = {}, the prompts have d = {}",
                        c.d, dist.d
                    ));
                }
                if 2 * dist.n + 1 > c.max_len {
                    return fit(format!(
                        "n = {} needs 2n+1 = {} columns but the model's max_len is {}",
                        dist.n,
                        2 * dist.n + 1,
                        c.max_len
                    ));
                }
                if c.kind == ModelKind::Compiled && c.n != dist.n {
                    return fit(format!(
                        "the model was compiled for n = {}, the prompts have n = {}",
                        c.n, dist.n
                    ));
                }
                Ok(())
            }
        }
    }

    /// How many prompts fall outside a compiled model's certified input ranges (0 for others).
    pub fn outside_ranges(&self, prompts: &[Prompt]) -> usize {
        match &self.source {
            Source::Model {
                ranges: Some(r), ..
            } => prompts.iter().filter(|p| !r.covers(p)).count(),
            _ => 0,
        }
    }

    /// A compiled model's certified input ranges.
    pub fn input_ranges(&self) -> Option<&InputRanges> {
        match &self.source {
            Source::Model { ranges, .. } => ranges.as_ref(),
            _ => None,
        }
    }

    /// Refuse prompts outside the certified ranges unless `allow`; returns how many were
    /// outside (to be marked as uncertified).
    pub fn check_ranges(&self, prompts: &[Prompt], allow: bool) -> Result<usize, LearnerError> {
        self.refuse_unless(self.outside_ranges(prompts), prompts.len(), allow)
    }

    /// `count` of `total` prompts (or probe sets) outside the ranges: an error unless `allow`.
    pub fn refuse_unless(
        &self,
        count: usize,
        total: usize,
        allow: bool,
    ) -> Result<usize, LearnerError> {
        if count > 0 && !allow {
            let ranges = match &self.source {
                Source::Model {
                    ranges: Some(r), ..
                } => r.describe(),
                _ => String::new(),
            };
            return Err(LearnerError::OutsideRanges {
                spec: self.spec.clone(),
                count,
                total,
                ranges,
            });
        }
        Ok(count)
    }

    /// Predictions at every x̃ column of every prompt (n+1 values each).
    pub fn predict(&self, prompts: &[Prompt]) -> anyhow::Result<Vec<Vec<f64>>> {
        Ok(match &self.source {
            Source::Solver(s) => crate::solvers::predict_batch(s, prompts),
            Source::Model {
                sparse: Some(s), ..
            } => prompts.iter().map(|p| s.predict(p)).collect(),
            Source::Model { model, .. } => model.predict_prompts(prompts)?,
            Source::Program { program, .. } => crate::interp::run_batch_f64(program, prompts)
                .map_err(|e| anyhow::anyhow!("{}: {e}", self.spec))?,
        })
    }

    /// Predictions at the probe inputs `probes` after the first `k` examples of `p`.
    ///
    /// Models and programs are causal — the value at column 2k depends only on columns ≤ 2k
    /// (docs/LANGUAGE.md) — so the query x_{k+1} of a copy of `p` is replaced by each probe
    /// and the prediction at x̃_{k+1} is read; the later columns do not matter.
    pub fn predict_probes(
        &self,
        requests: &[(&Prompt, usize, &[Vec<f64>])],
    ) -> anyhow::Result<Vec<Vec<f64>>> {
        if let Source::Solver(s) = self.source {
            return Ok(requests
                .iter()
                .map(|(p, k, probes)| {
                    let w = s.is_linear().then(|| s.weights(&p.xs[..*k], &p.ys[..*k]));
                    probes
                        .iter()
                        .map(|q| match &w {
                            Some(w) => w.iter().zip(q).map(|(a, b)| a * b).sum(),
                            None => s.predict_query(&p.xs[..*k], &p.ys[..*k], q),
                        })
                        .collect()
                })
                .collect());
        }
        let mut copies = Vec::new();
        for (p, k, probes) in requests {
            for q in probes.iter() {
                let mut c = (*p).clone();
                c.xs[*k] = q.clone();
                copies.push(c);
            }
        }
        let preds = self.predict(&copies)?;
        let mut it = preds.into_iter();
        Ok(requests
            .iter()
            .map(|(_, k, probes)| {
                (0..probes.len())
                    .map(|_| it.next().expect("one prediction per copy")[*k])
                    .collect()
            })
            .collect())
    }

    /// A linear solver's own weights after the first `k` examples (ILWD uses them instead of a
    /// fit); `None` for other learners.
    pub fn own_weights(&self, p: &Prompt, k: usize) -> Option<Vec<f64>> {
        let s = self.solver().filter(Solver::is_linear)?;
        let w = s.weights(&p.xs[..k], &p.ys[..k]);
        Some(if w.is_empty() { vec![0.0; p.d()] } else { w })
    }
}

/// The task a model directory was made for: a trained run's `train.toml` task, or N(0, I)
/// inputs and weights without noise at a compiled model's d and n.
pub fn default_distribution(dir: &Path) -> anyhow::Result<PromptDistribution> {
    let tpath = dir.join("train.toml");
    if tpath.exists() {
        return Ok(crate::train::load_config(&tpath, &[])?.distribution());
    }
    let c = crate::model::load_config(&dir.join("config.json"))?;
    Ok(PromptDistribution::new(c.d, c.n))
}
