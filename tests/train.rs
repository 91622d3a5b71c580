//! Training: learning on a fixed seed, checkpoints, bit-identical resume, config errors, and a
//! compiled-style model directory evaluated through the same path.

use candle_core::Device;
use icl::model::config::*;
use icl::model::{expected_tensors, save_model_dir, Transformer};
use icl::prompt::PromptDistribution;
use icl::tensors::{NamedTensors, RawTensor};
use icl::train::{self, TrainConfig, TrainOptions};
use std::path::Path;

/// A model and task small enough for debug builds: d = 2, n = 4, two layers of width 16.
fn small_config(extra: &[&str]) -> TrainConfig {
    let text = r#"
[task]
d = 2
n = 4
[model]
arch = "gpt2"
layers = 2
width = 16
heads = 2
mlp_hidden = 32
[train]
steps = 500
batch = 32
lr = 5e-3
seed = 5
checkpoint_every = 100
log_every = 10
"#;
    let sets: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    train::parse_config(text, "small.toml", &sets).unwrap()
}

fn opts(out: &Path, resume: bool, stop_after: Option<usize>) -> TrainOptions {
    TrainOptions {
        out: out.to_path_buf(),
        resume,
        stop_after,
        progress: false,
        device: Device::Cpu,
        engine: Default::default(),
    }
}

fn metric_losses(out: &Path) -> Vec<(usize, f64, f64)> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["step"].as_u64().unwrap() as usize,
                v["loss"].as_f64().unwrap(),
                v["ols_loss"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_few_hundred_steps_reduce_the_loss() {
    let cfg = small_config(&[]);
    let dir = tempfile::tempdir().unwrap();
    train::train(&cfg, &opts(dir.path(), false, None)).unwrap();
    let m = metric_losses(dir.path());
    assert_eq!(m.len(), 50);
    let mean = |xs: &[(usize, f64, f64)]| xs.iter().map(|x| x.1).sum::<f64>() / xs.len() as f64;
    let (first, last) = (mean(&m[..3]), mean(&m[m.len() - 5..]));
    // E[y²] = d·τ² = 2 for the zero predictor; the trained model must clearly beat its start.
    assert!(last < 0.7 * first, "loss {first} -> {last}");
    // The trained directory is a model directory: it loads and evaluates, and beats the zero
    // predictor on average over positions with at least one example.
    let model = Transformer::load(dir.path(), &Device::Cpu, None).unwrap();
    assert_eq!(model.config.kind, ModelKind::Trained);
    let rep = compare_with_zero(dir.path(), &cfg.distribution(), 200, 1);
    let (me, ze): (f64, f64) = (rep.mse[0][1..].iter().sum(), rep.mse[1][1..].iter().sum());
    assert!(me < 0.9 * ze, "model {me} vs zero {ze}");
}

#[test]
fn checkpoint_round_trip_and_resume_is_bit_identical() {
    // momentum_learned exercises the extra learned tensor through checkpoints too.
    let cfg = small_config(&[
        "train.steps=40",
        "train.checkpoint_every=10",
        "model.momentum_learned=true",
    ]);
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    train::train(&cfg, &opts(a.path(), false, None)).unwrap();

    // Interrupted at step 25 (no checkpoint at the stop: like a kill after the step-20 one), with
    // a half-written later checkpoint directory lying around; then resumed to the end.
    train::train(&cfg, &opts(b.path(), false, Some(25))).unwrap();
    assert_eq!(train::latest_checkpoint(b.path()).unwrap().unwrap().0, 20);
    let junk = b.path().join("checkpoints/step-00000030");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("model.safetensors"), b"partial").unwrap();
    // Resuming without --resume is refused; resuming with a different config is refused.
    assert!(train::train(&cfg, &opts(b.path(), false, None))
        .unwrap_err()
        .to_string()
        .contains("--resume"));
    let other = small_config(&[
        "train.steps=40",
        "train.checkpoint_every=10",
        "train.lr=1e-3",
    ]);
    assert!(train::train(&other, &opts(b.path(), true, None))
        .unwrap_err()
        .to_string()
        .contains("different config"));
    train::train(&cfg, &opts(b.path(), true, None)).unwrap();

    for f in [
        "model.safetensors",
        "config.json",
        "checkpoints/step-00000040/optimizer.safetensors",
    ] {
        let x = std::fs::read(a.path().join(f)).unwrap();
        let y = std::fs::read(b.path().join(f)).unwrap();
        assert!(
            x == y,
            "{f} differs between the uninterrupted and the resumed run"
        );
    }
    // Metrics: same steps, same losses.
    let (ma, mb) = (metric_losses(a.path()), metric_losses(b.path()));
    assert_eq!(ma.len(), mb.len());
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!((x.0, x.1.to_bits()), (y.0, y.1.to_bits()));
    }

    // Round trip: the saved model reloads to the same tensors and the same predictions.
    let m1 = Transformer::load(a.path(), &Device::Cpu, None).unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    m1.save(dir2.path()).unwrap();
    let m2 = Transformer::load(dir2.path(), &Device::Cpu, None).unwrap();
    assert_eq!(m1.to_named().unwrap(), m2.to_named().unwrap());
    let ps = PromptDistribution::new(2, 4).sample_batch(5, 9);
    assert_eq!(
        m1.predict_prompts(&ps).unwrap(),
        m2.predict_prompts(&ps).unwrap()
    );
}

