//! The from-compiled experiment's table and figure.

use super::*;
use crate::plot::{Figure, LineChart, Panel, Scale, Series};

/// Normalised MSEs per k below this are rounding, not error (figure only): OLS is exact at
/// k ≥ d on a noiseless task, and its 1e-28 would only stretch the log axis.
const ROUNDING: f64 = 1e-9;

/// A value for the tables: `non-finite` where it is not a number.
fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3e}")
    } else {
        "non-finite".into()
    }
}

impl FromCompiledReport {
    /// Aligned text: the setting; per run, the metrics at every evaluated step; MSE and SPD per k
    /// of the compiled model and of each run's last finite step.
    pub fn table(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut out = format!(
            "training from compiled weights: {} ({}) compiled to the paper target in {} ({} layers, width {}, {} parameters)\n\
             training: d = {}, n = {}, {} steps of batch {}, warm-up {} of the steps then cosine, seed {}, one run per learning rate\n\
             evaluation: {} prompts (seed {}) of the training task; MSE and SPD are divided by d; nMSE = MSE_k / zero-predictor MSE_k, averaged over k\n\
             weights against the run's step 0: changed (were 0: of them, the construction's structural zeros), the largest |w| of a former zero, the largest relative change of a non-zero weight\n",
            self.program.display(),
            params.join(", "),
            format!("{:?}", self.dtype).to_lowercase(),
            self.layers,
            self.width,
            self.parameters,
            self.d,
            self.n,
            self.steps,
            self.batch,
            self.warmup_frac,
            self.train_seed,
            self.prompts,
            self.eval_seed,
        );
        let labels: Vec<&str> = self.baselines.iter().map(|b| b.label.as_str()).collect();
        let mut head = format!(
            "{:>7} {:>11} {:>11} {:>11}",
            "step", "batch loss", "MSE/d", "nMSE"
        );
        for l in &labels {
            head += &format!(" {:>22}", format!("MSPD {l} k<d|all"));
        }
        let row = |step: String, loss: String, e: &StepEval| {
            let mut r = format!(
                "{step:>7} {loss:>11} {:>11} {:>11}",
                num(e.errors.mse),
                num(e.errors.nmse)
            );
            for (u, a) in e.mspd_under.iter().zip(&e.mspd_all) {
                r += &format!(" {:>22}", format!("{}|{}", num(*u), num(*a)));
            }
            if let Some(m) = &e.moved {
                r += &format!(
                    " {:>9} {:>9} {:>10} {:>10}",
                    m.changed,
                    m.changed_zeros,
                    format!("{:.1e}", m.max_abs_former_zero),
                    format!("{:.1e}", m.max_rel_change_nonzero)
                );
            }
            r + "\n"
        };
        out += &format!("\ncompiled model ({})\n{head}\n", self.compiled.display());
        out += &row("—".into(), "—".into(), &self.compiled_eval);
        for b in &self.baselines {
            out += &format!(
                "{:>7} {:>11} {:>11} {:>11}   ({})\n",
                "",
                "",
                num(b.errors.mse),
                num(b.errors.nmse),
                b.label
            );
        }
        for a in &self.arms {
            out += &format!("\nlr {:e} ({}, {:?})", a.lr, a.run.display(), a.status);
            if let Some(d) = &a.diverged {
                out += &format!(
                    ": loss {} after {} steps — training stopped there",
                    d.loss, d.after_steps
                );
            }
            out += &format!(
                "\n{head} {:>9} {:>9} {:>10} {:>10}\n",
                "changed", "were 0", "max|w|,w0=0", "max|Δw/w0|"
            );
            for e in &a.evals {
                let loss = e.batch_loss.map_or("—".into(), num);
                out += &row(e.step.to_string(), loss, e);
            }
        }
        out += &self.per_k_table();
        out
    }

