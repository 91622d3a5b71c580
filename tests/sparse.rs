//! The sparse executor for compiled models (`icl::model::sparse`) gives the dense forward's
//! predictions on every program: within 1e-13 (relative to max(|y|, 1)) of the dense forward —
//! the two sum in different orders, and ridge's divisions amplify the last bits — and never
//! farther from the interpreter than the dense forward is (within a factor 4 of its rounding).

use candle_core::Device;
use icl::model::sparse::SparseModel;
use icl::model::Transformer;
use icl::prompt::PromptDistribution;
use std::path::Path;

mod common;

/// The worst difference of the sparse executor to the dense forward; asserts that the
/// sparse executor is no farther from the interpreter (the program's meaning) than the dense
/// forward is, up to the same rounding level.
fn check(program: &str, sets: &[(&str, &str)]) -> f64 {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(program);
    let sets: Vec<(String, String)> = sets
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m");
    let opts = icl::pipeline::Options {
        prompts: 0,
        ..Default::default()
    };
    icl::pipeline::run(&path, &sets, &out, &opts).unwrap();
    let dense = Transformer::load(&out, &Device::Cpu, None).unwrap();
    let (named, _) = icl::tensors::load(&out.join("model.safetensors")).unwrap();
    let c = &dense.config;
    let sparse = SparseModel::new(c, &named, 2 * c.n + 1).expect("an exact-target f64 model");
    let prompts = PromptDistribution::new(c.d, c.n).sample_batch(16, 5);
    let want = dense.predict_prompts(&prompts).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(program);
    let sets: Vec<(String, String)> = sets
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let prog = icl::pipeline::load(&path, &sets).unwrap();
    let interp = icl::interp::run_batch_f64(&prog, &prompts).unwrap();
    let rel = |a: &[Vec<f64>], b: &[Vec<f64>]| {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
            .fold(0.0f64, f64::max)
    };
    let got_all: Vec<Vec<f64>> = prompts.iter().map(|p| sparse.predict(p)).collect();
    let (e_sparse, e_dense) = (rel(&got_all, &interp), rel(&want, &interp));
    eprintln!("{program} {sets:?}: vs interpreter: sparse {e_sparse:e}, dense {e_dense:e}");
    assert!(
        e_sparse <= 4.0 * e_dense.max(f64::EPSILON),
        "{e_sparse:e} vs {e_dense:e}"
    );
    let worst = rel(&got_all, &want);
    eprintln!("{program} {sets:?}: worst relative difference {worst:e}");
    worst
}

#[test]
fn gd() {
    assert!(check("programs/gd.icl", &[]) <= 1e-13);
}

#[test]
fn sgd() {
    assert!(check("programs/sgd.icl", &[]) <= 1e-13);
}

#[test]
fn ridge() {
    assert!(check("programs/ridge.icl", &[]) <= 1e-13);
}

#[test]
fn ridge_elim() {
    assert!(check("programs/ridge_elim.icl", &[("n", "6")]) <= 1e-13);
}
