//! `meethook`: durable, ordered, byte-exact webhook forwarding to localhost.
//!
//! This file parses arguments, installs logging and signal handling, and dispatches to
//! `cmd::*`; the work lives in the library crates.

mod cmd;
mod config;
mod http_client;
mod output;

use std::io::IsTerminal;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

/// mimalloc: about 10 % less relay + daemon CPU per event than glibc's malloc in the
/// throughput bench. Built without transparent huge pages (`no_thp`), which had doubled the
/// daemon's RSS.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The config file's values become the flags' defaults: flags > env > file > defaults.
    let file = match config::load(&argv) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut command = cmd::Cli::command();
    let mut routes = Vec::new();
    if let Some(f) = &file {
        let applied = f.apply(command).and_then(|c| Ok((c, f.routes()?)));
        (command, routes) = match applied {
            Ok(x) => x,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
    }
    // Exits 2 with a message on bad arguments.
    let mut cli = cmd::Cli::from_arg_matches(&command.clone().get_matches_from(argv))
        .unwrap_or_else(|e| e.format(&mut command).exit());
    cli.routes = routes;
    if let Err(msg) = cli.check() {
        cmd::Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, msg)
            .exit(); // 2, like the others
    }
    init_tracing(cli.verbose);
    let rt = if cli.needs_threads() {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    }
    .enable_all()
    .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let shutdown = CancellationToken::new();
    let result = rt.block_on(async {
        tokio::spawn(watch_signals(shutdown.clone()));
        cmd::run(cli, file, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing(verbose: bool) {
    use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
    use tracing_subscriber::prelude::*;
    let default = if verbose {
        "meethook=debug,meethook_relay=debug,meethook_daemon=debug,meethook_store=debug,warn"
    } else {
        "meethook=info,meethook_relay=info,meethook_daemon=info,meethook_store=info,warn"
    };
    let env = EnvFilter::try_from_env("MEETHOOK_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // These crates print raw frames and headers (tokens, sender secrets) at their most verbose
    // levels: drop those levels whatever MEETHOOK_LOG asks.
    let no_secrets = filter_fn(|m| {
        let t = m.target();
        let chatty = t.starts_with("tungstenite")
            || t.starts_with("tokio_tungstenite")
            || t.starts_with("rustls");
        let raw = t.starts_with("hyper") || t.starts_with("h2");
        !((chatty && *m.level() > tracing::Level::INFO)
            || (raw && *m.level() == tracing::Level::TRACE))
    })
    // Without a hint the combined filter has none, so every `log::trace!` of the websocket
    // crates (one per frame) went through the dispatcher only to be dropped.
    .with_max_level_hint(tracing::level_filters::LevelFilter::TRACE);
    // Colour only for a person at a terminal (https://no-color.org), never in a file or pipe.
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(colour)
                .with_target(false)
                .compact()
                .with_filter(env.and(no_secrets)),
        )
        .init();
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn watch_signals(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
    shutdown.cancel();
}
