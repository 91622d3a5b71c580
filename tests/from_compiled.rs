//! `icl experiment from-compiled` (docs/ANALYSIS.md, "Training from compiled weights") on a
//! tiny ridge program (d = 2, n = 2: 13 paper layers of width 50): it compiles, trains from the
//! compiled weights, keeps and evaluates the chosen steps; step 0 is the compiled model (its
//! metrics equal those of the compiled directory evaluated directly, and `icl compare`'s); a
//! diverged run is a result; an interrupted experiment resumes to the uninterrupted result; a
//! finished one is reused; a foreign compile and bad fields are errors naming them.

use candle_core::Device;
use icl::analysis::compare::{self, CompareOptions};
use icl::analysis::experiment::from_compiled::{self, FromCompiledReport};
use icl::analysis::experiment::{RunOptions, RunStatus};
use icl::analysis::learner::{self, LoadOptions};
use icl::analysis::prompt_set::PromptSet;
use icl::prompt::PromptDistribution;
use std::path::{Path, PathBuf};

fn opts(stop_after: Option<usize>) -> RunOptions {
    RunOptions {
        device: Device::Cpu,
        progress: false,
        stop_after,
        engine: Default::default(),
    }
}

fn program() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("programs/ridge.icl")
        .display()
        .to_string()
}

/// An experiment file in `dir` writing to `dir/<out>`; `extra` replaces nothing, it is appended
/// to the top-level keys.
fn experiment(dir: &Path, name: &str, out: &str, lambda: &str, lrs: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"program = {program:?}
params = {{ d = 2, n = 2, lambda = {lambda} }}
out = {out:?}
lrs = {lrs}
eval_steps = [0, 2, 4]
{extra}
[task]
noise_std = 0.0
[train]
steps = 4
batch = 4
seed = 5
checkpoint_every = 2
log_every = 1
[eval]
prompts = 24
seed = 3
"#,
        program = program(),
        out = dir.join(out).display().to_string(),
    );
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Everything but the timings and statuses, for comparing two reports.
fn results(r: &FromCompiledReport) -> String {
    let mut v = serde_json::to_value(r).unwrap();
    for key in ["compile_reused", "compiled"] {
        v.as_object_mut().unwrap().remove(key);
    }
    for a in v["arms"].as_array_mut().unwrap() {
        a.as_object_mut().unwrap().remove("status");
        a.as_object_mut().unwrap().remove("run");
    }
    v.to_string()
}