    /// MSE / d and SPD / d per k: the compiled model and each run's last finite step.
    fn per_k_table(&self) -> String {
        let mut cols: Vec<(String, &StepEval)> = vec![("compiled".into(), &self.compiled_eval)];
        for a in &self.arms {
            if let Some(e) = a.last_finite() {
                cols.push((format!("lr {:e} @{}", a.lr, e.step), e));
            }
        }
        let mut out = String::new();
        let mut block = |title: String, value: &dyn Fn(&StepEval, usize) -> f64, extra: bool| {
            out += &format!("\n{title}\n{:>3}", "k");
            for (c, _) in &cols {
                out += &format!(" {c:>20}");
            }
            if extra {
                for b in &self.baselines {
                    out += &format!(" {:>12}", b.label);
                }
            }
            out += "\n";
            for k in 0..self.zero_mse_per_k.len() {
                out += &format!("{k:>3}");
                for (_, e) in &cols {
                    out += &format!(" {:>20}", num(value(e, k)));
                }
                if extra {
                    for b in &self.baselines {
                        out += &format!(" {:>12}", num(b.errors.mse_per_k[k]));
                    }
                }
                out += "\n";
            }
        };
        block(
            "MSE / d per k (each run at its last evaluated step with finite predictions)".into(),
            &|e, k| e.errors.mse_per_k[k],
            true,
        );
        for (i, b) in self.baselines.iter().enumerate() {
            block(
                format!("SPD / d to {} per k", b.label),
                &|e, k| e.spd[i][k],
                false,
            );
        }
        out
    }

    /// The zoomed panels draw values up to this: ten times the zero predictor's MSE / d (mean
    /// over k); a model further off than that has lost the task.
    pub fn zoom_cap(&self) -> f64 {
        10.0 * self.zero_mse_per_k.iter().sum::<f64>() / self.zero_mse_per_k.len() as f64
    }

    /// One series per run (in `lrs` order, so every panel colours a run alike): `value` at each
    /// evaluated step ≥ 1; values above `cap` (and non-finite ones) left out, and counted in the
    /// label.
    fn arm_series(&self, value: &dyn Fn(&StepEval) -> f64, cap: Option<f64>) -> Vec<Series> {
        (self.arms.iter())
            .map(|a| {
                let mut hidden = 0;
                let points = (a.evals.iter().filter(|e| e.step > 0))
                    .map(|e| {
                        let v = value(e);
                        let shown = v.is_finite() && cap.is_none_or(|c| v <= c);
                        hidden += usize::from(!shown);
                        (e.step as f64, if shown { v } else { f64::NAN })
                    })
                    .collect();
                let mut label = arm_label(a);
                // Where nothing is left the plot says "(no drawable points)" itself.
                if hidden > 0 && hidden < a.evals.iter().filter(|e| e.step > 0).count() {
                    label += &match cap {
                        Some(c) => format!(" ({hidden} above {c:.1e} or not finite)"),
                        None => format!(" ({hidden} not finite)"),
                    };
                }
                Series::new(label, points)
            })
            .collect()
    }

    /// A chart of `value` vs the training step (log-log), one series per run, then the level
    /// lines `levels` (label, value) across the evaluated steps.
    fn step_chart(
        &self,
        title: String,
        y_label: String,
        value: &dyn Fn(&StepEval) -> f64,
        cap: Option<f64>,
        levels: &[(String, f64)],
    ) -> LineChart {
        let mut c = LineChart::new(title, "training step", y_label);
        c.x_scale = Scale::Log;
        c.y_scale = Scale::Log;
        c.series = self.arm_series(value, cap);
        let xs: Vec<f64> = (self.eval_steps.iter())
            .filter(|&&s| s > 0)
            .map(|&s| s as f64)
            .collect();
        if let (Some(&lo), Some(&hi)) = (xs.first(), xs.last()) {
            for (label, y) in levels {
                let y = if *y > TINY { *y } else { f64::NAN };
                c.series.push(Series::new(
                    format!("{label}: {}", num(y)),
                    vec![(lo, y), (hi, y)],
                ));
            }
        }
        c
    }

