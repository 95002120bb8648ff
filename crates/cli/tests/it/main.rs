//! The cli's integration tests, one binary with a module per area (`cargo test -p meethook
//! --test it events::` runs one area). Shared helpers live in [`util`]; the relay + channel +
//! handler + daemon set-up in `meethook_testkit::Setup`.

mod util;

mod acme;
mod artifacts;
mod chaos;
mod cli;
mod config;
mod core;
mod events;
mod hostile;
mod inspector;
mod limits;
mod multinode;
mod parallel;
mod powerloss;
mod proxy;
mod recordings;
mod secrets;
mod soak;
mod tls;
mod trigger;
