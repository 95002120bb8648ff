//! `meethook.toml`: a key for every long flag of `listen`, `dev` and `relay`.
//!
//! The file's values become the flags' defaults before clap parses the command line, so the
//! order of precedence is clap's own (flags > environment > file > built-in defaults) and a
//! flag added to any of these commands has its key without more code. Top-level keys apply to
//! every command that has the flag; `[listen]`, `[dev]` and `[relay]` tables override them
//! for one command. `[[route]]` tables are the only structured key (see [`RouteSpec`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::error::ErrorKind;
use clap::Command;
use meethook_daemon::route::UNROUTED;
use meethook_daemon::{Filter, Order, Route};
use serde::{Deserialize, Serialize};

/// The commands whose flags have keys.
pub const COMMANDS: &[&str] = &["listen", "dev", "relay"];
/// Long flags that are not settings.
const NOT_KEYS: &[&str] = &["help", "version", "config"];
/// The file looked for in the working directory and the user config dir.
pub const FILE_NAME: &str = "meethook.toml";

/// One `[[route]]`: which events go where, with their own delivery settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// A name for the live lines and `events list` (default: `route-N`, from 1).
    pub name: Option<String>,
    /// Event types (`bot.*` globs); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// Sub-path prefix the webhook came in on (`/calendar`); none: any.
    pub path: Option<String>,
    /// Bot ids or their first characters; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bot: Vec<String>,
    /// The handler of this route.
    pub forward_to: String,
    /// Per-request timeout (default: `--timeout`).
    pub timeout: Option<String>,
    /// Attempts before giving up (default: `--max-attempts`).
    pub max_attempts: Option<u32>,
    /// `channel`, `bot` or `event-key=PATH` (default: `--order`).
    pub order: Option<String>,
    /// Most sends at once under a keyed order (default: `--parallel`).
    pub parallel: Option<u16>,
}

/// A loaded `meethook.toml`.
#[derive(Debug, Default)]
pub struct ConfigFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Keys for every command.
    top: toml::Table,
    /// `[listen]`, `[dev]`, `[relay]`.
    sections: BTreeMap<String, toml::Table>,
    /// `[[route]]` tables, in order.
    pub routes: Vec<RouteSpec>,
}

