use icl::lower::paper::{compile, PaperOptions};
use icl::model::config::DType;
use icl::pipeline;

#[test]
fn quick() {
    let only = std::env::var("PROG").ok();
    for prog in ["gd", "ridge", "sgd", "ridge_elim"] {
        if only.as_deref().is_some_and(|o| o != prog) {
            continue;
        }
        let p = pipeline::load(
            std::path::Path::new(&format!("programs/{prog}.icl")),
            &[("n".into(), "4".into())],
        )
        .unwrap();
        for dt in [DType::F64, DType::F32] {
            let c = match compile(&p, &PaperOptions { dtype: dt }) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{prog} {dt:?}: {e}");
                    continue;
                }
            };
            let prompts = pipeline::validation_prompts(&p, 64, 0);
            let interp = icl::interp::run_batch_f64(&p, &prompts).unwrap();
            let model = pipeline::build_model(&c, "cpu").unwrap();
            let pred = model.predict_prompts(&prompts).unwrap();
            let (abs, rel) = pipeline::max_errors(&pred, &interp);
            match pipeline::certify_compiled(&p, &c) {
                Ok(cert) => eprintln!("  certified bound {:.3e}", cert.end_to_end.bound.0),
                Err(e) => eprintln!("  certify: {e:#}"),
            }
            eprintln!("{prog} {:?}: layers {} width {} heads {} hidden {} abs {abs:.3e} rel {rel:.3e} n_ln {} ", dt, c.config.layers.len(), c.config.width, c.config.layers[0].attn.unwrap().heads, c.config.layers[0].mlp.unwrap().hidden, c.layout.paper.as_ref().unwrap().bypass_scale);
            if std::env::var("TRACE").is_ok() {
                let toks =
                    icl::model::prompts_to_tensor(&prompts[..1], p.d, &candle_core::Device::Cpu)
                        .unwrap()
                        .to_dtype(icl::model::candle_dtype(dt))
                        .unwrap();
                let (_, hs) = model.forward_with_hidden(&toks, true).unwrap();
                for (l, h) in hs.iter().enumerate() {
                    let v: Vec<Vec<Vec<f64>>> = h
                        .to_dtype(candle_core::DType::F64)
                        .unwrap()
                        .to_vec3()
                        .unwrap();
                    let bad: Vec<(usize, usize)> = v[0]
                        .iter()
                        .enumerate()
                        .flat_map(|(t, row)| {
                            row.iter()
                                .enumerate()
                                .filter(|(_, x)| !x.is_finite())
                                .map(move |(r, _)| (t, r))
                        })
                        .take(5)
                        .collect();
                    let mx = v[0]
                        .iter()
                        .flat_map(|r| r.iter())
                        .fold(0f64, |a, b| a.max(b.abs()));
                    eprintln!("  h{l}: max {mx:.3e} bad {bad:?}");
                }
            }
        }
    }
}
#[test]
fn scales() {
    let p = pipeline::load(
        std::path::Path::new("programs/sgd.icl"),
        &[("n".into(), "4".into())],
    )
    .unwrap();
    let c = compile(&p, &PaperOptions { dtype: DType::F64 }).unwrap();
    for ps in &c.layout.paper.as_ref().unwrap().products {
        eprintln!(
            "{:?} {} {:?}",
            ps.layer,
            p.ops[ps.op.index()].text,
            ps.scales
        );
    }
    eprintln!("{:?}", c.layout.layers[2]);
}
