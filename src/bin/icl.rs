//! `icl`: train transformers on in-context regression and evaluate any model directory.
//!
//! Subcommands: `train CONFIG.toml`, `eval MODEL_DIR`, `check MODEL_DIR`.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use icl::model::config::DType;
use icl::model::{parse_device, Transformer};
use icl::prompt::PromptDistribution;
use icl::train::{self, TrainOptions};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "icl",
    version,
    about = "Train and evaluate in-context linear-regression transformers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a transformer from a TOML config (see configs/).
    Train(TrainArgs),
    /// Evaluate a model directory (trained or compiled) against OLS, ridge and the zero predictor.
    Eval(EvalArgs),
    /// Re-certify a compiled model directory from its files alone (exit 1 naming the layer and
    /// the operation when a layer does not do what its operation says).
    Check(CheckArgs),
}

#[derive(Args)]
struct CheckArgs {
    /// A model directory written by icl-compile.
    dir: PathBuf,
}

#[derive(Args)]
struct TrainArgs {
    /// Training config (TOML with [task], [model], [train]).
    config: PathBuf,
    /// Override a field: --set train.lr=3e-4 --set model.layers=4 (repeatable).
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    sets: Vec<String>,
    /// Continue from the last checkpoint in the output folder.
    #[arg(long)]
    resume: bool,
    /// Output folder (default runs/<config name>).
    #[arg(short = 'o', long = "out")]
    out: Option<PathBuf>,
    /// cpu or cuda (cuda needs a build with --features cuda).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Stop after this many steps in total (checkpointing first), as if interrupted.
    #[arg(long, hide = true)]
    stop_after: Option<usize>,
}

#[derive(Args)]
struct EvalArgs {
    /// Model directory (config.json + model.safetensors).
    model_dir: PathBuf,
    /// Number of sampled prompts.
    #[arg(long, default_value_t = 1000)]
    prompts: usize,
    /// Seed of the prompt sampler.
    #[arg(long, default_value_t = 12345)]
    seed: u64,
    /// Ridge regularization λ for the ridge baseline.
    #[arg(long, default_value_t = 0.1)]
    lambda: f64,
    /// Runtime dtype (default: the model file's).
    #[arg(long)]
    dtype: Option<DType>,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => cmd_train(a),
        Command::Eval(a) => cmd_eval(a),
        Command::Check(a) => cmd_check(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn cmd_check(a: CheckArgs) -> Result<()> {
    let cert = icl::certify::run_check(&a.dir)?;
    let bounded = cert
        .layers
        .iter()
        .filter(|l| !matches!(l.verdict, icl::certify::Verdict::Exact))
        .count();
    println!(
        "{}: certified: {} layers, {} exact, {} bounded; {}",
        a.dir.display(),
        cert.layers.len(),
        cert.layers.len() - bounded,
        bounded,
        cert.end_to_end.summary()
    );
    Ok(())
}

fn cmd_train(a: TrainArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let out = a.out.unwrap_or_else(|| {
        PathBuf::from("runs").join(
            a.config
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or("run".into()),
        )
    });
    let cfg = train::load_config(&a.config, &a.sets)?;
    let progress = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
    let opts = TrainOptions {
        out: out.clone(),
        resume: a.resume,
        stop_after: a.stop_after,
        progress,
        device,
    };
    let s = train::train(&cfg, &opts)?;
    println!(
        "trained to step {} of {}: last batch loss {:.5}, {:.2} steps/s; model in {} (metrics.jsonl beside it)",
        s.steps_done,
        cfg.train.steps,
        s.last_loss,
        s.steps_per_s,
        out.display()
    );
    Ok(())
}

fn cmd_eval(a: EvalArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let model = Transformer::load(&a.model_dir, &device, a.dtype)?;
    // A trained run keeps its task in train.toml; otherwise N(0, I) inputs, N(0, I) weights, no noise.
    let tpath = a.model_dir.join("train.toml");
    let (dist, source) = if tpath.exists() {
        let cfg = train::load_config(&tpath, &[])
            .with_context(|| format!("reading {}", tpath.display()))?;
        (cfg.distribution(), format!("task of {}", tpath.display()))
    } else {
        (
            PromptDistribution::new(model.config.d, model.config.n),
            "x ~ N(0, I), w ~ N(0, I), no noise".into(),
        )
    };
    let report = icl::eval::evaluate(&model, &dist, a.prompts, a.seed, a.lambda)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} ({} model, target {}, {} layers, width {}); prompts: {source}",
            a.model_dir.display(),
            match model.config.kind {
                icl::model::config::ModelKind::Compiled => "compiled",
                icl::model::config::ModelKind::Trained => "trained",
            },
            model.config.target,
            model.config.layers.len(),
            model.config.width
        );
        print!("{}", report.table());
    }
    Ok(())
}
