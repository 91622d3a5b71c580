//! `icl experiment sweep CONFIG`: the paper's depth/width phase plot (Fig. 3). One model per
//! (layers, width) is trained on the base task; each is compared with the baselines (by default
//! GD(0.02), ridge(0.1), ridge(0.5) and OLS) by MSPD over k < d, and the closest baseline is the
//! setting's phase. Finished runs are reused and an interrupted sweep resumes.

use super::{
    compare_run, ensure_all, read_toml, run_config, EvalConfig, Run, RunOptions, RunStatus,
};
use crate::plot::{LineChart, Scale, Series};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// Training config every run starts from (relative to this file).
    pub base: PathBuf,
    /// Folder of the runs (relative to the working directory).
    pub out: PathBuf,
    #[serde(default)]
    pub set: Vec<String>,
    pub layers: Vec<usize>,
    pub widths: Vec<usize>,
    /// MLP inner width = mlp_ratio · width.
    #[serde(default = "four")]
    pub mlp_ratio: usize,
    /// Solver SPECs to compare with.
    #[serde(default = "default_baselines")]
    pub baselines: Vec<String>,
    #[serde(default)]
    pub eval: EvalConfig,
}

fn four() -> usize {
    4
}
fn default_baselines() -> Vec<String> {
    ["gd:0.02", "ridge:0.1", "ridge:0.5", "ols"]
        .map(String::from)
        .to_vec()
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    pub layers: usize,
    pub width: usize,
    pub run: PathBuf,
    pub status: RunStatus,
    /// MSPD over k < d to each baseline (in `baselines` order).
    pub mspd_under: Vec<f64>,
    /// MSE / d of the model averaged over all k.
    pub mse_all: f64,
    /// The closest baseline.
    pub phase: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    pub format: String,
    pub baselines: Vec<String>,
    pub points: Vec<SweepPoint>,
    pub d: usize,
    pub n: usize,
    pub prompts: usize,
    pub seed: u64,
}

/// The runs of a sweep file, widths outer, layers inner.
pub fn runs(path: &Path) -> anyhow::Result<(SweepConfig, Vec<Run>)> {
    let cfg: SweepConfig = read_toml(path)?;
    if cfg.layers.is_empty() || cfg.widths.is_empty() || cfg.baselines.is_empty() {
        anyhow::bail!(
            "{}: `layers`, `widths` and `baselines` must not be empty",
            path.display()
        );
    }
    let mut runs = Vec::new();
    for &w in &cfg.widths {
        for &l in &cfg.layers {
            let mut sets = cfg.set.clone();
            sets.extend([
                format!("model.layers={l}"),
                format!("model.width={w}"),
                format!("model.mlp_hidden={}", cfg.mlp_ratio * w),
            ]);
            let name = format!("L{l}_W{w}");
            runs.push(Run {
                dir: cfg.out.join(&name),
                config: run_config(path, &cfg.base, &sets)
                    .map_err(|e| anyhow::anyhow!("setting {name}: {e:#}"))?,
                name,
            });
        }
    }
    Ok((cfg, runs))
}

/// Train (or reuse) every run, then compare each with the baselines.
pub fn run(path: &Path, opts: &RunOptions) -> anyhow::Result<Sweep> {
    let (cfg, runs) = runs(path)?;
    let statuses = ensure_all(&runs, opts)?;
    let solvers: Vec<(String, String)> = cfg
        .baselines
        .iter()
        .map(|b| (b.clone(), b.clone()))
        .collect();
    let mut points = Vec::new();
    for (r, status) in runs.iter().zip(statuses) {
        let c = compare_run(r, &solvers, &cfg.eval, opts)?;
        let me = &c.learners[0].label;
        let mspd: Vec<f64> = cfg
            .baselines
            .iter()
            .map(|b| c.pair(me, b).expect("compared").0.mspd_under)
            .collect();
        let best = (0..mspd.len())
            .min_by(|&a, &b| mspd[a].total_cmp(&mspd[b]))
            .expect("baselines");
        points.push(SweepPoint {
            layers: r.config.model.layers,
            width: r.config.model.width,
            run: r.dir.clone(),
            status,
            mse_all: c.mse[0].iter().sum::<f64>() / c.mse[0].len() as f64,
            phase: cfg.baselines[best].clone(),
            mspd_under: mspd,
        });
    }
    Ok(Sweep {
        format: "icl-sweep/1".into(),
        baselines: cfg.baselines.clone(),
        points,
        d: runs[0].config.task.d,
        n: runs[0].config.task.n,
        prompts: cfg.eval.prompts,
        seed: cfg.eval.seed,
    })
}

impl Sweep {
    pub fn table(&self) -> String {
        let mut out = format!(
            "sweep: MSPD / d over k < d to each baseline ({} prompts, seed {}; d = {}, n = {})\n{:>6} {:>6}",
            self.prompts, self.seed, self.d, self.n, "layers", "width"
        );
        for b in &self.baselines {
            out += &format!(" {b:>11}");
        }
        out += &format!(" {:>11}  closest\n", "MSE/d");
        for p in &self.points {
            out += &format!("{:>6} {:>6}", p.layers, p.width);
            for v in &p.mspd_under {
                out += &format!(" {:>11}", format!("{v:.3e}"));
            }
            out += &format!(
                " {:>11}  {} ({:?})\n",
                format!("{:.3e}", p.mse_all),
                p.phase,
                p.status
            );
        }
        out
    }

    /// One chart per width: MSPD (k < d) to each baseline vs the number of layers.
    pub fn charts(&self) -> Vec<LineChart> {
        let mut widths: Vec<usize> = self.points.iter().map(|p| p.width).collect();
        widths.dedup();
        widths
            .iter()
            .map(|&w| LineChart {
                title: format!("width {w}: MSPD / d (k < d) vs depth"),
                x_label: "layers".into(),
                y_label: "MSPD / d".into(),
                series: self
                    .baselines
                    .iter()
                    .enumerate()
                    .map(|(i, b)| Series {
                        label: b.clone(),
                        points: self
                            .points
                            .iter()
                            .filter(|p| p.width == w)
                            .map(|p| (p.layers as f64, p.mspd_under[i]))
                            .collect(),
                    })
                    .collect(),
                x_scale: Scale::Linear,
                y_scale: Scale::Linear,
            })
            .collect()
    }
}
