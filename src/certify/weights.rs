//! The stored tensors, resolved once through the schema ([`crate::model::schema`]): every tensor
//! the config requires, present with its shape, and no other. The checks read the typed views
//! (a struct per block part) and name a tensor by the name the schema gave it.

use super::error::{CertifyError, Part};
use super::exact::Dy;
use crate::model::config::ModelConfig;
use crate::model::schema::{TensorSpec, Weights};
use crate::tensors::{NamedTensors, RawTensor};

/// A stored tensor with its name in `model.safetensors`.
#[derive(Debug, Clone)]
pub struct Stored<'a> {
    pub name: String,
    pub tensor: &'a RawTensor,
}

impl std::ops::Deref for Stored<'_> {
    type Target = RawTensor;
    fn deref(&self) -> &RawTensor {
        self.tensor
    }
}

/// A sparse exact matrix: `rows[i]` = the non-zero (column, value) pairs of row i.
pub type SparseRows = Vec<Vec<(usize, Dy)>>;

fn not_finite(name: &str, at: String, v: f64) -> CertifyError {
    CertifyError::new(
        Part::Files,
        format!("model.safetensors: `{name}`[{at}] is {v}, not a finite number"),
    )
}

impl<'a> Stored<'a> {
    /// The rows of a (1- or 2-D) weight tensor as sparse exact rows.
    pub fn sparse_rows(&self) -> Result<SparseRows, CertifyError> {
        let t = self.tensor;
        let (r, c) = (t.shape[0], t.shape.get(1).copied().unwrap_or(1));
        let mut out = vec![Vec::new(); r];
        for (i, row) in out.iter_mut().enumerate() {
            for j in 0..c {
                let v = t.data[i * c + j];
                if v != 0.0 {
                    let d = Dy::from_f64(v)
                        .ok_or_else(|| not_finite(&self.name, format!("{i},{j}"), v))?;
                    row.push((j, d));
                }
            }
        }
        Ok(out)
    }

    /// The columns of a 2-D weight tensor as sparse exact columns: `cols[j]` = the non-zero
    /// (row, value) pairs of column j.
    pub fn sparse_cols(&self) -> Result<SparseRows, CertifyError> {
        let mut cols = vec![Vec::new(); self.tensor.shape[1]];
        for (i, row) in self.sparse_rows()?.into_iter().enumerate() {
            for (j, v) in row {
                cols[j].push((i, v));
            }
        }
        Ok(cols)
    }

    /// The exact values of a 1-D tensor.
    pub fn exact_vec(&self) -> Result<Vec<Dy>, CertifyError> {
        let t = self.tensor;
        t.data
            .iter()
            .enumerate()
            .map(|(i, &v)| Dy::from_f64(v).ok_or_else(|| not_finite(&self.name, i.to_string(), v)))
            .collect()
    }
}

/// Stored tensor `s` (present: checked by [`resolve`]), checked to have its shape.
fn stored<'a>(s: &TensorSpec, tensors: &'a NamedTensors) -> Result<Stored<'a>, CertifyError> {
    let t = &tensors[&s.name];
    if t.shape != s.shape || t.data.len() != s.shape.iter().product::<usize>() {
        return Err(CertifyError::new(
            Part::Files,
            format!(
                "model.safetensors: tensor `{}` has shape {:?}, expected {:?}",
                s.name, t.shape, s.shape
            ),
        ));
    }
    Ok(Stored {
        name: s.name.clone(),
        tensor: t,
    })
}

/// The tensor set matches the config exactly (no tensor the normal forms would not read), each
/// tensor with its shape: the typed views the checks read. Missing tensors are named first (in
/// name order), then unexpected ones, then wrong shapes.
pub fn resolve<'a>(
    cfg: &ModelConfig,
    tensors: &'a NamedTensors,
) -> Result<Weights<Stored<'a>>, CertifyError> {
    let spec = Weights::spec(cfg);
    let names = spec.shapes();
    if let Some(name) = names.keys().find(|n| !tensors.contains_key(*n)) {
        return Err(CertifyError::new(
            Part::Files,
            format!("model.safetensors: missing tensor `{name}`"),
        ));
    }
    if let Some(name) = tensors.keys().find(|n| !names.contains_key(*n)) {
        return Err(CertifyError::new(
            Part::Files,
            format!(
                "model.safetensors: unexpected tensor `{name}` (not in config.json's architecture)"
            ),
        ));
    }
    spec.try_map(|s| stored(s, tensors))
}
