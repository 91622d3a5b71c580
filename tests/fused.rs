//! The fused CPU training step (src/train/fused/) against Candle's forward and autograd and
//! against finite differences: the loss, every parameter's gradient and a whole step's update,
//! on every architecture option the fused step covers; each fused kernel — LayerNorm, GeLU,
//! causal attention — against the plain Candle composition on random inputs, forward and
//! gradients; results independent of the thread count; `--engine fused` refused where it does
//! not apply.
//!
//! One known difference: Candle's GeLU gradients use 6-digit constants (0.398942 for 1/√(2π),
//! 0.797885 for √(2/π)), a relative error up to 7e-7 that the fused step does not have; the f64
//! comparisons with Candle allow for it, and the finite-difference test shows which is exact.

use candle_core::{DType as CDType, Device, Tensor, D};
use icl::model::schema::Weights;
use icl::train::fused::{self, attention, ops};
use icl::train::{self, Engine, StepOutcome, TrainConfig, TrainError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn config(arch: &str, extra: &[&str], dtype: &str) -> TrainConfig {
    let mut sets: Vec<String> = [
        "task.d=3",
        "task.n=5",
        "model.layers=2",
        "model.width=16",
        "model.heads=2",
        "model.mlp_hidden=24",
        "train.batch=6",
        "train.steps=10",
        "train.lr=1e-2",
        "train.weight_decay=0.01",
        "train.clip=0.5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    sets.push(format!("model.arch=\"{arch}\""));
    sets.push(format!("train.dtype=\"{dtype}\""));
    sets.extend(extra.iter().map(|s| s.to_string()));
    let root = env!("CARGO_MANIFEST_DIR");
    train::load_config(
        std::path::Path::new(&format!("{root}/configs/tiny.toml")),
        &sets,
    )
    .unwrap()
}

/// Every option the fused step covers, in `dtype`.
fn variants(dtype: &str) -> Vec<(&'static str, TrainConfig)> {
    vec![
        ("gpt2", config("gpt2", &[], dtype)),
        ("paper", config("paper", &[], dtype)),
        (
            "gelu_tanh",
            config("gpt2", &["model.activation=\"gelu_tanh\""], dtype),
        ),
        (
            "null key, head_dim 3",
            config(
                "paper",
                &["model.zero_attn=true", "model.head_dim=3"],
                dtype,
            ),
        ),
    ]
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(CDType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0f64, |m, x| m.max(x.abs()))
}

/// max |a − b| over max(max |b|, floor).
fn rel(a: &[f64], b: &[f64], floor: f64) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / max_abs(b).max(floor)
}

type Named = std::collections::BTreeMap<String, Vec<f64>>;

/// The fused loss and named gradients (as f64) of `model` on `prompts`, computed in `T`.
fn fused_named<T: fused::Real>(
    model: &icl::model::Transformer,
    prompts: &[icl::prompt::Prompt],
) -> (f64, Named) {
    let params: Weights<Vec<T>> = model.weights().map(|t| {
        t.flatten_all()
            .unwrap()
            .to_dtype(T::DTYPE)
            .unwrap()
            .to_vec1()
            .unwrap()
    });
    let mut buf = fused::Buffers::default();
    let (loss, g) = fused::loss_and_grads(&model.config, &params, &mut buf, prompts).unwrap();
    let g = g.map(|v| v.iter().map(|x| x.to_f64()).collect::<Vec<f64>>());
    (loss, Weights::spec(&model.config).into_named(g))
}

/// The fused loss and gradients of a fresh model of `cfg` on one batch, and Candle's.
fn both_grads(cfg: &TrainConfig) -> ((f64, Named), (f64, Named)) {
    let (model, _) = train::fresh(cfg, &Device::Cpu).unwrap();
    let prompts = cfg.distribution().sample_batch(cfg.train.batch, 7);
    let (closs, cgrads) = train::candle_loss_and_grads(&model, &prompts).unwrap();
    let cnamed: Named = model
        .params()
        .iter()
        .map(|(name, p)| {
            (
                name.clone(),
                to_f64(cgrads.get(p).expect("a Candle gradient")),
            )
        })
        .collect();
    let fused = match model.dtype() {
        CDType::F64 => fused_named::<f64>(&model, &prompts),
        _ => fused_named::<f32>(&model, &prompts),
    };
    (fused, (closs, cnamed))
}

