//! Writing a compiled model directory (docs/FORMATS.md): `model.safetensors`,
//! `config.json`, `layout.json`, `certificate.json`.
//!
//! Deterministic: tensors are sorted by name (BTreeMap), config.json and layout.json come from
//! structs with fixed field order and BTreeMaps, certificate.json from the typed certificate with
//! every object's keys sorted, floats are written by serde_json's shortest round-trip formatting,
//! and nothing records a time or a path. Atomic: the four files are written into a fresh temporary
//! folder beside the target, which then replaces the target by renames; a failure leaves either
//! the old folder or the new one, never a half-written one.

use crate::certify::Certificate;
use crate::lower::Compiled;
use crate::tensors::{self, NamedTensors};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error("{path}: cannot write the model directory: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot serialize {what}: {msg}")]
    Json { what: String, msg: String },
}

/// Pretty JSON with a trailing newline.
pub fn to_json<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>, EmitError> {
    let mut s = serde_json::to_vec_pretty(v).map_err(|e| EmitError::Json {
        what: what.into(),
        msg: e.to_string(),
    })?;
    s.push(b'\n');
    Ok(s)
}

/// certificate.json's text (without the trailing newline of the file): pretty JSON with every
/// object's keys in sorted order, the form certificate.json has always had (it was built as a
/// `serde_json::Value`, whose maps are sorted), so the bytes do not depend on the field order of
/// the [`Certificate`] structs.
pub fn certificate_text(certificate: &Certificate) -> Result<String, EmitError> {
    let err = |e: serde_json::Error| EmitError::Json {
        what: "certificate.json".into(),
        msg: e.to_string(),
    };
    let sorted = serde_json::to_value(certificate).map_err(err)?;
    serde_json::to_string_pretty(&sorted).map_err(err)
}

/// The four files of a compiled model directory, as bytes (name, content), in a fixed order.
pub fn files(
    compiled: &Compiled,
    certificate: &Certificate,
) -> Result<Vec<(&'static str, Vec<u8>)>, EmitError> {
    Ok(vec![
        (
            "model.safetensors",
            tensors::to_bytes(&compiled.tensors, compiled.config.dtype),
        ),
        ("config.json", to_json("config.json", &compiled.config)?),
        ("layout.json", to_json("layout.json", &compiled.layout)?),
        (
            "certificate.json",
            (certificate_text(certificate)? + "\n").into_bytes(),
        ),
    ])
}

/// Write a compiled model directory atomically (see the module comment).
pub fn write_dir(
    dir: &Path,
    compiled: &Compiled,
    certificate: &Certificate,
) -> Result<(), EmitError> {
    let contents = files(compiled, certificate)?;
    write_files_atomic(dir, &contents)
}

/// Replace folder `dir` by one holding exactly `files`, atomically.
pub fn write_files_atomic(dir: &Path, files: &[(&str, Vec<u8>)]) -> Result<(), EmitError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| EmitError::Io { path, source }
    };
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let name = dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let pid = std::process::id();
    let tmp: PathBuf = parent.join(format!(".{name}.tmp-{pid}"));
    let old: PathBuf = parent.join(format!(".{name}.old-{pid}"));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| {
        std::fs::create_dir(&tmp).map_err(io(&tmp))?;
        for (fname, bytes) in files {
            let path = tmp.join(fname);
            std::fs::write(&path, bytes).map_err(io(&path))?;
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io(&path))?;
        }
        if dir.exists() {
            let _ = std::fs::remove_dir_all(&old);
            std::fs::rename(dir, &old).map_err(io(dir))?;
            if let Err(e) = std::fs::rename(&tmp, dir) {
                // Put the old folder back.
                let _ = std::fs::rename(&old, dir);
                return Err(io(dir)(e));
            }
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&tmp, dir).map_err(io(dir))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// A readable listing of tensors for snapshots: every non-zero entry by name and index with its
/// exact value (Rust's shortest round-trip formatting of the f64). Attention bias tensors, whose
/// entries are 0 or −∞, are listed as the allowed keys (entries 0) per head and query; any other
/// value in them is listed as an entry.
pub fn listing(tensors: &NamedTensors) -> String {
    let mut s = String::new();
    for (name, t) in tensors {
        let _ = writeln!(s, "{name} {:?}", t.shape);
        if name.ends_with("attn.bias") && t.shape.len() == 3 {
            let (nh, tq, tk) = (t.shape[0], t.shape[1], t.shape[2]);
            for h in 0..nh {
                for q in 0..tq {
                    let mut keys = Vec::new();
                    for k in 0..tk {
                        let v = t.data[(h * tq + q) * tk + k];
                        let key = if k + 1 == tk {
                            "null".to_string()
                        } else {
                            k.to_string()
                        };
                        if v == 0.0 {
                            keys.push(key);
                        } else if v != f64::NEG_INFINITY {
                            keys.push(format!("{key}={v:?}"));
                        }
                    }
                    let _ = writeln!(s, "  head {h} query {q}: keys {}", keys.join(" "));
                }
            }
            continue;
        }
        let dims = t.shape.clone();
        for (i, v) in t.data.iter().enumerate() {
            if *v != 0.0 {
                let mut idx = Vec::with_capacity(dims.len());
                let mut rem = i;
                for d in dims.iter().rev() {
                    idx.push(rem % d);
                    rem /= d;
                }
                idx.reverse();
                let idx: Vec<String> = idx.iter().map(|x| x.to_string()).collect();
                let _ = writeln!(s, "  [{}] = {v:?}", idx.join(", "));
            }
        }
    }
    s
}
