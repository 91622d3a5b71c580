//! The `paper` target (docs/PAPER_TARGET.md): measured errors never above the certificate's
//! bound, in f64 and f32; corrupted constants rejected naming the layer and the operation; a
//! tolerance no constants reach is an error.

use icl::certify::{certify_model, compare_claims, ModelFiles};
use icl::model::config::DType;
use icl::pipeline::{self, Target};
use std::path::Path;

fn program(name: &str, sets: &[(&str, &str)]) -> icl::ir::Program {
    let sets: Vec<(String, String)> = sets
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    pipeline::load(&path, &sets).unwrap()
}

fn files(c: &icl::lower::Compiled) -> ModelFiles {
    ModelFiles {
        config: c.config.clone(),
        tensors: pipeline::stored_tensors(c).unwrap(),
        dtype: c.config.dtype,
        layout: c.layout.clone(),
    }
}

/// Every output error of random prompts (the validation prompts: N(0, I) inputs inside the
/// programs' assumed ranges) is within the certified bound, in f64 and f32; where the bound is
/// finite it is a real statement (checked finite for the f64 models below).
#[test]
fn measured_errors_never_exceed_the_certified_bound() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
    let cases: [Case; 5] = [
        ("programs/gd.icl", &[("d", "3"), ("n", "4")], true),
        ("programs/sgd.icl", &[("d", "2"), ("n", "3")], true),
        ("programs/ridge.icl", &[("d", "2"), ("n", "2")], true),
        (
            "programs/paper/appendix_a.icl",
            &[("d", "2"), ("n", "2"), ("w0", "[0.5, -0.25]")],
            true,
        ),
        ("programs/ridge_elim.icl", &[("n", "2")], false),
    ];
    for (name, sets, finite_in_f64) in cases {
        let p = program(name, sets);
        let prompts = pipeline::validation_prompts(&p, 48, 3);
        let interp = icl::interp::run_batch_f64(&p, &prompts).unwrap();
        for dtype in [DType::F64, DType::F32] {
            let Ok(c) = pipeline::lower_to(&p, Target::Paper, dtype) else {
                // ridge_elim's payload overflows f32: the lowering says so (tested below).
                assert_eq!((name, dtype), ("programs/ridge_elim.icl", DType::F32));
                continue;
            };
            let cert = pipeline::certify_compiled(&p, &c).unwrap();
            let bound = cert.end_to_end.bound.0;
            if dtype == DType::F64 && finite_in_f64 {
                assert!(bound.is_finite(), "{name} f64: bound {bound}");
            }
            let pred = pipeline::run_model(&c, &prompts, "cpu").unwrap();
            for (a, b) in pred.iter().zip(&interp) {
                for (x, y) in a.iter().zip(b) {
                    let e = (x - y).abs();
                    assert!(
                        e <= bound,
                        "{name} {dtype:?}: error {e:e} > certified {bound:e}"
                    );
                }
            }
        }
    }
}

/// The error of a corrupted model's check, or of holding the original certificate to it.
fn rejection(
    c: &icl::lower::Compiled,
    p: &icl::ir::Program,
    stored: &icl::certify::Certificate,
    corrupt: impl FnOnce(&mut ModelFiles),
) -> String {
    let mut f = files(c);
    corrupt(&mut f);
    match certify_model(p, &f) {
        Err(e) => e.to_string(),
        Ok(proved) => match compare_claims(stored, &proved) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("the corrupted model was accepted with the original certificate"),
        },
    }
}

fn set(f: &mut ModelFiles, name: &str, idx: usize, v: impl FnOnce(f64) -> f64) {
    let t = f
        .tensors
        .get_mut(name)
        .unwrap_or_else(|| panic!("no tensor {name}"));
    t.data[idx] = v(t.data[idx]);
}

