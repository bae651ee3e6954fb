//! The plugin's logger: hclog-style JSON lines on the process's original stderr,
//! through the `log` facade, so a Go or loopp host relays them with their level
//! and fields.
//!
//! A line: `{"@level":"info","@message":"...","@module":"target","@timestamp":"2026-01-02T03:04:05.123456Z", ...fields}`
//! with key-value pairs from `log`'s `kv` syntax (`info!(round = 3; "done")`) as
//! extra keys. The level comes from `LOOPP_LOG` (trace|debug|info|warn|error,
//! default info).

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct JsonLogger {
    out: Mutex<File>,
    level: LevelFilter,
}

/// The level from `LOOPP_LOG`, or Info; an unknown value is reported once.
fn level_from_env() -> LevelFilter {
    match std::env::var("LOOPP_LOG") {
        Ok(v) if !v.is_empty() => v.parse().unwrap_or_else(|_| {
            let _ = writeln!(
                std::io::stderr(),
                "LOOPP_LOG={v:?} is not a level (trace, debug, info, warn, error); using info"
            );
            LevelFilter::Info
        }),
        _ => LevelFilter::Info,
    }
}

/// Installs the JSON logger writing to `out`. Does nothing if the plugin
/// already installed a logger of its own.
pub fn init(out: File) {
    let level = level_from_env();
    let logger = JsonLogger {
        out: Mutex::new(out),
        level,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}

/// hclog's level names.
fn level_name(l: Level) -> &'static str {
    match l {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

/// RFC 3339 UTC with microseconds, as hclog writes it.
pub fn timestamp_now() -> String {
    let now = jiff::Timestamp::now();
    now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl<'kvs> log::kv::VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        let v = if let Some(b) = value.to_bool() {
            serde_json::Value::Bool(b)
        } else if let Some(i) = value.to_i64() {
            serde_json::Value::from(i)
        } else if let Some(u) = value.to_u64() {
            serde_json::Value::from(u)
        } else if let Some(f) = value.to_f64() {
            serde_json::Value::from(f)
        } else {
            serde_json::Value::String(value.to_string())
        };
        self.0.insert(key.as_str().to_string(), v);
        Ok(())
    }
}

/// One record as a JSON line (with the newline).
pub fn format_line(record: &Record<'_>) -> String {
    let mut map = serde_json::Map::new();
    let _ = record.key_values().visit(&mut Fields(&mut map));
    map.insert("@level".into(), level_name(record.level()).into());
    map.insert("@message".into(), record.args().to_string().into());
    map.insert("@module".into(), record.target().into());
    map.insert("@timestamp".into(), timestamp_now().into());
    let mut line = serde_json::Value::Object(map).to_string();
    line.push('\n');
    line
}

impl Log for JsonLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(record);
        if let Ok(mut out) = self.out.lock() {
            // One write per line, so lines from threads never interleave.
            let _ = out.write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_hclog_json_with_fields() {
        let kvs: &[(&str, i64)] = &[("round", 3)];
        let line = format_line(
            &Record::builder()
                .level(Level::Warn)
                .target("median")
                .args(format_args!("late by {}ms", 5))
                .key_values(&kvs)
                .build(),
        );
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["@level"], "warn");
        assert_eq!(v["@message"], "late by 5ms");
        assert_eq!(v["@module"], "median");
        assert_eq!(v["round"], 3);
        let ts = v["@timestamp"].as_str().unwrap();
        // 2026-11-25T14:22:49.123456Z: microseconds, UTC.
        assert_eq!(ts.len(), 27, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
        // And the host side parses it back.
        let rec = crate::goplugin::logline::Parser::new().parse(&crate::goplugin::logline::Line {
            bytes: line.trim_end().as_bytes().to_vec(),
            dropped: 0,
        });
        assert_eq!(rec.level, Level::Warn);
        assert_eq!(rec.message, "late by 5ms");
    }
}
