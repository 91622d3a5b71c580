//! Training steps/s on the CPU: configs/tiny.toml, and a paper-shaped small model
//! (d = 8, n = 40, 4 layers, width 128, 4 heads, batch 64). Run: `cargo bench --bench train`.
//! Criterion reports time per step; steps/s = 1 / that.

use candle_core::Device;

/// The allocator the `icl` binary uses (src/bin/icl.rs): training frees and reallocates large
/// buffers every step, which glibc's malloc hands back to the OS and faults in again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use criterion::{criterion_group, criterion_main, Criterion};
use icl::train::{self, StepOutcome};

fn bench_config(c: &mut Criterion, name: &str, cfg: train::TrainConfig) {
    let (model, mut opt) = train::fresh(&cfg, &Device::Cpu).expect("model");
    let mut step = 0usize;
    let mut g = c.benchmark_group("train_step");
    g.sample_size(20);
    g.bench_function(name, |b| {
        b.iter(|| {
            match train::train_step(&cfg, &model, &mut opt, step % cfg.train.steps).expect("step") {
                StepOutcome::Done { loss, .. } => std::hint::black_box(loss),
                StepOutcome::NonFinite(l) => panic!("non-finite loss {l}"),
            };
            step += 1;
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let root = env!("CARGO_MANIFEST_DIR");
    let tiny = train::load_config(
        std::path::Path::new(&format!("{root}/configs/tiny.toml")),
        &[],
    )
    .expect("tiny.toml");
    bench_config(c, "tiny.toml", tiny);
    let sets: Vec<String> = ["model.layers=4", "model.width=128", "model.mlp_hidden=512"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let paper_small = train::load_config(
        std::path::Path::new(&format!("{root}/configs/paper.toml")),
        &sets,
    )
    .expect("paper.toml");
    bench_config(c, "paper_small(d8,n40,L4,W128,H4,B64)", paper_small);
}

criterion_group!(train_benches, benches);
criterion_main!(train_benches);
