//! `icl compare LEARNER…`: which algorithm does a learner run? Every learner predicts on the
//! same prompts; per number of examples k = 0…n the report gives MSE to the target, SPD and
//! ILWD for every pair, the R² of each non-solver learner's linear fit, MSPD over k < d and over
//! all k, and for each model or program the learner it is closest to in each regime
//! (docs/ANALYSIS.md; the metrics are in [`super::metrics`]).

use super::learner::{Learner, LearnerKind};
use super::metrics::{fit_linear, mean_over, mean_sq_diff, mean_weight_dist};
use super::prompt_set::PromptSet;
use crate::prompt::Prompt;
use rand::SeedableRng;
use serde::Serialize;

/// How the comparison is run.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Prompts used for ILWD and R² (the first ones of the set; 0 skips them).
    pub ilwd_prompts: usize,
    /// Fresh probe inputs per prompt and k (0: 4·d).
    pub probes: usize,
    /// Seed of the probe inputs.
    pub seed: u64,
    /// Run compiled models on prompts outside their certified input ranges.
    pub allow_uncertified: bool,
    /// Show progress bars.
    pub progress: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LearnerInfo {
    pub label: String,
    pub spec: String,
    pub kind: LearnerKind,
    /// Prompts outside the certified input ranges of a compiled model run with --uncertified
    /// (their results are not covered by the certificate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uncertified_prompts: Option<usize>,
    /// ILWD prompts whose fresh probe inputs left the certified x range (run with --uncertified).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uncertified_probe_sets: Option<usize>,
}

/// SPD and ILWD between two learners, per k and averaged over the two regimes.
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    pub a: String,
    pub b: String,
    pub spd: Vec<f64>,
    pub ilwd: Vec<f64>,
    /// Mean SPD over k < d (the paper's MSPD) and over all k.
    pub mspd_under: f64,
    pub mspd_all: f64,
    pub milwd_under: f64,
    pub milwd_all: f64,
}

/// Which learner a model or program is closest to (least mean SPD) in one regime.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub learner: String,
    /// `k < d` or `k >= d`.
    pub regime: String,
    pub closest: String,
    pub mspd: f64,
    /// The runner-up and its mean SPD (how clear the verdict is).
    pub runner_up: Option<(String, f64)>,
}

/// The whole comparison (written by `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub format: String,
    /// Where the prompts came from: a file path or `sampled`.
    pub prompts_source: String,
    pub distribution: String,
    pub seed: u64,
    pub prompts: usize,
    pub d: usize,
    pub n: usize,
    pub ilwd_prompts: usize,
    pub probes: usize,
    pub probe_seed: u64,
    pub learners: Vec<LearnerInfo>,
    /// MSE / d to the target at each k, per learner (in `learners` order).
    pub mse: Vec<Vec<f64>>,
    /// R² of each learner's linear fit at each k (`None` for linear solvers, which use their
    /// own w, and where the predictions are constant).
    pub r2: Vec<Vec<Option<f64>>>,
    /// Every pair (a before b in `learners` order).
    pub pairs: Vec<Pair>,
    pub verdicts: Vec<Verdict>,
    /// Seconds each learner took to predict (not serialized: files stay byte-identical).
    #[serde(skip)]
    pub seconds: Vec<f64>,
}

impl Comparison {
    pub fn pair(&self, a: &str, b: &str) -> Option<(&Pair, bool)> {
        self.pairs.iter().find_map(|p| {
            if p.a == a && p.b == b {
                Some((p, false))
            } else if p.a == b && p.b == a {
                Some((p, true))
            } else {
                None
            }
        })
    }
    /// The k of the regime k < d (all k when n < d).
    pub fn under(&self) -> Vec<usize> {
        (0..=self.n).filter(|&k| k < self.d).collect()
    }
    pub fn over(&self) -> Vec<usize> {
        (0..=self.n).filter(|&k| k >= self.d).collect()
    }
}

