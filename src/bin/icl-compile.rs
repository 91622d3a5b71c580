//! `icl-compile PROGRAM.icl [--set NAME=VALUE]… [-o DIR] [--target exact|paper] [--tolerance T]
//! [--dtype f64|f32] [--device cpu|cuda] [--prompts K] [--seed S]`: compile, certify, validate, write the model directory, and print a
//! summary (see `icl::pipeline`).

use anyhow::{bail, Result};
use clap::Parser;
use icl::model::config::DType;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "icl-compile",
    about = "Compile an .icl program to transformer weights (exact or paper target), certify every layer, \
             validate against the interpreter and the solver, and write the model directory."
)]
struct Args {
    /// The program (.icl).
    program: PathBuf,
    /// Override a parameter: NAME=VALUE (repeatable), e.g. --set d=8 --set n=40.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    sets: Vec<String>,
    /// Output directory (default: out/<program stem>).
    #[arg(short = 'o', long = "out")]
    out: Option<PathBuf>,
    /// The construction: exact (0/−∞ attention biases, bilinear MLPs) or paper (the paper's
    /// softmax/GeLU/LayerNorm construction in the trained `paper` block, with certified bounds).
    #[arg(long, value_enum, default_value_t = icl::pipeline::Target::Exact)]
    target: icl::pipeline::Target,
    /// Paper target: fail unless the certified end-to-end error bound is at most this.
    #[arg(long)]
    tolerance: Option<f64>,
    /// Dtype of the written weights.
    #[arg(long, default_value = "f64")]
    dtype: String,
    /// Device for the validation runs: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Number of random validation prompts (0 skips validation).
    #[arg(long, default_value_t = 64)]
    prompts: usize,
    /// Seed of the validation prompts.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    let mut sets = Vec::new();
    for s in &args.sets {
        let Some((k, v)) = s.split_once('=') else {
            bail!("--set {s}: expected NAME=VALUE");
        };
        sets.push((k.trim().to_string(), v.trim().to_string()));
    }
    let dtype: DType = args.dtype.parse()?;
    let out = args.out.clone().unwrap_or_else(|| {
        let stem = args
            .program
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        PathBuf::from("out").join(stem)
    });
    let opts = icl::pipeline::Options {
        target: args.target,
        tolerance: args.tolerance,
        dtype,
        device: args.device.clone(),
        prompts: args.prompts,
        seed: args.seed,
    };
    let outcome = icl::pipeline::run(&args.program, &sets, &out, &opts)?;
    print!("{}", icl::pipeline::summary(&outcome, &out));
    Ok(())
}
