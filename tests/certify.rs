//! The certifier accepts a correctly compiled model and rejects corrupted ones, naming the
//! layer and the operation.
//!
//! The model is built by hand ([`common::handbuilt`]): a small program using every operation,
//! compiled with the exact target's constructions. A forward pass written from
//! docs/FORMATS.md alone checks that the hand-built model computes the program (so "accepted"
//! means something), then each corruption is asserted to be rejected. Two more tests run the
//! checker on real compiler output.

mod common;

use common::handbuilt::*;
use icl::certify::{self, Certificate, Verdict};
use icl::layout::Row;
use icl::model::config::ModelConfig;
use icl::model::schema::Weights;
use std::path::Path;

/// Write a model directory (with the certificate the checker proves for the untouched model).
fn write_dir(dir: &Path, f: &certify::ModelFiles, cert: &Certificate) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&f.config).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("layout.json"),
        serde_json::to_string_pretty(&f.layout).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("certificate.json"),
        serde_json::to_string_pretty(cert).unwrap(),
    )
    .unwrap();
    icl::tensors::save(&dir.join("model.safetensors"), &f.tensors, f.dtype).unwrap();
}

fn check_dir(dir: &Path) -> anyhow::Result<Certificate> {
    certify::run_check_with(dir, |rec| {
        assert_eq!(rec.name, "t.icl");
        Ok(program())
    })
}

/// Apply a corruption to a fresh copy of the model, write it, run the checker.
fn corrupted(f: impl FnOnce(&mut certify::ModelFiles)) -> String {
    let good = files();
    let cert = certify::certify_model(&program(), &good).expect("the untouched model certifies");
    let mut bad = good.clone();
    f(&mut bad);
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), &bad, &cert);
    match check_dir(dir.path()) {
        Ok(_) => panic!("the corrupted model was accepted"),
        Err(e) => e.to_string(),
    }
}

fn assert_names(msg: &str, layer_part: &str, op_text: &str) {
    assert!(
        msg.contains(layer_part) && msg.contains(op_text),
        "expected the rejection to name `{layer_part}` and `{op_text}`, got: {msg}"
    );
}

#[test]
fn the_hand_built_model_computes_the_program() {
    // Deterministic pseudo-random prompts inside the assumed ranges (x ∈ [-1,1], y ∈ [-2,2]).
    let f = files();
    let p = program();
    let mut seed = 12345u64;
    let mut rnd = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    };
    for _ in 0..20 {
        let tokens: Vec<Vec<f64>> = (0..T)
            .map(|c| {
                if c % 2 == 0 {
                    vec![0.0, rnd(), rnd()]
                } else {
                    vec![2.0 * rnd(), 0.0, 0.0]
                }
            })
            .collect();
        let a = common::forward(&f.config, &f.tensors, &tokens);
        let b = common::interpret(&p, &tokens);
        for c in (0..T).step_by(2) {
            assert!(
                (a[c] - b[c]).abs() <= 1e-9 * (1.0 + b[c].abs()),
                "column {c}: model {} program {}",
                a[c],
                b[c]
            );
        }
    }
}

