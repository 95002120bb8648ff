//! `meethook config check`: the configuration each command would run with, and where each
//! value comes from (environment, file, default), secrets masked.

use clap::CommandFactory;

use crate::config::{keys, ConfigFile, COMMANDS};

/// `meethook config` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Check the config file (every key a flag, every value valid) and print the effective
    /// configuration of `listen`, `dev` and `relay`, secrets masked.
    Check,
}

/// Runs `meethook config check` (the file was checked before the command line was parsed).
pub fn run(command: Command, file: Option<&ConfigFile>) -> anyhow::Result<()> {
    let Command::Check = command;
    match file {
        Some(f) => println!("# config file: {} (valid)", f.path.display()),
        None => println!(
            "# no config file (--config PATH, ./{0}, or {0} in the user config dir)",
            crate::config::FILE_NAME
        ),
    }
    let cli = super::Cli::command();
    for &name in COMMANDS {
        let Some(sub) = cli.find_subcommand(name) else {
            continue;
        };
        let from_file = file.map(|f| f.values(name)).unwrap_or_default();
        println!("\n[{name}]");
        for (key, arg) in keys(sub) {
            let env = arg
                .get_env()
                .and_then(|e| Some((e.to_string_lossy().into_owned(), std::env::var(e).ok()?)));
            let (value, source) = if let Some((var, v)) = env {
                (toml::Value::String(v), format!("env {var}"))
            } else if let Some(v) = from_file.get(&key) {
                ((*v).clone(), "file".to_string())
            } else {
                let d: Vec<String> = arg
                    .get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect();
                match d.as_slice() {
                    [] => {
                        println!("# {key} (not set)");
                        continue;
                    }
                    [one] => (toml::Value::String(one.clone()), "default".to_string()),
                    _ => (
                        toml::Value::Array(d.into_iter().map(toml::Value::String).collect()),
                        "default".to_string(),
                    ),
                }
            };
            let secret = arg.is_hide_env_values_set()
                || ["token", "secret", "password", "api_key"]
                    .iter()
                    .any(|s| key.contains(s));
            let shown = if secret {
                "\"***\"".to_string()
            } else {
                mask_url_password(&value.to_string())
            };
            println!("{key} = {shown}  # {source}");
        }
    }
    for r in file.map(|f| f.routes.as_slice()).unwrap_or_default() {
        println!("\n[[route]]");
        let t = toml::Value::try_from(r).map_err(|e| anyhow::anyhow!("route: {e}"))?;
        if let toml::Value::Table(t) = t {
            for (k, v) in t {
                println!("{k} = {}", mask_url_password(&v.to_string()));
            }
        }
    }
    Ok(())
}

/// `scheme://user:PASSWORD@host` with the password masked.
fn mask_url_password(s: &str) -> String {
    let Some(start) = s.find("://").map(|i| i + 3) else {
        return s.to_string();
    };
    let rest = &s[start..];
    let Some(at) = rest.find('@') else {
        return s.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!("{}{}:***{}", &s[..start], &rest[..colon], &rest[at..]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            super::mask_url_password("\"postgres://u:pw@h/db\""),
            "\"postgres://u:***@h/db\""
        );
        assert_eq!(
            super::mask_url_password("\"http://h:1/x\""),
            "\"http://h:1/x\""
        );
    }
}
