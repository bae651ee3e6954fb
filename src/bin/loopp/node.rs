//! `loopp-node` (or `loopp node`): the process operators run. Thin: parse
//! the subcommand, run it, print the error, pick the exit code.

use std::process::ExitCode;

use crate::{probe, run};

const USAGE: &str = "\
loopp-node: runs and inspects Local Out-Of-Process Plugins (go-plugin gRPC)

USAGE:
    loopp-node run [--config FILE]
    loopp-node probe [OPTIONS] -- CMD [ARGS...]
    loopp-node --help | --version

COMMANDS:
    run      run the job's plugins (LOOPPs or in-process), supervised, until
             SIGINT or SIGTERM
    probe    launch any go-plugin gRPC plugin (loopp or Go), report what it
             negotiated, its health and RPC latency, then shut it down

Run 'loopp-node COMMAND --help' for a command's options.
";

/// Runs `loopp-node ARGS`.
pub fn main(args: &[String]) -> ExitCode {
    // The node reports plugin life at info; the probe prints its own report.
    let default_level = if args.first().map(String::as_str) == Some("run") {
        "info"
    } else {
        "warn"
    };
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level));
    logger.format_timestamp_micros();
    // The node writes its log from a thread of its own: a stalled stderr
    // never stalls a thread that logs (`node::logwriter`).
    let drain = (args.first().map(String::as_str) == Some("run")).then(|| {
        let (pipe, drain) = loopp::node::logwriter::start(std::io::stderr());
        // SAFETY: isatty only reads the descriptor's state.
        let tty = unsafe { libc::isatty(2) } == 1;
        logger
            .target(env_logger::Target::Pipe(Box::new(pipe)))
            .write_style(if tty {
                env_logger::WriteStyle::Always
            } else {
                env_logger::WriteStyle::Never
            });
        drain
    });
    logger.init();
    let result = match args.first().map(String::as_str) {
        Some("run") => run::main(&args[1..]),
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
    if let Some(drain) = drain {
        drain.wait(std::time::Duration::from_secs(1));
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loopp-node: error: {e}");
            ExitCode::from(2)
        }
    }
}
