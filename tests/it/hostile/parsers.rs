//! The text a node reads from plugins and operators: the go-plugin handshake
//! line, plugin log lines, `CL_<NAME>_ENV` dotenv files and job files. Any
//! bytes give a value or an error message, never a panic.

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestCaseResult};

use loopp::goplugin::handshake::Handshake;
use loopp::goplugin::logline::{BoundedLines, Line, Parser};
use loopp::node::config::{NodeConfig, DEFAULT_JOB};
use loopp::node::dotenv;

use super::{check, hostile, text, PARSER_CASES};
use crate::util::Sandbox;

fn corpus(items: &[&str]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.as_bytes().to_vec()).collect()
}

#[test]
fn hostile_handshake_lines_parse_or_say_why() {
    let valid = corpus(&[
        "1|1|unix|/tmp/loopp-abc/plugin.sock|grpc|\n",
        "1|5|tcp|127.0.0.1:10001|grpc|MIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3DQEBCwUAMBExDzANBgNVBAMMBnVu|true",
        "1|0|tcp|[::1]:25000|grpc",
        "1|2|unix|/run/x.sock|netrpc|\r\n",
    ]);
    check("handshake line", PARSER_CASES, hostile(valid), |bytes| {
        let line = text(&bytes);
        match Handshake::parse(&line) {
            // What a plugin printed is what the host understood.
            Ok(h) => prop_assert_eq!(Handshake::parse(&h.to_string()), Ok(h.clone())),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        Ok(())
    });
}

#[test]
fn hostile_log_lines_are_bounded_and_parsed() {
    let valid = corpus(&[
        r#"{"@level":"error","@message":"boom","@module":"median","@timestamp":"2024-01-01T00:00:00Z","n":1,"nested":{"a":[1,2]}}"#,
        "2024-01-01T00:00:00.000Z [WARN]  median: slow round: took=2s\n[DEBUG] x\r\n",
        "panic: runtime error: index out of range [3] with length 3\n\ngoroutine 1 [running]:\nmain.main()\n\t/x.go:5 +0x1d\n",
        "thread 'grpc-0' panicked at src/x.rs:1:1:\nboom\nnote: run with `RUST_BACKTRACE=1`\n",
        "fatal error: all goroutines are asleep - deadlock!\n{\"@level\":7}\n{}\n[]\n",
    ]);
    let lines = (hostile(valid), 1..300usize);
    check("log lines", PARSER_CASES, lines, |(bytes, max)| {
        let mut reader = BoundedLines::new(std::io::Cursor::new(&bytes), max);
        let mut parser = Parser::new();
        let mut seen = 0usize;
        while let Some(line) = reader
            .next_line()
            .map_err(|e| TestCaseError::fail(format!("read: {e}")))?
        {
            seen += 1;
            prop_assert!(line.bytes.len() <= max, "a line over the limit");
            prop_assert!(!line.bytes.contains(&b'\n'));
            let rec = parser.parse(&line);
            let _ = rec.display_text();
            if line.dropped > 0 {
                prop_assert!(rec.fields.iter().any(|(k, _)| k == "truncated_bytes"));
            }
            prop_assert!(seen <= bytes.len(), "more lines than bytes");
        }
        let newlines = bytes.iter().filter(|b| **b == b'\n').count();
        let last = usize::from(!bytes.is_empty() && !bytes.ends_with(b"\n"));
        prop_assert_eq!(seen, newlines + last);
        Ok(())
    });
    // One line, as the host's reader hands it over, straight to the parser.
    check(
        "log line",
        PARSER_CASES,
        (prop::collection::vec(any::<u8>(), 0..512), any::<usize>()),
        |(bytes, dropped)| {
            let rec = Parser::new().parse(&Line { bytes, dropped });
            let _ = rec.display_text();
            Ok(())
        },
    );
}

const ENV_FILE: &str = "# the plugin's environment\nA=1\nexport B = two words # note\nC='lit $x # not a comment'\nD=\"x\\ny \\\"q\\\"\"\nE=\n_F9=\"\\t\\\\\"\n";

#[test]
fn hostile_dotenv_files_parse_or_name_the_line() {
    let sandbox = Sandbox::new("hostile-dotenv");
    let path = sandbox.dir.join("plugin.env");
    check(
        "dotenv file",
        PARSER_CASES,
        hostile(corpus(&[ENV_FILE])),
        |bytes| {
            let lines = text(&bytes).lines().count();
            match dotenv::parse(&text(&bytes)) {
                Ok(vars) => {
                    for (k, _) in &vars {
                        prop_assert!(
                            !k.is_empty()
                                && !k.starts_with(|c: char| c.is_ascii_digit())
                                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                            "not a variable name: {:?}",
                            k
                        );
                    }
                }
                Err((line, problem)) => {
                    prop_assert!((1..=lines).contains(&line), "line {} of {}", line, lines);
                    prop_assert!(!problem.is_empty());
                }
            }
            // The file itself, bytes as they are (not UTF-8 included).
            std::fs::write(&path, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            if let Err(e) = dotenv::read(&path) {
                prop_assert!(e.to_string().starts_with(&path.display().to_string()));
            }
            Ok(())
        },
    );
    // Values written the way the format quotes them come back as they were.
    let pairs = prop::collection::vec(("[A-Za-z_][A-Za-z0-9_]{0,12}", any::<String>()), 0..8);
    check("dotenv round trip", PARSER_CASES, pairs, |pairs| {
        let mut file = String::new();
        for (k, v) in &pairs {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
                .replace('\t', "\\t")
                .replace('\r', "");
            file.push_str(&format!("{k}=\"{v}\"\n"));
        }
        let expected: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.clone(), v.replace('\r', "")))
            .collect();
        prop_assert_eq!(dotenv::parse(&file), Ok(expected));
        Ok(())
    });
}