#[test]
fn the_untouched_model_is_accepted_with_the_right_verdicts() {
    let f = files();
    let cert = certify::certify_model(&program(), &f).unwrap_or_else(|e| panic!("{e}"));
    let verdicts: Vec<Verdict> = cert.layers.iter().map(|l| l.verdict).collect();
    assert_eq!(
        verdicts,
        vec![
            Verdict::Exact,
            Verdict::Exact,
            Verdict::Exact,
            Verdict::Bounded,
            Verdict::Exact
        ]
    );
    assert_eq!(cert.verdict, Verdict::Bounded);
    // δ = 0 (g²L/(2P²) = 1), so ε = R/(4P²den_min²) with den_min = 1 and R ≤ Σ row bounds²:
    // rows y ≤ 2, x ≤ 1 (×2), xp ≤ 1 (×2), u ≤ 2 (×2), s ≤ 8, den ≤ 17, m ≤ 2, one = 1:
    // R ≤ 4 + 2 + 2 + 8 + 64 + 289 + 4 + 1 = 374 (up to outward rounding of the ranges).
    let eps = cert.layers[3].relative_error.unwrap();
    let expect = 374.0 / (4.0 * P_SCALE * P_SCALE);
    assert!(
        eps >= expect && eps <= expect * (1.0 + 1e-9),
        "ε = {eps:e}, expected ≈ {expect:e}"
    );
    // End to end: o = q_0 − q_1 + …, |q_e| ≤ 2 so the error is at most about 2·2·ε.
    let e2e = cert.end_to_end.bound.0;
    assert!(
        e2e > 0.0 && e2e <= 4.0 * eps * (1.0 + 1e-6),
        "bound {e2e:e}"
    );
    assert!(cert.end_to_end.unbounded_from.is_none());
    let back = cert
        .end_to_end
        .backward
        .as_ref()
        .expect("one division: a backward error");
    assert_eq!((back.divisions, back.max_relative), (1, eps));
    // And through the files.
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), &f, &cert);
    let again = check_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, cert);
}

#[test]
fn a_malformed_program_is_rejected_before_any_weight_is_read() {
    let mut p = program();
    p.output = icl::ir::RegId(p.registers.len());
    let err = certify::certify_model(&p, &files()).unwrap_err();
    assert!(
        err.to_string().contains("the program is malformed")
            && err.to_string().contains("the output is register"),
        "{err}"
    );
}

#[test]
fn one_changed_weight_is_rejected() {
    // mul s <- u^T * u: the unit for u_0·u_0 gets gate weight 2.
    let msg = corrupted(|f| {
        let g = tensor_mut(f, |s| &gate(s, 1).weight);
        g.set2(0, U, 2.0);
    });
    assert_names(&msg, "layer 1 MLP", "mul s <- u^T * u, t.icl:13:1");
    assert!(msg.contains("coefficient of u[0]²"), "{msg}");
}

#[test]
fn a_tiny_change_is_rejected() {
    // One ulp in the aff's bias: exact comparison sees it.
    let msg = corrupted(|f| {
        let g = tensor_mut(f, |s| &gate(s, 2).bias);
        g.data[0] = 1.0f64.next_up();
    });
    assert_names(&msg, "layer 2 MLP", "aff den <- 2 * s + 1");
}

#[test]
fn swapped_rows_are_rejected() {
    // Swap the value rows of head 0 (x[0] and x[1]): xp[0] would read x[1].
    let msg = corrupted(|f| {
        let v = tensor_mut(f, |s| &attn(s, 0).v.weight);
        for c in 0..W {
            let (a, b) = (v.at2(0, c), v.at2(1, c));
            v.set2(0, c, b);
            v.set2(1, c, a);
        }
    });
    assert_names(
        &msg,
        "layer 0 attention",
        "mov xp <- x from prev, t.icl:10:1",
    );
}

#[test]
fn a_dropped_head_is_rejected() {
    // Zero head 1's output projection: m is no longer written.
    let msg = corrupted(|f| {
        let o = tensor_mut(f, |s| &attn(s, 0).o.weight);
        for r in 0..W {
            for j in 4..8 {
                o.set2(r, j, 0.0);
            }
        }
    });
    assert_names(&msg, "layer 0 attention", "mov m <- y from mean(y)");
    // Or zero its bias rows: it then attends every key s ≤ t and the null key uniformly.
    let msg = corrupted(|f| {
        let b = tensor_mut(f, |s| attn(s, 0).bias.as_ref().unwrap());
        for i in T * (T + 1)..2 * T * (T + 1) {
            b.data[i] = 0.0;
        }
    });
    assert_names(&msg, "layer 0 attention", "mov m <- y from mean(y)");
}

