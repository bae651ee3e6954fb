//! `loopp-node`: the process operators run. Thin: parse the subcommand, run
//! it, print the error, pick the exit code.

mod probe;

use std::process::ExitCode;

const USAGE: &str = "\
loopp-node: runs and inspects Local Out-Of-Process Plugins (go-plugin gRPC)

USAGE:
    loopp-node probe [OPTIONS] -- CMD [ARGS...]
    loopp-node --help | --version

COMMANDS:
    probe    launch any go-plugin gRPC plugin (loopp or Go), report what it
             negotiated, its health and RPC latency, then shut it down

Run 'loopp-node probe --help' for the probe's options.
";

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp_micros()
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("probe") => probe::main(&args[1..]),
        Some("--version" | "-V") => {
            println!("loopp-node {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some("--help" | "-h" | "help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(format!(
            "unknown command {other:?}; try 'loopp-node --help'"
        )),
        None => Err("no command given; try 'loopp-node --help'".to_string()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loopp-node: error: {e}");
            ExitCode::from(2)
        }
    }
}
