//! The `origin` binary (this branch: offline evaluation commands only).

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "origin",
    version,
    about = "Recommendation origin: models and offline evaluation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model and score its top-K recommendations on held-out interactions.
    Eval(origin::eval::cli::EvalArgs),
    /// Write a reproducible per-user train/validation/test split in `lists` format.
    Split(origin::eval::cli::SplitArgs),
    /// Write synthetic MovieLens-shaped interactions (for benchmarks and demos).
    Synth(origin::eval::cli::SynthArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Eval(a) => origin::eval::cli::run(a),
        Command::Split(a) => origin::eval::cli::run_split(a),
        Command::Synth(a) => origin::eval::cli::run_synth(a),
    }
}