/// `--config PATH` (or `--config=PATH`) from the raw arguments, else `MEETHOOK_CONFIG`.
fn explicit(argv: &[OsString]) -> Option<PathBuf> {
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("MEETHOOK_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The config file in use: `--config PATH` (which must exist), else `./meethook.toml`,
/// else `meethook/meethook.toml` in the user config dir; `None` without one.
pub fn locate(argv: &[OsString]) -> Result<Option<PathBuf>, String> {
    if let Some(p) = explicit(argv) {
        if !p.is_file() {
            return Err(format!(
                "config file {} does not exist: fix --config (or MEETHOOK_CONFIG)",
                p.display()
            ));
        }
        return Ok(Some(p));
    }
    let here = PathBuf::from(FILE_NAME);
    if here.is_file() {
        return Ok(Some(here));
    }
    Ok(dirs::config_dir()
        .map(|d| d.join("meethook").join(FILE_NAME))
        .filter(|p| p.is_file()))
}

/// Reads and checks the config file in use, if any.
pub fn load(argv: &[OsString]) -> Result<Option<ConfigFile>, String> {
    let Some(path) = locate(argv)? else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    parse(&path, &text).map(Some)
}

/// Parses `text` (read from `path`) into its keys, sections and routes.
pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, String> {
    let shown = path.display();
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{shown}: not valid TOML: {e}"))?;
    let mut file = ConfigFile {
        path: path.to_path_buf(),
        ..ConfigFile::default()
    };
    for (key, value) in table {
        match (key.as_str(), value) {
            ("route", toml::Value::Array(routes)) => {
                for (i, r) in routes.into_iter().enumerate() {
                    let r: RouteSpec = r
                        .try_into()
                        .map_err(|e| format!("{shown}: [[route]] number {}: {e}", i + 1))?;
                    file.routes.push(r);
                }
            }
            ("route", _) => {
                return Err(format!(
                    "{shown}: `route` must be [[route]] tables (see docs/operations.md)"
                ))
            }
            (cmd, toml::Value::Table(t)) if COMMANDS.contains(&cmd) => {
                file.sections.insert(key, t);
            }
            (_, value) => {
                file.top.insert(key, value);
            }
        }
    }
    Ok(file)
}

/// A TOML value as the strings a flag would be given.
fn as_args(key: &str, v: &toml::Value) -> Result<Vec<String>, String> {
    match v {
        toml::Value::String(s) => Ok(vec![s.clone()]),
        toml::Value::Integer(i) => Ok(vec![i.to_string()]),
        toml::Value::Float(f) => Ok(vec![f.to_string()]),
        toml::Value::Boolean(b) => Ok(vec![b.to_string()]),
        toml::Value::Datetime(d) => Ok(vec![d.to_string()]),
        toml::Value::Array(items) => items
            .iter()
            .map(|i| match i {
                toml::Value::Array(_) | toml::Value::Table(_) => {
                    Err(format!("`{key}`: a list of plain values is expected"))
                }
                _ => as_args(key, i).map(|mut v| v.remove(0)),
            })
            .collect(),
        toml::Value::Table(_) => Err(format!("`{key}` takes a value, not a table")),
    }
}

/// The settings keys of `cmd`: its long flags, `-` written `_`.
pub fn keys(cmd: &Command) -> impl Iterator<Item = (String, &clap::Arg)> {
    cmd.get_arguments().filter_map(|a| {
        let long = a.get_long()?;
        (!NOT_KEYS.contains(&long)).then(|| (long.replace('-', "_"), a))
    })
}

impl RouteSpec {
    /// The daemon's route; `n` is its place in the file (from 1).
    fn to_route(&self, n: usize) -> Result<Route, String> {
        let name = self.name.clone().unwrap_or_else(|| format!("route-{n}"));
        let bad = |what: &str, why: String| format!("[[route]] {name:?}: {what}: {why}");
        if name == UNROUTED {
            return Err(bad(
                "name",
                format!("{UNROUTED:?} is reserved for events no route takes"),
            ));
        }
        if self.events.is_empty() && self.bot.is_empty() && self.path.is_none() {
            return Err(bad(
                "match",
                "give events, bot or path (a route taking everything is --forward-to)".into(),
            ));
        }
        crate::cmd::handler_url(&self.forward_to).map_err(|e| bad("forward_to", e))?;
        let timeout = self
            .timeout
            .as_deref()
            .map(meethook_proto::units::parse_positive_duration)
            .transpose()
            .map_err(|e| bad("timeout", e))?;
        let order = self
            .order
            .as_deref()
            .map(str::parse::<Order>)
            .transpose()
            .map_err(|e| bad("order", e))?;
        if self.parallel == Some(0) {
            return Err(bad("parallel", "use 1 or more".into()));
        }
        Ok(Route {
            name,
            filter: Filter {
                events: self.events.clone(),
                bots: self.bot.clone(),
            },
            path: self.path.clone(),
            forward_to: self.forward_to.clone(),
            timeout,
            max_attempts: self.max_attempts,
            order,
            parallel: self.parallel.map(usize::from),
        })
    }
}

impl ConfigFile {
    /// The `[[route]]`s, checked; an error names the route and the file.
    pub fn routes(&self) -> Result<Vec<Route>, String> {
        let mut names = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for (i, spec) in self.routes.iter().enumerate() {
            let r = spec
                .to_route(i + 1)
                .map_err(|e| format!("{}: {e}", self.path.display()))?;
            if !names.insert(r.name.clone()) {
                return Err(format!(
                    "{}: two [[route]]s are named {:?}: give each its own name",
                    self.path.display(),
                    r.name
                ));
            }
            out.push(r);
        }
        Ok(out)
    }

    /// The values this file gives `command`'s flags, by key (its table over the top level).
    pub fn values(&self, command: &str) -> BTreeMap<String, &toml::Value> {
        let mut out: BTreeMap<String, &toml::Value> = self
            .top
            .iter()
            .map(|(k, v)| (k.replace('-', "_"), v))
            .collect();
        if let Some(t) = self.sections.get(command) {
            out.extend(t.iter().map(|(k, v)| (k.replace('-', "_"), v)));
        }
        out
    }

    /// Sets the file's values as the flags' defaults in `cli`; an error names any key that
    /// is no flag and any value a flag refuses.
    pub fn apply(&self, mut cli: Command) -> Result<Command, String> {
        let shown = self.path.display();
        let mut used = std::collections::BTreeSet::new();
        for &name in COMMANDS {
            let Some(sub) = cli.find_subcommand(name) else {
                continue;
            };
            let known: BTreeMap<String, clap::Arg> =
                keys(sub).map(|(k, a)| (k, a.clone())).collect();
            let section = self.sections.get(name);
            let mut defaults = Vec::new();
            for (key, value) in self.values(name) {
                let Some(arg) = known.get(&key) else {
                    if section.is_some_and(|t| t.keys().any(|k| k.replace('-', "_") == key)) {
                        return Err(unknown(&shown, &format!("[{name}] {key}"), &known));
                    }
                    continue;
                };
                used.insert(key.clone());
                let vals = as_args(&key, value).map_err(|e| format!("{shown}: {e}"))?;
                for v in &vals {
                    check_value(sub, arg, v)
                        .map_err(|why| format!("{shown}: `{key}` = {v:?}: {why}"))?;
                }
                defaults.push((arg.get_id().clone(), vals));
            }
            cli = cli.mut_subcommand(name, |mut sub| {
                for (id, vals) in defaults {
                    // A required flag the file gives is required no more.
                    sub = sub.mut_arg(id, |a| a.required(false).default_values(vals));
                }
                sub
            });
        }
        if let Some(key) = self
            .top
            .keys()
            .find(|k| !used.contains(&k.replace('-', "_")))
        {
            let all: BTreeMap<String, clap::Arg> = COMMANDS
                .iter()
                .filter_map(|c| cli.find_subcommand(c))
                .flat_map(|s| keys(s).map(|(k, a)| (k, a.clone())).collect::<Vec<_>>())
                .collect();
            return Err(unknown(&shown, key, &all));
        }
        Ok(cli)
    }
}

fn unknown(
    shown: &std::path::Display<'_>,
    key: &str,
    known: &BTreeMap<String, clap::Arg>,
) -> String {
    let names: Vec<&str> = known.keys().map(String::as_str).collect();
    format!(
        "{shown}: unknown key `{key}`: remove it, or use one of: {}, [[route]]",
        names.join(", ")
    )
}

/// Whether `arg` of `sub` takes `v`, as if given on the command line; why not.
fn check_value(sub: &Command, arg: &clap::Arg, v: &str) -> Result<(), String> {
    if !arg.get_action().takes_values() {
        return match v {
            "true" | "false" => Ok(()),
            _ => Err("expected true or false".into()),
        };
    }
    let long = arg.get_long().unwrap_or_default();
    // The command alone with this one value: no other flag required, no environment read.
    let probe = sub
        .clone()
        .no_binary_name(true)
        .mut_args(|a| a.required(false).env(None::<&str>));
    match probe.try_get_matches_from([format!("--{long}"), v.to_string()]) {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ValueValidation | ErrorKind::InvalidValue | ErrorKind::InvalidUtf8
            ) =>
        {
            let why = e.to_string();
            Err(why
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_string())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_routes_and_bad_shapes() {
        let f = parse(
            Path::new("m.toml"),
            r#"
data = "d"
[listen]
timeout = "5s"
[[route]]
events = ["bot.*"]
forward_to = "http://127.0.0.1:1/bots"
"#,
        )
        .unwrap();
        assert_eq!(f.values("listen").len(), 2);
        assert_eq!(f.values("relay").len(), 1);
        assert_eq!(f.routes.len(), 1);
        assert_eq!(f.routes[0].events, ["bot.*"]);
        let e = parse(Path::new("m.toml"), "[[route]]\nforward = 'x'\n").unwrap_err();
        assert!(
            e.contains("m.toml: [[route]] number 1") && e.contains("forward"),
            "{e}"
        );
        let e = parse(Path::new("m.toml"), "a = [").unwrap_err();
        assert!(e.contains("m.toml: not valid TOML"), "{e}");
    }
}