/// A scale N lowered, a position code moved, a bypass constant changed, a product's input scale
/// ε or output weight changed, a pair's coefficient changed: each rejected, naming the layer and
/// (for a layer's part) the operation.
#[test]
fn corrupted_constants_are_rejected_naming_layer_and_operation() {
    let p = program("programs/gd.icl", &[("d", "2"), ("n", "2")]);
    let c = pipeline::lower_to(&p, Target::Paper, DType::F64).unwrap();
    let stored = pipeline::certify_compiled(&p, &c).unwrap();
    let width = c.config.width;
    let paper = c.layout.paper.clone().unwrap();
    let hidden = c.config.layers[0].mlp.unwrap().hidden;
    let inner = {
        let a = c.config.layers[0].attn.unwrap();
        a.heads * a.head_dim
    };

    // The attention scale N of layer 0's heads cut to 1/16 (every Q weight): the leak grows,
    // so the stated bound no longer holds.
    let msg = rejection(&c, &p, &stored, |f| {
        let q = f.tensors.get_mut("layers.0.attn.q.weight").unwrap();
        q.data.iter_mut().for_each(|v| *v /= 16.0);
    });
    assert!(msg.contains("layer 0"), "{msg}");

    // A position code moved: c1 at column 3 takes column 2's value.
    let c1 = paper.codes.c1.index();
    let msg = rejection(&c, &p, &stored, |f| {
        set(f, "pos.weight", 3 * width + c1, |v| {
            v - 1.0 / paper.code_scale as f64
        })
    });
    assert!(
        msg.contains("embedding") && msg.contains("column 3"),
        "{msg}"
    );

    // The bypass constant +N changed.
    let b0 = paper.bypass[0].index();
    let msg = rejection(&c, &p, &stored, |f| set(f, "embed.bias", b0, |v| v * 2.0));
    assert!(msg.contains("embedding"), "{msg}");

    // Layer 0's MLP is `mul p <- xp * y`. Find a product unit (down weight ≠ ±1) and a pair
    // unit (down weight ±1) on p's row.
    let p_row = c
        .layout
        .registers
        .iter()
        .find(|r| r.name == "p")
        .unwrap()
        .rows[0]
        .index();
    let down = &c.tensors["layers.0.mlp.down.weight"];
    let on_row: Vec<(usize, f64)> = (0..hidden)
        .map(|k| (k, down.data[p_row * hidden + k]))
        .filter(|(_, w)| *w != 0.0)
        .collect();
    let (prod, _) = *on_row.iter().find(|(_, w)| w.abs() > 2.0).unwrap();
    let (pair, _) = *on_row.iter().find(|(_, w)| w.abs() == 1.0).unwrap();
    let up = &c.tensors["layers.0.mlp.up.weight"];
    let prod_col = (0..width)
        .find(|&r| up.data[prod * width + r] != 0.0)
        .unwrap();

    // A product's input scale ε doubled on one unit.
    let msg = rejection(&c, &p, &stored, |f| {
        set(f, "layers.0.mlp.up.weight", prod * width + prod_col, |v| {
            v * 2.0
        })
    });
    assert!(
        msg.contains("layer 0 MLP") && msg.contains("mul p <- xp * y"),
        "{msg}"
    );

    // A product's output weight off by 1e-6 (relative): the coefficient error grows, so the
    // stated bound no longer holds.
    let msg = rejection(&c, &p, &stored, |f| {
        set(f, "layers.0.mlp.down.weight", p_row * hidden + prod, |v| {
            v * (1.0 + 1e-6)
        })
    });
    assert!(msg.contains("layer 0"), "{msg}");

    // A pair's coefficient (the overwrite of p) changed.
    let msg = rejection(&c, &p, &stored, |f| {
        set(f, "layers.0.mlp.down.weight", p_row * hidden + pair, |v| {
            v * 0.5
        })
    });
    assert!(
        msg.contains("layer 0 MLP") && msg.contains("mul p <- xp * y"),
        "{msg}"
    );

    // A value weight of the first layer's mov moved to another row.
    let v = &c.tensors["layers.0.attn.v.weight"];
    let idx = (0..inner * width).find(|&i| v.data[i] == 1.0).unwrap();
    let msg = rejection(&c, &p, &stored, |f| {
        set(f, "layers.0.attn.v.weight", idx, |_| 0.0);
    });
    assert!(
        msg.contains("layer 0 attention") && msg.contains("mov xp <- x from prev"),
        "{msg}"
    );
}