#[test]
fn an_altered_bias_pattern_is_rejected() {
    // Head 0 (prev) at query column 3 also attends key 0: a −∞ becomes 0.
    let msg = corrupted(|f| {
        let b = tensor_mut(f, |s| attn(s, 0).bias.as_ref().unwrap());
        assert_eq!(b.data[3 * (T + 1)], NEG);
        b.data[3 * (T + 1)] = 0.0;
    });
    assert_names(&msg, "layer 0 attention", "mov xp <- x from prev");
    assert!(msg.contains("query column 3"), "{msg}");
    // And a 0 becomes −∞ on the mean head (column 3 loses key 1).
    let msg = corrupted(|f| {
        let b = tensor_mut(f, |s| attn(s, 0).bias.as_ref().unwrap());
        let i = (T + 3) * (T + 1) + 1;
        assert_eq!(b.data[i], 0.0);
        b.data[i] = NEG;
    });
    assert_names(&msg, "layer 0 attention", "mov m <- y from mean(y)");
}

#[test]
fn a_mislabelled_row_is_rejected() {
    // layout.json moves u to rows 14, 15: the weights still write rows 5, 6.
    let msg = corrupted(|f| {
        let u = f
            .layout
            .registers
            .iter_mut()
            .find(|r| r.name == "u")
            .unwrap();
        u.rows = [Row(14), Row(16)];
    });
    assert_names(&msg, "layer 0 MLP", "mul u <- xp * y");
    // Two live registers on one row: s moved onto m's row (m is read in layer 4).
    let msg = corrupted(|f| {
        let s = f
            .layout
            .registers
            .iter_mut()
            .find(|r| r.name == "s")
            .unwrap();
        s.rows = [Row(M), Row(M + 1)];
    });
    assert!(msg.contains("layer 1 MLP"), "{msg}");
}

#[test]
fn a_write_to_an_unclaimed_row_is_rejected() {
    // The aff of layer 2 also writes 1 into an unused row.
    let msg = corrupted(|f| {
        let d = tensor_mut(f, |s| &mlp(s, 2).down.bias);
        d.data[20] = 1.0;
    });
    assert!(
        msg.contains("layer 2 MLP") && msg.contains("row 20"),
        "{msg}"
    );
    assert!(msg.contains("written by no operation"), "{msg}");
}

#[test]
fn a_broken_division_is_rejected() {
    // LayerNorm weight ≠ 1.
    let msg = corrupted(|f| {
        tensor_mut(f, |s| &s.layers[3].norm.as_ref().unwrap().weight).data[0] = 2.0;
    });
    assert_names(&msg, "layer 3 MLP", "div q <- u / |den|");
    // Payload rows not opposite: row 30 gets −P/2·den.
    let msg = corrupted(|f| {
        let o = tensor_mut(f, |s| &attn(s, 3).o.weight);
        o.set2(PAY[1], 0, -P_SCALE / 2.0);
    });
    assert_names(&msg, "layer 3 attention", "div q <- u / |den|");
    // Gain of the second element differs.
    let msg = corrupted(|f| {
        let g = tensor_mut(f, |s| &gate(s, 3).weight);
        g.set2(1, U + 1, GAIN * 2.0);
    });
    assert_names(&msg, "layer 3 MLP", "div q <- u / |den|");
}

#[test]
fn a_wrong_schedule_is_rejected() {
    // Swap the layers of `mul s` and `aff den`: den would read s before it is written.
    let msg = corrupted(|f| {
        let (a, b) = (
            f.layout.layers[1].mlp.clone(),
            f.layout.layers[2].mlp.clone(),
        );
        f.layout.layers[1].mlp = b;
        f.layout.layers[2].mlp = a;
    });
    assert!(
        msg.contains("layer 1 MLP") && msg.contains("aff den <- 2 * s + 1"),
        "{msg}"
    );
}

#[test]
fn an_embedding_or_readout_change_is_rejected() {
    let msg = corrupted(|f| {
        tensor_mut(f, |s| &s.pos).set2(2, ONE, 0.5);
    });
    assert!(
        msg.contains("embedding") && msg.contains("column 2"),
        "{msg}"
    );
    let msg = corrupted(|f| {
        tensor_mut(f, |s| &s.readout.weight).data[M] = 1.0;
    });
    assert!(msg.contains("readout"), "{msg}");
}

