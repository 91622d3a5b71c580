//! `icl experiment noise CONFIG`: the paper's noise table (Fig. 2). One model per (σ, τ) setting
//! is trained on y = wᵀx + N(0, σ²), w ~ N(0, τ²I); each is compared, on prompts of its own task,
//! with OLS and ridge(λ*) for the Bayes λ* = σ²/τ² of every setting. The matrix of MSPD (rows:
//! predictors, columns: settings) should have each column's minimum on the diagonal — at the
//! setting's own Bayes predictor — as in the paper.

use super::{
    compare_run, ensure_all, read_toml, run_config, short, EvalConfig, Run, RunOptions, RunStatus,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The experiment file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseConfig {
    /// Training config every run starts from (relative to this file).
    pub base: PathBuf,
    /// Folder of the runs (relative to the working directory).
    pub out: PathBuf,
    /// Overrides applied to the base config of every run (`section.field=value`).
    #[serde(default)]
    pub set: Vec<String>,
    /// (σ, τ) pairs.
    pub settings: Vec<[f64; 2]>,
    #[serde(default)]
    pub eval: EvalConfig,
}

#[derive(Debug, Clone, Serialize)]
pub struct Setting {
    pub sigma: f64,
    pub tau: f64,
    pub lambda_star: f64,
    pub run: PathBuf,
    pub status: RunStatus,
}

/// The noise table (written by `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct NoiseTable {
    pub format: String,
    pub settings: Vec<Setting>,
    /// Row labels: `ols` and `ridge(λ*)` for every distinct λ* > 0, increasing (λ* rounded to 4
    /// decimals in the label; exact in `lambdas` and in the solvers).
    pub predictors: Vec<String>,
    pub lambdas: Vec<f64>,
    /// MSPD over k < d, [predictor][setting].
    pub mspd_under: Vec<Vec<f64>>,
    /// MSPD over all k, [predictor][setting].
    pub mspd_all: Vec<Vec<f64>>,
    /// Row of each column's minimum (k < d, all k).
    pub argmin_under: Vec<usize>,
    pub argmin_all: Vec<usize>,
    /// Whether every column's minimum is at the setting's own λ* (k < d, all k).
    pub diagonal_under: bool,
    pub diagonal_all: bool,
    pub d: usize,
    pub n: usize,
    pub prompts: usize,
    pub seed: u64,
}

/// The runs of a noise experiment file.
pub fn runs(path: &Path) -> anyhow::Result<(NoiseConfig, Vec<Run>)> {
    let cfg: NoiseConfig = read_toml(path)?;
    if cfg.settings.is_empty() {
        anyhow::bail!("{}: `settings` is empty", path.display());
    }
    let mut runs = Vec::new();
    for &[sigma, tau] in &cfg.settings {
        if !(sigma.is_finite() && sigma >= 0.0 && tau.is_finite() && tau > 0.0) {
            anyhow::bail!(
                "{}: setting (σ = {sigma}, τ = {tau}): σ must be ≥ 0 and τ > 0",
                path.display()
            );
        }
        let mut sets = cfg.set.clone();
        sets.push(format!("task.noise_std={sigma}"));
        sets.push(format!("task.w_std={tau}"));
        let name = format!("sigma{}_tau{}", short(sigma), short(tau));
        runs.push(Run {
            dir: cfg.out.join(&name),
            config: run_config(path, &cfg.base, &sets)?,
            name,
        });
    }
    Ok((cfg, runs))
}

/// Train (or reuse) every run, then build the table.
pub fn run(path: &Path, opts: &RunOptions) -> anyhow::Result<NoiseTable> {
    let (cfg, runs) = runs(path)?;
    let statuses = ensure_all(&runs, opts)?;
    let lambdas = distinct_lambdas(&cfg.settings);
    let predictors: Vec<String> = lambdas.iter().map(|&l| label(l)).collect();
    let mut under = vec![Vec::new(); lambdas.len()];
    let mut all = vec![Vec::new(); lambdas.len()];
    let mut settings = Vec::new();
    for ((r, &[sigma, tau]), status) in runs.iter().zip(&cfg.settings).zip(statuses) {
        let solvers: Vec<(String, String)> =
            lambdas.iter().map(|&l| (predictor(l), label(l))).collect();
        let c = compare_run(r, &solvers, &cfg.eval, opts)?;
        for (i, p) in predictors.iter().enumerate() {
            let (pair, _) = c.pair(&c.learners[0].label, p).expect("compared");
            under[i].push(pair.mspd_under);
            all[i].push(pair.mspd_all);
        }
        settings.push(Setting {
            sigma,
            tau,
            lambda_star: sigma * sigma / (tau * tau),
            run: r.dir.clone(),
            status,
        });
    }
    let own_row = |s: &Setting| {
        lambdas
            .iter()
            .position(|&l| l == s.lambda_star)
            .expect("listed")
    };
    let argmin = |m: &Vec<Vec<f64>>| -> Vec<usize> {
        (0..settings.len())
            .map(|j| {
                (0..m.len())
                    .min_by(|&a, &b| m[a][j].total_cmp(&m[b][j]))
                    .expect("rows")
            })
            .collect()
    };
    let (argmin_under, argmin_all) = (argmin(&under), argmin(&all));
    let on_diag = |am: &[usize]| settings.iter().zip(am).all(|(s, &r)| own_row(s) == r);
    let d = runs[0].config.task.d;
    Ok(NoiseTable {
        format: "icl-noise-table/1".into(),
        diagonal_under: on_diag(&argmin_under),
        diagonal_all: on_diag(&argmin_all),
        argmin_under,
        argmin_all,
        predictors,
        lambdas,
        mspd_under: under,
        mspd_all: all,
        settings,
        d,
        n: runs[0].config.task.n,
        prompts: cfg.eval.prompts,
        seed: cfg.eval.seed,
    })
}

