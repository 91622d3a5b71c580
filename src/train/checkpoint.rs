//! A run's files: checkpoints (weights, AdamW moments, step) that resume bit-identically, the
//! model directories `train.snapshots` keeps, and the metrics log cut back on resume.

use super::*;

pub(super) fn ckpt_dir(out: &Path, step: usize) -> PathBuf {
    out.join("checkpoints").join(format!("step-{step:08}"))
}

/// The model directory a run keeps for step `step` of `train.snapshots`.
pub fn snapshot_dir(out: &Path, step: usize) -> PathBuf {
    out.join("snapshots").join(format!("step-{step:08}"))
}

/// Write the model directory of `step` when `train.snapshots` lists it. It is written before
/// any checkpoint of the same step, so a resumed run has every snapshot up to its checkpoint.
pub(super) fn save_snapshot(
    out: &Path,
    cfg: &TrainConfig,
    model: &Transformer,
    step: usize,
) -> Result<()> {
    if cfg.train.snapshots.contains(&step) {
        model::save_model_dir(&snapshot_dir(out, step), &model.config, &model.to_named()?)?;
    }
    Ok(())
}

/// Write a complete checkpoint for `step`, then commit it by rewriting `checkpoint.json`, then
/// drop older checkpoints and refresh the top-level model directory.
pub(super) fn save_checkpoint(
    out: &Path,
    cfg: &TrainConfig,
    model: &Transformer,
    opt: &AdamW,
    step: usize,
) -> Result<()> {
    let dir = ckpt_dir(out, step);
    let named = model.to_named()?;
    model::save_model_dir(&dir, &model.config, &named)?;
    let mut ost = NamedTensors::new();
    for (kind, map) in [("m", &opt.m), ("v", &opt.v)] {
        for (name, t) in map {
            let data = t.to_dtype(CDType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            ost.insert(
                format!("{kind}.{name}"),
                RawTensor {
                    shape: t.dims().to_vec(),
                    data,
                },
            );
        }
    }
    ost.insert(
        "t".into(),
        RawTensor {
            shape: vec![1],
            data: vec![opt.t as f64],
        },
    );
    let opath = dir.join("optimizer.safetensors");
    tensors::save(&opath, &ost, DType::F64).map_err(|e| io_err(&opath, e))?;
    let state = CheckpointState {
        step,
        seed: cfg.train.seed,
        rng: match &cfg.init {
            None => "batch of step s drawn from ChaCha8Rng::seed_from_u64(batch_seed(seed, s)); weights initialised from seed".into(),
            Some(i) => format!("batch of step s drawn from ChaCha8Rng::seed_from_u64(batch_seed(seed, s)); weights initialised from the model directory {} (config.init.dir)", i.dir.display()),
        },
        config: cfg.clone(),
    };
    let spath = dir.join("state.json");
    let json = serde_json::to_string_pretty(&state).map_err(|e| io_err(&spath, e))? + "\n";
    tensors::write_atomic(&spath, json.as_bytes()).map_err(|e| io_err(&spath, e))?;
    let commit = out.join("checkpoint.json");
    let pointer = serde_json::json!({ "step": step, "dir": format!("checkpoints/step-{step:08}") });
    tensors::write_atomic(&commit, format!("{pointer}\n").as_bytes())
        .map_err(|e| io_err(&commit, e))?;
    // Older checkpoints are no longer needed once the pointer names this one.
    if let Ok(entries) = std::fs::read_dir(out.join("checkpoints")) {
        for e in entries.flatten() {
            if e.path() != dir {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    model::save_model_dir(out, &model.config, &named)?;
    Ok(())
}

/// The latest committed checkpoint: (step, its directory).
pub fn latest_checkpoint(out: &Path) -> Result<Option<(usize, PathBuf)>> {
    let commit = out.join("checkpoint.json");
    if !commit.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&commit).map_err(|e| io_err(&commit, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| io_err(&commit, e))?;
    let step = v["step"]
        .as_u64()
        .ok_or_else(|| io_err(&commit, "no `step`"))? as usize;
    let dir = v["dir"]
        .as_str()
        .ok_or_else(|| io_err(&commit, "no `dir`"))?;
    Ok(Some((step, out.join(dir))))
}

/// Load a checkpoint made with `cfg` (a checkpoint of another config is refused before its
/// tensors are read).
pub(super) fn load_checkpoint(
    dir: &Path,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<(Transformer, AdamW, CheckpointState)> {
    let spath = dir.join("state.json");
    let text = std::fs::read_to_string(&spath).map_err(|e| io_err(&spath, e))?;
    let state: CheckpointState = serde_json::from_str(&text).map_err(|e| io_err(&spath, e))?;
    if &state.config != cfg {
        return Err(TrainError::Resume(format!(
            "{}: the checkpoint was made with a different config; resume with the run's own train.toml (beside checkpoint.json)",
            dir.display()
        )));
    }
    // The checkpoint's own architecture (never the `--init` directory's, which is not read on
    // resume); it must be the one the config builds.
    let model_cfg = &model::load_config(&dir.join("config.json"))?;
    if model_cfg != &cfg.model_config() {
        return Err(TrainError::Resume(format!(
            "{}: config.json is not the architecture of the run's config (train.toml)",
            dir.display()
        )));
    }
    let wpath = dir.join("model.safetensors");
    let (named, _) = tensors::load(&wpath).map_err(|e| io_err(&wpath, e))?;
    let model = Transformer::from_named(model_cfg.clone(), &named, device, model_cfg.dtype, true)?;
    let opath = dir.join("optimizer.safetensors");
    let (ost, _) = tensors::load(&opath).map_err(|e| io_err(&opath, e))?;
    let mut opt = AdamW::new(&model)?;
    for (kind, map) in [("m", &mut opt.m), ("v", &mut opt.v)] {
        for (name, t) in map.iter_mut() {
            let raw = ost
                .get(&format!("{kind}.{name}"))
                .ok_or_else(|| io_err(&opath, format!("missing `{kind}.{name}`")))?;
            *t = Tensor::from_vec(raw.data.clone(), raw.shape.as_slice(), device)?
                .to_dtype(model.dtype())?;
        }
    }
    opt.t = ost
        .get("t")
        .map(|r| r.data[0] as usize)
        .ok_or_else(|| io_err(&opath, "missing `t`"))?;
    Ok((model, opt, state))
}

/// Keep only the metric lines of steps ≤ `step` (after a resume).
pub(super) fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    tensors::write_atomic(path, kept.as_bytes()).map_err(|e| io_err(path, e))
}
