//! Snapshots of the compiled weights of every program (programs/*.icl, programs/paper/*.icl) at
//! d=2, n=2: a readable listing of the non-zero entries by tensor name with exact values, the
//! config, the layout and the certificate. Review changes with `INSTA_UPDATE=always cargo test
//! --test compile_snapshots` and `git diff snapshots/`.

use icl::model::config::DType;
use icl::pipeline::Target;
use std::path::{Path, PathBuf};

fn programs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["programs", "programs/paper"] {
        let Ok(rd) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "icl") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Overrides for d=2, n=2 (a literal-vector parameter sized by d is resized too).
fn overrides(path: &Path) -> Vec<(String, String)> {
    let mut o = vec![
        ("d".to_string(), "2".to_string()),
        ("n".to_string(), "2".to_string()),
    ];
    let text = std::fs::read_to_string(path).unwrap_or_default();
    if text.contains("param w0 = [") {
        o.push(("w0".into(), "[0.5, -0.25]".into()));
    }
    o
}

#[test]
fn compiled_programs_snapshot() {
    let progs = programs();
    assert!(!progs.is_empty(), "no programs found");
    for path in progs {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        // A program whose shape is fixed to its own d (e.g. ridge_elim's d = 4 selectors) is
        // snapshot at its d, with n = 2.
        let p = icl::front::load_file(&rel, &overrides(&path))
            .or_else(|_| icl::front::load_file(&rel, &[("n".to_string(), "2".to_string())]))
            .unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
        for (target, prefix) in [(Target::Exact, "compiled"), (Target::Paper, "paper")] {
            snapshot(&rel, &p, target, prefix);
        }
    }
}

/// The snapshot of `p` (from `rel`) compiled to `target`, named `{prefix}__{program path}`.
fn snapshot(rel: &Path, p: &icl::ir::Program, target: Target, prefix: &str) {
    let c = icl::pipeline::lower_to(p, target, DType::F64)
        .unwrap_or_else(|e| panic!("{}: {e:#}", rel.display()));
    let cert = icl::pipeline::certify_compiled(p, &c)
        .unwrap_or_else(|e| panic!("{}: {e:#}", rel.display()));
    let name = rel
        .with_extension("")
        .to_string_lossy()
        .replace(['/', '\\'], "__");
    let text = format!(
        "# {} at d={}, n={} (f64, {} target): {} layers, width {}, {} primitives\n\n\
             ## config.json\n{}\n## weights (non-zero entries)\n{}\n## layout.json\n{}\n\
             ## certificate.json\n{}",
        rel.display(),
        p.d,
        p.n,
        target.name(),
        c.stats.layers,
        c.stats.width,
        c.stats.primitives,
        serde_json::to_string_pretty(&c.config).unwrap(),
        icl::emit::listing(&c.tensors),
        serde_json::to_string_pretty(&c.layout).unwrap(),
        icl::emit::certificate_text(&cert).unwrap(),
    );
    insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(format!("{prefix}__{name}"), text);
    });
}