/// The distinct λ* = σ²/τ² of the settings, increasing.
fn distinct_lambdas(settings: &[[f64; 2]]) -> Vec<f64> {
    let mut l: Vec<f64> = settings.iter().map(|[s, t]| s * s / (t * t)).collect();
    l.sort_by(f64::total_cmp);
    l.dedup();
    l
}

/// The solver SPEC of the Bayes predictor for λ*: OLS at 0 (the σ → 0⁺ limit), else ridge.
fn predictor(lambda: f64) -> String {
    if lambda == 0.0 {
        "ols".into()
    } else {
        format!("ridge:{lambda}")
    }
}

/// The predictor's label: `ols`, or `ridge(λ)` with λ to 4 decimals (1/9 → 0.1111).
fn label(lambda: f64) -> String {
    if lambda == 0.0 {
        return "ols".into();
    }
    let l = format!("{lambda:.4}");
    format!("ridge({})", l.trim_end_matches('0').trim_end_matches('.'))
}

impl NoiseTable {
    /// The matrices as aligned text, each column's minimum marked with `*`.
    pub fn table(&self) -> String {
        let mut out = format!(
            "noise table: MSPD / d between each model and each predictor ({} prompts of the model's own task, seed {}; d = {}, n = {})\n",
            self.prompts, self.seed, self.d, self.n
        );
        for (title, m, am, diag) in [
            (
                "k < d",
                &self.mspd_under,
                &self.argmin_under,
                self.diagonal_under,
            ),
            ("all k", &self.mspd_all, &self.argmin_all, self.diagonal_all),
        ] {
            out += &format!(
                "\nMSPD over {title} (* = column minimum)\n{:<14}",
                "predictor"
            );
            for s in &self.settings {
                out += &format!(
                    " {:>18}",
                    format!("σ={},τ={}→{:.3}", s.sigma, s.tau, s.lambda_star)
                );
            }
            out += "\n";
            for (i, p) in self.predictors.iter().enumerate() {
                out += &format!("{p:<14}");
                for (j, v) in m[i].iter().enumerate() {
                    let mark = if am[j] == i { "*" } else { " " };
                    out += &format!(" {:>17}{mark}", format!("{v:.3e}"));
                }
                out += "\n";
            }
            let hits = self
                .settings
                .iter()
                .zip(am)
                .filter(|(s, &r)| self.lambdas[r] == s.lambda_star)
                .count();
            out += &format!(
                "every column's minimum on the diagonal (at its own Bayes λ*): {} ({hits} of {})\n",
                if diag { "yes" } else { "no" },
                self.settings.len()
            );
        }
        for s in &self.settings {
            out += &format!("run {}: {:?}\n", s.run.display(), s.status);
        }
        out
    }

    /// The figure: the k < d matrix as a heat map, minima marked.
    pub fn heatmap(&self, under: bool) -> crate::plot::Heatmap {
        let (m, am) = if under {
            (&self.mspd_under, &self.argmin_under)
        } else {
            (&self.mspd_all, &self.argmin_all)
        };
        crate::plot::Heatmap {
            title: format!(
                "MSPD / d over {} (d = {}, n = {}); boxes: column minima",
                if under { "k < d" } else { "all k" },
                self.d,
                self.n
            ),
            row_labels: self.predictors.clone(),
            col_labels: self
                .settings
                .iter()
                .map(|s| format!("σ={} τ={}", s.sigma, s.tau))
                .collect(),
            row_title: "predictor".into(),
            col_title: "training task (σ, τ)".into(),
            values: m.clone(),
            marked: am.iter().enumerate().map(|(j, &i)| (i, j)).collect(),
            log_color: true,
        }
    }
}
