//! `offload-bench`: measures offload on PostgreSQL or SQLite and prints a table.

use clap::Parser;

/// Measures offload's enqueue rate, drain rate and latency.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    bench: offload_bench::BenchArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let json = cli.bench.json;
    let report = offload_bench::run(cli.bench).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