#[test]
fn the_experiment_runs_from_the_compiled_model_resumes_and_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    // An absurd 1e30 makes the loss NaN after one update (1e-3 sends it past 1e60 here, but
    // finite); 1e-22 keeps the compiled solution.
    let exp = experiment(dir.path(), "exp.toml", "runs", "0.5", "[1e30, 1e-22]", "");
    // Interrupted after 3 steps (checkpoint at 2) …
    let e = from_compiled::run(&exp, &opts(Some(3)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("stopped early"), "{e}");
    // … then finished.
    let r = from_compiled::run(&exp, &opts(None)).unwrap();
    assert!(r.compile_reused);
    assert_eq!((r.d, r.n, r.steps, r.prompts), (2, 2, 4, 24));
    assert_eq!(r.eval_steps, vec![0, 2, 4]);
    assert_eq!(r.baselines.len(), 2);
    assert_eq!(r.baselines[0].label, "ridge(0.5)");
    assert_eq!(r.arms.len(), 2);
    let out = dir.path().join("runs");
    assert!(out.join("compiled/certificate.json").exists());

    // Step 0 of every run is the compiled model: the same predictions, so the same metrics.
    let c = &r.compiled_eval;
    assert!(
        c.mspd_all[0] < 1e-10,
        "compiled vs ridge(0.5): {:?}",
        c.mspd_all
    );
    for a in &r.arms {
        let s0 = &a.evals[0];
        assert_eq!(s0.step, 0);
        assert_eq!(s0.errors.mse_per_k, c.errors.mse_per_k, "lr {}", a.lr);
        assert_eq!(s0.spd, c.spd, "lr {}", a.lr);
        assert_eq!(s0.mspd_under, c.mspd_under);
        let m = s0.moved.as_ref().unwrap();
        assert_eq!((m.changed, m.parameters), (0, r.parameters));
        assert!(m.zeros > m.parameters / 2, "{m:?}");
    }
    // And `icl compare` of the compiled directory on the same prompts says the same.
    let dist = PromptDistribution::parse_spec("d=2,n=2").unwrap();
    let set = PromptSet::sample(&dist, 24, 3).unwrap();
    let lopts = LoadOptions {
        device: Device::Cpu,
        dtype: None,
        executor: Default::default(),
    };
    let learners: Vec<_> = [
        out.join("compiled").display().to_string(),
        "ridge:0.5".into(),
        "ols".into(),
    ]
    .iter()
    .map(|s| learner::load(s, &dist, &lopts).unwrap())
    .collect();
    let copts = CompareOptions {
        ilwd_prompts: 0,
        probes: 0,
        seed: 0,
        allow_uncertified: false,
        progress: false,
    };
    let cmp = compare::compare(&learners, &set, "sampled", &copts).unwrap();
    assert_eq!(cmp.mse[0], c.errors.mse_per_k);
    for (i, b) in ["ridge(0.5)", "ols"].iter().enumerate() {
        let (pair, _) = cmp.pair("compiled", b).unwrap();
        assert_eq!(pair.spd, c.spd[i], "{b}");
        assert_eq!(
            (pair.mspd_under, pair.mspd_all),
            (c.mspd_under[i], c.mspd_all[i])
        );
    }

    // lr 1e30: the loss stops being finite; the run is kept as a result, evaluated up to there.
    let big = &r.arms[0];
    let div = big.diverged.as_ref().expect("lr 1e30 diverges");
    assert_eq!((div.after_steps, div.loss.as_str()), (1, "NaN"));
    assert!(out.join("lr1e30/diverged.json").exists());
    assert_eq!(big.evals.len(), 1);
    // It diverged in the interrupted invocation and is not retried.
    assert_eq!(big.status, RunStatus::Reused);
    // lr 1e-22: every step kept and evaluated; only former zeros moved, and the model stays
    // close to the compiled one.
    let small = &r.arms[1];
    assert_eq!(small.status, RunStatus::Resumed);
    assert!(small.diverged.is_none());
    let steps: Vec<usize> = small.evals.iter().map(|e| e.step).collect();
    assert_eq!(steps, vec![0, 2, 4]);
    let last = small.evals.last().unwrap();
    let m = last.moved.as_ref().unwrap();
    assert!(m.changed > 0 && m.changed == m.changed_zeros, "{m:?}");
    assert_eq!(m.max_rel_change_nonzero, 0.0);
    assert!(last.errors.mse.is_finite());
    // The batch loss of a step's weights is logged with the next step: none after the last.
    assert!(small.evals[1].batch_loss.is_some_and(f64::is_finite));
    assert!(last.batch_loss.is_none());
    for k in [0, 2, 4] {
        assert!(out
            .join(format!("lr1e-22/snapshots/step-{k:08}/model.safetensors"))
            .exists());
    }
    let text = r.table();
    assert!(
        text.contains("compiled model") && text.contains("lr 1e-22"),
        "{text}"
    );
    assert!(text.contains("training stopped there"), "{text}");
    let fig = r.figure();
    assert_eq!(fig.panels.len(), 6);
    let files = icl::plot::write_figure(&fig, &dir.path().join("fig/from-compiled")).unwrap();
    assert!(files.iter().all(|f| f.exists()));

    // Again: everything reused, the same results.
    let again = from_compiled::run(&exp, &opts(None)).unwrap();
    assert!(again.arms.iter().all(|a| a.status == RunStatus::Reused));
    assert_eq!(results(&again), results(&r));

    // The interrupted-then-resumed experiment gave what an uninterrupted one gives.
    let fresh_exp = experiment(
        dir.path(),
        "fresh.toml",
        "fresh",
        "0.5",
        "[1e30, 1e-22]",
        "",
    );
    let fresh = from_compiled::run(&fresh_exp, &opts(None)).unwrap();
    assert!(!fresh.compile_reused);
    assert!(fresh.arms.iter().all(|a| a.status == RunStatus::Trained));
    assert_eq!(results(&fresh), results(&r));

    // Another program setting in the same folder is refused, not overwritten.
    let other = experiment(dir.path(), "other.toml", "runs", "0.25", "[1e-22]", "");
    let e = from_compiled::run(&other, &opts(None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("another program"), "{e}");
}

#[test]
fn a_bad_experiment_file_is_an_error_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    // (lrs, top-level lines, what replaces `prompts = 24` in [eval], the field the error names)
    let cases: [(&str, &str, &str, &str); 8] = [
        ("[1e-3, -1.0]", "", "", "lrs[1]"),
        ("[1e-3, 1e-3]", "", "", "lrs[1]"),
        ("[]", "", "", "`lrs`"),
        ("[1e-3]", "dtype = \"f16\"", "", "dtype"),
        ("[1e-3]", "colour = 1", "", "colour"),
        ("[1e-3]", "", "prompts = 0", "eval.prompts"),
        (
            "[1e-3]",
            "",
            "prompts = 24\nbaselines = [\"ridge:0.5\", \"nope\"]",
            "eval.baselines[1]",
        ),
        (
            "[1e-3]",
            "",
            "prompts = 24\nbaselines = []",
            "eval.baselines",
        ),
    ];
    for (i, (lrs, top, eval, field)) in cases.iter().enumerate() {
        let name = format!("bad{i}.toml");
        let p = experiment(dir.path(), &name, &format!("out{i}"), "0.5", lrs, top);
        if !eval.is_empty() {
            let text = std::fs::read_to_string(&p).unwrap();
            std::fs::write(&p, text.replace("prompts = 24", eval)).unwrap();
        }
        let e = from_compiled::run(&p, &opts(None)).unwrap_err().to_string();
        assert!(e.contains(field), "{field}: {e}");
    }
    // Fields of the training sections: lr belongs in `lrs`; the trainer's own checks name theirs.
    let p = experiment(dir.path(), "lr.toml", "lr", "0.5", "[1e-3]", "");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replace("steps = 4\n", "steps = 4\nlr = 1e-3\n")).unwrap();
    let e = from_compiled::run(&p, &opts(None)).unwrap_err().to_string();
    assert!(e.contains("train.lr") && e.contains("lrs"), "{e}");
    let p = experiment(dir.path(), "batch.toml", "batch", "0.5", "[1e-3]", "");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replace("batch = 4", "batch = 0")).unwrap();
    let e = from_compiled::run(&p, &opts(None)).unwrap_err().to_string();
    assert!(e.contains("train.batch"), "{e}");
    // A step past the end, and no step 0.
    let p = experiment(dir.path(), "late.toml", "late", "0.5", "[1e-3]", "");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replace("[0, 2, 4]", "[0, 2, 9]")).unwrap();
    let e = from_compiled::run(&p, &opts(None)).unwrap_err().to_string();
    assert!(e.contains("eval_steps") && e.contains('9'), "{e}");
    std::fs::write(&p, text.replace("[0, 2, 4]", "[2, 4]")).unwrap();
    let e = from_compiled::run(&p, &opts(None)).unwrap_err().to_string();
    assert!(e.contains("eval_steps") && e.contains("include 0"), "{e}");
    // A parameter the program does not have.
    let p = experiment(dir.path(), "param.toml", "param", "0.5", "[1e-3]", "");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replace("lambda = 0.5", "lambda = 0.5, mu = 2")).unwrap();
    let e = from_compiled::run(&p, &opts(None)).unwrap_err().to_string();
    assert!(e.contains("mu"), "{e}");
}
