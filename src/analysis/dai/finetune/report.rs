//! The summary of `icl finetune-vs-icl`: means with bootstrap intervals over prompts, the
//! tables printed, the JSON written and the figure drawn.

use super::observe::LayerMetrics;
use super::{finite_mean, interval, recall, Case, Demos, FinetuneRun, RateChoice, Recall, Setup};
use crate::analysis::stats::Interval;
use crate::plot::{Figure, LineChart, Panel, Scale, Series};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Per metric name (`simaou`, …; see [`LayerMetrics`]): its mean and interval.
pub type MetricIntervals = BTreeMap<&'static str, Interval>;

#[derive(Debug, Clone, Serialize)]
pub struct LayerSummary {
    pub layer: usize,
    /// Per prompt, the mean over k = 1…K; then the mean and interval over prompts.
    pub over_k: MetricIntervals,
    /// Means over prompts at each k = 1…K.
    pub per_k: Vec<BTreeMap<&'static str, f64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VariantSummary {
    pub variant: &'static str,
    pub lr: f64,
    /// FT MSE at k = 1…K.
    pub mse_ft: Vec<Interval>,
    /// Rec2FTP and context at k = 1…K.
    pub recall: Vec<Recall>,
    pub layers: Vec<LayerSummary>,
    /// Per prompt, the mean over layers and k; then over prompts.
    pub overall: MetricIntervals,
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseSummary {
    pub name: String,
    pub demos: Demos,
    pub trained_model: bool,
    pub rates: Vec<RateChoice>,
    pub mse_zsl: Interval,
    /// ICL MSE at k = 1…K.
    pub mse_icl: Vec<Interval>,
    pub variants: Vec<VariantSummary>,
}

/// The JSON report (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub format: &'static str,
    #[serde(flatten)]
    pub setup: Setup,
    pub cases: Vec<CaseSummary>,
}

fn seed(parts: &[usize]) -> u64 {
    parts.iter().fold(0xD41_u64, |s, &p| {
        s.wrapping_mul(0x100_0000_01B3) ^ p as u64
    })
}

/// Per-layer summaries of one variant's metrics `m[k−1][layer][prompt]`.
// `l` indexes the second dimension of `m` (its first is k), which an iterator over `m` cannot.
#[allow(clippy::needless_range_loop)]
fn layer_summaries(
    m: &[Vec<Vec<LayerMetrics>>],
    tag: &[usize],
) -> (Vec<LayerSummary>, MetricIntervals) {
    let (k_max, layers, prompts) = (m.len(), m[0].len(), m[0][0].len());
    let names = LayerMetrics::default().fields().map(|f| f.0);
    let mut out = Vec::new();
    let mut overall = MetricIntervals::new();
    for (i, name) in names.iter().enumerate() {
        let per_prompt: Vec<f64> = (0..prompts)
            .map(|p| {
                finite_mean(
                    (0..k_max)
                        .flat_map(|k| (0..layers).map(move |l| (k, l)))
                        .map(|(k, l)| m[k][l][p].fields()[i].1),
                )
            })
            .collect();
        overall.insert(
            *name,
            interval(&per_prompt, seed(&[tag, &[99, i]].concat())),
        );
    }
    for l in 0..layers {
        let mut over_k = MetricIntervals::new();
        for (i, name) in names.iter().enumerate() {
            let per_prompt: Vec<f64> = (0..prompts)
                .map(|p| finite_mean((0..k_max).map(|k| m[k][l][p].fields()[i].1)))
                .collect();
            over_k.insert(*name, interval(&per_prompt, seed(&[tag, &[l, i]].concat())));
        }
        let per_k = (0..k_max)
            .map(|k| {
                names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| (*name, finite_mean(m[k][l].iter().map(|x| x.fields()[i].1))))
                    .collect()
            })
            .collect();
        out.push(LayerSummary {
            layer: l,
            over_k,
            per_k,
        });
    }
    (out, overall)
}

