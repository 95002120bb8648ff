//! Runs the benchmark harness in `--smoke` mode against the debug `meethook` binary: every
//! event must arrive once, byte-identical and in seq order, and the report must be printed.

use std::path::PathBuf;
use std::process::Command;

/// `target/debug` (or whatever profile dir holds this test's executable).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/smoke-<hash> → target/debug
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("profile directory")
        .to_path_buf()
}

#[test]
fn smoke_run_is_clean_and_prints_the_table() {
    let dir = bin_dir();
    let meethook = dir.join("meethook");
    assert!(
        meethook.is_file(),
        "{} is missing: run `cargo build --bin meethook` first (scripts/test does)",
        meethook.display()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_meethook-bench"))
        .arg("--smoke")
        .arg("--bin-dir")
        .arg(&dir)
        .output()
        .expect("run meethook-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "meethook-bench --smoke failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("| fig | figure | meethook | direct | meethook / direct |"),
        "no table in the output:\n{stdout}"
    );
    for fig in [
        "| a |", "| b |", "| c |", "| d |", "| e |", "| f |", "| g |",
    ] {
        assert!(
            stdout.contains(fig),
            "no row {fig} in the output:\n{stdout}"
        );
    }
    assert!(stdout.contains("## Targets"), "{stdout}");
    assert!(
        stdout.contains("bore not measured: phase `peers` runs only with `--peers`"),
        "the targets say bore was not measured:\n{stdout}"
    );
    for run in ["--order channel, 20 ms", "--order bot --parallel 8, 0 ms"] {
        assert!(
            stdout.contains(&format!("| order phase: {run}")),
            "no integrity row for {run}:\n{stdout}"
        );
    }
    assert!(stdout.contains("## Hostile senders"), "{stdout}");
    assert!(stdout.contains("Result: **clean**"), "{stdout}");
}
