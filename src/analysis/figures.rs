//! Figures of the analysis commands (PNG + SVG through [`crate::plot`]).

use super::compare::Comparison;
use super::tables::subjects;
use crate::plot::{self, Figure, LineChart, Panel, Scale, Series};
use std::path::{Path, PathBuf};

/// A file-name-safe form of a learner label.
pub fn slug(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn per_k(values: &[f64]) -> Vec<(f64, f64)> {
    values
        .iter()
        .enumerate()
        .map(|(k, &v)| (k as f64, v))
        .collect()
}

fn chart(title: String, y_label: &str, series: Vec<Series>) -> LineChart {
    LineChart {
        title,
        x_label: "k (examples before the query)".into(),
        y_label: y_label.into(),
        series,
        x_scale: Scale::Linear,
        y_scale: Scale::Auto,
    }
}

/// Learners in plotting order: solvers first, then models and programs, so that a learner keeps
/// its colour across the MSE chart and the SPD/ILWD charts (which leave their subject out).
fn plot_order(c: &Comparison) -> Vec<usize> {
    let solver = |i: &usize| c.learners[*i].kind == super::learner::LearnerKind::Solver;
    let (mut a, b): (Vec<usize>, Vec<usize>) = (0..c.learners.len()).partition(solver);
    a.extend(b);
    a
}

/// MSE / d of every learner vs k.
pub fn mse_chart(c: &Comparison) -> LineChart {
    let series = plot_order(c)
        .into_iter()
        .map(|i| (&c.learners[i], &c.mse[i]))
        .map(|(l, m)| Series {
            label: l.label.clone(),
            points: per_k(m),
        })
        .collect();
    chart(
        format!("MSE / d to the target (d = {}, {} prompts)", c.d, c.prompts),
        "MSE / d",
        series,
    )
}

/// SPD (`ilwd` false) or ILWD between `subject` and every other learner vs k.
pub fn divergence_chart(c: &Comparison, subject: &str, ilwd: bool) -> LineChart {
    let series = plot_order(c)
        .into_iter()
        .map(|i| &c.learners[i])
        .filter(|l| l.label != subject)
        .filter_map(|l| {
            let (p, _) = c.pair(subject, &l.label)?;
            Some(Series {
                label: l.label.clone(),
                points: per_k(if ilwd { &p.ilwd } else { &p.spd }),
            })
        })
        .collect();
    let name = if ilwd { "ILWD / d" } else { "SPD / d" };
    chart(
        format!("{name} between {subject} and each learner"),
        name,
        series,
    )
}

/// `mse`, and per subject `spd-<subject>` and `ilwd-<subject>`, plus `compare` with all of them
/// as panels; returns every file written.
pub fn compare_figures(
    c: &Comparison,
    dir: &Path,
    reference: Option<&str>,
) -> Result<Vec<PathBuf>, plot::PlotError> {
    let mut files = Vec::new();
    let mut panels = vec![Panel::Line(mse_chart(c))];
    files.extend(plot::write_line_chart(&mse_chart(c), &dir.join("mse"))?);
    for s in subjects(c, reference) {
        for ilwd in [false, true] {
            let ch = divergence_chart(c, &s, ilwd);
            let stem = format!("{}-{}", if ilwd { "ilwd" } else { "spd" }, slug(&s));
            files.extend(plot::write_line_chart(&ch, &dir.join(stem))?);
            panels.push(Panel::Line(ch));
        }
    }
    let fig = Figure {
        panels,
        columns: 3,
        panel_size: (640, 420),
    };
    files.extend(plot::write_figure(&fig, &dir.join("compare"))?);
    Ok(files)
}
