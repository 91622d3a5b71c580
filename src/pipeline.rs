//! The `icl-compile` pipeline: load → lower → certify → validate → write (docs/ARCHITECTURE.md).
//!
//! - **Load**: the checked program (front end + checker).
//! - **Lower**: `lower::exact` in the requested dtype.
//! - **Certify**: the per-layer translation validation, run on the files exactly as they will be
//!   written (the bytes are written to a scratch folder and read back by the checker).
//! - **Validate**: K prompts (seeded) through the Candle model in f64 and in f32 — each from its
//!   own compile in that dtype, since the division constant is chosen per dtype — compared with
//!   the interpreter and, when the program is a known learner, with its solver.
//! - **Write**: the four files, atomically.
//!
//! **Which solver.** A program names its solver with a comment line `# solver: NAME` where NAME
//! is `ridge`, `gd`, `sgd` or `none`; without one, the program's file stem decides (`ridge`,
//! `ridge_elim` → ridge; `gd` → gd; `sgd` → sgd; anything else → none). Parameters come from the
//! program: ridge uses `lambda`, gd `alpha`, sgd `alpha` and `lambda` (0 if absent).
//!
//! **Relative error** against the solver is `|model − solver| / max(|solver|, 1)` (an absolute
//! error where the prediction is below 1 in magnitude, e.g. the 0 prediction from no examples),
//! maximised over prompts and x̃ columns.

use crate::certify::{Certificate, ExtF64, Measurement, Validation, ValidationFigures};
use crate::ir::{ParamValue, Program};
use crate::lower::{self, Compiled, LowerOptions};
use crate::model::config::DType;
use crate::prompt::{Prompt, PromptDistribution};
use crate::solvers::Solver;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which construction a compile emits (docs/ARCHITECTURE.md, "Targets").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Target {
    /// 0/−∞ attention biases, bilinear MLPs, LayerNorm division: exact but for the divisions.
    #[default]
    Exact,
    /// The paper's construction in the trained `paper` block, with certified error bounds.
    Paper,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Exact => "exact",
            Target::Paper => "paper",
        }
    }
}

/// Options of one compile.
#[derive(Debug, Clone)]
pub struct Options {
    /// The construction.
    pub target: Target,
    /// Paper target: the largest certified end-to-end error accepted (none: any finite or
    /// infinite bound is reported).
    pub tolerance: Option<f64>,
    /// Dtype of the written weights.
    pub dtype: DType,
    /// `cpu` or `cuda` (validation only).
    pub device: String,
    /// Number of validation prompts (0: skip validation).
    pub prompts: usize,
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target: Target::Exact,
            tolerance: None,
            dtype: DType::F64,
            device: "cpu".into(),
            prompts: 64,
            seed: 0,
        }
    }
}

/// Measured errors of one dtype's model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Errors {
    pub max_abs_vs_interp: f64,
    /// Against the interpreter, relative: `|model − interp| / max(|interp|, 1)`.
    pub max_rel_vs_interp: f64,
    /// Against the solver (see the module comment), when the program is a known learner.
    pub max_rel_vs_solver: Option<f64>,
    /// The interpreter against the solver (how far the program itself is from the solver).
    pub interp_rel_vs_solver: Option<f64>,
}

