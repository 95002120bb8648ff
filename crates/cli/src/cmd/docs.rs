//! `meethook completions SHELL` and `meethook man`: generated from the clap definitions, so
//! they never drift from the flags.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;

/// `meethook completions`.
#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `meethook man`.
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write `meethook.1` and one page per subcommand (`meethook-listen.1`, …) into DIR
    /// instead of printing `meethook.1` on stdout.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell` on stdout.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = super::Cli::command();
    // Into memory first: clap_complete panics on a write error (`| head`).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "meethook", &mut script);
    print(&script).context("write the completion script")
}

/// Prints the man page, or writes every page into `args.dir`.
pub fn man(args: ManArgs) -> anyhow::Result<()> {
    let cmd = super::Cli::command();
    match args.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            print(&page).context("write the man page")
        }
        Some(dir) => write_pages(cmd, &dir),
    }
}

/// Writes `bytes` to stdout; a reader that stopped early (`| head`) is not an error.
fn print(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// `meethook.1` and a page for every subcommand, nested ones included.
fn write_pages(cmd: clap::Command, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("write the man pages into {}", dir.display()))?;
    let mut pages: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".1"))
        .collect();
    pages.sort();
    println!(
        "wrote {} man pages into {} (read one with `man {}/meethook.1`)",
        pages.len(),
        dir.display(),
        dir.display()
    );
    Ok(())
}
