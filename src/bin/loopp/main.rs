//! `loopp`: every program of loopp in one static binary (a multi-call
//! binary, like busybox). What it runs is picked by the name it is invoked
//! as (`loopp-node`, `loopp-median`, `loopp-devchain`, `loopp-example`: the
//! links `make install` puts beside it), else by its first argument. A Go
//! Chainlink node's `CL_<NAME>_CMD` takes a command name, not arguments:
//! the links are what it runs.

mod node;
mod plugins;
mod probe;
mod run;

use std::path::Path;
use std::process::ExitCode;

const USAGE: &str = "\
loopp: runs and serves Local Out-Of-Process Plugins (go-plugin gRPC), in one
binary

USAGE:
    loopp node run [--config FILE]           the node (same as: loopp-node run)
    loopp probe [OPTIONS] -- CMD [ARGS...]   check a plugin (loopp-node probe)
    loopp median | devchain | example        a plugin, as a host starts it
    loopp --help | --version

Invoked as loopp-node, loopp-median, loopp-devchain or loopp-example (links
to this binary, which 'make install' puts beside it) it is that program:
CL_MEDIAN_CMD=loopp-median runs the median plugin as a LOOPP, from loopp's
node or a Go Chainlink node.

Run 'loopp node --help' or 'loopp probe --help' for their options.
";

/// A program of this binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Program {
    Node,
    Median,
    Devchain,
    Example,
}

impl Program {
    /// The program a link name stands for.
    fn by_link(name: &str) -> Option<Program> {
        match name {
            "loopp-node" => Some(Program::Node),
            "loopp-median" => Some(Program::Median),
            "loopp-devchain" => Some(Program::Devchain),
            "loopp-example" => Some(Program::Example),
            _ => None,
        }
    }

    /// The program a subcommand of `loopp` stands for.
    fn by_subcommand(name: &str) -> Option<Program> {
        match name {
            "node" => Some(Program::Node),
            "median" => Some(Program::Median),
            "devchain" => Some(Program::Devchain),
            "example" => Some(Program::Example),
            _ => None,
        }
    }

    fn run(self, args: &[String]) -> ExitCode {
        match self {
            Program::Node => node::main(args),
            // A host passes a plugin no arguments; go-plugin's contract is
            // the environment and stdout.
            Program::Median => plugins::median(),
            Program::Devchain => plugins::devchain(),
            Program::Example => plugins::example(),
        }
    }
}

fn main() -> ExitCode {
    // Before any thread starts (see the module).
    loopp::malloc::one_arena();
    let mut argv = std::env::args();
    let argv0 = argv.next().unwrap_or_default();
    let args: Vec<String> = argv.collect();
    let invoked_as = Path::new(&argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    if let Some(program) = Program::by_link(invoked_as) {
        return program.run(&args);
    }
    match args.first().map(String::as_str) {
        Some(sub) if Program::by_subcommand(sub).is_some() => {
            Program::by_subcommand(sub).unwrap().run(&args[1..])
        }
        // The probe is an operator's first command: one word shorter.
        Some("probe" | "run") => node::main(&args),
        Some("--version" | "-V") => {
            println!("loopp {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help" | "-h" | "help") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("loopp: error: unknown command {other:?}; try 'loopp --help'");
            ExitCode::from(2)
        }
        None => {
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Program;

    #[test]
    fn links_and_subcommands_name_the_same_programs() {
        for (link, sub, program) in [
            ("loopp-node", "node", Program::Node),
            ("loopp-median", "median", Program::Median),
            ("loopp-devchain", "devchain", Program::Devchain),
            ("loopp-example", "example", Program::Example),
        ] {
            assert_eq!(Program::by_link(link), Some(program));
            assert_eq!(Program::by_subcommand(sub), Some(program));
        }
        assert_eq!(Program::by_link("loopp"), None);
        assert_eq!(Program::by_link("loopp-test-plugin"), None);
        assert_eq!(Program::by_subcommand("loopp-median"), None);
    }
}