#[test]
fn snapshots_are_kept_through_a_resume_and_equal_the_uninterrupted_runs() {
    let cfg = small_config(&[
        "train.steps=12",
        "train.checkpoint_every=4",
        "train.snapshots=[0, 3, 12]",
    ]);
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    train::train(&cfg, &opts(a.path(), false, None)).unwrap();
    train::train(&cfg, &opts(b.path(), false, Some(6))).unwrap();
    train::train(&cfg, &opts(b.path(), true, None)).unwrap();
    for step in [0, 3, 12] {
        let f = train::snapshot_dir(Path::new(""), step).join("model.safetensors");
        let x = std::fs::read(a.path().join(&f)).unwrap();
        assert!(x == std::fs::read(b.path().join(&f)).unwrap(), "{f:?}");
    }
    // Step 0 is the initial weights, the last step the final ones; no other step is kept.
    let init = train::init_params(&cfg.model_config(), cfg.train.seed);
    let s0 = Transformer::load(&train::snapshot_dir(a.path(), 0), &Device::Cpu, None).unwrap();
    let expect = Transformer::from_named(
        cfg.model_config(),
        &init,
        &Device::Cpu,
        cfg.model_config().dtype,
        false,
    )
    .unwrap();
    assert_eq!(s0.to_named().unwrap(), expect.to_named().unwrap());
    let last = std::fs::read(train::snapshot_dir(a.path(), 12).join("model.safetensors")).unwrap();
    assert!(last == std::fs::read(a.path().join("model.safetensors")).unwrap());
    let kept = std::fs::read_dir(a.path().join("snapshots"))
        .unwrap()
        .count();
    assert_eq!(kept, 3);
    // The list is part of the config (train.toml) and checked against train.steps.
    let saved = train::load_config(&a.path().join("train.toml"), &[]).unwrap();
    assert_eq!(saved.train.snapshots, vec![0, 3, 12]);
    let e = train::parse_config(
        &toml::to_string(&cfg).unwrap(),
        "x.toml",
        &["train.snapshots=[0, 13]".to_string()],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("train.snapshots") && e.contains("13"), "{e}");
}