/// The checker on real compiler output: `icl check` accepts a fresh compile of ridge.icl and
/// rejects one changed weight, naming the layer, and one mislabelled register in layout.json.
#[test]
fn real_compiled_ridge_is_accepted_and_corruptions_are_rejected() {
    let (_dir, out, _) = common::compile_ridge(2, 3);
    icl::certify::run_check(&out).expect("the untouched compile is certified");

    // One weight of the first MLP that multiplies: change a gate entry by one.
    let st = out.join("model.safetensors");
    let (mut t, dtype) = icl::tensors::load(&st).unwrap();
    let cfg: ModelConfig =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    let (layer, name) = Weights::spec(&cfg)
        .layers
        .iter()
        .enumerate()
        .find_map(|(l, b)| Some((l, b.mlp.as_ref()?.gate.as_ref()?.weight.name.clone())))
        .unwrap();
    let w = t.get_mut(&name).unwrap();
    let i = w.data.iter().position(|v| *v != 0.0).unwrap();
    w.data[i] += 1.0;
    icl::tensors::save(&st, &t, dtype).unwrap();
    let err = icl::certify::run_check(&out).unwrap_err().to_string();
    assert!(err.contains(&format!("layer {layer}")), "{err}");

    // Restore the weights; then move a register in layout.json onto other rows.
    let (_dir2, out, _) = common::compile_ridge(2, 3);
    let lp = out.join("layout.json");
    let mut layout: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&lp).unwrap()).unwrap();
    let regs = layout["registers"].as_array_mut().unwrap();
    let a = regs.iter().position(|r| r["name"] == "A").unwrap();
    let rows = regs[a]["rows"].clone();
    let (s, e) = (rows[0].as_u64().unwrap(), rows[1].as_u64().unwrap());
    regs[a]["rows"] = serde_json::json!([s + 1, e + 1]);
    std::fs::write(&lp, serde_json::to_string_pretty(&layout).unwrap()).unwrap();
    assert!(icl::certify::run_check(&out).is_err());
}

/// Where the forward propagation diverges (ridge.icl's Sherman–Morrison chain at n = 6), the
/// certificate says from which layer, and still gives the backward error: one entry per
/// division, each below f64's epsilon. A certificate.json that claims a smaller backward error
/// than the check proves is rejected.
#[test]
fn a_diverging_forward_bound_names_its_layer_and_keeps_the_backward_error() {
    let (_dir, out, outcome) = common::compile_ridge(2, 6);
    let cert = icl::certify::run_check(&out).expect("the untouched compile is certified");
    let e2e = &cert.end_to_end;
    assert!(e2e.bound.0.is_infinite(), "bound {:e}", e2e.bound.0);
    let from = e2e
        .unbounded_from
        .as_deref()
        .expect("the diverging layer is named");
    assert!(
        from.starts_with("layer ") && from.contains("div q <- O / |den|"),
        "{from}"
    );
    let back = e2e.backward.as_ref().expect("a backward error");
    assert_eq!(back.divisions, 6, "one division per example");
    assert!(
        back.max_relative > 0.0 && back.max_relative < f64::EPSILON,
        "{}",
        back.max_relative
    );
    let summary = outcome.certificate.end_to_end.summary();
    assert!(summary.contains("no finite end-to-end bound"), "{summary}");
    assert!(summary.contains("backward error"), "{summary}");

    let cp = out.join("certificate.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cp).unwrap()).unwrap();
    c["end_to_end"]["backward"]["max_relative"] = serde_json::json!(back.max_relative / 2.0);
    std::fs::write(&cp, serde_json::to_string_pretty(&c).unwrap()).unwrap();
    let err = icl::certify::run_check(&out).unwrap_err().to_string();
    assert!(err.contains("backward error"), "{err}");
}
