//! Prompt sets as files, so every learner, every command and outside tools (numpy) see identical
//! prompts (docs/FORMATS.md, "Prompt sets").
//!
//! A prompt set is a safetensors file with three f64 tensors — `xs` [B, n+1, d] (the n examples'
//! x then the query's), `ys` [B, n+1] (the labels, the query's true y last) and `ws` [B, d] (the
//! weight vector each prompt was drawn from) — and one metadata entry, `icl-prompts`, a JSON
//! object `{format, spec, distribution, seed, count}` saying which distribution drew them. A
//! single metadata key keeps the file byte-identical across runs.

use crate::prompt::{Prompt, PromptDistribution};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The `format` value of the metadata.
pub const FORMAT: &str = "icl-prompts/1";
/// The metadata key holding [`Provenance`] as JSON.
pub const METADATA_KEY: &str = "icl-prompts";

/// Where a prompt set came from (the file's metadata).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub format: String,
    /// The distribution as a `--dist` SPEC.
    pub spec: String,
    pub distribution: PromptDistribution,
    /// The sampler's seed.
    pub seed: u64,
    pub count: usize,
}

/// Prompts and the distribution that drew them.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptSet {
    pub dist: PromptDistribution,
    pub seed: u64,
    pub prompts: Vec<Prompt>,
}

#[derive(Debug, thiserror::Error)]
pub enum PromptSetError {
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--count must be at least 1")]
    Empty,
}

impl PromptSet {
    /// `count` prompts drawn from `dist` with `seed` (deterministic).
    pub fn sample(
        dist: &PromptDistribution,
        count: usize,
        seed: u64,
    ) -> Result<Self, PromptSetError> {
        if count == 0 {
            return Err(PromptSetError::Empty);
        }
        Ok(PromptSet {
            dist: dist.clone(),
            seed,
            prompts: dist.sample_batch(count, seed),
        })
    }

    pub fn d(&self) -> usize {
        self.dist.d
    }
    pub fn n(&self) -> usize {
        self.dist.n
    }

    /// The safetensors bytes of this set (deterministic).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Shapes from the prompts themselves (the metadata says what they should be; `load`
        // compares the two).
        let (b, n1, d) = match self.prompts.first() {
            Some(p) => (self.prompts.len(), p.xs.len(), p.d()),
            None => (0, self.n() + 1, self.d()),
        };
        let f = |v: &mut dyn Iterator<Item = f64>| -> Vec<u8> {
            v.flat_map(|x| x.to_le_bytes()).collect()
        };
        let xs = f(&mut self
            .prompts
            .iter()
            .flat_map(|p| p.xs.iter().flatten().copied()));
        let ys = f(&mut self.prompts.iter().flat_map(|p| p.ys.iter().copied()));
        let ws = f(&mut self.prompts.iter().flat_map(|p| p.w.iter().copied()));
        let views = vec![
            ("xs", view(&xs, vec![b, n1, d])),
            ("ys", view(&ys, vec![b, n1])),
            ("ws", view(&ws, vec![b, d])),
        ];
        let meta = Provenance {
            format: FORMAT.into(),
            spec: self.dist.spec(),
            distribution: self.dist.clone(),
            seed: self.seed,
            count: b,
        };
        let meta = serde_json::to_string(&meta).expect("provenance serializes");
        let md = std::collections::HashMap::from([(METADATA_KEY.to_string(), meta)]);
        safetensors::serialize(views, Some(md)).expect("serializing in-memory tensors")
    }

    /// Write the set to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), PromptSetError> {
        crate::tensors::write_atomic(path, &self.to_bytes()).map_err(|source| PromptSetError::Io {
            path: path.into(),
            source,
        })
    }

    /// Read a prompt set, checking the metadata, the three tensors' dtype and shapes against each
    /// other and the distribution, and that every value is finite.
    pub fn load(path: &Path) -> Result<Self, PromptSetError> {
        let bytes = std::fs::read(path).map_err(|source| PromptSetError::Io {
            path: path.into(),
            source,
        })?;
        Self::from_bytes(&bytes).map_err(|msg| PromptSetError::Invalid {
            path: path.into(),
            msg,
        })
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| format!("not a safetensors file: {e}"))?;
        let meta = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(METADATA_KEY))
            .ok_or(format!(
                "no `{METADATA_KEY}` metadata (not written by `icl prompts`?)"
            ))?;
        let prov: Provenance =
            serde_json::from_str(meta).map_err(|e| format!("metadata `{METADATA_KEY}`: {e}"))?;
        if prov.format != FORMAT {
            return Err(format!("format `{}`, expected `{FORMAT}`", prov.format));
        }
        let dist = prov.distribution;
        dist.validate().map_err(|e| format!("distribution: {e}"))?;
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| format!("not a safetensors file: {e}"))?;
        let (b, n1, d) = (prov.count, dist.n + 1, dist.d);
        let xs = read_f64(&st, "xs", &[b, n1, d])?;
        let ys = read_f64(&st, "ys", &[b, n1])?;
        let ws = read_f64(&st, "ws", &[b, d])?;
        if st.len() != 3 {
            return Err(format!(
                "expected exactly xs, ys and ws; found {:?}",
                st.names()
            ));
        }
        if b == 0 {
            return Err("the set holds no prompts".into());
        }
        let prompts = (0..b)
            .map(|i| Prompt {
                xs: (0..n1)
                    .map(|j| xs[(i * n1 + j) * d..(i * n1 + j + 1) * d].to_vec())
                    .collect(),
                ys: ys[i * n1..(i + 1) * n1].to_vec(),
                w: ws[i * d..(i + 1) * d].to_vec(),
            })
            .collect();
        Ok(PromptSet {
            dist,
            seed: prov.seed,
            prompts,
        })
    }
}

