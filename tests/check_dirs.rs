//! Every program in `programs/`, compiled at the sizes README.md and docs/ mention, through the
//! same pipeline as `icl-compile`, is accepted by `icl check` (`certify::run_check`), and its
//! certificate.json reads back as the typed certificate — validation section included, also where
//! the f32 model is unavailable (ridge_elim, whose LayerNorm payload exceeds f32's range).

use icl::certify::{Certificate, Measurement};
use std::path::Path;

/// Validation prompts where a case validates: few, to keep the debug test build quick.
const PROMPTS: usize = 2;

/// Compile `program` (relative to the repository) with `sets` and `prompts` validation prompts
/// into a temporary folder, run the `icl check` code path on it, and return the certificate as
/// written.
fn compile_and_check(program: &str, sets: &[(&str, &str)], prompts: usize) -> Certificate {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(program);
    let sets: Vec<(String, String)> = sets
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    let opts = icl::pipeline::Options {
        prompts,
        ..Default::default()
    };
    icl::pipeline::run(&path, &sets, &out, &opts)
        .unwrap_or_else(|e| panic!("icl-compile {program} {sets:?}: {e:#}"));
    icl::certify::run_check(&out)
        .unwrap_or_else(|e| panic!("icl check of {program} {sets:?}: {e:#}"));
    let text = std::fs::read_to_string(out.join("certificate.json")).unwrap();
    let cert: Certificate = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{program} {sets:?}: certificate.json: {e}"));
    assert_eq!(
        cert.validation.is_some(),
        prompts > 0,
        "{program} {sets:?}: a validation section exactly when validated"
    );
    cert
}

/// A validated case whose f32 model compiles: both dtypes measured.
fn assert_both_measured(cert: &Certificate) {
    let v = cert.validation.as_ref().expect("validated");
    assert_eq!(v.prompts, PROMPTS);
    assert!(
        matches!(v.f32, Measurement::Measured(_)),
        "f32 unavailable: {:?}",
        v.f32
    );
}

#[test]
fn gd_default() {
    assert_both_measured(&compile_and_check("programs/gd.icl", &[], PROMPTS));
}

#[test]
fn sgd_default() {
    assert_both_measured(&compile_and_check("programs/sgd.icl", &[], PROMPTS));
}

#[test]
fn ridge_default() {
    assert_both_measured(&compile_and_check("programs/ridge.icl", &[], PROMPTS));
}

/// README.md: `icl-compile programs/ridge.icl --set d=8 --set n=40`.
#[test]
fn ridge_d8_n40() {
    compile_and_check("programs/ridge.icl", &[("d", "8"), ("n", "40")], 0);
}

/// A validated case whose f32 model cannot be compiled (its LayerNorm payload exceeds f32): the
/// validation section records it as unavailable, with the lowering's reason.
fn assert_f32_unavailable(cert: &Certificate) {
    let v = cert.validation.as_ref().expect("validated");
    match &v.f32 {
        Measurement::Unavailable(why) => assert!(
            why.contains("cannot choose the LayerNorm division constant"),
            "reason: {why}"
        ),
        Measurement::Measured(m) => panic!("expected f32 to be unavailable, measured {m:?}"),
    }
}

#[test]
fn ridge_elim_default_with_f32_unavailable() {
    assert_f32_unavailable(&compile_and_check("programs/ridge_elim.icl", &[], PROMPTS));
}

/// The case of issue 8 (`icl check` rejected what `icl-compile` wrote, "unknown field
/// `unavailable`").
#[test]
fn ridge_elim_d8_n10_with_f32_unavailable() {
    assert_f32_unavailable(&compile_and_check(
        "programs/ridge_elim.icl",
        &[("d", "8"), ("n", "10")],
        PROMPTS,
    ));
}

/// README.md: ridge_elim solves the same ridge problem as ridge.icl at d=8, n=40.
#[test]
fn ridge_elim_d8_n40() {
    compile_and_check("programs/ridge_elim.icl", &[("d", "8"), ("n", "40")], 0);
}

#[test]
fn paper_appendix_a_default() {
    assert_both_measured(&compile_and_check(
        "programs/paper/appendix_a.icl",
        &[],
        PROMPTS,
    ));
}

#[test]
fn paper_appendix_b_default() {
    assert_both_measured(&compile_and_check(
        "programs/paper/appendix_b.icl",
        &[],
        PROMPTS,
    ));
}
