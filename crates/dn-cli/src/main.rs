//! `dn`: submit and manage fine-tuning jobs, push datasets and capabilities, and run the server and workers.
//!
//! Connections resolve as flags > `DN_*` > `DREADNODE_*` > profile; daemon configuration as TOML file < env <
//! flags. `serve` runs the API and `supervise`: its workers as child processes `dn worker --supervised` in
//! their own process group, woken by a byte on stdin, stopped by its end, restarted with a 1-60 s backoff
//! after a death whose jobs are requeued at once with the cause. Besides `worker`, `keys` and the
//! train/dataset/capability commands: `export` (`dn model merge`, `dn train export`), `sample` (`dn train
//! sample`: the checkpoint through the API, the base model, generation), `local` (the embedded API on
//! loopback, shared by `sft --local` and `sample --local`), and `model` (`pull` with a progress bar, or a
//! line per file and every few seconds without a terminal; `list`; `import`).

mod cli;
mod commands;
mod config;
mod connection;
mod daemon_args;
mod output;
mod previewer;

use clap::Parser;
use dn_types::ArtifactKind;

use cli::{Cli, Command};
use connection::Connection;

fn init_logging(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(output::stderr_is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve(args) => {
            let logging = commands::daemon::Logging {
                filter: cli.log.clone(),
                json: cli.log_json,
            };
            commands::daemon::serve(args, logging).await.map(|_| 0)
        }
        Command::Worker(args) => commands::daemon::worker(args).await.map(|_| 0),
        Command::Doctor(args) => commands::doctor::run(&args, cli.json),
        Command::PrepareData {
            request,
            result,
            memory_limit,
        } => match dn_worker::run_child(&request, &result, memory_limit) {
            Ok(()) => Ok(0),
            Err(message) => {
                eprintln!("error: {message}");
                Ok(2)
            }
        },
        Command::Keys(command) => commands::daemon::keys(command, cli.json).await.map(|_| 0),
        Command::Train(cli::TrainCommand::Sft(args)) if args.local => {
            commands::local::sft_local(*args, cli.json).await
        }
        Command::Train(cli::TrainCommand::Sample(args)) if args.local => {
            let data_dir = args
                .data_dir
                .clone()
                .unwrap_or_else(config::default_data_dir);
            let local = commands::local::LocalServer::start(data_dir).await?;
            let result = commands::sample::sample(*args, &local.conn, cli.json).await;
            local.close(None).await;
            result
        }
        Command::Train(command) => {
            let conn = Connection::resolve(&cli.connection)?;
            commands::train::run(command, &conn, cli.json).await
        }
        Command::Data(cli::DataCommand::Preview(args)) => {
            commands::data::preview(*args, &cli.connection, cli.json).await
        }
        Command::Model(command) => commands::model::run(command, cli.json).await,
        Command::Dataset(command) => {
            let conn = Connection::resolve(&cli.connection)?;
            commands::registry::run(ArtifactKind::Dataset, command, &conn, cli.json).await
        }
        Command::Capability(command) => {
            let conn = Connection::resolve(&cli.connection)?;
            commands::registry::run(ArtifactKind::Capability, command, &conn, cli.json).await
        }
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let daemon = matches!(cli.command, Command::Serve(_) | Command::Worker(_));
    init_logging(if daemon { &cli.log } else { "warn" }, cli.log_json);
    let code = match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            1
        }
    };
    std::process::exit(code);
}