/// Run every learner on `set` and compute the report. Learners must have distinct labels.
pub fn compare(
    learners: &[Learner],
    set: &PromptSet,
    source: &str,
    opts: &CompareOptions,
) -> anyhow::Result<Comparison> {
    let d = set.d();
    // No ILWD prompts: ILWD and R² are skipped (NaN / None).
    let ilwd_set = &set.prompts[..opts.ilwd_prompts.min(set.prompts.len())];
    let m = if opts.probes == 0 { 4 * d } else { opts.probes };
    let probes = probe_inputs(set, ilwd_set.len(), m, opts.seed);
    // Every check before any prediction: nothing slow runs on input that will be refused.
    let infos = check_learners(learners, set, &probes, opts)?;
    let mut preds = Vec::new();
    let mut seconds = Vec::new();
    for l in learners {
        let t0 = std::time::Instant::now();
        let p = with_spinner(opts.progress, &format!("{}: predicting", l.label), || {
            l.predict(&set.prompts)
        })?;
        check_finite(&l.label, &p)?;
        seconds.push(t0.elapsed().as_secs_f64());
        preds.push(p);
    }
    let targets: Vec<Vec<f64>> = set.prompts.iter().map(|p| p.ys.clone()).collect();
    let mse = preds.iter().map(|p| mean_sq_diff(p, &targets, d)).collect();
    let mut weights = Vec::new();
    let mut r2 = Vec::new();
    for l in learners {
        if ilwd_set.is_empty() {
            weights.push(Vec::new());
            r2.push(vec![None; set.n() + 1]);
            continue;
        }
        let (w, r) = implicit_weights(l, ilwd_set, &probes, opts.progress)?;
        weights.push(w);
        r2.push(r);
    }
    let mut c = Comparison {
        format: "icl-compare/1".into(),
        prompts_source: source.into(),
        distribution: set.dist.spec(),
        seed: set.seed,
        prompts: set.prompts.len(),
        d,
        n: set.n(),
        ilwd_prompts: ilwd_set.len(),
        probes: m,
        probe_seed: opts.seed,
        learners: infos,
        mse,
        r2,
        pairs: Vec::new(),
        verdicts: Vec::new(),
        seconds,
    };
    c.pairs = pairs(&c, &preds, &weights);
    c.verdicts = verdicts(&c);
    Ok(c)
}

/// Each learner fits the prompts, its labels are distinct, and compiled models see only inputs
/// in their certified ranges — the prompts and the ILWD probe inputs — unless
/// `allow_uncertified`, in which case the counts outside are recorded.
fn check_learners(
    learners: &[Learner],
    set: &PromptSet,
    probes: &[Vec<Vec<Vec<f64>>>],
    opts: &CompareOptions,
) -> anyhow::Result<Vec<LearnerInfo>> {
    let mut infos: Vec<LearnerInfo> = Vec::new();
    for l in learners {
        l.check_fits(&set.dist)?;
        if infos.iter().any(|b| b.label == l.label) {
            anyhow::bail!(
                "two learners are both labelled `{}`: give each once",
                l.label
            );
        }
        let outside = l.check_ranges(&set.prompts, opts.allow_uncertified)?;
        let mut probe_sets = 0;
        if let Some(r) = l.input_ranges() {
            let count = probes
                .iter()
                .filter(|pk| !pk.iter().flatten().all(|x| r.covers_x(x)))
                .count();
            probe_sets = l.refuse_unless(count, probes.len(), opts.allow_uncertified)?;
        }
        infos.push(LearnerInfo {
            label: l.label.clone(),
            spec: l.spec.clone(),
            kind: l.kind(),
            uncertified_prompts: (outside > 0).then_some(outside),
            uncertified_probe_sets: (probe_sets > 0).then_some(probe_sets),
        });
    }
    Ok(infos)
}

fn check_finite(label: &str, preds: &[Vec<f64>]) -> anyhow::Result<()> {
    for (i, p) in preds.iter().enumerate() {
        if let Some(k) = p.iter().position(|v| !v.is_finite()) {
            anyhow::bail!(
                "learner `{label}` predicted {} for prompt {i} at k = {k}",
                p[k]
            );
        }
    }
    Ok(())
}

/// Fresh probe inputs from the prompt distribution: `probes[p][k]` holds `m` vectors.
fn probe_inputs(set: &PromptSet, prompts: usize, m: usize, seed: u64) -> Vec<Vec<Vec<Vec<f64>>>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..prompts)
        .map(|_| {
            (0..=set.n())
                .map(|_| (0..m).map(|_| set.dist.sample_x(&mut rng)).collect())
                .collect()
        })
        .collect()
}

type Weights = Vec<Vec<Vec<f64>>>;

