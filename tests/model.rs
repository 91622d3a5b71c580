//! The Candle transformer against hand-built models whose forward pass is computed here
//! independently (`common::forward`: plain f64 loops written from docs/FORMATS.md), and every
//! load error.

mod common;

use candle_core::{Device, Tensor};
use icl::model::config::*;
use icl::model::schema::Weights;
use icl::model::{expected_tensors, save_model_dir, Transformer};
use icl::prompt::{Prompt, PromptDistribution};
use icl::tensors::{self, NamedTensors, RawTensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

const NEG: f64 = f64::NEG_INFINITY;

fn base_config(d: usize, width: usize, max_len: usize, layers: Vec<LayerConfig>) -> ModelConfig {
    ModelConfig {
        format: MODEL_FORMAT.into(),
        kind: ModelKind::Compiled,
        target: "exact".into(),
        dtype: DType::F64,
        d,
        n: (max_len - 1) / 2,
        max_len,
        width,
        layers,
        final_norm: None,
        readout_row: None,
    }
}

/// Random values for every tensor of a config (attention bias patterns get a mix of −inf, 0 and
/// reals, with at least one finite key per query).
fn random_tensors(c: &ModelConfig, seed: u64) -> NamedTensors {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = NamedTensors::new();
    for (name, shape) in expected_tensors(c) {
        let mut t = RawTensor::zeros(&shape);
        if name.ends_with("attn.bias") {
            let (h, ml) = (shape[0], shape[1]);
            for hh in 0..h {
                for q in 0..ml {
                    for k in 0..=ml {
                        let v = match rng.random_range(0..3) {
                            0 => NEG,
                            1 => 0.0,
                            _ => rng.random_range(-1.0..1.0),
                        };
                        t.data[(hh * ml + q) * (ml + 1) + k] = v;
                    }
                    // Keep the query's own key finite so no row is all −inf.
                    t.data[(hh * ml + q) * (ml + 1) + q] = 0.25;
                }
            }
        } else {
            for v in &mut t.data {
                *v = rng.random_range(-1.0..1.0);
            }
        }
        out.insert(name, t);
    }
    out
}

/// A model with every part of FORMATS.md: a bias-pattern head with null key, Q/K heads with a
/// pre-norm and fixed momentum, learned momentum, bilinear and both GeLU MLPs, eps = 0 LayerNorm,
/// final norm.
fn full_config() -> ModelConfig {
    let layers = vec![
        LayerConfig {
            attn_norm: None,
            attn: Some(AttnConfig {
                heads: 2,
                head_dim: 3,
                qk: false,
                bias: true,
                zero_attn: true,
                momentum: None,
            }),
            norm: None,
            mlp: Some(MlpConfig {
                kind: MlpKind::Bilinear,
                hidden: 4,
                activation: Activation::Gelu,
            }),
        },
        LayerConfig {
            attn_norm: Some(NormConfig { eps: 1e-5 }),
            attn: Some(AttnConfig {
                heads: 2,
                head_dim: 2,
                qk: true,
                bias: false,
                zero_attn: false,
                momentum: Some(MomentumConfig::Fixed { eta: 0.6 }),
            }),
            norm: Some(NormConfig { eps: 0.0 }),
            mlp: Some(MlpConfig {
                kind: MlpKind::Gelu,
                hidden: 5,
                activation: Activation::Gelu,
            }),
        },
        LayerConfig {
            attn_norm: None,
            attn: Some(AttnConfig {
                heads: 3,
                head_dim: 2,
                qk: true,
                bias: true,
                zero_attn: true,
                momentum: Some(MomentumConfig::Learned { learned: true }),
            }),
            norm: Some(NormConfig { eps: 1e-3 }),
            mlp: Some(MlpConfig {
                kind: MlpKind::Gelu,
                hidden: 3,
                activation: Activation::GeluTanh,
            }),
        },
        LayerConfig {
            attn_norm: None,
            attn: None,
            norm: None,
            mlp: None,
        },
    ];
    let mut c = base_config(2, 6, 9, layers);
    c.final_norm = Some(NormConfig { eps: 1e-5 });
    c
}

fn prompts(d: usize, n: usize, count: usize, seed: u64) -> Vec<Prompt> {
    PromptDistribution::new(d, n).sample_batch(count, seed)
}

#[test]
fn full_model_matches_reference_forward_f64_and_f32() {
    let c = full_config();
    let t = random_tensors(&c, 1);
    let dir = tempfile::tempdir().unwrap();
    save_model_dir(dir.path(), &c, &t).unwrap();
    let m = Transformer::load(dir.path(), &Device::Cpu, None).unwrap();
    let m32 = Transformer::load(dir.path(), &Device::Cpu, Some(DType::F32)).unwrap();
    // Prompts of two lengths: the full max_len and a shorter one (bias read as [:T, :T] + null).
    for n in [4, 2] {
        let ps = prompts(2, n, 3, 7 + n as u64);
        let got = m.predict_prompts(&ps).unwrap();
        let got32 = m32.predict_prompts(&ps).unwrap();
        for (i, p) in ps.iter().enumerate() {
            let want = common::forward(&c, &t, &p.tokens());
            let want_x: Vec<f64> = want.iter().step_by(2).copied().collect();
            assert_eq!(got[i].len(), n + 1);
            for (k, (a, b)) in got[i].iter().zip(&want_x).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                    "f64 prompt {i} col {k}: {a} vs {b}"
                );
            }
            for (a, b) in got32[i].iter().zip(&want_x) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "f32: {a} vs {b}");
            }
        }
    }
}