/// The loss difference and the worst per-tensor gradient difference, relative to the tensor's
/// largest Candle gradient floored at `floor` times the largest gradient of all (a key bias's
/// exact gradient is 0, softmax being blind to a shift of every score: both engines give
/// rounding noise there).
fn grad_gap(cfg: &TrainConfig, floor: f64) -> (f64, f64, String) {
    let ((floss, fg), (closs, cg)) = both_grads(cfg);
    let global = cg.values().map(|g| max_abs(g)).fold(0.0, f64::max);
    let (mut worst, mut at) = (0.0f64, String::new());
    for (name, c) in &cg {
        let r = rel(&fg[name], c, floor * global);
        assert!(r.is_finite(), "{name}: {r}");
        if r > worst {
            (worst, at) = (r, name.clone());
        }
    }
    ((floss - closs).abs() / closs, worst, at)
}

#[test]
fn fused_loss_and_gradients_match_candle_autograd_in_f64() {
    for (what, cfg) in variants("f64") {
        let (dl, dg, at) = grad_gap(&cfg, 1e-6);
        println!("{what}: loss {dl:.1e}, gradients {dg:.1e} ({at})");
        assert!(dl < 1e-14, "{what}: loss differs by {dl:e} (relative)");
        // Candle's 6-digit GeLU-gradient constants: relative error ≤ 7e-7 per entry.
        assert!(dg < 1e-5, "{what}: {at}'s gradient differs by {dg:e}");
    }
}

#[test]
fn fused_loss_and_gradients_match_candle_autograd_in_f32() {
    for (what, cfg) in variants("f32") {
        let (dl, dg, at) = grad_gap(&cfg, 1e-4);
        println!("{what}: loss {dl:.1e}, gradients {dg:.1e} ({at})");
        assert!(dl < 1e-5, "{what}: loss differs by {dl:e} (relative)");
        assert!(dg < 1e-3, "{what}: {at}'s gradient differs by {dg:e}");
    }
}

/// The fused loss of `params` (f64).
fn fused_loss(
    cfg: &TrainConfig,
    params: &Weights<Vec<f64>>,
    prompts: &[icl::prompt::Prompt],
) -> f64 {
    let mc = cfg.model_config();
    let mut buf = fused::Buffers::default();
    fused::loss_and_grads(&mc, params, &mut buf, prompts)
        .unwrap()
        .0
}

#[test]
fn fused_gradients_are_the_loss_derivative_by_central_differences() {
    for (what, cfg) in variants("f64") {
        let (model, _) = train::fresh(&cfg, &Device::Cpu).unwrap();
        let prompts = cfg.distribution().sample_batch(cfg.train.batch, 3);
        let params: Weights<Vec<f64>> = model.weights().map(to_f64);
        let mut buf = fused::Buffers::default();
        let (_, grads) = fused::loss_and_grads(&model.config, &params, &mut buf, &prompts).unwrap();
        let spec = Weights::spec(&model.config);
        let names: Vec<String> = spec.leaves().iter().map(|s| s.name.clone()).collect();
        let grads = grads.into_leaves();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for (i, name) in names.iter().enumerate() {
            // A random direction in this tensor alone: L(θ ± εv) against ⟨∇L, v⟩.
            let v: Vec<f64> = (0..grads[i].len())
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let eps = 1e-5;
            let shifted = |sign: f64| {
                let mut leaves = params.clone().into_leaves();
                for (p, d) in leaves[i].iter_mut().zip(&v) {
                    *p += sign * eps * d;
                }
                let mut k = 0;
                let tree = params.map(|_| {
                    k += 1;
                    leaves[k - 1].clone()
                });
                fused_loss(&cfg, &tree, &prompts)
            };
            let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * eps);
            let analytic: f64 = grads[i].iter().zip(&v).map(|(g, d)| g * d).sum();
            let norm = grads[i].iter().map(|g| g * g).sum::<f64>().sqrt();
            // Truncation O(ε²) and the loss's rounding over 2ε (≈ 1e-11 here) bound the gap.
            let scale = analytic.abs().max(1e-3 * norm);
            let err = (numeric - analytic).abs() / (scale + 1e-3);
            assert!(
                err < 1e-6,
                "{what}, {name}: ⟨∇L, v⟩ = {analytic:e}, central difference {numeric:e}"
            );
        }
    }
}