/// Each prompt's weights at every k — a linear solver's own, else the fit at the probes — and
/// the fit's R² (`None` for linear solvers).
fn implicit_weights(
    l: &Learner,
    prompts: &[Prompt],
    probes: &[Vec<Vec<Vec<f64>>>],
    progress: bool,
) -> anyhow::Result<(Weights, Vec<Option<f64>>)> {
    let n1 = prompts[0].n() + 1;
    if l.own_weights(&prompts[0], 0).is_some() {
        let w = prompts
            .iter()
            .map(|p| {
                (0..n1)
                    .map(|k| l.own_weights(p, k).expect("linear"))
                    .collect()
            })
            .collect();
        return Ok((w, vec![None; n1]));
    }
    let bar = progress_bar(
        progress,
        prompts.len(),
        &format!("{}: ILWD probes", l.label),
    );
    let mut w = Vec::new();
    let mut r2_sum = vec![(0.0, 0usize); n1];
    for (p, pr) in prompts.iter().zip(probes) {
        let requests: Vec<(&Prompt, usize, &[Vec<f64>])> =
            (0..n1).map(|k| (p, k, pr[k].as_slice())).collect();
        let ys = l.predict_probes(&requests)?;
        let mut wp = Vec::new();
        for k in 0..n1 {
            check_finite(&l.label, std::slice::from_ref(&ys[k]))?;
            let (wk, r) = fit_linear(&pr[k], &ys[k]);
            if let Some(r) = r {
                r2_sum[k].0 += r;
                r2_sum[k].1 += 1;
            }
            wp.push(wk);
        }
        w.push(wp);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let r2 = r2_sum
        .iter()
        .map(|&(s, c)| (c > 0).then(|| s / c as f64))
        .collect();
    Ok((w, r2))
}

fn pairs(c: &Comparison, preds: &[Vec<Vec<f64>>], weights: &[Weights]) -> Vec<Pair> {
    let (under, all): (Vec<usize>, Vec<usize>) = (c.under(), (0..=c.n).collect());
    let mut out = Vec::new();
    for i in 0..preds.len() {
        for j in i + 1..preds.len() {
            let spd = mean_sq_diff(&preds[i], &preds[j], c.d);
            let ilwd = if weights[i].is_empty() {
                vec![f64::NAN; c.n + 1]
            } else {
                mean_weight_dist(&weights[i], &weights[j], c.d)
            };
            out.push(Pair {
                a: c.learners[i].label.clone(),
                b: c.learners[j].label.clone(),
                mspd_under: mean_over(&spd, &under),
                mspd_all: mean_over(&spd, &all),
                milwd_under: mean_over(&ilwd, &under),
                milwd_all: mean_over(&ilwd, &all),
                spd,
                ilwd,
            });
        }
    }
    out
}

/// For every model or program and each non-empty regime: the other learner with the least mean
/// SPD.
fn verdicts(c: &Comparison) -> Vec<Verdict> {
    let mut out = Vec::new();
    for subject in c.learners.iter().filter(|l| l.kind != LearnerKind::Solver) {
        for (regime, ks) in [("k < d", c.under()), ("k >= d", c.over())] {
            if ks.is_empty() {
                continue;
            }
            let mut ranked: Vec<(String, f64)> = c
                .learners
                .iter()
                .filter(|o| o.label != subject.label)
                .map(|o| {
                    let (p, _) = c.pair(&subject.label, &o.label).expect("every pair");
                    (o.label.clone(), mean_over(&p.spd, &ks))
                })
                .collect();
            ranked.sort_by(|a, b| a.1.total_cmp(&b.1));
            let Some((closest, mspd)) = ranked.first().cloned() else {
                continue;
            };
            out.push(Verdict {
                learner: subject.label.clone(),
                regime: regime.into(),
                closest,
                mspd,
                runner_up: ranked.get(1).cloned(),
            });
        }
    }
    out
}

fn progress_bar(show: bool, len: usize, msg: &str) -> indicatif::ProgressBar {
    let b = crate::progress::bar(
        show,
        len as u64,
        "{msg} {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}]",
    );
    b.set_message(msg.to_string());
    b
}

fn with_spinner<T>(show: bool, msg: &str, f: impl FnOnce() -> T) -> T {
    let s = if show {
        let s = indicatif::ProgressBar::new_spinner();
        s.set_message(msg.to_string());
        s.enable_steady_tick(std::time::Duration::from_millis(200));
        s
    } else {
        indicatif::ProgressBar::hidden()
    };
    let out = f();
    s.finish_and_clear();
    out
}