fn case_summary(c: &Case, delta: f64, ci: usize) -> CaseSummary {
    let o = &c.observations;
    let variants = c
        .rates
        .iter()
        .enumerate()
        .map(|(vi, rate)| {
            let (layers, overall) = layer_summaries(&o.metrics[vi], &[ci, vi]);
            VariantSummary {
                variant: rate.variant.name(),
                lr: rate.chosen,
                mse_ft: o.e_ft[vi]
                    .iter()
                    .enumerate()
                    .map(|(k, e)| interval(e, seed(&[ci, vi, k, 7])))
                    .collect(),
                recall: o.e_ft[vi]
                    .iter()
                    .zip(&o.e_icl)
                    .map(|(ft, icl)| recall(&o.e_zsl, icl, ft, delta))
                    .collect(),
                layers,
                overall,
            }
        })
        .collect();
    CaseSummary {
        name: c.name.clone(),
        demos: c.demos,
        trained_model: c.trained_model,
        rates: c.rates.clone(),
        mse_zsl: interval(&o.e_zsl, seed(&[ci, 5])),
        mse_icl: o
            .e_icl
            .iter()
            .enumerate()
            .map(|(k, e)| interval(e, seed(&[ci, k, 6])))
            .collect(),
        variants,
    }
}

/// Summarise a run.
pub fn summarise(r: &FinetuneRun) -> Summary {
    Summary {
        format: "icl-finetune-vs-icl/1",
        setup: r.setup.clone(),
        cases: r
            .cases
            .iter()
            .enumerate()
            .map(|(i, c)| case_summary(c, r.setup.delta, i))
            .collect(),
    }
}

fn sci(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2e}")
    } else {
        "—".into()
    }
}

fn fixed(v: f64) -> String {
    if v.is_finite() {
        format!("{v:+.3}")
    } else {
        "—".into()
    }
}

fn ci(i: &Interval) -> String {
    format!("{} [{}, {}]", fixed(i.mean), fixed(i.lo), fixed(i.hi))
}

/// The per-k table of one case: MSE of ZSL, ICL and every variant; Rec2FTP of `ft`.
fn k_table(s: &Summary, c: &CaseSummary) -> String {
    let mut t = format!("{:>3} {:>9} {:>9}", "k", "zsl", "icl");
    for v in &c.variants {
        write!(t, " {:>9}", v.variant).unwrap();
    }
    t += "   Rec2FTP(ft)  base  prec  FT-rate  corr\n";
    for k in 0..s.setup.k_max {
        write!(
            t,
            "{:>3} {:>9} {:>9}",
            k + 1,
            sci(c.mse_zsl.mean),
            sci(c.mse_icl[k].mean)
        )
        .unwrap();
        for v in &c.variants {
            write!(t, " {:>9}", sci(v.mse_ft[k].mean)).unwrap();
        }
        let r = &c.variants[0].recall[k];
        writeln!(
            t,
            "   {:>11} {:>5} {:>5} {:>8} {:>5}",
            format!("{:.3}", r.rec2ftp),
            format!("{:.2}", r.base_rate),
            format!("{:.2}", r.precision),
            format!("{:.2}", r.ft_rate),
            format!("{:+.2}", r.correlation)
        )
        .unwrap();
    }
    t
}

/// The per-layer table of one variant (means over k with 95% intervals over prompts).
fn layer_table(v: &VariantSummary) -> String {
    let cols = [
        "simaou",
        "simaou_raw",
        "simaou_random",
        "delta_simam",
        "simam",
        "simam_zsl",
        "kendall_token",
        "kendall_example",
        "kendall_random",
    ];
    let mut t = format!("{:>5}", "layer");
    for c in cols {
        write!(t, " {c:>27}").unwrap();
    }
    t.push('\n');
    let mut line = |label: String, m: &MetricIntervals| {
        write!(t, "{label:>5}").unwrap();
        for c in cols {
            write!(t, " {:>27}", ci(&m[c])).unwrap();
        }
        t.push('\n');
    };
    for l in &v.layers {
        line(l.layer.to_string(), &l.over_k);
    }
    line("all".into(), &v.overall);
    t
}

/// The whole text report.
pub fn text(s: &Summary) -> String {
    let mut t = format!(
        "ICL vs finetuning (Dai et al.): {} on {} prompts ({}); d = {}, n = {}, neutral prefix of {} demonstration(s) before every run, k = 1…{} demonstrations; improves = error < (1 − {})·ZSL\n",
        s.setup.model, s.setup.prompts, s.setup.prompt_source, s.setup.d, s.setup.n, s.setup.prefix, s.setup.k_max, s.setup.delta
    );
    for c in &s.cases {
        writeln!(t, "\n== case {} ==", c.name).unwrap();
        let rates: Vec<String> = c
            .rates
            .iter()
            .map(|r| format!("{} {}", r.variant.name(), r.chosen))
            .collect();
        writeln!(
            t,
            "learning rates (least held-out FT MSE over {} prompts): {}",
            s.setup.lr_prompts,
            rates.join(", ")
        )
        .unwrap();
        t += &k_table(s, c);
        for v in &c.variants {
            writeln!(
                t,
                "\nper layer, variant {} (mean over k, 95% bootstrap interval over prompts):",
                v.variant
            )
            .unwrap();
            t += &layer_table(v);
        }
    }
    t += "\nsummary (mean over layers and k, 95% interval; MSE at k = K):\n";
    t += &summary_table(s);
    t
}