#[test]
fn non_finite_loss_stops_with_a_clear_error_and_keeps_the_checkpoint() {
    // An absurd learning rate without clipping drives the weights to inf/NaN within a few steps.
    let cfg = small_config(&[
        "train.lr=1e30",
        "train.clip=0",
        "train.warmup_frac=0",
        "train.checkpoint_every=1",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let e = train::train(&cfg, &opts(dir.path(), false, None))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("training stopped") && e.contains("last good checkpoint"),
        "{e}"
    );
    let (step, ck) = train::latest_checkpoint(dir.path()).unwrap().unwrap();
    assert!(e.contains(&format!("step {step}")), "{e}");
    // The kept checkpoint has finite weights and loads.
    let m = Transformer::load(&ck, &Device::Cpu, None).unwrap();
    for t in m.to_named().unwrap().values() {
        assert!(t.data.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn bad_configs_name_the_field() {
    let base =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/tiny.toml")).unwrap();
    let parse = |text: &str, sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        train::parse_config(text, "tiny.toml", &sets)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    assert!(train::parse_config(&base, "tiny.toml", &[]).is_ok());
    let e = parse(&base.replace("heads = 2", "heads = 2\ndropout = 0.1"), &[]);
    assert!(e.contains("unknown field `dropout`"), "{e}");
    let e = parse(&base.replace("width = 32", "width = -32"), &[]);
    assert!(e.contains("width") && e.contains("-32"), "{e}");
    let e = parse(&base, &["model.width=0"]);
    assert!(e.contains("model.width") && e.contains("at least 1"), "{e}");
    let e = parse(&base, &["model.heads=3"]);
    assert!(
        e.contains("model.heads") && e.contains("do not divide width 32"),
        "{e}"
    );
    let e = parse(&base, &["train.lrate=1"]);
    assert!(e.contains("unknown field `lrate`"), "{e}");
    let e = parse(&base, &["train.lr"]);
    assert!(e.contains("expected field=value"), "{e}");
    let e = parse(&base, &["model.arch=bert"]);
    assert!(e.contains("bert"), "{e}");
    let e = parse(&base, &["model.momentum_eta=1.5"]);
    assert!(e.contains("model.momentum_eta"), "{e}");
    let e = parse(&base, &["train.lr=-1"]);
    assert!(e.contains("train.lr"), "{e}");
    let e = parse(&base.replace("[task]", "[tsk]"), &[]);
    assert!(e.contains("tsk"), "{e}");
}

#[test]
fn paper_config_parses_with_the_papers_setting() {
    let cfg = train::load_config(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/paper.toml")),
        &[],
    )
    .unwrap();
    assert_eq!((cfg.task.d, cfg.task.n), (8, 40));
    assert_eq!(
        (cfg.model.layers, cfg.model.width, cfg.model.heads),
        (16, 512, 4)
    );
    assert_eq!((cfg.train.batch, cfg.train.steps), (64, 500_000));
    assert_eq!(cfg.train.lr, 1e-4);
    let mc = cfg.model_config();
    // paper block: LayerNorm only on the MLP input, no final norm.
    assert!(mc
        .layers
        .iter()
        .all(|l| l.attn_norm.is_none() && l.norm.is_some()));
    assert!(mc.final_norm.is_none());
    assert_eq!(mc.max_len, 81);
}

#[test]
fn learning_rate_warms_up_linearly_then_follows_a_cosine() {
    let cfg = small_config(&["train.steps=100", "train.lr=1.0"]);
    let o = &cfg.train;
    // 20 warm-up steps: lr = (s+1)/20.
    assert!((train::learning_rate(o, 0) - 0.05).abs() < 1e-15);
    assert!((train::learning_rate(o, 19) - 1.0).abs() < 1e-15);
    // Half-way through the cosine part (step 20 + 40): 0.5·(1 + cos(π/2)) = 0.5.
    assert!((train::learning_rate(o, 60) - 0.5).abs() < 1e-12);
    assert!(train::learning_rate(o, 99) < 0.01);
}

/// A compiled-style directory (kind "compiled", bias-pattern head with null key, bilinear MLP,
/// one-hot readout row) loads and evaluates through the same path as trained models.
/// The model predicts the previous example's label: at x̃_k the head attends column t−1 = ỹ_{k−1}
/// and copies its row 0 (y_{k−1}) into row 3, which the readout reads. At x̃_1 it attends the
/// null key and predicts 0. So its error at k examples is E[(y_k − y_{k+1})²] and 0 examples gives
/// the zero predictor's error exactly.
#[test]
fn compiled_style_directory_evaluates_through_the_same_path() {
    let (d, n, w) = (2, 3, 4);
    let ml = 2 * n + 1;
    let layer = LayerConfig {
        attn_norm: None,
        attn: Some(AttnConfig {
            heads: 1,
            head_dim: 4,
            qk: false,
            bias: true,
            zero_attn: true,
            momentum: None,
        }),
        norm: None,
        mlp: None,
    };
    let c = ModelConfig {
        format: MODEL_FORMAT.into(),
        kind: ModelKind::Compiled,
        target: "exact".into(),
        dtype: DType::F64,
        d,
        n,
        max_len: ml,
        width: w,
        layers: vec![layer],
        final_norm: None,
        readout_row: Some(3),
    };
    let mut t: NamedTensors = expected_tensors(&c)
        .into_iter()
        .map(|(k, s)| (k, RawTensor::zeros(&s)))
        .collect();
    for i in 0..3 {
        t.get_mut("embed.weight").unwrap().set2(i, i, 1.0);
    }
    let b = t.get_mut("layers.0.attn.bias").unwrap();
    for q in 0..ml {
        for k in 0..=ml {
            let allowed = if q == 0 { k == ml } else { k == q - 1 };
            b.data[q * (ml + 1) + k] = if allowed { 0.0 } else { f64::NEG_INFINITY };
        }
    }
    t.get_mut("layers.0.attn.v.weight").unwrap().set2(0, 0, 1.0);
    t.get_mut("layers.0.attn.o.weight").unwrap().set2(3, 0, 1.0);
    t.get_mut("readout.weight").unwrap().set2(0, 3, 1.0);
    let dir = tempfile::tempdir().unwrap();
    save_model_dir(dir.path(), &c, &t).unwrap();
    let model = Transformer::load(dir.path(), &Device::Cpu, None).unwrap();
    let dist = PromptDistribution::new(d, n);
    drop(model);
    let rep = compare_with_zero(dir.path(), &dist, 50, 4);
    let prompts = dist.sample_batch(50, 4);
    for k in 0..=n {
        let want: f64 = prompts
            .iter()
            .map(|p| {
                let pred = if k == 0 { 0.0 } else { p.ys[k - 1] };
                (pred - p.ys[k]).powi(2)
            })
            .sum::<f64>()
            / 50.0;
        assert!(
            // The comparison divides by d.
            (rep.mse[0][k] * d as f64 - want).abs() <= 1e-12 * want.max(1.0),
            "k={k}: {} vs {want}",
            rep.mse[0][k]
        );
    }
    assert_eq!(rep.mse[0][0], rep.mse[1][0]);
    // OLS is exact once k ≥ d (noiseless).
    assert!(rep.mse[2][n] < 1e-20);
}

/// `icl compare DIR zero ols` on `count` prompts of `dist` (seed `seed`).
fn compare_with_zero(
    dir: &std::path::Path,
    dist: &PromptDistribution,
    count: usize,
    seed: u64,
) -> icl::analysis::compare::Comparison {
    use icl::analysis::{compare, learner, prompt_set::PromptSet};
    let set = PromptSet::sample(dist, count, seed).unwrap();
    let opts = learner::LoadOptions {
        device: Device::Cpu,
        dtype: None,
        executor: Default::default(),
    };
    let learners = [dir.display().to_string(), "zero".into(), "ols".into()]
        .iter()
        .map(|s| learner::load(s, dist, &opts).unwrap())
        .collect::<Vec<_>>();
    let copts = compare::CompareOptions {
        ilwd_prompts: 4,
        probes: 0,
        seed: 0,
        allow_uncertified: false,
        progress: false,
    };
    compare::compare(&learners, &set, "test", &copts).unwrap()
}

/// Small steps on the Candle engine go to one CPU thread; large ones, and every step of the
/// fused engine, to all cores (src/train.rs, cpu_threads).
#[test]
fn thread_choice_follows_the_work_per_step_and_the_engine() {
    use train::Engine;
    let root = env!("CARGO_MANIFEST_DIR");
    let tiny = train::load_config(Path::new(&format!("{root}/configs/tiny.toml")), &[]).unwrap();
    assert_eq!(train::cpu_threads(&tiny, Engine::Candle), Some(1));
    assert_eq!(train::cpu_threads(&tiny, Engine::Auto), None);
    assert_eq!(train::cpu_threads(&tiny, Engine::Fused), None);
    // Momentum attention: Auto takes the Candle path.
    let momentum = train::load_config(
        Path::new(&format!("{root}/configs/tiny.toml")),
        &["model.momentum_eta=0.5".to_string()],
    )
    .unwrap();
    assert_eq!(train::cpu_threads(&momentum, Engine::Auto), Some(1));
    let sets: Vec<String> = ["model.layers=4", "model.width=128", "model.mlp_hidden=512"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let small =
        train::load_config(Path::new(&format!("{root}/configs/paper.toml")), &sets).unwrap();
    // The issue's profile counted 27 GFLOP of matmuls in this step.
    let flops = train::step_flops(&small);
    assert!((flops / 27e9 - 1.0).abs() < 0.1, "{flops}");
    for engine in [Engine::Auto, Engine::Candle] {
        assert_eq!(train::cpu_threads(&small, engine), None);
    }
}