/// `steps` training steps of a fresh model on `engine`: the losses, the final weights and the
/// last step's gradients' magnitudes (by the Candle reference, for the mask below).
fn run(cfg: &TrainConfig, engine: Engine, steps: usize) -> (Vec<f64>, Named) {
    let (model, mut opt) = train::fresh(cfg, &Device::Cpu).unwrap();
    let mut losses = Vec::new();
    for s in 0..steps {
        match train::train_step_on(cfg, &model, &mut opt, s, engine).unwrap() {
            StepOutcome::Done { loss, .. } => losses.push(loss),
            StepOutcome::NonFinite(l) => panic!("non-finite loss {l}"),
        }
    }
    let named = model
        .params()
        .iter()
        .map(|(n, p)| (n.clone(), to_f64(p)))
        .collect();
    (losses, named)
}

#[test]
fn a_fused_training_step_updates_the_weights_as_the_candle_step_does_in_f32() {
    for (what, cfg) in variants("f32") {
        let ((_, _), (_, cgrads)) = both_grads(&cfg);
        let (model, _) = train::fresh(&cfg, &Device::Cpu).unwrap();
        let before: Named = model
            .params()
            .iter()
            .map(|(n, p)| (n.clone(), to_f64(p)))
            .collect();
        let (fl, fw) = run(&cfg, Engine::Fused, 1);
        let (cl, cw) = run(&cfg, Engine::Candle, 1);
        assert!(
            (fl[0] - cl[0]).abs() <= 1e-5 * cl[0],
            "{what}: loss {} vs {}",
            fl[0],
            cl[0]
        );
        let global = cgrads.values().map(|g| max_abs(g)).fold(0.0, f64::max);
        let lr = train::learning_rate(&cfg.train, 0);
        let mut moved = 0;
        for (name, c) in &cw {
            for (j, (&f, &c)) in fw[name].iter().zip(c).enumerate() {
                // AdamW's first step moves every weight by ≈ lr·sign(g); where the gradient is at
                // rounding level (a key bias's is exactly 0) the two engines' signs are noise.
                let g = cgrads[name][j].abs();
                if g < 1e-4 * global {
                    continue;
                }
                moved += ((c - before[name][j]).abs() > 0.5 * lr) as usize;
                assert!(
                    (f - c).abs() <= 1e-3 * lr,
                    "{what}, {name}[{j}]: fused {f}, Candle {c} (gradient {g:e})"
                );
            }
        }
        assert!(moved > 100, "{what}: only {moved} weights moved");
    }
}

#[test]
fn the_fused_step_does_not_depend_on_the_thread_count() {
    let cfg = config(
        "gpt2",
        &[
            "model.width=64",
            "model.mlp_hidden=256",
            "train.batch=32",
            "task.n=10",
        ],
        "f32",
    );
    let on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| run(&cfg, Engine::Fused, 3))
    };
    let (l1, w1) = on(1);
    let (l2, w2) = on(2);
    assert_eq!(l1, l2);
    assert_eq!(w1, w2);
}

