//! `icl check DIR`: read a compiled model directory, rebuild its program from the certificate's
//! record, certify the model again ([`super::certify_model`]) and hold the stored certificate to
//! what that proves ([`compare_claims`]).

use super::report::{Certificate, EndToEnd, ProgramRecord, Verdict, CERTIFICATE_FORMAT};
use super::{certify_model, ModelFiles};
use crate::ir::Program;
use crate::layout::{Layer, Layout};
use crate::model::config::{ModelConfig, ModelKind};
use std::path::Path;

/// What a model directory holds, parsed (the certificate is the stored claim, re-checked).
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub files: ModelFiles,
    pub certificate: Certificate,
}

/// Read `config.json`, `model.safetensors`, `layout.json` and `certificate.json` of a compiled
/// model directory.
pub fn load_dir(dir: &Path) -> anyhow::Result<ModelDir> {
    use anyhow::Context;
    let read_json = |name: &str| -> anyhow::Result<String> {
        let p = dir.join(name);
        std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()))
    };
    let config: ModelConfig = serde_json::from_str(&read_json("config.json")?)
        .with_context(|| format!("{}: invalid config", dir.join("config.json").display()))?;
    if config.kind != ModelKind::Compiled {
        anyhow::bail!(
            "{}: a trained model has no program to check against (kind \"trained\"); `icl check` \
             certifies compiled models",
            dir.display()
        );
    }
    let layout: Layout = serde_json::from_str(&read_json("layout.json")?)
        .with_context(|| format!("{}: invalid layout", dir.join("layout.json").display()))?;
    let certificate: Certificate = serde_json::from_str(&read_json("certificate.json")?)
        .with_context(|| {
            format!(
                "{}: invalid certificate",
                dir.join("certificate.json").display()
            )
        })?;
    let (tensors, dtype) = crate::tensors::load(&dir.join("model.safetensors"))?;
    Ok(ModelDir {
        files: ModelFiles {
            config,
            tensors,
            dtype,
            layout,
        },
        certificate,
    })
}

/// Rebuild the program a model directory was compiled from (its `certificate.json` source and
/// overrides), through the front end and the static checker.
pub fn rebuild_program(rec: &ProgramRecord) -> anyhow::Result<Program> {
    crate::front::load_program(&rec.name, &rec.source, &rec.overrides).map_err(|d| {
        anyhow::anyhow!(
            "certificate.json: the recorded program does not check:\n{}",
            d.render()
        )
    })
}

/// `icl check DIR`: re-certify a compiled model directory from its files. Errors name the layer
/// and the operation.
pub fn run_check(dir: &Path) -> anyhow::Result<Certificate> {
    run_check_with(dir, rebuild_program)
}

/// [`run_check`] with the program rebuilt by `rebuild` (tests inject hand-built programs).
pub fn run_check_with(
    dir: &Path,
    rebuild: impl Fn(&ProgramRecord) -> anyhow::Result<Program>,
) -> anyhow::Result<Certificate> {
    let md = load_dir(dir)?;
    let program = rebuild(&md.certificate.program)?;
    let cert = certify_model(&program, &md.files)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    compare_claims(&md.certificate, &cert)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    Ok(cert)
}

/// A claim of `certificate.json` that the check does not prove.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClaimError {
    #[error("certificate.json: format `{found}`, expected `{expected}`")]
    Format {
        found: String,
        expected: &'static str,
    },
    #[error("certificate.json lists {stored} layers, the model has {proved}")]
    LayerCount { stored: usize, proved: usize },
    #[error(
        "certificate.json: layer {stored_layer} claims {stored:?}, the check proves {proved:?} \
         for layer {proved_layer}"
    )]
    LayerVerdict {
        stored_layer: Layer,
        stored: Verdict,
        proved_layer: Layer,
        proved: Verdict,
    },
    #[error(
        "certificate.json: layer {layer} claims relative error {stored:e}, the check proves \
         only {proved:e}"
    )]
    RelativeError {
        layer: Layer,
        stored: f64,
        proved: f64,
    },
    #[error(
        "certificate.json: layer {layer} claims its values' error bound {stored:e}, the check \
         proves only {proved:e}"
    )]
    LayerBound {
        layer: Layer,
        stored: f64,
        proved: f64,
    },
    #[error("certificate.json: verdict {stored:?}, the check proves {proved:?}")]
    Verdict { stored: Verdict, proved: Verdict },
    /// (divisions, max relative) of the backward error, as stored and as proved.
    #[error(
        "certificate.json: backward error (divisions, max relative) {stored:?}, the check \
         proves {proved:?}"
    )]
    Backward {
        stored: Option<(usize, f64)>,
        proved: Option<(usize, f64)>,
    },
    #[error("certificate.json: end-to-end bound {stored:e}, the check proves only {proved:e}")]
    Bound { stored: f64, proved: f64 },
}

/// The stored certificate must not claim more than what is proved: same program, same layers,
/// same verdicts, and no stated bound below the recomputed one.
pub fn compare_claims(stored: &Certificate, proved: &Certificate) -> Result<(), ClaimError> {
    if stored.format != CERTIFICATE_FORMAT {
        return Err(ClaimError::Format {
            found: stored.format.clone(),
            expected: CERTIFICATE_FORMAT,
        });
    }
    compare_layer_claims(stored, proved)?;
    if stored.verdict != proved.verdict {
        return Err(ClaimError::Verdict {
            stored: stored.verdict,
            proved: proved.verdict,
        });
    }
    compare_end_to_end(&stored.end_to_end, &proved.end_to_end)
}

/// Same layers with the same verdicts, and no relative error below the proved one.
fn compare_layer_claims(stored: &Certificate, proved: &Certificate) -> Result<(), ClaimError> {
    if stored.layers.len() != proved.layers.len() {
        return Err(ClaimError::LayerCount {
            stored: stored.layers.len(),
            proved: proved.layers.len(),
        });
    }
    for (s, p) in stored.layers.iter().zip(&proved.layers) {
        if s.index != p.index || s.verdict != p.verdict {
            return Err(ClaimError::LayerVerdict {
                stored_layer: s.index,
                stored: s.verdict,
                proved_layer: p.index,
                proved: p.verdict,
            });
        }
        if let (Some(a), Some(b)) = (s.error_after, p.error_after) {
            if a.0 < b.0 || a.0.is_nan() != b.0.is_nan() {
                return Err(ClaimError::LayerBound {
                    layer: s.index,
                    stored: a.0,
                    proved: b.0,
                });
            }
        }
        if let (Some(a), Some(b)) = (s.relative_error, p.relative_error) {
            if a < b {
                return Err(ClaimError::RelativeError {
                    layer: s.index,
                    stored: a,
                    proved: b,
                });
            }
        }
    }
    Ok(())
}

/// The backward error and the end-to-end bound: neither below the proved one.
fn compare_end_to_end(stored: &EndToEnd, proved: &EndToEnd) -> Result<(), ClaimError> {
    let max_rel = |e: &EndToEnd| e.backward.as_ref().map(|b| (b.divisions, b.max_relative));
    match (max_rel(stored), max_rel(proved)) {
        (Some((sn, sr)), Some((pn, pr))) if sn == pn && sr >= pr => {}
        // No record claims nothing (certificates written before the record existed).
        (None, _) => {}
        (stored, proved) => return Err(ClaimError::Backward { stored, proved }),
    }
    if stored.bound.0 < proved.bound.0 {
        return Err(ClaimError::Bound {
            stored: stored.bound.0,
            proved: proved.bound.0,
        });
    }
    Ok(())
}