/// A job that uses every section, for mutations to start from.
const FULL_JOB: &str = r#"{
  "plugins": [
    {"name": "devchain", "kind": "relayer", "limits": {"address_space_mb": 4096, "open_files": 256},
     "sha256": "0000000000000000000000000000000000000000000000000000000000000000"},
    {"name": "median", "kind": "median"},
    {"name": "ex", "kind": "example"}
  ],
  "supervision": {"start_timeout": "10s", "rpc_timeout": "2s", "health_interval": "1s",
    "health_timeout": "500ms", "health_failures": 3, "backoff_initial": "100ms",
    "backoff_max": "30s", "stable_after": "1m", "shutdown_grace": "5s"},
  "http": {"listen": "127.0.0.1:0"},
  "data_dir": "data",
  "feeds": [
    {"name": "eth-usd", "relay": "devchain", "median": "median",
     "source": {"type": "static", "value": 42},
     "juels": {"type": "randomwalk", "seed": 7, "start": 1, "step_ppm": 10},
     "gas_price": {"type": "static", "value": 1},
     "oracles": 4, "f": 1, "interval": "1s", "alpha_report_ppb": 1000, "alpha_accept_ppb": 10,
     "alpha_report_infinite": false, "delta_c": "10s", "min": "-100", "max": "1000000",
     "max_durations": {"query": "1s", "observation": "1s", "report": "1s",
       "should_accept": "1s", "should_transmit": "1s"}}
  ]
}"#;

/// Every path to a value in `v` (object keys and array indexes).
fn paths(v: &serde_json::Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(at.clone());
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                at.push(k.clone());
                paths(x, at, out);
                at.pop();
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                at.push(i.to_string());
                paths(x, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn at_path<'a>(
    mut v: &'a mut serde_json::Value,
    path: &[String],
) -> Option<&'a mut serde_json::Value> {
    for k in path {
        v = match v {
            serde_json::Value::Object(m) => m.get_mut(k)?,
            serde_json::Value::Array(a) => a.get_mut(k.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// Any JSON value, with strings and numbers that job files use wrongly.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            Just("".to_string()),
            Just("0s".to_string()),
            Just("-1s".to_string()),
            Just("99999999999h".to_string()),
            Just("1.5ms".to_string()),
            Just("static".to_string()),
            Just("randomwalk".to_string()),
            Just("http".to_string()),
            Just("devchain".to_string()),
            Just("median".to_string()),
            Just("relayer".to_string()),
            Just("off".to_string()),
            Just("[::1]:0".to_string()),
            Just("170141183460469231731687303715884105728".to_string()),
            any::<String>(),
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("type".to_string()),
                        Just("value".to_string()),
                        Just("name".to_string()),
                        Just("kind".to_string()),
                        any::<String>()
                    ],
                    inner
                ),
                0..4
            )
            .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    })
}

#[test]
fn hostile_job_files_resolve_or_list_problems() {
    let sandbox = Sandbox::new("hostile-job");
    let envfile = sandbox.dir.join("devchain.env");
    std::fs::write(&envfile, ENV_FILE).unwrap();
    let envfile = envfile.display().to_string();
    let env = move |k: &str| match k {
        "PATH" => Some("/usr/bin:/bin".to_string()),
        "CL_DEVCHAIN_CMD" => Some("true".to_string()),
        "CL_DEVCHAIN_ENV" => Some(envfile.clone()),
        "CL_EX_CMD" => Some("/nonexistent/loopp-example".to_string()),
        "CL_MIN_OCR2_MAX_DURATION_QUERY" => Some("50ms".to_string()),
        _ => None,
    };
    let resolve = |text: &str| -> TestCaseResult {
        match NodeConfig::from_json("job", text, &env) {
            Ok(c) => prop_assert!(!c.plugins.is_empty() || c.feeds.is_empty()),
            Err(e) => {
                prop_assert!(!e.problems.is_empty(), "an error without a problem");
                prop_assert!(!e.to_string().is_empty());
            }
        }
        Ok(())
    };
    // The texts themselves, random and mutated.
    check(
        "job file text",
        PARSER_CASES,
        hostile(corpus(&[DEFAULT_JOB, FULL_JOB])),
        |bytes| resolve(&text(&bytes)),
    );
    // Valid JSON with one value anywhere replaced: reaches the resolver.
    let jobs: Vec<serde_json::Value> = [DEFAULT_JOB, FULL_JOB]
        .iter()
        .map(|j| serde_json::from_str(j).unwrap())
        .collect();
    let all: Vec<Vec<Vec<String>>> = jobs
        .iter()
        .map(|j| {
            let mut out = Vec::new();
            paths(j, &mut Vec::new(), &mut out);
            out
        })
        .collect();
    let edits = (
        0..jobs.len(),
        prop::collection::vec((any::<usize>(), json_value()), 1..4),
    );
    check("job file values", PARSER_CASES, edits, |(j, edits)| {
        let mut job = jobs[j].clone();
        for (p, value) in edits {
            // Paths of the original; one may be gone after an earlier edit.
            let path = &all[j][p % all[j].len()];
            if let Some(slot) = at_path(&mut job, path) {
                *slot = value;
            }
        }
        resolve(&job.to_string())
    });
}
