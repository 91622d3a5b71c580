//! Dai et al. (2023), "Why can GPT learn in-context? Language models implicitly perform gradient
//! descent as meta-optimizers": attention read as implicit finetuning (docs/ANALYSIS.md,
//! "Attention as implicit finetuning (Dai et al.)").
//!
//! - [`dual`]: `icl dual` — how far each attention head's softmax read is from Dai's linear
//!   relaxation (ΔW_ICL·q) and from the first-order softmax expansion.
//! - [`implicit`]: `icl implicit` — the implicit linear model ŵ = ∂ŷ/∂x_q of any learner, against
//!   one-step GD at its best step size, multi-step GD, ridge and OLS.
//! - [`finetune`]: `icl finetune-vs-icl` — ICL against explicit finetuning of K and V, with
//!   Dai's metrics, the critiques' corrections and controls.

pub mod dual;
pub mod finetune;
pub mod implicit;

use crate::plot::{LineChart, Panel, Series};

/// The panels among `charts` that have a drawable point, with the series that have none dropped
/// (a panel whose values are all undefined would make the plot an error).
pub(crate) fn drawable_panels(charts: Vec<LineChart>) -> Vec<Panel> {
    charts
        .into_iter()
        .filter_map(|mut c| {
            c.series
                .retain(|s: &Series| s.points.iter().any(|p| p.1.is_finite()));
            (!c.series.is_empty()).then_some(Panel::Line(c))
        })
        .collect()
}

/// Mean of the finite values (NaN when there is none) and how many there were.
pub(crate) fn finite_mean(values: impl IntoIterator<Item = f64>) -> (f64, usize) {
    let (mut sum, mut count) = (0.0, 0usize);
    for v in values.into_iter().filter(|v| v.is_finite()) {
        sum += v;
        count += 1;
    }
    if count == 0 {
        (f64::NAN, 0)
    } else {
        (sum / count as f64, count)
    }
}

/// Median of the finite values (NaN when there is none).
pub(crate) fn finite_median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// A number for an aligned table: `—` for NaN, else 3 significant digits.
pub(crate) fn cell(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else if v == 0.0 {
        "0".into()
    } else if (1e-2..1e4).contains(&v.abs()) {
        format!("{v:.3}")
    } else {
        format!("{v:.2e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finite_statistics_skip_undefined_values() {
        assert_eq!(finite_mean([1.0, f64::NAN, 3.0]), (2.0, 2));
        assert!(finite_mean([f64::NAN]).0.is_nan());
        assert_eq!(finite_median([3.0, f64::NAN, 1.0, 2.0]), 2.0);
        assert_eq!(finite_median([4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(cell(f64::NAN), "—");
        assert_eq!(cell(0.5), "0.500");
        assert_eq!(cell(1.5e-9), "1.50e-9");
    }
}
