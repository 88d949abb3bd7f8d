//! Config files as command-line arguments.
//!
//! `relay --config relay.toml` and `agent run --config agent.toml` read a flat TOML table whose
//! keys are the long flag names. Turning the file into arguments placed *before* the real ones
//! gives one source of truth for names, defaults, validation and help (clap), and makes flags
//! override the file.

/// Why a config file was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigFileError {
    Parse(String),
    /// Keys must name flags: nested tables and arrays of tables have no flag to map to.
    Unsupported {
        key: String,
    },
}

impl std::fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigFileError::Parse(e) => write!(f, "invalid TOML: {e}"),
            ConfigFileError::Unsupported { key } => {
                write!(f, "key {key:?}: only strings, numbers, booleans and arrays of them are allowed")
            }
        }
    }
}

impl std::error::Error for ConfigFileError {}

/// Converts `key = value` lines to `--key value` arguments (`true` becomes a bare `--key`,
/// `false` is left out, arrays repeat the flag).
pub fn to_args(text: &str) -> Result<Vec<String>, ConfigFileError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigFileError::Parse(e.to_string()))?;
    let mut args = Vec::new();
    for (key, value) in table {
        let values = match value {
            toml::Value::Array(items) => items,
            other => vec![other],
        };
        for value in values {
            let flag = format!("--{key}");
            match value {
                toml::Value::Boolean(true) => args.push(flag),
                toml::Value::Boolean(false) => {}
                toml::Value::String(s) => args.extend([flag, s]),
                toml::Value::Integer(i) => args.extend([flag, i.to_string()]),
                toml::Value::Float(x) => args.extend([flag, x.to_string()]),
                _ => return Err(ConfigFileError::Unsupported { key }),
            }
        }
    }
    Ok(args)
}

/// Splices the file named by `--config FILE` (or `--config=FILE`) into `args`, right after the
/// program name (and after `subcommand`, when given), so explicit flags win. `read` loads a file.
pub fn expand(
    args: Vec<String>,
    subcommand: Option<&str>,
    read: impl Fn(&str) -> Result<String, String>,
) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(args.len());
    let mut file_args = Vec::new();
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        let path = if arg == "--config" {
            Some(iter.next().ok_or("--config needs a file name")?)
        } else {
            arg.strip_prefix("--config=").map(str::to_owned)
        };
        match path {
            Some(path) => {
                let text = read(&path).map_err(|e| format!("cannot read config file {path}: {e}"))?;
                file_args = to_args(&text).map_err(|e| format!("config file {path}: {e}"))?;
            }
            None => out.push(arg),
        }
    }
    let insert_at = match subcommand {
        Some(sub) => out.iter().position(|a| a == sub).map_or(out.len().min(1), |i| i + 1),
        None => out.len().min(1),
    };
    out.splice(insert_at..insert_at, file_args);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn maps_values_to_flags() {
        let args = to_args("listen = \"127.0.0.1:9\"\nfps = 30\nverbose = true\nquiet = false\nrole = [\"a\", \"b\"]")
            .unwrap();
        assert_eq!(
            args,
            strings(&["--fps", "30", "--listen", "127.0.0.1:9", "--role", "a", "--role", "b", "--verbose"])
        );
    }

    #[test]
    fn refuses_tables_and_bad_toml() {
        assert!(matches!(to_args("[section]\nx = 1"), Err(ConfigFileError::Unsupported { .. })));
        assert!(matches!(to_args("x = "), Err(ConfigFileError::Parse(_))));
    }

    #[test]
    fn file_goes_before_flags_so_flags_win() {
        let read = |_: &str| Ok("listen = \"127.0.0.1:1\"".to_owned());
        let out = expand(strings(&["relay", "--config", "r.toml", "--listen", "127.0.0.1:2"]), None, read).unwrap();
        assert_eq!(out, strings(&["relay", "--listen", "127.0.0.1:1", "--listen", "127.0.0.1:2"]));
        let out = expand(strings(&["agent", "run", "--config=a.toml"]), Some("run"), read).unwrap();
        assert_eq!(out, strings(&["agent", "run", "--listen", "127.0.0.1:1"]));
    }

    #[test]
    fn unreadable_file_is_an_error() {
        let err =
            expand(strings(&["relay", "--config", "missing.toml"]), None, |_| Err("not found".into())).unwrap_err();
        assert!(err.contains("missing.toml") && err.contains("not found"), "{err}");
        assert!(expand(strings(&["relay", "--config"]), None, |_| Ok(String::new())).is_err());
    }
}
