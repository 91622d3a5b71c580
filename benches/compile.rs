//! `cargo bench --bench compile`: compile + certify time of ridge.icl at d=8, n=40; forward
//! throughput (prompts/s, batch 64, CPU, f32 and f64) of the compiled ridge and ridge_elim models
//! next to the ridge solver (faer's Cholesky, `icl::solvers::ridge_weights`) on the same prompts.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use icl::model::config::DType;
use std::path::Path;

fn sets() -> Vec<(String, String)> {
    vec![("d".into(), "8".into()), ("n".into(), "40".into())]
}

fn compile_and_certify(c: &mut Criterion) {
    let path = Path::new("programs/ridge.icl");
    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    g.bench_function("ridge d=8 n=40: load + lower + certify (f64)", |b| {
        b.iter(|| {
            let p = icl::pipeline::load(path, &sets()).expect("loads");
            let compiled = icl::pipeline::lower(&p, DType::F64).expect("lowers");
            icl::pipeline::certify_compiled(&p, &compiled).expect("certifies")
        })
    });
    g.finish();
}

fn forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("forward");
    g.sample_size(10);
    let batch = 64;
    g.throughput(Throughput::Elements(batch as u64));
    let mut first = None;
    for prog in ["programs/ridge.icl", "programs/ridge_elim.icl"] {
        let path = Path::new(prog);
        if !path.exists() {
            eprintln!("{prog}: missing, skipped");
            continue;
        }
        let p = icl::pipeline::load(path, &sets()).expect("loads");
        let prompts = icl::pipeline::validation_prompts(&p, batch, 1);
        for dt in [DType::F64, DType::F32] {
            // A program whose sound ranges need a LayerNorm payload beyond f32 (ridge_elim at
            // d=8) has no f32 model: say so and go on.
            let compiled = match icl::pipeline::lower(&p, dt) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{prog} {}: no model ({e:#}), skipped", dt.name());
                    continue;
                }
            };
            let model = icl::pipeline::build_model(&compiled, "cpu").expect("model");
            let name = format!(
                "{} {} (prompts/s, batch {batch})",
                path.file_stem().unwrap().to_string_lossy(),
                dt.name()
            );
            g.bench_function(name, |b| {
                b.iter(|| model.predict_prompts(&prompts).expect("runs"))
            });
        }
        first.get_or_insert((p, prompts));
    }
    if let Some((p, prompts)) = first {
        let solver = icl::pipeline::solver_for(&p)
            .unwrap()
            .expect("ridge solver");
        g.bench_function(
            format!(
                "{} solver, faer Cholesky (prompts/s, batch {batch})",
                solver.name()
            ),
            |b| b.iter(|| icl::solvers::predict_batch(&solver, &prompts)),
        );
    }
    g.finish();
}

criterion_group!(benches, compile_and_certify, forward);
criterion_main!(benches);
