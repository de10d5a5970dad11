//! `rustynet-control serve --config FILE`: the settings of `serve` in a TOML
//! file (the package installs a commented `/etc/rustynet/control.toml`).
//!
//! Each key is the long flag of `serve` without its dashes, `_` for `-`
//! (`data_dir = "/var/lib/rustynet-control"` is `--data-dir
//! /var/lib/rustynet-control`); flags given on the command line win over
//! the file. The file is turned into flags before parsing, so it accepts
//! exactly what the command line accepts and is checked by the same rules:
//! an unknown key is refused as an unknown flag would be. Every key is
//! documented in docs/configuration.md.
//!
//! The admin commands (`nodes list --config FILE`, ...) take only the keys
//! they share with `serve` from the same file: `data_dir`, and
//! `key_encryption_file` for the commands that read keys; the other keys
//! are `serve`'s and left to it. So one file names the data directory for
//! the server and for the administrator.

use std::ffi::OsString;
use std::path::Path;

/// Why the configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// `--config` without a file name.
    #[error("--config needs a file")]
    MissingPath,
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or a value of an unsupported kind.
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The admin commands that read keys and so take `key_encryption_file`.
const KEY_COMMANDS: [&str; 3] = ["init", "signing-key", "cert"];

/// Replaces `--config FILE` in `args` by the file's settings as flags
/// (after the ones given, which win): all of them for `serve`, the shared
/// ones for admin commands.
pub fn expand(args: Vec<OsString>) -> Result<Vec<OsString>, ConfigFileError> {
    let Some(command) = args.get(1).map(|a| a.to_string_lossy().into_owned()) else {
        return Ok(args);
    };
    let Some(at) = args
        .iter()
        .position(|a| a == "--config" || a.to_string_lossy().starts_with("--config="))
    else {
        return Ok(args);
    };
    let mut args = args;
    let flag = args.remove(at).to_string_lossy().into_owned();
    let path = match flag.strip_prefix("--config=") {
        Some(p) => p.to_owned(),
        None if at < args.len() => args.remove(at).to_string_lossy().into_owned(),
        None => return Err(ConfigFileError::MissingPath),
    };
    let text =
        std::fs::read_to_string(Path::new(&path)).map_err(|source| ConfigFileError::Read {
            path: path.clone(),
            source,
        })?;
    let flags = flags_from_toml(&text).map_err(|message| ConfigFileError::Parse {
        path: path.clone(),
        message,
    })?;
    let given: Vec<String> = args
        .iter()
        .map(|a| {
            a.to_string_lossy()
                .split('=')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let shared = |flag: &str| {
        flag == "--data-dir"
            || (flag == "--key-encryption-file" && KEY_COMMANDS.contains(&command.as_str()))
    };
    let mut extra = Vec::new();
    for (flag, values) in flags {
        if given.contains(&flag) || (command != "serve" && !shared(&flag)) {
            continue;
        }
        for value in values {
            extra.push(OsString::from(&flag));
            if let Some(v) = value {
                extra.push(OsString::from(v));
            }
        }
    }
    args.extend(extra);
    Ok(args)
}

/// A flag and its values (`None` for a bare flag).
pub type Flag = (String, Vec<Option<String>>);

/// The flags a TOML document stands for: `(--flag, [value...])`, a `true`
/// boolean being a bare flag and an array a repeated one (pure: tested).
pub fn flags_from_toml(text: &str) -> Result<Vec<Flag>, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| e.message().to_owned())?;
    let mut out = Vec::new();
    for (key, value) in table {
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!("{key:?} is not a setting name"));
        }
        let flag = format!("--{}", key.replace('_', "-"));
        let scalar = |v: &toml::Value| -> Result<Option<Option<String>>, String> {
            Ok(match v {
                toml::Value::String(s) => Some(Some(s.clone())),
                toml::Value::Integer(i) => Some(Some(i.to_string())),
                toml::Value::Boolean(true) => Some(None),
                toml::Value::Boolean(false) => None,
                other => return Err(format!("{key}: unsupported value {other}")),
            })
        };
        let values = match &value {
            toml::Value::Array(items) => items
                .iter()
                .map(|v| scalar(v).map(|s| s.into_iter().collect::<Vec<_>>()))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .collect(),
            v => scalar(v)?.into_iter().collect(),
        };
        out.push((flag, values));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn file_settings_become_flags_and_the_command_line_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.toml");
        std::fs::write(
            &path,
            "# comment\ndata_dir = \"/var/lib/rustynet-control\"\nlisten = \"0.0.0.0:8443\"\nmap_ttl = \"30m\"\n",
        )
        .unwrap();
        let p = path.to_string_lossy().into_owned();
        let out = expand(os(&[
            "rustynet-control",
            "serve",
            "--config",
            &p,
            "--listen",
            "127.0.0.1:9",
        ]))
        .unwrap();
        assert_eq!(
            out,
            os(&[
                "rustynet-control",
                "serve",
                "--listen",
                "127.0.0.1:9",
                "--data-dir",
                "/var/lib/rustynet-control",
                "--map-ttl",
                "30m"
            ])
        );
        // Admin commands take only the data directory (and, where they
        // read keys, the key-encryption file) from it.
        let other = os(&["rustynet-control", "nodes", "list", "--config", &p]);
        assert_eq!(
            expand(other).unwrap(),
            os(&[
                "rustynet-control",
                "nodes",
                "list",
                "--data-dir",
                "/var/lib/rustynet-control"
            ])
        );
        let other = os(&["rustynet-control", "nodes", "list", "--data-dir", "/d"]);
        assert_eq!(expand(other.clone()).unwrap(), other);
        // A missing file is an error.
        assert!(
            expand(os(&[
                "rustynet-control",
                "serve",
                "--config",
                "/nonexistent"
            ]))
            .is_err()
        );
        assert!(matches!(
            expand(os(&["rustynet-control", "serve", "--config"])),
            Err(ConfigFileError::MissingPath)
        ));
    }

    #[test]
    fn value_kinds() {
        let flags = flags_from_toml("a = 5\nb = true\nc = false\nd = [\"x\", \"y\"]\n").unwrap();
        assert_eq!(
            flags,
            vec![
                ("--a".into(), vec![Some("5".into())]),
                ("--b".into(), vec![None]),
                ("--c".into(), vec![]),
                ("--d".into(), vec![Some("x".into()), Some("y".into())]),
            ]
        );
        assert!(flags_from_toml("x = 1.5\n").is_err());
        assert!(flags_from_toml("\"--evil\" = 1\n").is_err());
        assert!(flags_from_toml("not toml").is_err());
    }
}
