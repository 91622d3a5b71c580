//! `icl finetune-vs-icl` (docs/ANALYSIS.md, "ICL vs finetuning"): the explicit updates do what
//! their names say, the metrics are the definitions, bad input is refused, output is
//! deterministic.

mod common;

use candle_core::Device;
use icl::analysis::dai::finetune::engine::{token_row, Engine, TokenView, Variant};
use icl::analysis::dai::finetune::observe::{finetune, layer_metrics, FtRun, Task};
use icl::analysis::dai::finetune::{self, report, FinetuneError, FinetuneOptions};
use icl::analysis::prompt_set::PromptSet;
use icl::model::config::DType;
use icl::model::Transformer;
use icl::train;

/// An untrained f64 model of `layers` layers (d = 2, n = 4, width 8, 2 heads).
fn small_model(layers: usize, seed: u64) -> Transformer {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/tiny.toml")).unwrap();
    let sets: Vec<String> = [
        format!("model.layers={layers}"),
        "model.width=8".into(),
        "model.heads=2".into(),
        "model.mlp_hidden=16".into(),
        "task.d=2".into(),
        "task.n=4".into(),
    ]
    .into();
    let cfg = train::parse_config(&text, "tiny.toml", &sets).unwrap();
    let mut mc = cfg.model_config();
    mc.dtype = DType::F64;
    let named = train::init_params(&mc, seed);
    Transformer::from_named(mc, &named, &Device::Cpu, DType::F64, false).unwrap()
}

fn prompts(count: usize, seed: u64) -> PromptSet {
    let dist = icl::prompt::PromptDistribution::parse_spec("d=2,n=4").unwrap();
    PromptSet::sample(&dist, count, seed).unwrap()
}

/// A task from a prompt: one prefix example (of another prompt), three demonstrations.
fn with_task<R>(f: impl FnOnce(&Task) -> R) -> R {
    let set = prompts(2, 3);
    let (p, q) = (&set.prompts[0], &set.prompts[1]);
    let prefix = [(q.xs[0].as_slice(), q.ys[0])];
    let task = Task {
        prefix: &prefix,
        demos: (0..3).map(|i| (p.xs[i].as_slice(), p.ys[i])).collect(),
        query: &p.xs[4],
        target: p.ys[4],
    };
    f(&task)
}

fn zsl_pred(engine: &Engine, task: &Task) -> f64 {
    engine
        .views(&[task.bare_row()], task.bare_column())
        .unwrap()[0]
        .pred
}

#[test]
fn one_step_gd_equals_sgd_after_one_demonstration_and_rate_zero_changes_nothing() {
    let engine = Engine::new(&small_model(2, 1)).unwrap();
    with_task(|task| {
        let ft = finetune(&engine, task, Variant::Ft, 0.05).unwrap();
        let gd = finetune(&engine, task, Variant::Gd1, 0.05).unwrap();
        assert_eq!(ft.views[0].pred, gd.views[0].pred);
        assert_ne!(
            ft.views[2].pred, gd.views[2].pred,
            "SGD and one-step GD differ later"
        );
        let zsl = zsl_pred(&engine, task);
        assert_ne!(ft.views[0].pred, zsl, "an update moves the prediction");
        for v in Variant::ALL {
            let still = finetune(&engine, task, v, 0.0).unwrap();
            assert!(still.views.iter().all(|w| w.pred == zsl), "{v:?}");
        }
        // The engine is back at its initial parameters after every run.
        assert_eq!(zsl_pred(&engine, task), zsl);
    });
}

