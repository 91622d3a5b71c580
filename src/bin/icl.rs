//! `icl`: train transformers on in-context regression and evaluate any model directory.
//!
//! Subcommands: `train CONFIG.toml`, `prompts`, `compare LEARNER…`, `eval MODEL_DIR`,
//! `experiment noise|sweep|momentum|from-compiled CONFIG`, `probe MODEL_DIR…`, `check MODEL_DIR`,
//! `dual MODEL_DIR`, `implicit LEARNER…`, `finetune-vs-icl MODEL_DIR`.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use icl::analysis::compare::{self, CompareOptions};
use icl::analysis::learner::{self, LoadOptions};
use icl::analysis::probe::{self, ProbeOptions, Readout, Role, Target};
use icl::analysis::prompt_set::PromptSet;
use icl::analysis::{tables, PromptSource};
use icl::model::config::DType;
use icl::model::parse_device;
use icl::prompt::PromptDistribution;
use icl::train::{self, TrainOptions};
use std::io::IsTerminal;

/// mimalloc instead of glibc's malloc: training and probing free and reallocate large buffers
/// every step, which glibc hands back to the OS and faults in again (`cargo bench --bench train`:
/// paper_small 861 → 636 ms per step on 2 cores).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
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
    /// Write a prompt set (safetensors: xs, ys, ws and the distribution) for analysis commands.
    Prompts(PromptsArgs),
    /// Compare learners — model directories, .icl programs, solvers — on the same prompts:
    /// MSE, SPD, ILWD and R² per number of examples, and which learner each model is closest to.
    Compare(CompareArgs),
    /// Shortcut: `compare MODEL_DIR ols ridge:λ zero`.
    Eval(EvalArgs),
    /// The paper's experiments: `noise CONFIG` (the σ/τ table, Fig. 2), `sweep CONFIG` (depth and
    /// width, Fig. 3), `momentum CONFIG` (momentum attention, Dai et al. 2023), `from-compiled
    /// CONFIG` (training from compiled weights). Finished runs are reused; an interrupted
    /// experiment resumes.
    Experiment(ExperimentArgs),
    /// Re-certify a compiled model directory from its files alone (exit 1 naming the layer and
    /// the operation when a layer does not do what its operation says).
    Check(CheckArgs),
    /// Probe hidden states for XᵀY, w_OLS and w_ridge after k examples (Akyürek et al. 2023,
    /// §5): per layer, the held-out error of learned probes; on a compiled ridge.icl, also the
    /// check against the layers its layout.json names.
    Probe(ProbeArgs),
    /// ICL vs explicit finetuning (Dai et al. 2023): zero-shot, in-context and K/V-finetuned
    /// runs per prompt and k, with SimAOU, SimAM, ΔSimAM, Kendall τ and Rec2FTP per layer, the
    /// variants (one-step GD, all-parameter, layer-causal) and the controls (untrained model,
    /// shuffled labels, another task's demonstrations).
    FinetuneVsIcl(FinetuneArgs),
    /// The dual form of attention (Dai et al. 2023): per layer and head, how far the softmax read
    /// F is from its linear relaxation ΔW·q and from its first-order expansion.
    Dual(DualArgs),
    /// The implicit linear model ŵ = ∂ŷ/∂x_q of any learner against one-step GD at its best α,
    /// multi-step GD, ridge and OLS (model cos, model diff, preds diff per k).
    Implicit(ImplicitArgs),
}

