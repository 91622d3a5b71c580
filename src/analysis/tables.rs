//! Text outputs of `icl compare`: the aligned table a user reads and a long-format CSV.

use super::compare::Comparison;
use super::learner::LearnerKind;
use std::fmt::Write;

/// The learners whose rows the table shows: `reference` if given, else every model and program,
/// else the first learner.
pub fn subjects(c: &Comparison, reference: Option<&str>) -> Vec<String> {
    if let Some(r) = reference {
        return vec![r.to_string()];
    }
    let s: Vec<String> = c
        .learners
        .iter()
        .filter(|l| l.kind != LearnerKind::Solver)
        .map(|l| l.label.clone())
        .collect();
    if s.is_empty() {
        vec![c.learners[0].label.clone()]
    } else {
        s
    }
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else {
        format!("{v:.3e}")
    }
}

/// One block: a header line, then rows k with one column per name.
fn block(out: &mut String, title: &str, names: &[String], rows: &[Vec<String>]) {
    let w = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(10);
    let _ = writeln!(out, "\n{title}");
    let _ = write!(out, "{:>4}", "k");
    for n in names {
        let _ = write!(out, "  {n:>w$}");
    }
    out.push('\n');
    for (k, row) in rows.iter().enumerate() {
        let _ = write!(out, "{k:>4}");
        for v in row {
            let _ = write!(out, "  {v:>w$}");
        }
        out.push('\n');
    }
}

/// The aligned table: MSE per k for every learner; per subject SPD, ILWD and R² per k; the
/// MSPD summary; the verdicts.
pub fn table(c: &Comparison, reference: Option<&str>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "prompts: {} — {} ({} prompts, seed {}); d = {}, n = {}; ILWD and R² on the first {} prompts × {} probe inputs (seed {})",
        c.prompts_source, c.distribution, c.prompts, c.seed, c.d, c.n, c.ilwd_prompts, c.probes, c.probe_seed
    );
    let _ = writeln!(
        out,
        "all errors are divided by d; k = examples before the query"
    );
    let labels: Vec<String> = c.learners.iter().map(display_label).collect();
    let rows: Vec<Vec<String>> = (0..=c.n)
        .map(|k| c.mse.iter().map(|m| num(m[k])).collect())
        .collect();
    block(&mut out, "MSE / d to the target", &labels, &rows);
    for s in subjects(c, reference) {
        let others: Vec<&str> = c
            .learners
            .iter()
            .map(|l| l.label.as_str())
            .filter(|l| *l != s)
            .collect();
        let names: Vec<String> = others.iter().map(|o| o.to_string()).collect();
        for (title, pick) in [("SPD / d", 0), ("ILWD / d", 1)] {
            let rows: Vec<Vec<String>> = (0..=c.n)
                .map(|k| {
                    others
                        .iter()
                        .map(|o| {
                            let (p, _) = c.pair(&s, o).expect("every pair");
                            num(if pick == 0 { p.spd[k] } else { p.ilwd[k] })
                        })
                        .collect()
                })
                .collect();
            block(&mut out, &format!("{title} between {s} and"), &names, &rows);
        }
        if let Some(i) = c.learners.iter().position(|l| l.label == s) {
            if c.r2[i].iter().any(Option::is_some) {
                let r: Vec<String> = c.r2[i]
                    .iter()
                    .map(|v| v.map_or("—".into(), |v| format!("{v:.4}")))
                    .collect();
                let _ = writeln!(
                    out,
                    "\nR² of {s}'s linear fit, k = 0…{}: {}",
                    c.n,
                    r.join(" ")
                );
            }
        }
        let _ = writeln!(out, "\nMSPD of {s} (k < d | all k), MILWD (k < d | all k):");
        for o in &others {
            let (p, _) = c.pair(&s, o).expect("every pair");
            let _ = writeln!(
                out,
                "  {o:<24} {:>10} | {:>10}   {:>10} | {:>10}",
                num(p.mspd_under),
                num(p.mspd_all),
                num(p.milwd_under),
                num(p.milwd_all)
            );
        }
    }
    out += &verdict_lines(c);
    out += &footnotes(c);
    out
}

fn display_label(l: &super::compare::LearnerInfo) -> String {
    if l.uncertified_prompts.is_some() || l.uncertified_probe_sets.is_some() {
        format!("{}*", l.label)
    } else {
        l.label.clone()
    }
}

/// One line per model/program and regime: the learner it is closest to.
pub fn verdict_lines(c: &Comparison) -> String {
    let mut out = String::new();
    if !c.verdicts.is_empty() {
        out += "\nverdicts (closest learner by mean SPD):\n";
    }
    for v in &c.verdicts {
        let next = v
            .runner_up
            .as_ref()
            .map(|(l, m)| format!("; next {l} at {}", num(*m)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} on {}: closest to {} (MSPD {}{next})",
            v.learner,
            v.regime,
            v.closest,
            num(v.mspd)
        );
    }
    out
}

fn footnotes(c: &Comparison) -> String {
    let mut out = String::new();
    for l in &c.learners {
        if let Some(u) = l.uncertified_probe_sets {
            let _ = writeln!(
                out,
                "* {}: the ILWD probe inputs of {u} of {} prompts lie outside its certified x range (run with --uncertified): its ILWD and R² there are not covered by the certificate",
                l.label, c.ilwd_prompts
            );
        }
        if let Some(u) = l.uncertified_prompts {
            let _ = writeln!(
                out,
                "* {}: {u} of {} prompts lie outside its certified input ranges (run with --uncertified): its results there are not covered by the certificate",
                l.label, c.prompts
            );
        }
    }
    if !c.seconds.is_empty() {
        let t: Vec<String> = c
            .learners
            .iter()
            .zip(&c.seconds)
            .map(|(l, s)| format!("{} {s:.3} s", l.label))
            .collect();
        let _ = writeln!(out, "prediction time: {}", t.join(", "));
    }
    out
}

/// Long-format CSV: `metric,k,learner,other,value` (metric = mse, r2, spd or ilwd).
pub fn csv(c: &Comparison) -> String {
    let mut out = String::from("metric,k,learner,other,value\n");
    let q = |s: &str| {
        if s.contains([',', '"']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    for (l, m) in c.learners.iter().zip(&c.mse) {
        for (k, v) in m.iter().enumerate() {
            let _ = writeln!(out, "mse,{k},{},,{v:e}", q(&l.label));
        }
    }
    for (l, r) in c.learners.iter().zip(&c.r2) {
        for (k, v) in r.iter().enumerate() {
            if let Some(v) = v {
                let _ = writeln!(out, "r2,{k},{},,{v:e}", q(&l.label));
            }
        }
    }
    for p in &c.pairs {
        for (name, vals) in [("spd", &p.spd), ("ilwd", &p.ilwd)] {
            for (k, v) in vals.iter().enumerate() {
                let _ = writeln!(out, "{name},{k},{},{},{v:e}", q(&p.a), q(&p.b));
            }
        }
    }
    out
}
