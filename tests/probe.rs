//! `icl probe` against ground truth: on `programs/ridge.icl` compiled at d = 2, n = 3, the layout
//! says in which layer each example's x·y enters the moment vector b = XᵀY. The layers the
//! layout names are first confirmed on the model's own hidden states (register b holds XᵀY at
//! the probed columns from there on); then a linear probe must decode XᵀY there (normalised
//! held-out error < 1e-3) and must not decode it up to the input of the layer that forms x_k·y_k
//! (> 0.05). Also: the CLI's errors on bad input.

use icl::analysis::probe::{
    self, data::target_vector, ground_truth_layers, GroundTruthOutcome, ProbeOptions, Readout,
    Role, Target,
};
use icl::layout::Layout;
use icl::model::Transformer;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const D: usize = 2;
const N: usize = 3;

/// ridge.icl compiled once (d = 2, n = 3, no validation prompts) into a temporary folder kept
/// for the whole test binary.
fn ridge_dir() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, out) = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ridge");
        let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/ridge.icl");
        let sets = [("d", D), ("n", N)].map(|(k, v)| (k.to_string(), v.to_string()));
        let opts = icl::pipeline::Options {
            prompts: 0,
            ..Default::default()
        };
        icl::pipeline::run(&program, &sets, &out, &opts).expect("compile ridge.icl");
        (dir, out)
    });
    out
}

fn layout() -> Layout {
    let text = std::fs::read_to_string(ridge_dir().join("layout.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn layout_names_ordered_layers_for_every_example() {
    let layout = layout();
    let mut last = None;
    for k in 1..=N {
        let g = ground_truth_layers(&layout, k).unwrap();
        assert!(g.product_layer <= g.accumulate_layer, "k = {k}: {g:?}");
        assert_eq!(g.computed_after, g.accumulate_layer.index() + 1);
        assert_eq!(g.absent_until, g.product_layer.index());
        if let Some(prev) = last.replace(g) {
            assert!(
                prev.product_layer < g.product_layer && prev.accumulate_layer < g.accumulate_layer
            );
        }
    }
    let err = ground_truth_layers(&layout, N + 1).unwrap_err().to_string();
    assert!(err.contains("runs 3 times"), "{err}");
}

/// The layers the layout names are right about the model itself: from hidden state
/// `computed_after` on, the rows of register b hold XᵀY after k examples at columns 2k−1 and 2k.
#[test]
fn register_b_holds_xty_where_the_layout_says() {
    let layout = layout();
    let b = layout.registers.iter().find(|r| r.name == "b").unwrap();
    let model = Transformer::load(ridge_dir(), &candle_core::Device::Cpu, None).unwrap();
    let prompts = icl::prompt::PromptDistribution::new(D, N).sample_batch(4, 7);
    let hidden = model
        .hidden_states(&model.prompts_tensor(&prompts).unwrap())
        .unwrap();
    for k in 1..=N {
        let g = ground_truth_layers(&layout, k).unwrap();
        let h = hidden[g.computed_after].to_vec3::<f64>().unwrap();
        for (p, prompt) in prompts.iter().enumerate() {
            let want = target_vector(prompt, Target::Xty, k, 0.0);
            for t in [2 * k - 1, 2 * k] {
                let got: Vec<f64> = (b.rows[0].index()..b.rows[1].index())
                    .map(|r| h[p][t][r])
                    .collect();
                for (g_, w) in got.iter().zip(&want) {
                    assert!(
                        (g_ - w).abs() < 1e-9,
                        "k = {k}, column {t}: b = {got:?}, XᵀY = {want:?}"
                    );
                }
            }
        }
    }
}

/// The probe tells "computed" from "not yet computed" where the layout says.
#[test]
fn linear_probe_finds_xty_exactly_where_the_layout_puts_it() {
    let subject = probe::load_subject(
        ridge_dir(),
        Role::Model,
        probe::PromptChoice::Task,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let opts = ProbeOptions {
        readouts: vec![Readout::Linear],
        targets: vec![Target::Xty],
        train: 512,
        test: 256,
        steps: 500,
        ..Default::default()
    };
    let report = probe::probe_model(&subject, &opts, &indicatif::ProgressBar::hidden()).unwrap();
    let Some(GroundTruthOutcome::Checked(check)) = &report.ground_truth else {
        panic!("no ground-truth check: {:?}", report.ground_truth);
    };
    eprintln!("{}", report.table());
    assert_eq!(check.rows.len(), N);
    for r in &check.rows {
        assert!(
            r.error_computed < 1e-3,
            "k = {}: error {} at h{}",
            r.layers.k,
            r.error_computed,
            r.layers.computed_after
        );
        assert!(
            r.min_error_absent > 0.05,
            "k = {}: error {} at h{}",
            r.layers.k,
            r.min_error_absent,
            r.min_error_absent_at
        );
    }
    assert!(check.passed);
    let dir = tempfile::tempdir().unwrap();
    let files = probe::write_plot(std::slice::from_ref(&report), dir.path()).unwrap();
    assert!(files.iter().all(|f| f.exists()), "{files:?}");
}

/// `icl probe ARGS…`: exit status and stderr.
fn icl_probe(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_icl"))
        .arg("probe")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_input_is_a_clear_error_with_exit_1() {
    let dir = ridge_dir().to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["/nonexistent/model"], "no such model directory"),
        (&[dir, "--targets", "xty,foo"], "unknown target `foo`"),
        (&[dir, "--k", ""], "--k: empty list"),
        (&[dir, "--k", "2,4"], "k = 4 is not in 1..=3"),
        (&[dir, "--dist", "d=2,n=2"], "built for n = 3"),
        (
            &[dir, "--dist", "d=3,n=3"],
            "d = 3 but the model reads d = 2",
        ),
    ];
    for (args, want) in cases {
        let (code, stderr) = icl_probe(args);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(want),
            "{args:?}: expected `{want}` in: {stderr}"
        );
    }
    // A prompt file with too few prompts for --train + --test, and one of another n.
    let tmp = tempfile::tempdir().unwrap();
    let few = tmp.path().join("few.safetensors");
    let set = icl::analysis::prompt_set::PromptSet::sample(
        &icl::prompt::PromptDistribution::new(2, 3),
        10,
        0,
    )
    .unwrap();
    set.save(&few).unwrap();
    let (code, stderr) = icl_probe(&[
        dir,
        "--prompts",
        few.to_str().unwrap(),
        "--train",
        "8",
        "--test",
        "4",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("--prompts") && stderr.contains("need 12"),
        "{stderr}"
    );
    let other = tmp.path().join("other.safetensors");
    icl::analysis::prompt_set::PromptSet::sample(
        &icl::prompt::PromptDistribution::new(2, 2),
        10,
        0,
    )
    .unwrap()
    .save(&other)
    .unwrap();
    let (code, stderr) = icl_probe(&[dir, "--prompts", other.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("--prompts") && stderr.contains("built for n = 3"),
        "{stderr}"
    );
}
