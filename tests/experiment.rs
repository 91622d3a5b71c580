//! The experiment drivers: runs are trained once, reused when finished, resumed when interrupted,
//! and a folder holding another config's run is an error; the tables have the shapes and minima
//! the paper's figures need.

use candle_core::Device;
use icl::analysis::experiment::{noise, sweep, RunOptions, RunStatus};
use std::path::Path;

const BASE: &str = r#"
[task]
d = 2
n = 3
[model]
arch = "gpt2"
layers = 1
width = 8
heads = 1
mlp_hidden = 16
[train]
steps = 12
batch = 4
lr = 1e-3
checkpoint_every = 4
log_every = 4
"#;

fn opts(stop_after: Option<usize>) -> RunOptions {
    RunOptions {
        device: Device::Cpu,
        progress: false,
        stop_after,
        engine: Default::default(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn the_noise_table_trains_resumes_reuses_and_refuses_foreign_runs() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "base.toml", BASE);
    let out = dir.path().join("runs");
    let exp = write(
        dir.path(),
        "noise.toml",
        &format!(
            "base = \"base.toml\"\nout = {:?}\nsettings = [[0.0, 1.0], [0.5, 1.0]]\n[eval]\nprompts = 50\n",
            out.display().to_string()
        ),
    );
    // Interrupted after 5 steps (checkpoint at 4).
    let e = noise::run(&exp, &opts(Some(5))).unwrap_err().to_string();
    assert!(e.contains("stopped early"), "{e}");
    let t = noise::run(&exp, &opts(None)).unwrap();
    assert!(
        t.settings.iter().all(|s| s.status == RunStatus::Resumed),
        "{:?}",
        t.settings
    );
    assert_eq!(t.predictors, vec!["ols", "ridge(0.25)"]);
    assert_eq!((t.mspd_under.len(), t.mspd_under[0].len()), (2, 2));
    assert!(t
        .mspd_all
        .iter()
        .flatten()
        .all(|v| v.is_finite() && *v > 0.0));
    for (j, &i) in t.argmin_all.iter().enumerate() {
        assert!(t.mspd_all[i][j] <= t.mspd_all[1 - i][j]);
    }
    let text = t.table();
    assert!(
        text.contains("column minimum") && text.contains("on the diagonal"),
        "{text}"
    );
    // Again: both runs are reused as they are, with identical results.
    let again = noise::run(&exp, &opts(None)).unwrap();
    assert!(again.settings.iter().all(|s| s.status == RunStatus::Reused));
    assert_eq!(again.mspd_all, t.mspd_all);
    // A run folder of another config is not silently replaced.
    let other = write(
        dir.path(),
        "other.toml",
        &format!(
            "base = \"base.toml\"\nout = {:?}\nset = [\"train.lr=2e-3\"]\nsettings = [[0.0, 1.0]]\n",
            out.display().to_string()
        ),
    );
    let e = noise::run(&other, &opts(None)).unwrap_err().to_string();
    assert!(e.contains("another config"), "{e}");
}

#[test]
fn the_sweep_reports_a_phase_per_setting() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "base.toml", BASE);
    let out = dir.path().join("runs");
    let exp = write(
        dir.path(),
        "sweep.toml",
        &format!(
            "base = \"base.toml\"\nout = {:?}\nset = [\"train.steps=8\"]\nlayers = [1, 2]\nwidths = [8]\nbaselines = [\"gd:0.02\", \"ols\"]\n[eval]\nprompts = 40\n",
            out.display().to_string()
        ),
    );
    let s = sweep::run(&exp, &opts(None)).unwrap();
    assert_eq!(s.points.len(), 2);
    for p in &s.points {
        assert_eq!(p.status, RunStatus::Trained);
        assert_eq!(p.mspd_under.len(), 2);
        let best = if p.mspd_under[0] <= p.mspd_under[1] {
            "gd:0.02"
        } else {
            "ols"
        };
        assert_eq!(p.phase, best);
    }
    assert!(out.join("L2_W8").join("model.safetensors").exists());
    assert_eq!(s.charts().len(), 1);
    let bad = write(
        dir.path(),
        "bad.toml",
        "base = \"base.toml\"\nout = \"x\"\nlayers = []\nwidths = [8]\n",
    );
    assert!(sweep::run(&bad, &opts(None))
        .unwrap_err()
        .to_string()
        .contains("must not be empty"));
}
