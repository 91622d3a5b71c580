//! `icl probe --plot DIR`: one panel per model (trained, compiled and control side by side),
//! x = hidden state (0 = embedding output, l = after layer l), y = normalised held-out error
//! (mean over k), one line per (target, readout).

use super::report::ModelReport;
use super::subject::Role;
use super::Result;
use crate::model::config::ModelKind;
use crate::plot::{write_figure, Figure, LineChart, Panel, Scale, Series};
use std::path::{Path, PathBuf};

/// Panels per row of the figure.
const COLUMNS: usize = 3;

/// The panel of one model.
fn panel(m: &ModelReport) -> Panel {
    let kind = match (m.kind, m.role) {
        (_, Role::Control) => "control",
        (ModelKind::Compiled, _) => "compiled",
        (ModelKind::Trained, _) => "trained",
    };
    let mut chart = LineChart::new(
        format!("{} ({kind}, {} layers)", m.dir, m.layers),
        "hidden state (0 = embedding, l = after layer l)",
        "normalised held-out error (mean over k)",
    );
    chart.x_scale = Scale::Linear;
    chart.y_scale = Scale::Auto;
    chart.series = m
        .results
        .iter()
        .map(|r| {
            let points = r
                .layers
                .iter()
                .map(|l| (l.hidden as f64, l.mean_normalised))
                .collect();
            Series::new(format!("{} {}", r.target.name(), r.readout.name()), points)
        })
        .collect();
    Panel::Line(chart)
}

/// Write `DIR/probe.png` and `DIR/probe.svg`; returns their paths.
pub fn write_plot(models: &[ModelReport], dir: &Path) -> Result<Vec<PathBuf>> {
    let panels: Vec<Panel> = models.iter().map(panel).collect();
    let columns = panels.len().clamp(1, COLUMNS);
    Ok(write_figure(
        &Figure::new(panels, columns),
        &dir.join("probe"),
    )?)
}
