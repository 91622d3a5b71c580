//! `icl train CONFIG --init DIR`: a run whose architecture and step-0 weights come from a `paper`
//! model directory (compiled or trained) — the weights really loaded, a null-key model with heads
//! narrower than width/heads trained, resumed and evaluated, and every mismatch refused naming
//! its field.

use candle_core::Device;
use icl::model::config::*;
use icl::model::{save_model_dir, Transformer};
use icl::prompt::PromptDistribution;
use icl::tensors::{self, NamedTensors};
use icl::train::{self, Arch, TrainConfig, TrainOptions};
use std::path::Path;
use std::process::Command;

/// A paper-architecture run small enough for debug builds: d = 2, n = 4, two layers of width 16.
const PAPER: &str = r#"
[task]
d = 2
n = 4
[model]
arch = "paper"
layers = 2
width = 16
heads = 2
mlp_hidden = 32
[train]
steps = 1
batch = 8
lr = 5e-3
seed = 3
checkpoint_every = 5
log_every = 1
"#;

/// The task and the optimiser only: with --init the [model] section comes from the directory.
const TASK_ONLY: &str = r#"
[task]
d = 2
n = 4
[train]
steps = 12
batch = 8
lr = 2e-3
seed = 11
checkpoint_every = 4
log_every = 2
"#;