/// `--tolerance` below the best certified bound is an error naming the first layer past it and
/// the best bound; one above it compiles.
#[test]
fn unreachable_tolerance_is_an_error_naming_the_layer() {
    let dir = tempfile::tempdir().unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/gd.icl");
    let sets = [("d", "2"), ("n", "2")].map(|(k, v)| (k.to_string(), v.to_string()));
    let opts = |t: f64, dtype| pipeline::Options {
        target: Target::Paper,
        tolerance: Some(t),
        dtype,
        prompts: 0,
        ..Default::default()
    };
    let err = pipeline::run(
        &path,
        &sets,
        &dir.path().join("a"),
        &opts(1e-12, DType::F32),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("cannot be reached in f32") && msg.contains("layer "),
        "{msg}"
    );
    assert!(!dir.path().join("a").exists(), "nothing is written");
    pipeline::run(&path, &sets, &dir.path().join("b"), &opts(1e-3, DType::F64)).unwrap();
    assert!(dir.path().join("b/model.safetensors").exists());
    // The check of the written directory proves the same certificate.
    icl::certify::run_check(&dir.path().join("b")).unwrap();
    // A tolerance for the exact target is refused.
    let exact = pipeline::Options {
        tolerance: Some(1.0),
        ..Default::default()
    };
    let err = pipeline::run(&path, &sets, &dir.path().join("c"), &exact).unwrap_err();
    assert!(format!("{err:#}").contains("paper target only"));
}

/// A payload that would overflow the dtype is a lowering error naming the division.
#[test]
fn payload_overflow_names_the_division() {
    let p = program("programs/ridge_elim.icl", &[("n", "2")]);
    let err = pipeline::lower_to(&p, Target::Paper, DType::F32).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("ridge_elim.icl:") && msg.contains("div ") && msg.contains("overflows f32"),
        "{msg}"
    );
}

/// Every pattern of the language — `mean(x)`, `mean(all)`, `self` (the overwrites), `col`,
/// `prev`, `mean(y)` and the null key of "gets 0" — compiles to position-coded heads whose
/// certified bound holds on random prompts.
#[test]
fn every_pattern_is_certified_and_measured_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("patterns.icl");
    std::fs::write(
        &path,
        "param d = 2\nparam n = 3\nassume x in [-6, 6]\nassume y in [-50, 50]\n\
         reg a: vec[d]\nreg b: vec[d]\nreg c: scalar\nreg e: scalar\nreg f: scalar\nreg out: scalar\n\
         mov a <- x from mean(x)\nmov b <- x from mean(all)\nmov c <- y from mean(all)\n\
         mov e <- y from mean(y)\nmov f <- y from col(3)\nmov a <- a from prev\n\
         mul out <- a^T * b\naff out <- out + c + e - f\noutput out\n",
    )
    .unwrap();
    let p = pipeline::load(&path, &[]).unwrap();
    let prompts = pipeline::validation_prompts(&p, 48, 5);
    let interp = icl::interp::run_batch_f64(&p, &prompts).unwrap();
    for dtype in [DType::F64, DType::F32] {
        let c = pipeline::lower_to(&p, Target::Paper, dtype).unwrap();
        let cert = pipeline::certify_compiled(&p, &c).unwrap();
        let bound = cert.end_to_end.bound.0;
        assert!(bound.is_finite(), "{dtype:?}: {bound}");
        let pred = pipeline::run_model(&c, &prompts, "cpu").unwrap();
        let worst = pred
            .iter()
            .zip(&interp)
            .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
            .fold(0.0, f64::max);
        assert!(worst <= bound, "{dtype:?}: {worst:e} > {bound:e}");
        if dtype == DType::F64 {
            assert!(
                worst < 1e-6,
                "the f64 model computes the program: {worst:e}"
            );
        }
    }
}
