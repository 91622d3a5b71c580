//! `icl train CONFIG --init DIR`: a config resolved against a paper model directory, and the
//! weights read from it (docs/FORMATS.md, "Training runs").

use super::*;

/// [`parse_config_init`] of a file.
pub fn load_config_init(path: &Path, sets: &[String], init: Option<&Path>) -> Result<TrainConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    parse_config_init(&text, &path.display().to_string(), sets, init)
}

/// A config for a fresh run: [`parse_config`], then the model directory of `init` (the
/// `--init DIR` flag, which replaces any `[init] dir` of the file) or of the file's
/// `[init] dir` is read and the config resolved against it (`icl train CONFIG --init DIR`):
///
/// - DIR's `config.json` must load and have target `paper` (compiled or trained), every layer
///   the same, and `max_len` = 2n+1;
/// - `task.d` and `task.n` and every `[model]` field (`arch`, `layers`, `width`, `heads`,
///   `head_dim`, `mlp_hidden`, `activation`, `ln_eps`, `zero_attn`, `momentum_eta`,
///   `momentum_learned`) that the file omits are DIR's; one it gives must equal DIR's, else an
///   error names the field, the config's value and DIR's (so `[model]` may be left out);
/// - `init.dir` becomes DIR's absolute path, so the resolved config (the run's `train.toml`)
///   says where the run started and reruns it.
///
/// Without any init this is [`parse_config`].
pub fn parse_config_init(
    text: &str,
    path: &str,
    sets: &[String],
    init: Option<&Path>,
) -> Result<TrainConfig> {
    let mut table = parse_table(text, path, sets)?;
    let not_section = |name: &str| config_err(path, format!("`{name}` is not a section"));
    if let Some(dir) = init {
        section(&mut table, "init")
            .ok_or_else(|| not_section("init"))?
            .insert("dir".into(), toml::Value::String(dir.display().to_string()));
    }
    let dir = match table.get("init").and_then(|i| i.get("dir")) {
        None => return finish_config(table, path),
        Some(toml::Value::String(s)) => PathBuf::from(s),
        Some(other) => {
            return Err(config_err(
                path,
                format!("field `init.dir`: expected a directory name, found {other}"),
            ))
        }
    };
    let ierr = |msg: String| TrainError::Init {
        dir: dir.display().to_string(),
        msg,
    };
    let abs =
        std::fs::canonicalize(&dir).map_err(|e| ierr(format!("not a model directory ({e})")))?;
    let mc = model::load_config(&abs.join("config.json")).map_err(|e| ierr(e.to_string()))?;
    let arch = init_arch(&mc).map_err(ierr)?;
    let dir_task: toml::Table = [("d", mc.d), ("n", mc.n)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), toml::Value::Integer(v as i64)))
        .collect();
    let dir_model = toml::Table::try_from(&arch).map_err(|e| ierr(e.to_string()))?;
    for (name, fill) in [("task", &dir_task), ("model", &dir_model)] {
        let sec = section(&mut table, name).ok_or_else(|| not_section(name))?;
        for (k, v) in fill {
            sec.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    section(&mut table, "init")
        .ok_or_else(|| not_section("init"))?
        .insert("dir".into(), toml::Value::String(abs.display().to_string()));
    let cfg = deserialize_config(table, path)?;
    // Given values against DIR's, field by field (the omitted ones were filled with DIR's).
    let given = [
        ("task.d", cfg.task.d.to_string()),
        ("task.n", cfg.task.n.to_string()),
    ]
    .into_iter()
    .chain(arch_fields(&cfg.model));
    let theirs = [("task.d", mc.d.to_string()), ("task.n", mc.n.to_string())]
        .into_iter()
        .chain(arch_fields(&arch));
    if let Some(((field, a), (_, b))) = given.zip(theirs).find(|(a, b)| a != b) {
        return Err(ierr(format!(
            "field `{field}`: the config says {a}, but the model directory has {b}"
        )));
    }
    cfg.validate().map_err(|e| {
        config_err(
            path,
            format!(
                "{e} (with --init {}, the [model] fields the config omits are the model directory's)",
                dir.display()
            ),
        )
    })?;
    check_init_config(&cfg, &mc).map_err(ierr)?;
    Ok(cfg)
}

/// The effective value of every `[model]` field (defaults applied), as TOML writes it.
fn arch_fields(m: &ArchConfig) -> Vec<(&'static str, String)> {
    fn text<T: Serialize>(v: T) -> String {
        toml::Value::try_from(v).map_or_else(|e| e.to_string(), |v| v.to_string())
    }
    vec![
        ("model.arch", text(m.arch)),
        ("model.layers", m.layers.to_string()),
        ("model.width", m.width.to_string()),
        ("model.heads", m.heads.to_string()),
        ("model.head_dim", m.head_size().to_string()),
        (
            "model.mlp_hidden",
            m.mlp_hidden.unwrap_or(4 * m.width).to_string(),
        ),
        ("model.activation", text(m.activation)),
        ("model.ln_eps", text(m.ln_eps)),
        ("model.zero_attn", m.zero_attn.to_string()),
        (
            "model.momentum_eta",
            m.momentum_eta.map_or("nothing".into(), text),
        ),
        ("model.momentum_learned", m.momentum_learned.to_string()),
    ]
}

/// The `[model]` section that builds the architecture of a `paper` model directory: its layers
/// (all the same), heads, head size, null key, MLP and LayerNorm eps. Errors say what in
/// `config.json` keeps it from being one.
fn init_arch(mc: &ModelConfig) -> std::result::Result<ArchConfig, String> {
    if mc.target != "paper" {
        return Err(format!(
            "needs a paper-architecture model (target \"paper\", compiled or trained); the model directory has target \"{}\"",
            mc.target
        ));
    }
    if mc.max_len != 2 * mc.n + 1 {
        return Err(format!(
            "field `max_len`: the model directory has {}, but training on n = {} needs 2n+1 = {}",
            mc.max_len,
            mc.n,
            2 * mc.n + 1
        ));
    }
    let Some(first) = mc.layers.first() else {
        return Err("config.json has no layers".into());
    };
    if let Some(l) = (1..mc.layers.len()).find(|&l| mc.layers[l] != *first) {
        return Err(format!(
            "layers[{l}] differs from layers[0] in config.json: --init needs every layer the same shape (training builds identical layers)"
        ));
    }
    let (Some(attn), Some(norm), Some(mlp)) = (first.attn, first.norm, first.mlp) else {
        return Err(
            "layers[0] lacks attention, its MLP LayerNorm or its MLP: a paper layer has all three"
                .into(),
        );
    };
    let (momentum_eta, momentum_learned) = match attn.momentum {
        None => (None, false),
        Some(MomentumConfig::Fixed { eta }) => (Some(eta), false),
        Some(MomentumConfig::Learned { learned }) => (None, learned),
    };
    Ok(ArchConfig {
        arch: Arch::Paper,
        layers: mc.layers.len(),
        width: mc.width,
        heads: attn.heads,
        mlp_hidden: Some(mlp.hidden),
        activation: mlp.activation,
        ln_eps: norm.eps,
        momentum_eta,
        momentum_learned,
        head_dim: Some(attn.head_dim),
        zero_attn: attn.zero_attn,
    })
}

/// The first place two JSON values differ: (path, left, right).
fn first_difference(
    a: &serde_json::Value,
    b: &serde_json::Value,
    path: String,
) -> Option<(String, String, String)> {
    use serde_json::Value as V;
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (a, b) {
        (V::Object(x), V::Object(y)) => {
            x.keys()
                .chain(y.keys())
                .find_map(|k| match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => first_difference(u, v, join(k)),
                    (u, v) => {
                        let show =
                            |w: Option<&V>| w.map_or("absent".to_string(), |w| w.to_string());
                        Some((join(k), show(u), show(v)))
                    }
                })
        }
        (V::Array(x), V::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| first_difference(u, v, format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some((path, a.to_string(), b.to_string())),
    }
}

/// Check that a model directory's config (`mc`) is the architecture `cfg` trains: the same
/// config.json but for `kind` (trained), `dtype` (`train.dtype`) and `readout_row` (null).
fn check_init_config(cfg: &TrainConfig, mc: &ModelConfig) -> std::result::Result<(), String> {
    init_arch(mc)?;
    let ours = cfg.model_config();
    let theirs = ModelConfig {
        kind: ModelKind::Trained,
        dtype: ours.dtype,
        readout_row: None,
        ..mc.clone()
    };
    if theirs == ours {
        return Ok(());
    }
    let json = |c: &ModelConfig| serde_json::to_value(c).map_err(|e| e.to_string());
    let (field, t, o) = first_difference(&json(&theirs)?, &json(&ours)?, String::new())
        .unwrap_or_else(|| ("?".into(), "?".into(), "?".into()));
    Err(format!(
        "config.json field `{field}` is {t}, but the run's config builds {o}"
    ))
}

/// The trainable model a run with `[init]` starts from: DIR's weights in `train.dtype`, after
/// DIR's config is checked against the run's (it may have changed since the config was
/// resolved) and its tensors against that config (none missing, none extra, shapes, dtype).
pub(super) fn load_init(
    cfg: &TrainConfig,
    init: &InitConfig,
    device: &Device,
) -> Result<Transformer> {
    let dir = &init.dir;
    let ierr = |msg: String| TrainError::Init {
        dir: dir.display().to_string(),
        msg,
    };
    let mc = model::load_config(&dir.join("config.json")).map_err(|e| ierr(e.to_string()))?;
    check_init_config(cfg, &mc).map_err(ierr)?;
    let named = Transformer::load(dir, device, Some(cfg.train.dtype))
        .and_then(|m| m.to_named())
        .map_err(|e| ierr(e.to_string()))?;
    let mc = cfg.model_config();
    Ok(Transformer::from_named(
        mc.clone(),
        &named,
        device,
        mc.dtype,
        true,
    )?)
}