/// A model built by hand with a closed-form output:
/// embed puts y, x1, x2 in rows 0..3 and 1 in row 4 (bias); layer 0's head, with bias pattern
/// "previous column" (0 at key t−1, −inf elsewhere; column 0 attends only the null key, value 0),
/// copies row 1 (x1) of column t−1 into row 3; the bilinear MLP adds row1·row3 + 0.5·row3 (gate
/// = row 1 + 0.5, up = row 3) into row 5. Readout reads row 5.
/// So pred_t = (x1_t + 0.5) · x1_{t−1} (0 at t = 0). Layer 1's LayerNorm (eps 0) and one-hot
/// readout are checked separately below.
#[test]
fn hand_built_previous_column_and_bilinear_product() {
    let (d, w, ml) = (2, 6, 5);
    let layer = LayerConfig {
        attn_norm: None,
        attn: Some(AttnConfig {
            heads: 1,
            head_dim: 6,
            qk: false,
            bias: true,
            zero_attn: true,
            momentum: None,
        }),
        norm: None,
        mlp: Some(MlpConfig {
            kind: MlpKind::Bilinear,
            hidden: 1,
            activation: Activation::Gelu,
        }),
    };
    let c = base_config(d, w, ml, vec![layer]);
    let mut t: NamedTensors = expected_tensors(&c)
        .into_iter()
        .map(|(n, s)| (n, RawTensor::zeros(&s)))
        .collect();
    let spec = Weights::spec(&c);
    let (attn, mlp) = (
        spec.layers[0].attn.as_ref().unwrap(),
        spec.layers[0].mlp.as_ref().unwrap(),
    );
    let gate = mlp.gate.as_ref().unwrap();
    let e = t.get_mut(&spec.embed.weight.name).unwrap();
    for i in 0..3 {
        e.set2(i, i, 1.0);
    }
    t.get_mut(&spec.embed.bias.name).unwrap().data[4] = 1.0;
    let b = t.get_mut(&attn.bias.as_ref().unwrap().name).unwrap();
    for q in 0..ml {
        for k in 0..=ml {
            let allowed = if q == 0 { k == ml } else { k == q - 1 };
            b.data[q * (ml + 1) + k] = if allowed { 0.0 } else { NEG };
        }
    }
    let v = t.get_mut(&attn.v.weight.name).unwrap();
    for i in 0..w {
        v.set2(i, i, 1.0);
    }
    t.get_mut(&attn.o.weight.name).unwrap().set2(3, 1, 1.0);
    t.get_mut(&gate.weight.name).unwrap().set2(0, 1, 1.0);
    t.get_mut(&gate.bias.name).unwrap().data[0] = 0.5;
    t.get_mut(&mlp.up.weight.name).unwrap().set2(0, 3, 1.0);
    t.get_mut(&mlp.down.weight.name).unwrap().set2(5, 0, 1.0);
    t.get_mut(&spec.readout.weight.name)
        .unwrap()
        .set2(0, 5, 1.0);
    let dir = tempfile::tempdir().unwrap();
    save_model_dir(dir.path(), &c, &t).unwrap();
    let m = Transformer::load(dir.path(), &Device::Cpu, None).unwrap();
    let ps = prompts(d, 2, 4, 3);
    let tokens = m.prompts_tensor(&ps).unwrap();
    let pred = m.forward(&tokens).unwrap().to_vec2::<f64>().unwrap();
    for (p, row) in ps.iter().zip(&pred) {
        let toks = p.tokens();
        for (tt, got) in row.iter().enumerate() {
            let want = if tt == 0 {
                0.0
            } else {
                (toks[tt][1] + 0.5) * toks[tt - 1][1]
            };
            assert!((got - want).abs() < 1e-14, "column {tt}: {got} vs {want}");
        }
    }
    // Hidden states: after the embedding row 3 is 0; after layer 0 row 3 holds x1 of t−1.
    let hs = m.hidden_states(&tokens).unwrap();
    assert_eq!(hs.len(), 2);
    let h1 = hs[1].to_vec3::<f64>().unwrap();
    let toks = ps[0].tokens();
    for tt in 1..toks.len() {
        assert_eq!(h1[0][tt][3], toks[tt - 1][1]);
    }
    assert_eq!(h1[0][0][3], 0.0);
}

