//! Compiled-model forward: the dense Candle forward against the sparse executor
//! (`icl::model::sparse`), prompts/s on 64 prompts, for ridge.icl (f64 and f32) and
//! ridge_elim.icl (f64) at d = 8, n = 40. Run: `cargo bench --bench executor`. The floor is the executor's non-zero count
//! (printed once): one multiply-add per non-zero per column.

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use icl::model::config::DType;
use icl::model::sparse::AnySparse;
use icl::model::Transformer;
use icl::prompt::PromptDistribution;
use std::path::Path;

fn compile(program: &str, dtype: DType, dir: &Path) -> std::path::PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(program);
    let sets = [("d", "8"), ("n", "40")].map(|(k, v)| (k.to_string(), v.to_string()));
    let out = dir.join(format!(
        "{}-{}",
        program.replace(['/', '.'], "_"),
        dtype.name()
    ));
    let opts = icl::pipeline::Options {
        prompts: 0,
        dtype,
        ..Default::default()
    };
    icl::pipeline::run(&path, &sets, &out, &opts).expect("compile");
    out
}

fn benches(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    // ridge_elim has no f32 model (its LayerNorm payload exceeds f32).
    for (program, dtype) in [
        ("programs/ridge.icl", DType::F64),
        ("programs/ridge.icl", DType::F32),
        ("programs/ridge_elim.icl", DType::F64),
    ] {
        let dir = compile(program, dtype, tmp.path());
        let dense = Transformer::load(&dir, &Device::Cpu, None).expect("load");
        let (named, _) = icl::tensors::load(&dir.join("model.safetensors")).expect("tensors");
        let cfg = &dense.config;
        let sparse = AnySparse::new(cfg, &named, 2 * cfg.n + 1).expect("sparse");
        let prompts = PromptDistribution::new(cfg.d, cfg.n).sample_batch(64, 1);
        // The two forwards on the benchmark's prompts: the largest difference, relative to
        // max(|y|, 1) (tests/sparse.rs holds it to 1e-15 on small models; 0 on an FMA CPU).
        let want = dense.predict_prompts(&prompts).expect("dense");
        let worst = prompts
            .iter()
            .zip(&want)
            .flat_map(|(p, w)| sparse.predict(p).into_iter().zip(w.clone()))
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0.0f64, f64::max);
        let nnz = sparse.nonzeros();
        eprintln!(
            "{program} {}: {} layers, width {}, {nnz} non-zeros in the sparse executor \
             ({:.2} M multiply-adds per prompt); sparse vs dense: {worst:e}",
            dtype.name(),
            cfg.layers.len(),
            cfg.width,
            (nnz * (2 * cfg.n + 1)) as f64 / 1e6,
        );
        let mut g = c.benchmark_group(format!("forward_64_prompts/{program}/{}", dtype.name()));
        g.sample_size(10);
        g.throughput(Throughput::Elements(prompts.len() as u64));
        g.bench_function("dense", |b| {
            b.iter(|| dense.predict_prompts(&prompts).expect("dense"))
        });
        g.bench_function("sparse", |b| {
            b.iter(|| {
                prompts
                    .iter()
                    .map(|p| sparse.predict(p))
                    .collect::<Vec<_>>()
            })
        });
        g.finish();
    }
}

criterion_group!(executor_benches, benches);
criterion_main!(executor_benches);
