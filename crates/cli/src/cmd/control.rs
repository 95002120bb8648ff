//! `meethook events retry|skip SEQ`: requests to a running `listen`/`dev` over its control
//! socket (see `meethook_daemon::control`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use meethook_daemon::control::{
    ask, is_socket_name, not_running_message, socket_path, Answer, ControlError, Request,
};

use super::events::Where;

/// How long to wait for the daemon's answer: it answers between attempts, so one in flight
/// (up to its `--timeout`) delays it.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// Sends `req` to the daemon of `at` and prints its answer; an error when none runs or it
/// refused.
pub fn run(at: &Where, req: Request) -> anyhow::Result<()> {
    let d = at.data.display();
    let seq = match req {
        Request::Retry { seq } | Request::Skip { seq } => seq.to_string(),
        Request::Status | Request::Pause | Request::Resume => "SEQ".into(),
    };
    let not_running = || anyhow::anyhow!(not_running_message(&at.data, &seq));
    let answer = match &at.channel {
        Some(c) => match ask(&socket_path(&at.data, c), &req, ANSWER_TIMEOUT) {
            Err(ControlError::NotRunning { .. }) => return Err(not_running()),
            r => r?,
        },
        None => {
            let found = sockets(&at.data);
            // One socket: no need to ask who answers first (an answer can wait for an attempt).
            if let [path] = found.as_slice() {
                return match ask(path, &req, ANSWER_TIMEOUT) {
                    Err(ControlError::NotRunning { .. }) => Err(not_running()),
                    r => print(r?),
                };
            }
            let mut live: Vec<(PathBuf, Answer)> = Vec::new();
            for path in found {
                match ask(&path, &Request::Status, ANSWER_TIMEOUT) {
                    Ok(a) => live.push((path, a)),
                    Err(ControlError::NotRunning { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            match live.as_slice() {
                [] => return Err(not_running()),
                [(path, _)] => ask(path, &req, ANSWER_TIMEOUT)?,
                several => {
                    let chans: Vec<&str> =
                        several.iter().map(|(_, a)| a.channel.as_str()).collect();
                    bail!(
                        "several `meethook listen`s use {d} (channels {}): pass --channel ID",
                        chans.join(", ")
                    );
                }
            }
        }
    };
    print(answer)
}

/// Prints a carried-out request's answer; an error for a refused one.
fn print(answer: Answer) -> anyhow::Result<()> {
    if !answer.ok {
        bail!("{} (channel {})", answer.message, answer.channel);
    }
    println!("{}", answer.message);
    Ok(())
}

/// The control sockets in `data`, by name.
fn sockets(data: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(data) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_socket_name(p))
        .collect();
    found.sort();
    found
}