/// The loss after one small step falls by lr·‖g‖² to first order (g: the gradient the update
/// used), and only K and V (weights and biases) move.
#[test]
fn an_update_follows_the_gradient_of_the_demonstration_loss_on_k_and_v_only() {
    let model = small_model(2, 2);
    let engine = Engine::new(&model).unwrap();
    with_task(|task| {
        let demo = task.demos[0];
        let row = token_row(&[task.prefix, &[demo]].concat(), None, None);
        let t = 2 * task.prefix.len();
        let loss =
            |e: &Engine| (e.views(std::slice::from_ref(&row), t).unwrap()[0].pred - demo.1).powi(2);
        let before = engine.model.to_named().unwrap();
        let l0 = loss(&engine);
        let (grads, _) = engine
            .demo_gradient(Variant::Ft, task.prefix, demo)
            .unwrap();
        let g2: f64 = engine
            .trained_grads(Variant::Ft, &grads)
            .into_iter()
            .flatten()
            .map(|g| {
                g.sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            })
            .sum();
        assert!(g2 > 0.0);
        let lr = 1e-6;
        engine.apply(Variant::Ft, &grads, lr).unwrap();
        let l1 = loss(&engine);
        let ratio = (l0 - l1) / (lr * g2);
        assert!((ratio - 1.0).abs() < 1e-3, "decrease / (lr·|g|²) = {ratio}");
        let after = engine.model.to_named().unwrap();
        for (name, t) in &before {
            let change = after[name]
                .data
                .iter()
                .zip(&t.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            let kv = name.contains(".attn.k.") || name.contains(".attn.v.");
            if !kv {
                assert_eq!(change, 0.0, "{name} moved");
            } else if name.ends_with("k.bias") {
                // A K bias shifts all of a query's scores equally: its gradient is 0 up to
                // rounding.
                assert!(change < 1e-18, "{name} moved by {change}");
            } else if name.ends_with(".weight") {
                assert!(change > 0.0, "{name} did not move");
            }
        }
        engine.reset().unwrap();
    });
}

/// Layer-causal updates: a layer's gradient does not depend on the layers after it, and on a
/// one-layer model the layer-causal update is plain finetuning.
#[test]
fn layer_causal_gradients_ignore_later_layers() {
    let a = small_model(2, 3);
    // The same model with layer 1 re-drawn.
    let other = small_model(2, 99).to_named().unwrap();
    let mut named = a.to_named().unwrap();
    for (name, t) in other.iter().filter(|(n, _)| n.starts_with("layers.1.")) {
        named.insert(name.clone(), t.clone());
    }
    let b =
        Transformer::from_named(a.config.clone(), &named, &Device::Cpu, DType::F64, false).unwrap();
    let layer0_kv = |m: &Transformer, v: Variant| -> Vec<f64> {
        let e = Engine::new(m).unwrap();
        with_task(|task| {
            let (g, _) = e.demo_gradient(v, task.prefix, task.demos[1]).unwrap();
            let store = e.trained_grads(v, &g);
            let names: Vec<String> = m.params().keys().cloned().collect();
            names
                .iter()
                .zip(store)
                .filter(|(n, _)| n.starts_with("layers.0.attn.v.weight"))
                .flat_map(|(_, g)| g.unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap())
                .collect()
        })
    };
    assert_eq!(
        layer0_kv(&a, Variant::Causal),
        layer0_kv(&b, Variant::Causal)
    );
    assert_ne!(layer0_kv(&a, Variant::Ft), layer0_kv(&b, Variant::Ft));
    let one = Engine::new(&small_model(1, 4)).unwrap();
    with_task(|task| {
        let ft = finetune(&one, task, Variant::Ft, 0.1).unwrap();
        let causal = finetune(&one, task, Variant::Causal, 0.1).unwrap();
        for (x, y) in ft.views.iter().zip(&causal.views) {
            assert!((x.pred - y.pred).abs() < 1e-14, "{} vs {}", x.pred, y.pred);
        }
    });
}

fn view(h: Vec<f64>, scores: Vec<f64>, q: Vec<f64>) -> TokenView {
    TokenView {
        pred: 0.0,
        h: vec![h],
        scores: vec![vec![scores]],
        q: vec![q],
    }
}

/// The metrics on hand-made views where every answer is known.
#[test]
fn metrics_are_their_definitions() {
    with_task(|task| {
        let task = Task {
            demos: task.demos[..2].to_vec(),
            ..task.clone()
        };
        // One layer, one head; prefix = positions 0, 1; demos 2…5; the ICL query 6.
        let zsl = view(vec![1.0, 0.0], vec![0.5, -0.5, 1.0], vec![1.0]);
        let icl = view(
            vec![0.0, 1.0],
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
            vec![1.0],
        );
        let ft_view = view(vec![0.0, 2.0], vec![1.5, 3.5, 13.0], vec![1.0]);
        let ft = FtRun {
            views: vec![ft_view.clone(), ft_view],
            train_queries: vec![vec![[vec![1.0], vec![2.0]]], vec![[vec![3.0], vec![4.0]]]],
        };
        let mut rng = icl::analysis::dai::finetune::observe::baseline_rng(0, 0);
        let m = layer_metrics(&task, 2, &zsl, &icl, &ft, &mut rng)[0];
        assert!((m.simaou - 1.0).abs() < 1e-15, "{m:?}");
        // h_ICL − h_ZSL = (−1, 1), h_FT − h_ZSL = (−1, 2): cos = 3/√10.
        assert!((m.simaou_raw - 3.0 / 10f64.sqrt()).abs() < 1e-15);
        // A_ICL (prefix + query) = (1, 2, 7), A_FT = (1.5, 3.5, 13), A_ZSL = (0.5, −0.5, 1).
        let cos = |a: [f64; 3], b: [f64; 3]| {
            let d: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            d / (a.iter().map(|x| x * x).sum::<f64>() * b.iter().map(|x| x * x).sum::<f64>()).sqrt()
        };
        assert!((m.simam - cos([1.0, 2.0, 7.0], [1.5, 3.5, 13.0])).abs() < 1e-15);
        assert!((m.simam_zsl - cos([1.0, 2.0, 7.0], [0.5, -0.5, 1.0])).abs() < 1e-15);
        let delta = cos([0.5, 2.5, 6.0], [1.0, 4.0, 12.0]);
        assert!(
            (m.delta_simam - delta).abs() < 1e-15,
            "{} vs {delta}",
            m.delta_simam
        );
        // ICL's demo map grows along the tokens, and so does FT's (q·q_train = 1, 2, 3, 4).
        assert_eq!((m.kendall_token, m.kendall_example), (1.0, 1.0));
        assert!(m.simaou_random.abs() < 1.0 && m.kendall_random.abs() <= 1.0);
    });
}

fn options(grid: Vec<f64>, controls: bool) -> FinetuneOptions {
    FinetuneOptions {
        prefix: 1,
        prefix_seed: 5,
        lr_grid: grid,
        lr_prompts: 3,
        lr_seed: 6,
        delta: 0.5,
        controls,
        control_seed: 7,
        progress: false,
    }
}

#[test]
fn bad_input_is_refused_with_the_reason() {
    let model = small_model(1, 5);
    let check = |o: FinetuneOptions| finetune::check_options(&o, model.config.n).unwrap_err();
    assert!(matches!(
        check(options(vec![], false)),
        FinetuneError::EmptyGrid
    ));
    assert!(
        matches!(check(options(vec![0.1, -1.0], false)), FinetuneError::BadRate(r) if r == -1.0)
    );
    assert!(matches!(
        check(options(vec![f64::NAN], false)),
        FinetuneError::BadRate(_)
    ));
    let mut o = options(vec![0.1], false);
    o.prefix = 4;
    assert!(matches!(
        check(o.clone()),
        FinetuneError::Prefix { prefix: 4, n: 4 }
    ));
    o.prefix = 1;
    o.delta = 1.0;
    assert!(check(o).to_string().contains("--delta"));
    // A compiled model has fixed attention patterns, no K to finetune.
    let dir = tempfile::tempdir().unwrap();
    let (path, _) =
        common::compile_program("programs/gd.icl", &[("d", "2"), ("n", "4")], dir.path());
    let compiled = Transformer::load(&path, &Device::Cpu, None).unwrap();
    let e = finetune::check_model(&compiled, "gd").unwrap_err();
    assert!(
        e.to_string().contains("layer 0") && e.to_string().contains("Q/K"),
        "{e}"
    );
    // The command says so and exits 1.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_icl"))
        .args(["finetune-vs-icl", path.to_str().unwrap(), "--count", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Q/K"));
}

#[test]
fn the_whole_comparison_with_controls_is_deterministic() {
    let model = small_model(2, 6);
    let set = prompts(4, 8);
    let opts = options(vec![1e-2, 1e-1], true);
    let run = || {
        let r = finetune::run(&model, "small", &set, "test prompts", &opts).unwrap();
        serde_json::to_string(&report::summarise(&r)).unwrap()
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    let r = finetune::run(&model, "small", &set, "test prompts", &opts).unwrap();
    let names: Vec<&str> = r.cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["trained", "untrained", "shuffled-y", "other-task"]);
    for c in &r.cases {
        assert_eq!(c.rates.len(), 4);
        for rate in &c.rates {
            assert!(opts.lr_grid.contains(&rate.chosen));
            let best = rate.curve.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
            assert_eq!(
                rate.curve.iter().find(|x| x.0 == rate.chosen).unwrap().1,
                best
            );
        }
        let o = &c.observations;
        assert_eq!(o.e_icl.len(), r.setup.k_max);
        assert_eq!(o.e_ft[0][0].len(), 4);
    }
    // Label controls use the model's rates; the untrained model chooses its own.
    assert_eq!(r.cases[2].rates[0].curve, r.cases[0].rates[0].curve);
    // ZSL does not see the demonstrations, so the label controls leave it unchanged, and the
    // shuffled labels change ICL.
    assert_eq!(r.cases[2].observations.e_zsl, r.cases[0].observations.e_zsl);
    assert_ne!(r.cases[2].observations.e_icl, r.cases[0].observations.e_icl);
    let s = report::summarise(&r);
    let text = report::text(&s);
    assert!(text.contains("== case other-task ==") && text.contains("Rec2FTP"));
    for c in &s.cases {
        for v in &c.variants {
            for rec in &v.recall {
                assert!(rec.base_rate >= 0.0 && rec.base_rate <= 1.0);
                assert!(rec.rec2ftp.is_nan() || (0.0..=1.0).contains(&rec.rec2ftp));
            }
        }
    }
}