#[test]
fn engine_fused_is_refused_with_the_reason_where_it_does_not_apply() {
    let cfg = config("gpt2", &["model.momentum_eta=0.5"], "f32");
    let (model, mut opt) = train::fresh(&cfg, &Device::Cpu).unwrap();
    match train::train_step_on(&cfg, &model, &mut opt, 0, Engine::Fused) {
        Err(e @ TrainError::Engine(_)) => {
            let msg = e.to_string();
            assert!(msg.contains("momentum attention"), "{msg}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("--engine fused ran a momentum model"),
    }
    // Auto falls back to Candle for it.
    assert!(train::train_step_on(&cfg, &model, &mut opt, 0, Engine::Auto).is_ok());
    // `icl train --engine fused` refuses it before writing anything.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let opts = train::TrainOptions {
        out: out.clone(),
        resume: false,
        stop_after: None,
        progress: false,
        device: Device::Cpu,
        engine: Engine::Fused,
    };
    match train::train(&cfg, &opts) {
        Err(TrainError::Engine(why)) => assert!(why.contains("momentum"), "{why}"),
        other => panic!(
            "expected the engine error, got {:?}",
            other.map(|s| s.steps_done)
        ),
    }
    assert!(!out.exists(), "a refused run wrote {}", out.display());
}

// ---- kernels against the plain Candle composition, f32, random inputs ----

fn random(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| scale * rng.random_range(-1.0f32..1.0))
        .collect()
}

fn var(data: &[f32], shape: &[usize]) -> candle_core::Var {
    candle_core::Var::from_tensor(&Tensor::from_slice(data, shape, &Device::Cpu).unwrap()).unwrap()
}

fn flat(t: &Tensor) -> Vec<f64> {
    to_f64(t)
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Forward `y` and the gradients of Σ y ⊙ r with respect to `vars` by Candle's autograd.
fn candle_vjp(y: &Tensor, r: &[f32], vars: &[&candle_core::Var]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let rt = Tensor::from_slice(r, y.shape(), &Device::Cpu).unwrap();
    let loss = (y * rt).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    let grads = vars
        .iter()
        .map(|v| flat(g.get(v.as_tensor()).unwrap()))
        .collect();
    (flat(y), grads)
}

const F32_TOL: f64 = 2e-5;

#[test]
fn fused_layer_norm_matches_the_candle_composition() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (rows, w, eps) = (37, 24, 1e-5);
    let (x, gain, shift) = (
        random(&mut rng, rows * w, 3.0),
        random(&mut rng, w, 1.5),
        random(&mut rng, w, 1.0),
    );
    let r = random(&mut rng, rows * w, 1.0);
    let (xv, gv, sv) = (var(&x, &[rows, w]), var(&gain, &[w]), var(&shift, &[w]));
    let xt = xv.as_tensor();
    let mean = xt.mean_keepdim(D::Minus1).unwrap();
    let c = xt.broadcast_sub(&mean).unwrap();
    let v = c.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    let y = c
        .broadcast_div(&v.affine(1.0, eps).unwrap().sqrt().unwrap())
        .unwrap();
    let y = y
        .broadcast_mul(gv.as_tensor())
        .unwrap()
        .broadcast_add(sv.as_tensor())
        .unwrap();
    let (cy, cg) = candle_vjp(&y, &r, &[&xv, &gv, &sv]);

    let mut fy = vec![0.0f32; rows * w];
    let mut cache = ops::NormCache::default();
    ops::layer_norm(&mut fy, &mut cache, &x, &gain, &shift, eps);
    let (mut dx, mut dg, mut ds) = (vec![0.0f32; rows * w], vec![0.0f32; w], vec![0.0f32; w]);
    ops::layer_norm_backward(&mut dx, &r, &cache, &gain, &mut dg, &mut ds);
    for (what, f, c) in [
        ("y", &fy, &cy),
        ("dx", &dx, &cg[0]),
        ("dgain", &dg, &cg[1]),
        ("dshift", &ds, &cg[2]),
    ] {
        let e = rel(&widen(f), c, 0.0);
        assert!(e < F32_TOL, "LayerNorm {what}: {e:e}");
    }
}

