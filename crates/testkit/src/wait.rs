//! Polling a condition with a bounded deadline.

use std::time::Duration;

/// Polls `cond` every 20 ms until it holds; panics naming `what` after `patience`.
pub async fn wait_until(what: &str, patience: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + patience;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`wait_until`] with an async condition.
pub async fn wait_for<F: std::future::Future<Output = bool>>(
    what: &str,
    patience: Duration,
    mut cond: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + patience;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
