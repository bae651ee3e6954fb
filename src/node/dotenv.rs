//! Dotenv files (`CL_<NAME>_ENV`): `KEY=VALUE` lines added to a plugin's
//! environment.
//!
//! Grammar: blank lines and `#` comments are skipped; an optional `export `
//! prefix; KEY is `[A-Za-z_][A-Za-z0-9_]*`; VALUE is bare (trailing spaces and
//! ` #comment` removed), 'single-quoted' (literal) or "double-quoted" (with
//! `\n`, `\t`, `\"`, `\\` escapes). Anything else is an error naming the file
//! and the line.

use std::fmt;
use std::path::{Path, PathBuf};

/// A malformed dotenv file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotenvError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line number (0: the file itself could not be read).
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for DotenvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.problem)
        } else {
            write!(
                f,
                "{}:{}: {}; expected KEY=VALUE (KEY of letters, digits and _)",
                self.path.display(),
                self.line,
                self.problem
            )
        }
    }
}

impl std::error::Error for DotenvError {}

/// Reads and parses a dotenv file.
pub fn read(path: &Path) -> Result<Vec<(String, String)>, DotenvError> {
    let text = std::fs::read_to_string(path).map_err(|e| DotenvError {
        path: path.to_path_buf(),
        line: 0,
        problem: format!("cannot read: {e}"),
    })?;
    parse(&text).map_err(|(line, problem)| DotenvError {
        path: path.to_path_buf(),
        line,
        problem,
    })
}

/// Parses dotenv text; errors carry the 1-based line number.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let Some((key, rest)) = line.split_once('=') else {
            return Err((n, format!("{raw:?} has no '='")));
        };
        let key = key.trim_end();
        let key_ok = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !key_ok {
            return Err((n, format!("{key:?} is not a variable name")));
        }
        let value = parse_value(rest.trim_start()).map_err(|p| (n, p))?;
        out.push((key.to_string(), value));
    }
    Ok(out)
}

fn parse_value(v: &str) -> Result<String, String> {
    if let Some(rest) = v.strip_prefix('\'') {
        let end = rest.find('\'').ok_or("unterminated single quote")?;
        check_tail(&rest[end + 1..])?;
        return Ok(rest[..end].to_string());
    }
    if let Some(rest) = v.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    check_tail(&rest[i + 1..])?;
                    return Ok(out);
                }
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some(other) => return Err(format!("unknown escape \\{other}")),
                    None => break,
                },
                c => out.push(c),
            }
        }
        return Err("unterminated double quote".into());
    }
    let bare = match v.find(" #") {
        Some(i) => &v[..i],
        None => v,
    };
    Ok(bare.trim_end().to_string())
}

fn check_tail(tail: &str) -> Result<(), String> {
    let t = tail.trim();
    if t.is_empty() || t.starts_with('#') {
        Ok(())
    } else {
        Err(format!("unexpected {t:?} after the quoted value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let text = "# comment\n\nA=1\nexport B = two words # note\nC='lit $x # not a comment'\nD=\"x\\ny \\\"q\\\"\"\nE=\n";
        assert_eq!(
            parse(text).unwrap(),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "lit $x # not a comment".into()),
                ("D".into(), "x\ny \"q\"".into()),
                ("E".into(), String::new()),
            ]
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse("A=1\nnonsense\n").unwrap_err().0, 2);
        assert!(parse("1A=x").unwrap_err().1.contains("not a variable name"));
        assert!(parse("A=\"open").unwrap_err().1.contains("unterminated"));
        assert!(parse("A='x' y")
            .unwrap_err()
            .1
            .contains("after the quoted value"));
        let e = DotenvError {
            path: "/etc/x.env".into(),
            line: 3,
            problem: "\"oops\" has no '='".into(),
        };
        assert!(e
            .to_string()
            .starts_with("/etc/x.env:3: \"oops\" has no '='"));
    }
}