#[test]
fn fused_gelu_matches_the_candle_composition() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let n = 5000;
    let u = random(&mut rng, n, 6.0);
    let r = random(&mut rng, n, 1.0);
    for kind in [ops::Gelu::Erf, ops::Gelu::Tanh] {
        let uv = var(&u, &[n]);
        let y = match kind {
            ops::Gelu::Erf => uv.as_tensor().gelu_erf().unwrap(),
            ops::Gelu::Tanh => uv.as_tensor().gelu().unwrap(),
        };
        let (cy, cg) = candle_vjp(&y, &r, &[&uv]);
        let (mut g, mut s) = (vec![0.0f32; n], vec![0.0f32; n]);
        ops::gelu(kind, &mut g, &mut s, &u);
        let mut d = r.clone();
        ops::gelu_backward(kind, &mut d, &s, &u);
        let (ey, ed) = (rel(&widen(&g), &cy, 0.0), rel(&widen(&d), &cg[0], 0.0));
        assert!(ey < F32_TOL, "{kind:?} GeLU forward: {ey:e}");
        assert!(ed < F32_TOL, "{kind:?} GeLU gradient: {ed:e}");
    }
}

#[test]
fn fused_attention_matches_the_candle_composition() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for null_key in [false, true] {
        let (b, t, heads, hd) = (3, 7, 2, 5);
        let inner = heads * hd;
        let shape = attention::Shape {
            batch: b,
            t,
            heads,
            head_dim: hd,
            null_key,
        };
        let (q, k, v) = (
            random(&mut rng, b * t * inner, 2.0),
            random(&mut rng, b * t * inner, 2.0),
            random(&mut rng, b * t * inner, 1.0),
        );
        let r = random(&mut rng, b * t * inner, 1.0);
        let (qv, kv, vv) = (
            var(&q, &[b, t, inner]),
            var(&k, &[b, t, inner]),
            var(&v, &[b, t, inner]),
        );
        let split = |x: &Tensor| {
            x.reshape((b, t, heads, hd))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (qh, kh, vh) = (
            split(qv.as_tensor()),
            split(kv.as_tensor()),
            split(vv.as_tensor()),
        );
        let scores = (qh.matmul(&kh.t().unwrap().contiguous().unwrap()).unwrap()
            / (hd as f64).sqrt())
        .unwrap();
        let mask: Vec<f32> = (0..t * t)
            .map(|i| {
                if i % t > i / t {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_slice(&mask, (t, t), &Device::Cpu).unwrap();
        let mut scores = scores.broadcast_add(&mask).unwrap();
        if null_key {
            let zeros = Tensor::zeros((b, heads, t, 1), CDType::F32, &Device::Cpu).unwrap();
            scores = Tensor::cat(&[&scores, &zeros], 3).unwrap();
        }
        let p = icl::model::softmax_neg_inf(&scores)
            .unwrap()
            .narrow(3, 0, t)
            .unwrap();
        let out = p
            .matmul(&vh)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((b, t, inner))
            .unwrap();
        let (cy, cg) = candle_vjp(&out, &r, &[&qv, &kv, &vv]);

        let mut probs = vec![0.0f32; b * heads * t * t];
        let mut fy = vec![0.0f32; b * t * inner];
        attention::forward(shape, &q, &k, &v, &mut probs, &mut fy);
        let (mut dq, mut dk, mut dv) = (
            vec![0.0f32; q.len()],
            vec![0.0f32; q.len()],
            vec![0.0f32; q.len()],
        );
        attention::backward(shape, &q, &k, &v, &probs, &r, &mut dq, &mut dk, &mut dv);
        for (what, f, c) in [
            ("out", &fy, &cy),
            ("dq", &dq, &cg[0]),
            ("dk", &dk, &cg[1]),
            ("dv", &dv, &cg[2]),
        ] {
            let e = rel(&widen(f), c, 0.0);
            assert!(e < F32_TOL, "attention (null key {null_key}) {what}: {e:e}");
        }
    }
}
