//! Named dense tensors in f64, and their safetensors files (read and written atomically).
//!
//! This is the representation the compiler emits and the certifier reads back; the Candle model
//! loads the same files. Values are kept in f64; a file stored as f32 is widened exactly on read.

use crate::model::config::DType;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub shape: Vec<usize>,
    /// Row-major.
    pub data: Vec<f64>,
}

impl RawTensor {
    pub fn zeros(shape: &[usize]) -> Self {
        RawTensor {
            shape: shape.to_vec(),
            data: vec![0.0; shape.iter().product()],
        }
    }
    /// Flat index of a 2-D position.
    pub fn at2(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.shape[1] + j]
    }
    pub fn set2(&mut self, i: usize, j: usize, v: f64) {
        let c = self.shape[1];
        self.data[i * c + j] = v;
    }
}

/// Tensors by name, sorted (so files are byte-identical across runs).
pub type NamedTensors = BTreeMap<String, RawTensor>;

#[derive(Debug, thiserror::Error)]
pub enum TensorFileError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a valid safetensors file: {msg}")]
    Format { path: String, msg: String },
    #[error("{path}: tensor `{name}` has dtype {found}, expected f32 or f64")]
    DType {
        path: String,
        name: String,
        found: String,
    },
    #[error("{path}: tensors have mixed dtypes ({a} and {b})")]
    Mixed { path: String, a: String, b: String },
}

/// Read every tensor of a safetensors file, widening to f64. Returns the file's dtype.
pub fn load(path: &Path) -> Result<(NamedTensors, DType), TensorFileError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| TensorFileError::Io {
        path: p.clone(),
        source: e,
    })?;
    let st =
        safetensors::SafeTensors::deserialize(&bytes).map_err(|e| TensorFileError::Format {
            path: p.clone(),
            msg: e.to_string(),
        })?;
    let mut out = NamedTensors::new();
    let mut dtype: Option<DType> = None;
    for (name, view) in st.tensors() {
        let (dt, data): (DType, Vec<f64>) = match view.dtype() {
            safetensors::Dtype::F64 => (
                DType::F64,
                view.data()
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            safetensors::Dtype::F32 => (
                DType::F32,
                view.data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
            ),
            other => {
                return Err(TensorFileError::DType {
                    path: p,
                    name,
                    found: format!("{other:?}"),
                })
            }
        };
        if let Some(prev) = dtype {
            if prev != dt {
                return Err(TensorFileError::Mixed {
                    path: p,
                    a: prev.name().into(),
                    b: dt.name().into(),
                });
            }
        }
        dtype = Some(dt);
        out.insert(
            name,
            RawTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok((out, dtype.unwrap_or(DType::F64)))
}

/// Serialize tensors to safetensors bytes in `dtype` (f32 rounds to nearest). Deterministic.
pub fn to_bytes(tensors: &NamedTensors, dtype: DType) -> Vec<u8> {
    let buffers: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(name, t)| {
            let bytes = match dtype {
                DType::F64 => t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                DType::F32 => t
                    .data
                    .iter()
                    .flat_map(|v| (*v as f32).to_le_bytes())
                    .collect(),
            };
            (name.clone(), bytes, t.shape.clone())
        })
        .collect();
    let st_dtype = match dtype {
        DType::F64 => safetensors::Dtype::F64,
        DType::F32 => safetensors::Dtype::F32,
    };
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = buffers
        .iter()
        .map(|(n, b, s)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(st_dtype, s.clone(), b)
                    .expect("shape matches data"),
            )
        })
        .collect();
    safetensors::serialize(views, None).expect("serializing in-memory tensors")
}

/// Write `bytes` to `path` atomically: a temporary file in the same folder, then a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Save tensors as a safetensors file, atomically.
pub fn save(path: &Path, tensors: &NamedTensors, dtype: DType) -> std::io::Result<()> {
    write_atomic(path, &to_bytes(tensors, dtype))
}