/// LayerNorm with eps = 0 on a column whose entries are (a, −a, 0, …): mean 0, variance 2a²/w,
/// so the normalized entry 0 is a / sqrt(2a²/w) = sign(a)·sqrt(w/2).
#[test]
fn layernorm_with_eps_zero_divides_by_the_standard_deviation() {
    let (d, w, ml) = (1, 4, 3);
    let layer = LayerConfig {
        attn_norm: None,
        attn: None,
        norm: Some(NormConfig { eps: 0.0 }),
        mlp: Some(MlpConfig {
            kind: MlpKind::Bilinear,
            hidden: 1,
            activation: Activation::Gelu,
        }),
    };
    let c = base_config(d, w, ml, vec![layer]);
    let mut t: NamedTensors = expected_tensors(&c)
        .into_iter()
        .map(|(n, s)| (n, RawTensor::zeros(&s)))
        .collect();
    let spec = Weights::spec(&c);
    let (norm, mlp) = (
        spec.layers[0].norm.as_ref().unwrap(),
        spec.layers[0].mlp.as_ref().unwrap(),
    );
    // Row 0 = x, row 1 = −x.
    t.get_mut(&spec.embed.weight.name).unwrap().set2(0, 1, 1.0);
    t.get_mut(&spec.embed.weight.name).unwrap().set2(1, 1, -1.0);
    t.get_mut(&norm.weight.name)
        .unwrap()
        .data
        .iter_mut()
        .for_each(|v| *v = 1.0);
    // MLP: gate = normalized row 0, up = 1 (bias) → writes LN(h)[0] into row 3.
    t.get_mut(&mlp.gate.as_ref().unwrap().weight.name)
        .unwrap()
        .set2(0, 0, 1.0);
    t.get_mut(&mlp.up.bias.name).unwrap().data[0] = 1.0;
    t.get_mut(&mlp.down.weight.name).unwrap().set2(3, 0, 1.0);
    t.get_mut(&spec.readout.weight.name)
        .unwrap()
        .set2(0, 3, 1.0);
    let dir = tempfile::tempdir().unwrap();
    save_model_dir(dir.path(), &c, &t).unwrap();
    let m = Transformer::load(dir.path(), &Device::Cpu, None).unwrap();
    let p = Prompt {
        xs: vec![vec![-3.0], vec![0.25]],
        ys: vec![1.0, 2.0],
        w: vec![0.0],
    };
    let got = m.predict_prompts(&[p]).unwrap();
    let s = (w as f64 / 2.0).sqrt();
    assert!((got[0][0] + s).abs() < 1e-14, "{:?}", got);
    assert!((got[0][1] - s).abs() < 1e-14, "{:?}", got);
}

// ---------- load errors ----------

fn write_dir(dir: &Path, c: &ModelConfig, t: &NamedTensors, dtype: DType) {
    std::fs::write(dir.join("config.json"), serde_json::to_string(c).unwrap()).unwrap();
    tensors::save(&dir.join("model.safetensors"), t, dtype).unwrap();
}

fn load_err(dir: &Path) -> String {
    Transformer::load(dir, &Device::Cpu, None)
        .unwrap_err()
        .to_string()
}