/// A safetensors view of f64 bytes.
fn view(bytes: &[u8], shape: Vec<usize>) -> safetensors::tensor::TensorView<'_> {
    safetensors::tensor::TensorView::new(safetensors::Dtype::F64, shape, bytes)
        .expect("shape matches data")
}

/// A tensor of `st` as f64 values, checked for dtype, shape and finiteness.
fn read_f64(
    st: &safetensors::SafeTensors,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f64>, String> {
    let v = st
        .tensor(name)
        .map_err(|_| format!("missing tensor `{name}`"))?;
    if v.dtype() != safetensors::Dtype::F64 {
        return Err(format!(
            "tensor `{name}` has dtype {:?}, expected F64",
            v.dtype()
        ));
    }
    if v.shape() != shape {
        return Err(format!(
            "tensor `{name}` has shape {:?}, expected {shape:?} (from the metadata's count, n and d)",
            v.shape()
        ));
    }
    let data: Vec<f64> = v
        .data()
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
        return Err(format!(
            "tensor `{name}` holds a non-finite value ({}) at flat index {i}",
            data[i]
        ));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> PromptSet {
        let dist = PromptDistribution::parse_spec("d=3,n=5,noise=0.25").unwrap();
        PromptSet::sample(&dist, 7, 11).unwrap()
    }

    #[test]
    fn a_set_round_trips_byte_identically() {
        let s = set();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.safetensors");
        s.save(&path).unwrap();
        let back = PromptSet::load(&path).unwrap();
        assert_eq!(back, s);
        assert_eq!(std::fs::read(&path).unwrap(), set().to_bytes());
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        let mut s = set();
        s.prompts[2].ys[1] = f64::NAN;
        std::fs::write(&path, s.to_bytes()).unwrap();
        let e = PromptSet::load(&path).unwrap_err().to_string();
        assert!(e.contains("non-finite") && e.contains("`ys`"), "{e}");
        // A set whose metadata claims another d.
        let mut s = set();
        s.dist.d = 4;
        std::fs::write(&path, s.to_bytes()).unwrap();
        let e = PromptSet::load(&path).unwrap_err().to_string();
        assert!(e.contains("shape"), "{e}");
        // Model weights are not a prompt set.
        std::fs::write(
            &path,
            crate::tensors::to_bytes(&Default::default(), crate::model::config::DType::F64),
        )
        .unwrap();
        let e = PromptSet::load(&path).unwrap_err().to_string();
        assert!(e.contains("metadata"), "{e}");
        std::fs::write(&path, b"junk").unwrap();
        assert!(PromptSet::load(&path).is_err());
    }
}