    /// MSE / d (mean over k) vs step, with the compiled model's and the baselines' levels.
    fn mse_chart(&self, cap: Option<f64>) -> LineChart {
        let mut levels = vec![(
            "compiled (step 0)".to_string(),
            self.compiled_eval.errors.mse,
        )];
        levels.extend((self.baselines.iter()).map(|b| (b.label.clone(), b.errors.mse)));
        let title = match cap {
            None => "MSE / d (mean over k) vs training step: every run".to_string(),
            Some(c) => format!("MSE / d (mean over k), values ≤ {c:.1e}"),
        };
        self.step_chart(title, "MSE / d".into(), &|e| e.errors.mse, cap, &levels)
    }

    /// MSPD (over all k) to baseline `i` vs step, values up to `cap`, with the compiled level.
    fn spd_chart(&self, i: usize, cap: f64) -> LineChart {
        let label = &self.baselines[i].label;
        self.step_chart(
            format!("SPD / d to {label} (mean over all k), values ≤ {cap:.1e}"),
            format!("MSPD / d to {label}"),
            &|e| e.mspd_all[i],
            Some(cap),
            &[("compiled (step 0)".into(), self.compiled_eval.mspd_all[i])],
        )
    }

    /// The largest |w| a structural zero of the compiled model has reached, vs step.
    fn zeros_chart(&self) -> LineChart {
        self.step_chart(
            "largest |w| of a weight that is 0 in the compiled model".into(),
            "max |w|, w₀ = 0".into(),
            &|e| e.moved.as_ref().map_or(f64::NAN, |m| m.max_abs_former_zero),
            None,
            &[],
        )
    }

    /// Normalised MSE per k: each run at its last finite step (values up to `cap`), the
    /// compiled model, the baselines.
    fn per_k_chart(&self, cap: f64) -> LineChart {
        let mut c = LineChart::new(
            format!(
                "normalised MSE per k (d = {}, n = {}): runs at their last finite step, ≤ {cap:.1e}",
                self.d,
                self.n,
            ),
            "k (in-context examples)",
            "MSE_k / zero-predictor MSE_k",
        );
        c.x_scale = Scale::Linear;
        c.y_scale = Scale::Log;
        let ks = |v: &[f64]| -> Vec<(f64, f64)> {
            (v.iter().enumerate())
                .map(|(k, &y)| {
                    (
                        k as f64,
                        if y > ROUNDING && y <= cap {
                            y
                        } else {
                            f64::NAN
                        },
                    )
                })
                .collect()
        };
        for a in &self.arms {
            let (label, points) = match a.last_finite().filter(|e| e.step > 0) {
                Some(e) => (
                    format!("{} at step {}", arm_label(a), e.step),
                    ks(&e.errors.nmse_per_k),
                ),
                None => (arm_label(a), Vec::new()),
            };
            c.series.push(Series::new(label, points));
        }
        c.series.push(Series::new(
            "compiled (step 0)",
            ks(&self.compiled_eval.errors.nmse_per_k),
        ));
        for b in &self.baselines {
            let small = b
                .errors
                .nmse_per_k
                .iter()
                .filter(|&&y| y <= ROUNDING)
                .count();
            let label = if small > 0 {
                format!("{} ({small} values ≤ {ROUNDING:e} not drawn)", b.label)
            } else {
                b.label.clone()
            };
            c.series.push(Series::new(label, ks(&b.errors.nmse_per_k)));
        }
        c
    }

    /// The figure: MSE vs step (every run, then zoomed), SPD to each baseline vs step (zoomed),
    /// normalised MSE per k, and how far the structural zeros moved.
    pub fn figure(&self) -> Figure {
        let cap = self.zoom_cap();
        let mut panels = vec![
            Panel::Line(self.mse_chart(None)),
            Panel::Line(self.mse_chart(Some(cap))),
        ];
        panels.extend((0..self.baselines.len()).map(|i| Panel::Line(self.spd_chart(i, cap))));
        panels.push(Panel::Line(self.per_k_chart(cap)));
        panels.push(Panel::Line(self.zeros_chart()));
        Figure {
            panels,
            columns: 2,
            panel_size: (680, 480),
        }
    }
}

fn arm_label(a: &ArmResult) -> String {
    match &a.diverged {
        Some(d) => format!("lr {:e} (loss {} after {})", a.lr, d.loss, d.after_steps),
        None => format!("lr {:e}", a.lr),
    }
}