#[test]
fn load_errors_name_what_is_wrong() {
    let c = full_config();
    let t = random_tensors(&c, 2);
    let spec = Weights::spec(&c);
    let attn = |l: usize| spec.layers[l].attn.as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();

    // Missing files.
    let e = load_err(p);
    assert!(
        e.contains("config.json") && e.contains("missing file"),
        "{e}"
    );
    std::fs::write(p.join("config.json"), serde_json::to_string(&c).unwrap()).unwrap();
    let e = load_err(p);
    assert!(
        e.contains("model.safetensors") && e.contains("missing file"),
        "{e}"
    );

    // Missing tensor.
    let mut t2 = t.clone();
    let q1 = &attn(1).q.as_ref().unwrap().weight.name;
    t2.remove(q1);
    write_dir(p, &c, &t2, DType::F64);
    let e = load_err(p);
    assert!(
        e.contains(&format!("missing tensor `{q1}`")) && e.contains("[4, 6]"),
        "{e}"
    );

    // Extra tensor.
    let mut t2 = t.clone();
    // Layer 0 has no Q/K: its query weight is the one a Q/K layer 0 would have.
    let mut with_qk = c.clone();
    with_qk.layers[0].attn.as_mut().unwrap().qk = true;
    let q0 = Weights::spec(&with_qk).layers[0]
        .attn
        .as_ref()
        .unwrap()
        .q
        .as_ref()
        .unwrap()
        .weight
        .name
        .clone();
    t2.insert(q0.clone(), RawTensor::zeros(&[6, 6]));
    write_dir(p, &c, &t2, DType::F64);
    let e = load_err(p);
    assert!(e.contains(&format!("unexpected tensor `{q0}`")), "{e}");

    // Wrong shape.
    let mut t2 = t.clone();
    let bias2 = &attn(2).bias.as_ref().unwrap().name;
    t2.insert(bias2.clone(), RawTensor::zeros(&[3, 9, 9]));
    write_dir(p, &c, &t2, DType::F64);
    let e = load_err(p);
    assert!(
        e.contains(&format!("`{bias2}`")) && e.contains("[3, 9, 9]") && e.contains("[3, 9, 10]"),
        "{e}"
    );

    // Wrong dtype: config says f64, file holds f32.
    write_dir(p, &c, &t, DType::F32);
    let e = load_err(p);
    assert!(e.contains("dtype f32") && e.contains("dtype f64"), "{e}");

    // Config not matching the weights: width 7 makes every width-shaped tensor wrong.
    let mut c2 = c.clone();
    c2.width = 7;
    write_dir(p, &c2, &t, DType::F64);
    let e = load_err(p);
    assert!(
        e.contains(&format!("`{}`", spec.embed.bias.name))
            && e.contains("expected [7]")
            && e.contains("shape [6]"),
        "{e}"
    );

    // Unknown field, bad JSON.
    let mut v = serde_json::to_value(&c).unwrap();
    v["layers"][0]["attn"]["temperature"] = 1.0.into();
    std::fs::write(p.join("config.json"), v.to_string()).unwrap();
    let e = load_err(p);
    assert!(e.contains("unknown field `temperature`"), "{e}");
    std::fs::write(p.join("config.json"), "{ \"format\": ").unwrap();
    let e = load_err(p);
    assert!(e.contains("invalid config"), "{e}");

    // A value the forward pass cannot use.
    let mut c3 = c.clone();
    c3.format = "icl-model/9".into();
    write_dir(p, &c3, &t, DType::F64);
    let e = load_err(p);
    assert!(e.contains("format") && e.contains("icl-model/9"), "{e}");

    // And the untouched files load.
    write_dir(p, &c, &t, DType::F64);
    Transformer::load(p, &Device::Cpu, None).unwrap();
}

#[test]
fn inputs_are_checked_and_cuda_without_the_feature_is_an_error() {
    let c = full_config();
    let t = random_tensors(&c, 3);
    let m = Transformer::from_named(c, &t, &Device::Cpu, DType::F64, false).unwrap();
    let too_long = Tensor::zeros((1, 10, 3), candle_core::DType::F64, &Device::Cpu).unwrap();
    assert!(m
        .forward(&too_long)
        .unwrap_err()
        .to_string()
        .contains("max_len = 9"));
    let wrong_d = Tensor::zeros((1, 3, 4), candle_core::DType::F64, &Device::Cpu).unwrap();
    assert!(m
        .forward(&wrong_d)
        .unwrap_err()
        .to_string()
        .contains("d+1 = 3"));
    if !cfg!(feature = "cuda") {
        let e = icl::model::parse_device("cuda").unwrap_err().to_string();
        assert!(e.contains("--features cuda"), "{e}");
    }
    assert!(icl::model::parse_device("tpu").is_err());
}