impl Errors {
    /// The figures certificate.json records (a program without a solver records 0 against it).
    pub fn figures(&self) -> ValidationFigures {
        ValidationFigures {
            max_abs_vs_interp: ExtF64(self.max_abs_vs_interp),
            max_rel_vs_solver: ExtF64(self.max_rel_vs_solver.unwrap_or(0.0)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    pub prompts: usize,
    pub seed: u64,
    pub device: String,
    pub solver: Option<String>,
    pub f64: Errors,
    /// Unavailable, with the reason, when no f32 model can be compiled (the LayerNorm payload
    /// would overflow f32).
    pub f32: Measurement<Errors>,
}

impl ValidationReport {
    /// The validation section of certificate.json.
    pub fn record(&self) -> Validation {
        Validation {
            prompts: self.prompts,
            seed: self.seed,
            f64: self.f64.figures(),
            f32: self.f32.map(Errors::figures),
        }
    }
}

/// The solver a program is compared with (module comment).
pub fn solver_for(p: &Program) -> Result<Option<Solver>> {
    let named = p.source.text.lines().find_map(|l| {
        l.trim()
            .strip_prefix('#')
            .map(str::trim)
            .and_then(|l| l.strip_prefix("solver:"))
            .map(|s| s.trim().to_string())
    });
    let stem = Path::new(&p.source.name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kind = named.unwrap_or(match stem.as_str() {
        "ridge" | "ridge_elim" => "ridge".into(),
        "gd" => "gd".into(),
        "sgd" => "sgd".into(),
        _ => "none".into(),
    });
    let param = |name: &str| -> Option<f64> {
        match p.params.get(name)? {
            ParamValue::Int(i) => Some(*i as f64),
            ParamValue::Real(r) => Some(*r),
            ParamValue::Tensor { .. } => None,
        }
    };
    let need = |name: &str| {
        param(name).ok_or_else(|| {
            anyhow!(
                "{}: the {kind} solver needs a scalar parameter `{name}`",
                p.source.name
            )
        })
    };
    Ok(match kind.as_str() {
        "ridge" => Some(Solver::Ridge {
            lambda: need("lambda")?,
        }),
        "gd" => Some(Solver::Gd {
            alpha: need("alpha")?,
        }),
        "sgd" => Some(Solver::Sgd {
            alpha: need("alpha")?,
            lambda: param("lambda").unwrap_or(0.0),
        }),
        "none" => None,
        other => bail!(
            "{}: `# solver: {other}`: unknown solver (expected ridge, gd, sgd or none)",
            p.source.name
        ),
    })
}

/// Largest `|a − b| / max(|b|, 1)` and `|a − b|` over all prompts and columns.
pub fn max_errors(model: &[Vec<f64>], reference: &[Vec<f64>]) -> (f64, f64) {
    let mut rel: f64 = 0.0;
    let mut abs: f64 = 0.0;
    for (a, b) in model.iter().zip(reference) {
        for (x, y) in a.iter().zip(b) {
            let e = (x - y).abs();
            // NaN counts as infinitely wrong.
            let e = if e.is_nan() { f64::INFINITY } else { e };
            abs = abs.max(e);
            rel = rel.max(e / y.abs().max(1.0));
        }
    }
    (abs, rel)
}

/// Validation prompts: x ~ N(0, I), w ~ N(0, I), noiseless, seeded.
pub fn validation_prompts(p: &Program, count: usize, seed: u64) -> Vec<Prompt> {
    PromptDistribution::new(p.d, p.n).sample_batch(count, seed)
}

/// Compare a model's predictions with the interpreter and the solver.
pub fn errors(model: &[Vec<f64>], interp: &[Vec<f64>], solver: Option<&[Vec<f64>]>) -> Errors {
    let (abs, rel) = max_errors(model, interp);
    Errors {
        max_abs_vs_interp: abs,
        max_rel_vs_interp: rel,
        max_rel_vs_solver: solver.map(|s| max_errors(model, s).1),
        interp_rel_vs_solver: solver.map(|s| max_errors(interp, s).1),
    }
}

/// Lower `p` to the exact target in `dtype`.
pub fn lower(p: &Program, dtype: DType) -> Result<Compiled> {
    lower_to(p, Target::Exact, dtype)
}

/// Lower `p` to `target` in `dtype`.
pub fn lower_to(p: &Program, target: Target, dtype: DType) -> Result<Compiled> {
    match target {
        Target::Exact => lower::compile(p, &LowerOptions { dtype }),
        Target::Paper => lower::paper::compile(p, &lower::paper::PaperOptions { dtype }),
    }
    .with_context(|| format!("lowering {} to the {} target", p.source.name, target.name()))
}

/// The paper target's tolerance: an error when the certified bound exceeds it, naming the first
/// layer whose written values' bound does and what that layer adds on its own.
pub fn check_tolerance(cert: &Certificate, tolerance: f64, dtype: DType) -> Result<()> {
    let bound = cert.end_to_end.bound.0;
    if bound <= tolerance {
        return Ok(());
    }
    let first = cert.layers.iter().find(|l| {
        l.error_after
            .is_some_and(|e| e.0.is_nan() || e.0 > tolerance)
    });
    let at = match first {
        Some(l) => format!(
            "; layer {} ({}) is the first whose values' bound exceeds it ({:.3e}; it adds {:.3e}              on its own)",
            l.index,
            l.ops.join("; "),
            l.error_after.map_or(f64::NAN, |e| e.0),
            l.local_error.map_or(f64::NAN, |e| e.0)
        ),
        None => String::new(),
    };
    bail!(
        "tolerance {tolerance:e} cannot be reached in {}: the best certified end-to-end bound          with the constants chosen to minimise it is {bound:.3e}{at}",
        dtype.name()
    )
}

/// Everything one compile produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub program: Program,
    pub compiled: Compiled,
    /// certificate.json as written (its validation section is [`ValidationReport::record`]).
    pub certificate: Certificate,
    pub validation: Option<ValidationReport>,
}

/// Load, lower, certify, validate and write (module comment).
pub fn run(
    program: &Path,
    sets: &[(String, String)],
    out: &Path,
    opts: &Options,
) -> Result<Outcome> {
    let p = load(program, sets)?;
    if opts.tolerance.is_some() && opts.target != Target::Paper {
        bail!("--tolerance applies to the paper target only (the exact target is exact but for its divisions)");
    }
    if let Some(t) = opts.tolerance {
        if !(t.is_finite() && t > 0.0) {
            bail!("--tolerance must be a positive number, found {t}");
        }
    }
    let compiled = lower_to(&p, opts.target, opts.dtype)?;
    let mut certificate = certify_compiled(&p, &compiled)?;
    if let Some(t) = opts.tolerance {
        check_tolerance(&certificate, t, opts.dtype)?;
    }
    let validation = if opts.prompts > 0 {
        Some(validate(&p, &compiled, opts)?)
    } else {
        None
    };
    certificate.validation = validation.as_ref().map(ValidationReport::record);
    crate::emit::write_dir(out, &compiled, &certificate)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(Outcome {
        program: p,
        compiled,
        certificate,
        validation,
    })
}

/// Load and check a program file.
pub fn load(program: &Path, sets: &[(String, String)]) -> Result<Program> {
    crate::front::load_file(program, sets).map_err(|e| anyhow!("{e}"))
}

/// Run the validation prompts through the model of `compiled` (and of the other dtype's compile).
pub fn validate(p: &Program, compiled: &Compiled, opts: &Options) -> Result<ValidationReport> {
    let prompts = validation_prompts(p, opts.prompts, opts.seed);
    let interp = crate::interp::run_batch_f64(p, &prompts).map_err(|e| {
        anyhow!(
            "the interpreter rejects a validation prompt (seed {}): {e}",
            opts.seed
        )
    })?;
    let solver = solver_for(p)?;
    let solved = solver.map(|s| crate::solvers::predict_batch(&s, &prompts));
    let measure = |c: &Compiled| -> Result<Errors> {
        let pred = run_model(c, &prompts, &opts.device)
            .with_context(|| format!("running the {} model", c.config.dtype.name()))?;
        Ok(errors(&pred, &interp, solved.as_deref()))
    };
    let (f64, f32) = match compiled.config.dtype {
        DType::F64 => (
            measure(compiled)?,
            // A program whose ranges need a LayerNorm payload beyond f32 still compiles in f64;
            // the f32 figure is then reported as unavailable, with the reason.
            match lower_to(p, opts.target, DType::F32) {
                Err(e) => Measurement::Unavailable(format!("{e:#}")),
                Ok(c32) => Measurement::Measured(measure(&c32)?),
            },
        ),
        DType::F32 => (
            measure(&lower_to(p, opts.target, DType::F64)?)?,
            Measurement::Measured(measure(compiled)?),
        ),
    };
    Ok(ValidationReport {
        prompts: opts.prompts,
        seed: opts.seed,
        device: opts.device.clone(),
        solver: solver.map(|s| s.name()),
        f64,
        f32,
    })
}

/// The Candle model of a compile, with the weights exactly as stored in the compile's dtype
/// (serialized and read back, so f32 rounding is the file's).
pub fn build_model(c: &Compiled, device: &str) -> Result<crate::model::Transformer> {
    let dev = crate::model::parse_device(device)?;
    let stored = stored_tensors(c)?;
    Ok(crate::model::Transformer::from_named(
        c.config.clone(),
        &stored,
        &dev,
        c.config.dtype,
        false,
    )?)
}

/// The tensors as `model.safetensors` holds them (rounded to the dtype, widened back to f64).
pub fn stored_tensors(c: &Compiled) -> Result<crate::tensors::NamedTensors> {
    let bytes = crate::tensors::to_bytes(&c.tensors, c.config.dtype);
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("re-reading the serialized weights: {e}"))?;
    let mut out = crate::tensors::NamedTensors::new();
    for (name, view) in st.tensors() {
        let data: Vec<f64> = match view.dtype() {
            safetensors::Dtype::F64 => view
                .data()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
            _ => view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")) as f64)
                .collect(),
        };
        out.insert(
            name,
            crate::tensors::RawTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(out)
}

/// Predictions at every x̃ column of the Candle model of a compile (see [`build_model`]).
pub fn run_model(c: &Compiled, prompts: &[Prompt], device: &str) -> Result<Vec<Vec<f64>>> {
    Ok(build_model(c, device)?.predict_prompts(prompts)?)
}

/// certificate.json for a compile, without the validation section: the per-layer translation
/// validation (`certify`) run on the weights exactly as stored (serialized in the dtype and read
/// back), the config and the layout.
pub fn certify_compiled(p: &Program, c: &Compiled) -> Result<Certificate> {
    let files = crate::certify::ModelFiles {
        config: c.config.clone(),
        tensors: stored_tensors(c)?,
        dtype: c.config.dtype,
        layout: c.layout.clone(),
    };
    crate::certify::certify_model(p, &files)
        .map_err(|e| anyhow!("the certifier rejects the compiled model: {e}"))
}

/// The summary `icl-compile` prints.
pub fn summary(o: &Outcome, dir: &Path) -> String {
    use std::fmt::Write as _;
    let s = &o.compiled.stats;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} (d={}, n={}) → {} [{}]",
        o.program.source.name,
        o.program.d,
        o.program.n,
        dir.display(),
        o.compiled.config.dtype.name()
    );
    let _ = writeln!(
        out,
        "  layers {} (one layer per primitive: {}; {:.2} per example), width {}, parameters {} \
         ({} non-zero), max heads {}, max hidden {}",
        s.layers,
        s.primitives,
        s.layers as f64 / o.program.n.max(1) as f64,
        s.width,
        s.parameters,
        s.nonzero,
        s.max_heads,
        s.max_hidden
    );
    if let Some(worst) = o
        .compiled
        .divs
        .iter()
        .max_by(|a, b| a.relative_error.total_cmp(&b.relative_error))
    {
        let _ = writeln!(
            out,
            "  {} LayerNorm divisions (e.g. layer {}: `{}`), payload P up to 2^{}, relative error ≤ {:.3e} by the compiler's ranges",
            o.compiled.divs.len(),
            worst.layer,
            worst.text,
            o.compiled.divs.iter().map(|d| d.payload_scale.log2() as i64).max().unwrap_or(0),
            worst.relative_error
        );
    }
    if let Some(pp) = &o.compiled.layout.paper {
        let eps = pp.products.iter().flat_map(|x| x.scales).map(f64::log2);
        let (lo, hi) = eps.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), e| {
            (a.min(e), b.max(e))
        });
        let scales = if lo.is_finite() {
            format!(", product scales ε in [2^{lo}, 2^{hi}]")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  paper constants: attention N = {} (codes t/{}), LayerNorm bypass N_ln = {:.3e} (gain 2^{}){scales}",
            pp.attention_scale,
            pp.code_scale,
            pp.bypass_scale,
            pp.bypass_gain.log2()
        );
    }
    let _ = writeln!(
        out,
        "  certificate: {}; {}",
        o.certificate.verdict.name(),
        o.certificate.end_to_end.summary()
    );
    if let Some(v) = &o.validation {
        let _ = writeln!(
            out,
            "  validation: {} prompts (seed {}, {}), solver {}",
            v.prompts,
            v.seed,
            v.device,
            v.solver.as_deref().unwrap_or("none")
        );
        if let Measurement::Unavailable(why) = &v.f32 {
            let _ = writeln!(out, "    f32: unavailable: {why}");
        }
        let measured = std::iter::once(("f64", &v.f64)).chain(v.f32.measured().map(|e| ("f32", e)));
        for (name, e) in measured {
            let _ = writeln!(
                out,
                "    {name}: max |model − interp| {:.3e} (rel {:.3e}){}",
                e.max_abs_vs_interp,
                e.max_rel_vs_interp,
                e.max_rel_vs_solver
                    .map(|r| format!(", max rel vs solver {r:.3e}"))
                    .unwrap_or_default()
            );
        }
    }
    out
}