fn sets(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
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

fn with_init(text: &str, extra: &[&str], dir: &Path) -> train::Result<TrainConfig> {
    train::parse_config_init(text, "test.toml", &sets(extra), Some(dir))
}

fn init_err(text: &str, extra: &[&str], dir: &Path) -> String {
    with_init(text, extra, dir).unwrap_err().to_string()
}

/// What the compiler's `--target paper` writes: every layer the same, no attention LayerNorm,
/// Q/K without a bias pattern, a null key, heads of size 4 (heads·head_dim = 8 < width = 16),
/// GeLU MLP, no final norm, a readout row; f64 weights.
fn compiled_paper_config(layers: usize) -> ModelConfig {
    let layer = LayerConfig {
        attn_norm: None,
        attn: Some(AttnConfig {
            heads: 2,
            head_dim: 4,
            qk: true,
            bias: false,
            zero_attn: true,
            momentum: None,
        }),
        norm: Some(NormConfig { eps: 1e-5 }),
        mlp: Some(MlpConfig {
            kind: MlpKind::Gelu,
            hidden: 32,
            activation: Activation::Gelu,
        }),
    };
    ModelConfig {
        format: MODEL_FORMAT.into(),
        kind: ModelKind::Compiled,
        target: "paper".into(),
        dtype: DType::F64,
        d: 2,
        n: 4,
        max_len: 9,
        width: 16,
        layers: vec![layer; layers],
        final_norm: None,
        readout_row: Some(0),
    }
}

/// Write a model directory with the crate's own initialisation (f64 values that f32 rounds).
fn write_dir(dir: &Path, mc: &ModelConfig) -> NamedTensors {
    let mut named = train::init_params(mc, 7);
    // Non-zero biases too, so that every tensor is visibly the directory's.
    for (name, t) in named.iter_mut() {
        if name.ends_with(".bias") {
            for (i, v) in t.data.iter_mut().enumerate() {
                *v = 0.01 * (i as f64 + 1.0) / 3.0;
            }
        }
    }
    save_model_dir(dir, mc, &named).unwrap();
    named
}

fn compiled_paper_dir() -> (tempfile::TempDir, NamedTensors) {
    let dir = tempfile::tempdir().unwrap();
    let named = write_dir(dir.path(), &compiled_paper_config(2));
    (dir, named)
}

fn weights(dir: &Path) -> NamedTensors {
    Transformer::load(dir, &Device::Cpu, None)
        .unwrap()
        .to_named()
        .unwrap()
}

#[test]
fn init_starts_from_a_trained_paper_models_weights() {
    // The directory: a paper model trained for one step.
    let src = tempfile::tempdir().unwrap();
    let base = train::parse_config(PAPER, "paper.toml", &[]).unwrap();
    train::train(&base, &opts(src.path(), false, None)).unwrap();

    let cfg = with_init(TASK_ONLY, &[], src.path()).unwrap();
    let m = &cfg.model;
    assert_eq!(m.arch, Arch::Paper);
    assert_eq!(
        (m.layers, m.width, m.heads, m.mlp_hidden),
        (2, 16, 2, Some(32))
    );
    let abs = std::fs::canonicalize(src.path()).unwrap();
    assert_eq!(cfg.init.as_ref().unwrap().dir, abs);
    // The same TOML with its [model] written out agrees with the directory.
    let full = with_init(PAPER, &["train.steps=12", "train.seed=11"], src.path()).unwrap();
    assert_eq!(full.model, cfg.model);

    // Zero steps: the run's weights and config.json are the directory's.
    let out = tempfile::tempdir().unwrap();
    train::train(&cfg, &opts(out.path(), false, Some(0))).unwrap();
    assert_eq!(weights(out.path()), weights(src.path()));
    assert_eq!(
        std::fs::read(out.path().join("config.json")).unwrap(),
        std::fs::read(src.path().join("config.json")).unwrap()
    );
    // The run records where it started: train.toml (complete, read without the directory)
    // and state.json.
    let saved = out.path().join("train.toml");
    assert!(std::fs::read_to_string(&saved).unwrap().contains("[init]"));
    assert_eq!(train::load_config(&saved, &[]).unwrap(), cfg);
    let state =
        std::fs::read_to_string(out.path().join("checkpoints/step-00000000/state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(
        state["config"]["init"]["dir"].as_str().unwrap(),
        abs.to_str().unwrap()
    );
    assert!(state["rng"].as_str().unwrap().contains("model directory"));

    // Training on from there changes the weights, with a finite loss.
    let s = train::train(&cfg, &opts(out.path(), true, None)).unwrap();
    assert_eq!(s.steps_done, 12);
    assert!(s.last_loss.is_finite());
    assert_ne!(weights(out.path()), weights(src.path()));
}

#[test]
fn null_key_narrow_heads_model_trains_resumes_and_evaluates() {
    let (src, named) = compiled_paper_dir();
    let cfg = with_init(TASK_ONLY, &[], src.path()).unwrap();
    assert_eq!(cfg.model.head_dim, Some(4));
    assert!(cfg.model.zero_attn);
    let mc = cfg.model_config();
    let want = ModelConfig {
        kind: ModelKind::Trained,
        dtype: DType::F32,
        readout_row: None,
        ..compiled_paper_config(2)
    };
    assert_eq!(mc, want);

    // Step 0: the directory's f64 weights rounded to f32.
    let zero = tempfile::tempdir().unwrap();
    train::train(&cfg, &opts(zero.path(), false, Some(0))).unwrap();
    let got = weights(zero.path());
    assert_eq!(got.len(), named.len());
    for (name, t) in &named {
        let rounded: Vec<f64> = t.data.iter().map(|v| *v as f32 as f64).collect();
        assert_eq!(got[name].data, rounded, "{name}");
    }

    // An uninterrupted run, and one stopped after step 6 (last checkpoint: step 4) and resumed
    // after the directory is gone: a resume uses the checkpoint, never the --init directory.
    let a = tempfile::tempdir().unwrap();
    let sa = train::train(&cfg, &opts(a.path(), false, None)).unwrap();
    assert!(sa.last_loss.is_finite());
    let b = tempfile::tempdir().unwrap();
    train::train(&cfg, &opts(b.path(), false, Some(6))).unwrap();
    drop(src);
    let resumed_cfg = train::load_config(&b.path().join("train.toml"), &[]).unwrap();
    train::train(&resumed_cfg, &opts(b.path(), true, None)).unwrap();
    for f in ["model.safetensors", "config.json"] {
        assert_eq!(
            std::fs::read(a.path().join(f)).unwrap(),
            std::fs::read(b.path().join(f)).unwrap(),
            "{f} differs between the uninterrupted and the resumed run"
        );
    }
    // A fresh start of the recorded config needs the directory, and says so.
    let c = tempfile::tempdir().unwrap();
    let e = train::train(&resumed_cfg, &opts(c.path(), false, None))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--init ") && e.contains("config.json"), "{e}");

    // The result is a model directory: it loads, predicts finite values, and the analysis
    // commands read its task from train.toml.
    let model = Transformer::load(a.path(), &Device::Cpu, None).unwrap();
    assert_eq!(model.config.kind, ModelKind::Trained);
    let ps = PromptDistribution::new(2, 4).sample_batch(5, 9);
    let preds = model.predict_prompts(&ps).unwrap();
    assert!(preds.iter().flatten().all(|v| v.is_finite()));
    let dist = icl::analysis::learner::default_distribution(a.path()).unwrap();
    assert_eq!((dist.d, dist.n), (2, 4));
    let metrics = std::fs::read_to_string(a.path().join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 6);
    for l in metrics.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(v["loss"].as_f64().unwrap().is_finite(), "{l}");
    }
}

#[test]
fn mismatches_are_refused_naming_the_field() {
    let (src, _) = compiled_paper_dir();
    let dir = src.path();
    // The full TOML agrees (head_dim and zero_attn, which it omits, are the directory's).
    with_init(PAPER, &[], dir).unwrap();
    for (set, field, ours, theirs) in [
        ("task.d=3", "task.d", "3", "2"),
        ("task.n=5", "task.n", "5", "4"),
        ("model.layers=3", "model.layers", "3", "2"),
        ("model.width=32", "model.width", "32", "16"),
        ("model.heads=4", "model.heads", "4", "2"),
        ("model.mlp_hidden=64", "model.mlp_hidden", "64", "32"),
        ("model.arch=gpt2", "model.arch", "\"gpt2\"", "\"paper\""),
        ("model.head_dim=8", "model.head_dim", "8", "4"),
        (
            "model.activation=gelu_tanh",
            "model.activation",
            "\"gelu_tanh\"",
            "\"gelu\"",
        ),
        ("model.zero_attn=false", "model.zero_attn", "false", "true"),
    ] {
        let e = init_err(PAPER, &[set], dir);
        assert!(
            e.contains(&format!("field `{field}`: the config says {ours}, "))
                && e.contains(&format!("the model directory has {theirs}")),
            "{set}: {e}"
        );
    }

    // A directory of another architecture.
    let gpt2 = tempfile::tempdir().unwrap();
    let g = train::parse_config(&PAPER.replace("\"paper\"", "\"gpt2\""), "g.toml", &[]).unwrap();
    train::train(&g, &opts(gpt2.path(), false, Some(0))).unwrap();
    let e = init_err(TASK_ONLY, &[], gpt2.path());
    assert!(
        e.contains("paper-architecture") && e.contains("target \"gpt2\""),
        "{e}"
    );

    // Layers of different shapes.
    let uneven = tempfile::tempdir().unwrap();
    let mut mc = compiled_paper_config(2);
    mc.layers[1].mlp.as_mut().unwrap().hidden = 64;
    write_dir(uneven.path(), &mc);
    let e = init_err(TASK_ONLY, &[], uneven.path());
    assert!(e.contains("layers[1] differs from layers[0]"), "{e}");

    // A bias pattern (something the [model] section cannot say) is named by its config field.
    let biased = tempfile::tempdir().unwrap();
    let mut mc = compiled_paper_config(1);
    for l in &mut mc.layers {
        l.attn.as_mut().unwrap().bias = true;
    }
    write_dir(biased.path(), &mc);
    let e = init_err(TASK_ONLY, &[], biased.path());
    assert!(e.contains("layers[0].attn.bias"), "{e}");

    // A position table that is not 2n+1 long.
    let long = tempfile::tempdir().unwrap();
    let mut mc = compiled_paper_config(1);
    mc.max_len = 12;
    write_dir(long.path(), &mc);
    let e = init_err(TASK_ONLY, &[], long.path());
    assert!(e.contains("max_len") && e.contains("12"), "{e}");

    // No such directory.
    let e = init_err(TASK_ONLY, &[], &dir.join("nope"));
    assert!(e.contains("nope"), "{e}");

    // Missing and extra tensors: refused when the run starts, naming the tensor.
    let wpath = dir.join("model.safetensors");
    let (good, dtype) = tensors::load(&wpath).unwrap();
    let cfg = with_init(TASK_ONLY, &[], dir).unwrap();
    let mut t = good.clone();
    t.remove("layers.1.mlp.up.bias");
    tensors::save(&wpath, &t, dtype).unwrap();
    let out = tempfile::tempdir().unwrap();
    let e = train::train(&cfg, &opts(out.path(), false, None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing tensor `layers.1.mlp.up.bias`"), "{e}");
    let mut t = good.clone();
    t.insert(
        "layers.0.attn_norm.weight".into(),
        good["layers.0.norm.weight"].clone(),
    );
    tensors::save(&wpath, &t, dtype).unwrap();
    let e = train::train(&cfg, &opts(out.path(), false, None))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unexpected tensor `layers.0.attn_norm.weight`"),
        "{e}"
    );
}

#[test]
fn cli_init_runs_and_refuses_resume_with_init() {
    let (src, _) = compiled_paper_dir();
    let work = tempfile::tempdir().unwrap();
    let toml = work.path().join("task.toml");
    std::fs::write(&toml, TASK_ONLY).unwrap();
    let out = work.path().join("run");
    let icl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_icl"))
            .args(args)
            .env("RAYON_NUM_THREADS", "1")
            .output()
            .unwrap()
    };
    let (t, o, s) = (
        toml.to_str().unwrap(),
        out.to_str().unwrap(),
        src.path().to_str().unwrap(),
    );
    let r = icl(&["train", t, "--init", s, "-o", o, "--stop-after", "6"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stdout).contains("initialised from"));
    let saved = out.join("train.toml");
    let st = saved.to_str().unwrap();

    let r = icl(&["train", st, "-o", o, "--resume", "--init", s]);
    assert_eq!(r.status.code(), Some(1));
    let e = String::from_utf8_lossy(&r.stderr);
    assert!(e.contains("--init cannot be combined with --resume"), "{e}");

    let r = icl(&["train", st, "-o", o, "--resume"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stdout).contains("step 12 of 12"));

    let r = icl(&["eval", o]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));

    let other = work.path().join("other");
    let r = icl(&[
        "train",
        t,
        "--init",
        s,
        "--set",
        "model.width=32",
        "-o",
        other.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(1));
    let e = String::from_utf8_lossy(&r.stderr);
    assert!(e.contains("field `model.width`") && e.contains("32"), "{e}");
}

/// The two [model] fields a `paper` directory needs beyond the old ones train from scratch too.
#[test]
fn head_dim_and_zero_attn_are_config_fields() {
    let cfg = train::parse_config(
        PAPER,
        "paper.toml",
        &sets(&["model.heads=3", "model.head_dim=3", "model.zero_attn=true"]),
    )
    .unwrap();
    let attn = cfg.model_config().layers[0].attn.unwrap();
    assert_eq!((attn.heads, attn.head_dim, attn.zero_attn), (3, 3, true));
    let out = tempfile::tempdir().unwrap();
    let s = train::train(&cfg, &opts(out.path(), false, None)).unwrap();
    assert!(s.last_loss.is_finite());
    // Without them, the file reads and writes as before.
    let plain = train::parse_config(PAPER, "paper.toml", &[]).unwrap();
    let text = toml::to_string_pretty(&plain).unwrap();
    assert!(!text.contains("head_dim") && !text.contains("zero_attn") && !text.contains("init"));
    let e = train::parse_config(PAPER, "paper.toml", &sets(&["model.head_dim=0"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.head_dim"), "{e}");
}
