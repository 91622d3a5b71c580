//! Training steps/s on the CPU: configs/tiny.toml, and a paper-shaped small model
//! (d = 8, n = 40, 4 layers, width 128, 4 heads, batch 64), on each engine: `fused` (the
//! default, src/train/fused/) and `candle` (Candle's autograd, the reference). Run:
//! `cargo bench --bench train`. Criterion reports time per step; steps/s = 1 / that.
//! benches/peers/run.sh runs this beside the JAX peer.

use candle_core::Device;

/// The allocator the `icl` binary uses (src/bin/icl.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use criterion::{criterion_group, criterion_main, Criterion};
use icl::train::{self, Engine, StepOutcome};

/// Steps of `cfg` on `engine`, each run in `pool` (the threads `icl train` would use).
fn bench_config(
    c: &mut Criterion,
    name: &str,
    cfg: &train::TrainConfig,
    engine: Engine,
    pool: &rayon::ThreadPool,
) {
    let (model, mut opt) = train::fresh(cfg, &Device::Cpu).expect("model");
    let mut step = 0usize;
    let label = match engine {
        Engine::Candle => "candle",
        _ => "fused",
    };
    let mut g = c.benchmark_group(format!("train_step_{label}"));
    g.sample_size(20);
    g.bench_function(name, |b| {
        b.iter(|| {
            let s = step % cfg.train.steps;
            let outcome = pool.install(|| train::train_step_on(cfg, &model, &mut opt, s, engine));
            match outcome.expect("step") {
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
    let sets: Vec<String> = ["model.layers=4", "model.width=128", "model.mlp_hidden=512"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let paper_small = train::load_config(
        std::path::Path::new(&format!("{root}/configs/paper.toml")),
        &sets,
    )
    .expect("paper.toml");
    for engine in [Engine::Fused, Engine::Candle] {
        // The threads `icl train` would use (src/train.rs, cpu_threads).
        for (name, cfg) in [("tiny", &tiny), ("paper_small", &paper_small)] {
            // The threads `icl train` would use (src/train.rs, cpu_threads): the step runs in a
            // pool of that size, and Candle's kernels read the count from RAYON_NUM_THREADS.
            let threads = train::cpu_threads(cfg, engine);
            match threads {
                Some(n) => std::env::set_var("RAYON_NUM_THREADS", n.to_string()),
                None => std::env::remove_var("RAYON_NUM_THREADS"),
            }
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads.unwrap_or(0))
                .build()
                .expect("thread pool");
            bench_config(c, name, cfg, engine, &pool);
        }
    }
}

criterion_group!(train_benches, benches);
criterion_main!(train_benches);