/// One line per case and variant: the headline metrics and the MSE at k = K.
fn summary_table(s: &Summary) -> String {
    let cols = [
        "simaou",
        "simaou_random",
        "delta_simam",
        "kendall_token",
        "kendall_example",
    ];
    let mut t = format!("{:<11} {:<7}", "case", "variant");
    for c in cols {
        write!(t, " {c:>27}").unwrap();
    }
    writeln!(t, " {:>9} {:>9}", "MSE icl", "MSE ft").unwrap();
    let last = s.setup.k_max - 1;
    for c in &s.cases {
        for v in &c.variants {
            write!(t, "{:<11} {:<7}", c.name, v.variant).unwrap();
            for col in cols {
                write!(t, " {:>27}", ci(&v.overall[col])).unwrap();
            }
            let (icl, ft) = (sci(c.mse_icl[last].mean), sci(v.mse_ft[last].mean));
            writeln!(t, " {icl:>9} {ft:>9}").unwrap();
        }
    }
    t
}

fn k_series(label: &str, v: impl Iterator<Item = f64>) -> Series {
    Series::new(
        label,
        v.enumerate().map(|(k, y)| ((k + 1) as f64, y)).collect(),
    )
}

/// The figure: MSE per k; SimAOU per layer (the model, `ft`); SimAOU, ΔSimAM and Kendall τ per
/// case (mean over layers); the learning-rate curves.
pub fn figure(s: &Summary) -> Figure {
    let main = &s.cases[0];
    let mut mse = LineChart::new(
        format!("MSE at the query ({})", main.name),
        "k (demonstrations)",
        "MSE",
    );
    mse.y_scale = Scale::Log;
    mse.series.push(k_series(
        "zsl",
        (0..s.setup.k_max).map(|_| main.mse_zsl.mean),
    ));
    mse.series
        .push(k_series("icl", main.mse_icl.iter().map(|i| i.mean)));
    for v in &main.variants {
        mse.series.push(k_series(
            &format!("FT {}", v.variant),
            v.mse_ft.iter().map(|i| i.mean),
        ));
    }
    let mut layers = LineChart::new("SimAOU per layer (model, ft)", "k", "SimAOU");
    layers.y_scale = Scale::Linear;
    for l in &main.variants[0].layers {
        layers.series.push(k_series(
            &format!("layer {}", l.layer),
            l.per_k.iter().map(|m| m["simaou"]),
        ));
    }
    let per_case = |metric: &'static str, title: &str| {
        let mut ch = LineChart::new(title, "k", metric);
        ch.y_scale = Scale::Linear;
        for c in &s.cases {
            let ft = &c.variants[0];
            let mean_over_layers = (0..s.setup.k_max)
                .map(|k| finite_mean(ft.layers.iter().map(|l| l.per_k[k][metric])));
            ch.series.push(k_series(&c.name, mean_over_layers));
        }
        let random = match metric {
            "simaou" => Some("simaou_random"),
            "kendall_token" => Some("kendall_random"),
            _ => None,
        };
        if let Some(r) = random {
            let ft = &main.variants[0];
            ch.series.push(k_series(
                "random baseline",
                (0..s.setup.k_max).map(|k| finite_mean(ft.layers.iter().map(|l| l.per_k[k][r]))),
            ));
        }
        ch
    };
    let mut lr = LineChart::new(
        format!("held-out FT MSE by learning rate ({})", main.name),
        "learning rate",
        "MSE",
    );
    lr.x_scale = Scale::Log;
    lr.y_scale = Scale::Log;
    for r in &main.rates {
        lr.series
            .push(Series::new(r.variant.name(), r.curve.clone()));
    }
    Figure::new(
        vec![
            Panel::Line(mse),
            Panel::Line(layers),
            Panel::Line(per_case("simaou", "SimAOU by case (ft, mean over layers)")),
            Panel::Line(per_case("delta_simam", "ΔSimAM by case (ft)")),
            Panel::Line(per_case("kendall_token", "Kendall τ, tokens, by case (ft)")),
            Panel::Line(lr),
        ],
        2,
    )
}
