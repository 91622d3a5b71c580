//! `icl-compile PROGRAM.icl [--set NAME=VALUE]… [-o DIR] [--dtype f64|f32] [--device cpu|cuda]
//! [--prompts K] [--seed S]`: compile, certify, validate, write the model directory, and print a
//! summary (see `icl::pipeline`).

use anyhow::{bail, Result};
use clap::Parser;
use icl::model::config::DType;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "icl-compile",
    about = "Compile an .icl program to transformer weights (exact target), certify every layer, \
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
        dtype,
        device: args.device.clone(),
        prompts: args.prompts,
        seed: args.seed,
    };
    let outcome = icl::pipeline::run(&args.program, &sets, &out, &opts)?;
    print!("{}", icl::pipeline::summary(&outcome, &out));
    Ok(())
}