#[derive(Args)]
struct DualArgs {
    /// A model directory (compiled or trained).
    model_dir: PathBuf,
    /// Heads to measure, LAYER:HEAD comma-separated (default: every head).
    #[arg(long)]
    heads: Option<String>,
    /// Runtime dtype (default: the model file's).
    #[arg(long)]
    dtype: Option<DType>,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    #[command(flatten)]
    source: PromptSourceArgs,
    /// Write the report as JSON to this file (`-`: standard output).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write every value in long format (layer,head,k,metric,mean,median,defined).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Write the figure (PNG and SVG) into this directory.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Args)]
struct ImplicitArgs {
    /// Learners: model directories, .icl programs, solvers (as for `compare`).
    #[arg(required = true)]
    learners: Vec<String>,
    /// Steps of the multi-step GD references, comma-separated.
    #[arg(long, default_value = "2,4,8")]
    gd_steps: String,
    /// λ of the ridge reference (default: the task's Bayes λ = σ²/τ²; none when it is 0).
    #[arg(long)]
    lambda: Option<f64>,
    /// Bootstrap resamples of the confidence intervals.
    #[arg(long, default_value_t = 1000)]
    resamples: usize,
    /// Run compiled models on prompts outside their certified input ranges.
    #[arg(long)]
    uncertified: bool,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    #[command(flatten)]
    source: PromptSourceArgs,
    /// Write the report as JSON to this file (`-`: standard output).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write one figure per learner (PNG and SVG) into this directory.
    #[arg(long)]
    plot: Option<PathBuf>,
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
    /// Start from this model directory's architecture and weights (target "paper", compiled or
    /// trained). [model] fields the config omits are DIR's; any it gives, and task.d and
    /// task.n, must equal DIR's. The run's train.toml records DIR as [init] dir. Not with
    /// --resume (a resumed run continues from its checkpoint).
    #[arg(long, value_name = "DIR")]
    init: Option<PathBuf>,
    /// Output folder (default runs/<config name>).
    #[arg(short = 'o', long = "out")]
    out: Option<PathBuf>,
    /// cpu or cuda (cuda needs a build with --features cuda).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Stop after this many steps in total (checkpointing first), as if interrupted.
    #[arg(long, hide = true)]
    stop_after: Option<usize>,
    /// Which implementation trains: `auto` (the fused CPU step where it covers the model, else
    /// Candle's autograd), `fused` (an error where it does not), `candle` (the reference).
    #[arg(long, value_enum, default_value = "auto")]
    engine: train::Engine,
}

#[derive(Args)]
struct PromptsArgs {
    /// The distribution, e.g. d=8,n=40,x=normal*1+0,w=normal*1,noise=0 (also x=uniform*s+μ,
    /// w=const*c).
    #[arg(long)]
    dist: String,
    /// Number of prompts.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output file (.safetensors).
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
}

/// Where an analysis command's prompts come from.
#[derive(Args)]
struct PromptSourceArgs {
    /// A prompt set written by `icl prompts`.
    #[arg(long, conflicts_with = "dist")]
    prompts: Option<PathBuf>,
    /// Sample prompts from this distribution (see `icl prompts --help`). Default: the task of the
    /// first model directory given.
    #[arg(long)]
    dist: Option<String>,
    /// Number of sampled prompts (with --dist or the default).
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Seed of the sampled prompts.
    #[arg(long, default_value_t = 12345)]
    seed: u64,
}

impl PromptSourceArgs {
    fn source(&self, specs: &[String]) -> Result<PromptSource> {
        Ok(match (&self.prompts, &self.dist) {
            (Some(p), _) => PromptSource::File(p.clone()),
            (None, Some(spec)) => PromptSource::Dist {
                spec: spec.clone(),
                count: self.count,
                seed: self.seed,
            },
            (None, None) => PromptSource::ModelTask {
                dir: PromptSource::first_model_dir(specs).ok_or_else(|| {
                    anyhow::anyhow!(
                        "no model directory among the learners: give the prompts with --prompts FILE or --dist SPEC"
                    )
                })?,
                count: self.count,
                seed: self.seed,
            },
        })
    }
}

/// How model learners run and where results go.
#[derive(Args)]
struct RunArgs {
    /// Runtime dtype of model learners (default: each model file's).
    #[arg(long)]
    dtype: Option<DType>,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Forward pass of compiled models: auto (the sparse executor for f64 exact-target models
    /// on the CPU), dense (the reference) or sparse.
    #[arg(long, value_enum, default_value_t = learner::Executor::Auto)]
    executor: learner::Executor,
    /// Prompts used for ILWD and R² (the first ones of the set).
    #[arg(long, default_value_t = 100)]
    ilwd_prompts: usize,
    /// Fresh probe inputs per prompt and k for ILWD (default 4·d).
    #[arg(long, default_value_t = 0)]
    probes: usize,
    /// Seed of the probe inputs.
    #[arg(long, default_value_t = 0)]
    probe_seed: u64,
    /// Run compiled models on prompts outside their certified input ranges (marked as
    /// uncertified in the output) instead of refusing.
    #[arg(long)]
    uncertified: bool,
    /// Write the full report as JSON to this file (`-`: standard output).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write every metric in long format (metric,k,learner,other,value) to this file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Write figures (PNG and SVG) into this directory.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Args)]
struct CompareArgs {
    /// Learners: model directories, .icl programs (optionally PATH.icl:name=value,…), or solvers:
    /// ols, ridge:λ, bayes, gd:α, sgd:α, knn:k, knn:k:dist, moments, zero.
    #[arg(required = true)]
    learners: Vec<String>,
    /// Show SPD and ILWD of every learner against this one (default: against each model or
    /// program).
    #[arg(long = "ref")]
    reference: Option<String>,
    #[command(flatten)]
    source: PromptSourceArgs,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExperimentKind {
    Noise,
    Sweep,
    /// Momentum attention (Dai et al. 2023, §3): arms × paired seeds (configs/momentum.toml).
    Momentum,
    /// Training from compiled weights: compile a program to the paper target, train from it
    /// at each learning rate, evaluate the kept steps (configs/from_compiled.toml).
    FromCompiled,
}

#[derive(Args)]
struct ExperimentArgs {
    kind: ExperimentKind,
    /// The experiment file (TOML; see configs/noise.toml, configs/sweep.toml, configs/momentum.toml,
    /// configs/from_compiled.toml).
    config: PathBuf,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Write the results as JSON to this file (`-`: standard output).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the figure (PNG and SVG) into this directory.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Stop every run after this many steps in total, as if interrupted.
    #[arg(long, hide = true)]
    stop_after: Option<usize>,
    /// Runs trained at the same time (momentum; with RAYON_NUM_THREADS=1, one per core).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Which implementation trains the runs (as `icl train --engine`).
    #[arg(long, value_enum, default_value = "auto")]
    engine: train::Engine,
}

#[derive(Args)]
struct EvalArgs {
    /// Model directory (config.json + model.safetensors).
    model_dir: PathBuf,
    /// λ of the ridge baseline.
    #[arg(long, default_value_t = 0.1)]
    lambda: f64,
    #[command(flatten)]
    source: PromptSourceArgs,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct ProbeArgs {
    /// Model directories (trained or compiled).
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// A control model (e.g. trained with a fixed w), probed on random-w prompts beside the others.
    #[arg(long)]
    control: Option<PathBuf>,
    /// Read-out after the projection: linear, mlp or both.
    #[arg(long, default_value = "both")]
    readout: String,
    /// Targets, comma-separated: xty (Σ x_i y_i), ols (min-norm least squares), ridge.
    #[arg(long, default_value = "xty,ols,ridge")]
    targets: String,
    /// λ of the ridge target.
    #[arg(long, default_value_t = ProbeOptions::default().lambda)]
    lambda: f64,
    /// Numbers of examples to probe at, comma-separated (default: every k = 1..=n).
    #[arg(long)]
    k: Option<String>,
    /// Adam steps per (readout, target); all layers and k are trained together.
    #[arg(long, default_value_t = ProbeOptions::default().steps)]
    steps: usize,
    /// Adam learning rate of the projection and read-out (the paper's 1e-3).
    #[arg(long, default_value_t = ProbeOptions::default().lr)]
    lr: f64,
    /// Adam learning rate of the position scores (higher than --lr so the pooling can become
    /// one-hot within the step budget).
    #[arg(long, default_value_t = ProbeOptions::default().score_lr)]
    score_lr: f64,
    /// Batch size.
    #[arg(long, default_value_t = ProbeOptions::default().batch)]
    batch: usize,
    /// Width H′ of the projection (paper: 512).
    #[arg(long, default_value_t = ProbeOptions::default().proj)]
    proj: usize,
    /// Hidden units of the MLP read-out (paper: 512).
    #[arg(long, default_value_t = ProbeOptions::default().mlp_hidden)]
    mlp_hidden: usize,
    /// Training prompts.
    #[arg(long, default_value_t = ProbeOptions::default().train)]
    train: usize,
    /// Held-out prompts.
    #[arg(long, default_value_t = ProbeOptions::default().test)]
    test: usize,
    /// Seed of the prompts, the probes' initialisation and their batches.
    #[arg(long, default_value_t = ProbeOptions::default().seed)]
    seed: u64,
    /// Prompt distribution SPEC (default: the model's task; see `icl prompts --help`), e.g.
    /// d=4,n=16,x=normal*1+0,w=normal*1,noise=0.
    #[arg(long, conflicts_with = "prompts")]
    dist: Option<String>,
    /// A prompt set written by `icl prompts`: the first --train prompts train the probes, the
    /// next --test measure them.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// CPU threads for Candle's kernels (default 1, or CANDLE_NUM_THREADS when set): probe
    /// training is thousands of small tensor operations, for which synchronising threads costs
    /// more than it saves on a loaded machine.
    #[arg(long)]
    threads: Option<usize>,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Write a figure (one panel per model: normalised error against layer) into this folder.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Args)]
struct FinetuneArgs {
    /// A model directory with softmax attention from Q and K in every layer (a trained model).
    model_dir: PathBuf,
    #[command(flatten)]
    source: FinetuneSourceArgs,
    /// Demonstrations of a fixed unrelated task put before every run's tokens, so that a
    /// zero-shot prompt has more than one key (with one key, finetuning cannot move W_K).
    #[arg(long, default_value_t = 1)]
    prefix: usize,
    /// Seed of the prefix's task.
    #[arg(long, default_value_t = 777)]
    prefix_seed: u64,
    /// Learning rates tried for every variant (comma-separated); each variant's is chosen by
    /// held-out FT MSE.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1e-4,3e-4,1e-3,3e-3,1e-2,3e-2,1e-1,3e-1,1"
    )]
    lr_grid: Vec<f64>,
    /// Held-out prompts the learning rates are chosen on.
    #[arg(long, default_value_t = 32)]
    lr_prompts: usize,
    /// Seed of the held-out prompts.
    #[arg(long, default_value_t = 4242)]
    lr_seed: u64,
    /// A run "improves" on a prompt when its error is below (1 − δ)·the zero-shot error.
    #[arg(long, default_value_t = 0.5)]
    delta: f64,
    /// Skip the controls (untrained model, shuffled labels, another task's demonstrations).
    #[arg(long)]
    no_controls: bool,
    /// Seed of the untrained control, the label shuffles and the random baselines.
    #[arg(long, default_value_t = 1)]
    control_seed: u64,
    /// Runtime dtype (default: the model file's).
    #[arg(long)]
    dtype: Option<DType>,
    /// Write the report as JSON to this file (`-`: standard output).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the figure (finetune.png, finetune.svg) into this directory.
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// The prompts of `finetune-vs-icl` (fewer by default: every prompt is finetuned on).
#[derive(Args)]
struct FinetuneSourceArgs {
    /// A prompt set written by `icl prompts`.
    #[arg(long, conflicts_with = "dist")]
    prompts: Option<PathBuf>,
    /// Sample prompts from this distribution (default: the model's task).
    #[arg(long)]
    dist: Option<String>,
    /// Number of sampled prompts.
    #[arg(long, default_value_t = 200)]
    count: usize,
    /// Seed of the sampled prompts.
    #[arg(long, default_value_t = 12345)]
    seed: u64,
}

/// Run Candle's CPU kernels on `n` threads unless the user set `RAYON_NUM_THREADS`. Candle reads
/// the variable at every kernel and has no other setting; callers run before any kernel.
fn threads_unless_chosen(n: usize) {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

fn cmd_finetune(a: FinetuneArgs) -> Result<()> {
    use icl::analysis::dai::finetune::{self, report, FinetuneOptions};
    // Thousands of one-prompt forward and backward passes of a few tokens each: Candle's thread
    // pool costs far more than it gains on them (measured 49 s on 2 threads against 3.3 s on one
    // for 20 prompts of the tiny model).
    threads_unless_chosen(1);
    let opts = FinetuneOptions {
        prefix: a.prefix,
        prefix_seed: a.prefix_seed,
        lr_grid: a.lr_grid.clone(),
        lr_prompts: a.lr_prompts,
        lr_seed: a.lr_seed,
        delta: a.delta,
        controls: !a.no_controls,
        control_seed: a.control_seed,
        progress: show_progress(),
    };
    let model = icl::model::Transformer::load(&a.model_dir, &candle_core::Device::Cpu, a.dtype)?;
    let name = a.model_dir.display().to_string();
    finetune::check_model(&model, &name)?;
    finetune::check_options(&opts, model.config.n)?;
    // After the model loaded: a missing directory is reported as such, not as missing prompts.
    let source = PromptSourceArgs {
        prompts: a.source.prompts.clone(),
        dist: a.source.dist.clone(),
        count: a.source.count,
        seed: a.source.seed,
    }
    .source(std::slice::from_ref(&name))?;
    let (set, described) = source.resolve()?;
    let run = finetune::run(&model, &name, &set, &described, &opts)?;
    let summary = report::summarise(&run);
    if let Some(path) = &a.json {
        write_output(path, &(serde_json::to_string_pretty(&summary)? + "\n"))?;
    }
    if let Some(dir) = &a.plot {
        for f in icl::plot::write_figure(&report::figure(&summary), &dir.join("finetune"))? {
            eprintln!("wrote {}", f.display());
        }
    }
    if a.json.as_deref() != Some(std::path::Path::new("-")) {
        print!("{}", report::text(&summary));
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => cmd_train(a),
        Command::Prompts(a) => cmd_prompts(a),
        Command::Compare(a) => cmd_compare(a.learners, a.reference, &a.source, &a.run),
        Command::Eval(a) => cmd_eval(a),
        Command::Experiment(a) => cmd_experiment(a),
        Command::Check(a) => cmd_check(a),
        Command::Probe(a) => cmd_probe(a),
        Command::FinetuneVsIcl(a) => cmd_finetune(a),
        Command::Dual(a) => cmd_dual(a),
        Command::Implicit(a) => cmd_implicit(a),
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
    if a.resume && a.init.is_some() {
        anyhow::bail!(
            "--init cannot be combined with --resume: a resumed run continues from its last checkpoint (its train.toml records the directory it started from as [init] dir); drop --init"
        );
    }
    // On resume the run's own train.toml is complete and its [init] directory is not read.
    let cfg = if a.resume {
        train::load_config(&a.config, &a.sets)?
    } else {
        train::load_config_init(&a.config, &a.sets, a.init.as_deref())?
    };
    // A small model runs faster on one thread (src/train.rs, cpu_threads).
    if let (true, Some(n)) = (device.is_cpu(), train::cpu_threads(&cfg, a.engine)) {
        threads_unless_chosen(n);
    }
    let progress = show_progress();
    let opts = TrainOptions {
        out: out.clone(),
        resume: a.resume,
        stop_after: a.stop_after,
        progress,
        device,
        engine: a.engine,
    };
    let s = train::train(&cfg, &opts)?;
    if let Some(init) = &cfg.init {
        println!("initialised from {}", init.dir.display());
    }
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

fn cmd_prompts(a: PromptsArgs) -> Result<()> {
    let dist = PromptDistribution::parse_spec(&a.dist).context("--dist")?;
    let set = PromptSet::sample(&dist, a.count, a.seed)?;
    set.save(&a.out)?;
    println!(
        "{}: {} prompts from {} (seed {})",
        a.out.display(),
        a.count,
        dist.spec(),
        a.seed
    );
    Ok(())
}

fn cmd_experiment(a: ExperimentArgs) -> Result<()> {
    use icl::analysis::experiment::{noise, sweep, RunOptions};
    use icl::plot::{Figure, Panel};
    let opts = RunOptions {
        device: parse_device(&a.device)?,
        progress: show_progress(),
        stop_after: a.stop_after,
        engine: a.engine,
    };
    let (json, table, figure) = match a.kind {
        ExperimentKind::Noise => {
            let t = noise::run(&a.config, &opts)?;
            let fig = Figure {
                panels: vec![Panel::Heat(t.heatmap(true)), Panel::Heat(t.heatmap(false))],
                columns: 2,
                panel_size: (720, 460),
            };
            (serde_json::to_string_pretty(&t)?, t.table(), ("noise", fig))
        }
        ExperimentKind::Sweep => {
            let s = sweep::run(&a.config, &opts)?;
            let panels: Vec<Panel> = s.charts().into_iter().map(Panel::Line).collect();
            let fig = Figure {
                columns: panels.len().min(3),
                panels,
                panel_size: (560, 400),
            };
            (serde_json::to_string_pretty(&s)?, s.table(), ("sweep", fig))
        }
        ExperimentKind::Momentum => {
            let m = icl::analysis::experiment::momentum::run(&a.config, &opts, a.jobs)?;
            let fig = m.figure();
            (
                serde_json::to_string_pretty(&m)?,
                m.table(),
                ("momentum", fig),
            )
        }
        ExperimentKind::FromCompiled => {
            let r = icl::analysis::experiment::from_compiled::run(&a.config, &opts)?;
            eprintln!(
                "trained for {:.1} s, evaluated for {:.1} s",
                r.train_seconds, r.eval_seconds
            );
            (
                serde_json::to_string_pretty(&r)?,
                r.table(),
                ("from-compiled", r.figure()),
            )
        }
    };
    if let Some(path) = &a.json {
        write_output(path, &(json + "\n"))?;
    }
    if let Some(dir) = &a.plot {
        for f in icl::plot::write_figure(&figure.1, &dir.join(figure.0))? {
            eprintln!("wrote {}", f.display());
        }
    }
    if a.json.as_deref() != Some(std::path::Path::new("-")) {
        print!("{table}");
    }
    Ok(())
}

fn cmd_eval(a: EvalArgs) -> Result<()> {
    if !(a.lambda.is_finite() && a.lambda > 0.0) {
        anyhow::bail!("--lambda must be a positive number, found {}", a.lambda);
    }
    let specs = vec![
        a.model_dir.display().to_string(),
        "ols".into(),
        format!("ridge:{}", a.lambda),
        "zero".into(),
    ];
    cmd_compare(specs, None, &a.source, &a.run)
}

fn cmd_compare(
    specs: Vec<String>,
    reference: Option<String>,
    source: &PromptSourceArgs,
    run: &RunArgs,
) -> Result<()> {
    let (set, described) = source.source(&specs)?.resolve()?;
    let opts = LoadOptions {
        device: parse_device(&run.device)?,
        dtype: run.dtype,
        executor: run.executor,
    };
    let learners = specs
        .iter()
        .map(|s| learner::load(s, &set.dist, &opts))
        .collect::<Result<Vec<_>, _>>()?;
    let reference = match reference {
        Some(r) => Some(
            learners
                .iter()
                .find(|l| l.spec == r || l.label == r)
                .map(|l| l.label.clone())
                .ok_or_else(|| anyhow::anyhow!("--ref `{r}` is not one of the learners"))?,
        ),
        None => None,
    };
    let copts = CompareOptions {
        ilwd_prompts: run.ilwd_prompts,
        probes: run.probes,
        seed: run.probe_seed,
        allow_uncertified: run.uncertified,
        progress: show_progress(),
    };
    let c = compare::compare(&learners, &set, &described, &copts)?;
    // Everything is computed; now write (each file atomically), then print.
    if let Some(path) = &run.json {
        write_output(path, &(serde_json::to_string_pretty(&c)? + "\n"))?;
    }
    if let Some(path) = &run.csv {
        write_output(path, &tables::csv(&c))?;
    }
    if let Some(dir) = &run.plot {
        for f in icl::analysis::figures::compare_figures(&c, dir, reference.as_deref())? {
            eprintln!("wrote {}", f.display());
        }
    }
    if run.json.as_deref() != Some(std::path::Path::new("-")) {
        print!("{}", tables::table(&c, reference.as_deref()));
    }
    Ok(())
}

fn cmd_probe(a: ProbeArgs) -> Result<()> {
    let opts = ProbeOptions {
        readouts: Readout::parse_choice(&a.readout)?,
        targets: Target::parse_list(&a.targets)?,
        lambda: a.lambda,
        ks: a.k.as_deref().map(probe::parse_ks).transpose()?,
        steps: a.steps,
        lr: a.lr,
        score_lr: a.score_lr,
        batch: a.batch,
        proj: a.proj,
        mlp_hidden: a.mlp_hidden,
        train: a.train,
        test: a.test,
        seed: a.seed,
    };
    opts.validate()?;
    configure_cpu(a.threads);
    let device = parse_device(&a.device)?;
    let prompt_file = match &a.prompts {
        Some(p) => Some((p.as_path(), PromptSet::load(p).context("--prompts")?)),
        None => None,
    };
    let mut subjects = Vec::new();
    let dirs = a.dirs.iter().map(|d| (d, Role::Model));
    for (dir, role) in dirs.chain(a.control.iter().map(|d| (d, Role::Control))) {
        let choice = match (&prompt_file, &a.dist) {
            (Some((path, set)), _) => probe::PromptChoice::File(path, set),
            (None, Some(spec)) => probe::PromptChoice::Spec(spec),
            (None, None) => probe::PromptChoice::Task,
        };
        let s = probe::load_subject(dir, role, choice, &device)?;
        opts.ks_for(s.dist.n)
            .with_context(|| format!("{}", dir.display()))?;
        subjects.push(s);
    }
    let bar = probe_bar(opts.total_steps() * subjects.len() as u64);
    let mut models = Vec::new();
    for s in &subjects {
        let report = probe::probe_model(s, &opts, &bar)
            .with_context(|| format!("probing {}", s.dir.display()))?;
        if !a.json {
            bar.suspend(|| println!("{}", report.table()));
        }
        models.push(report);
    }
    bar.finish_and_clear();
    if let Some(dir) = &a.plot {
        let files = probe::write_plot(&models, dir)?;
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        eprintln!("figure: {}", names.join(", "));
    }
    if a.json {
        let report = probe::ProbeReport {
            options: opts,
            models,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn cmd_dual(a: DualArgs) -> Result<()> {
    use icl::analysis::dai::dual;
    let heads = a.heads.as_deref().map(dual::parse_heads).transpose()?;
    let spec = a.model_dir.display().to_string();
    let (set, described) = a.source.source(std::slice::from_ref(&spec))?.resolve()?;
    let model = icl::model::Transformer::load(&a.model_dir, &parse_device(&a.device)?, a.dtype)
        .with_context(|| format!("loading {spec}"))?;
    anyhow::ensure!(
        model.config.d == set.d() && 2 * set.n() < model.config.max_len,
        "{spec}: the model reads d = {} and at most {} columns; the prompts have d = {}, n = {}",
        model.config.d,
        model.config.max_len,
        set.d(),
        set.n()
    );
    let info = dual::PromptInfo {
        source: &described,
        distribution: set.dist.spec(),
    };
    let r = dual::analyze(&model, &spec, &set.prompts, &info, heads.as_deref())?;
    if let Some(path) = &a.json {
        write_output(path, &(serde_json::to_string_pretty(&r)? + "\n"))?;
    }
    if let Some(path) = &a.csv {
        write_output(path, &r.csv())?;
    }
    if let Some(dir) = &a.plot {
        for f in r.plot(dir)? {
            eprintln!("wrote {}", f.display());
        }
    }
    if a.json.as_deref() != Some(std::path::Path::new("-")) {
        print!("{}", r.table());
    }
    Ok(())
}

fn cmd_implicit(a: ImplicitArgs) -> Result<()> {
    use icl::analysis::dai::implicit::{self, ImplicitOptions};
    let gd_steps = a
        .gd_steps
        .split(',')
        .map(|s| match s.trim().parse::<usize>() {
            Ok(v) if v >= 1 => Ok(v),
            _ => Err(anyhow::anyhow!(
                "--gd-steps: `{s}` is not a whole number ≥ 1"
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(l) = a.lambda {
        anyhow::ensure!(
            l.is_finite() && l >= 0.0,
            "--lambda must be a finite number ≥ 0, found {l}"
        );
    }
    let (set, described) = a.source.source(&a.learners)?.resolve()?;
    // Models run in f64 on the dense forward: autograd needs the Candle graph.
    let opts = LoadOptions {
        device: parse_device(&a.device)?,
        dtype: Some(DType::F64),
        executor: learner::Executor::Dense,
    };
    let learners = a
        .learners
        .iter()
        .map(|s| learner::load(s, &set.dist, &opts))
        .collect::<Result<Vec<_>, _>>()?;
    for l in &learners {
        l.check_fits(&set.dist)?;
        l.check_ranges(&set.prompts, a.uncertified)?;
    }
    let iopts = ImplicitOptions {
        gd_steps,
        lambda: a.lambda,
        resamples: a.resamples,
        seed: 0,
    };
    let r = implicit::implicit(&learners, &set, &described, &iopts)?;
    if let Some(path) = &a.json {
        write_output(path, &(serde_json::to_string_pretty(&r)? + "\n"))?;
    }
    if let Some(dir) = &a.plot {
        for f in r.plot(dir)? {
            eprintln!("wrote {}", f.display());
        }
    }
    if a.json.as_deref() != Some(std::path::Path::new("-")) {
        print!("{}", r.table());
    }
    Ok(())
}

/// Write a text output atomically (`-`: standard output).
fn write_output(path: &std::path::Path, text: &str) -> Result<()> {
    if path == std::path::Path::new("-") {
        print!("{text}");
        return Ok(());
    }
    icl::tensors::write_atomic(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn show_progress() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

/// The probes' progress bar on stderr; hidden when stderr is not a terminal (or under CI).
fn probe_bar(steps: u64) -> indicatif::ProgressBar {
    icl::progress::bar(
        show_progress(),
        steps,
        "{bar:30} {pos}/{len} steps {msg} [{elapsed_precise}<{eta_precise}]",
    )
}

/// The thread count for the probe's many small tensor operations, set before Candle starts its
/// thread pool (`--threads`, else CANDLE_NUM_THREADS, else 1). Freed memory is kept by the
/// global allocator (mimalloc, above) instead of being returned to the system after every step:
/// with glibc's default trimming, page faults cost more than the arithmetic (100 MLP steps on
/// runs/tiny took 24 s instead of 9 s).
fn configure_cpu(threads: Option<usize>) {
    match threads {
        Some(t) => std::env::set_var("CANDLE_NUM_THREADS", t.max(1).to_string()),
        None if std::env::var_os("CANDLE_NUM_THREADS").is_none() => {
            std::env::set_var("CANDLE_NUM_THREADS", "1")
        }
        None => {}
    }
}
