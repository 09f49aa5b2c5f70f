//! `fastvm-tui`: the terminal dashboard of `fastvmd`, a client of its local
//! socket only.
//!
//! - [`app`]: the state (objects, view, selection, overlays) and input
//!   handling, testable without a terminal;
//! - [`client`]: tokio tasks speaking the socket protocol, reporting to the
//!   UI loop over a channel;
//! - [`console`]: the inline console's terminal emulator and key encoding;
//! - [`exec_output`]: the exec pane's bounded live output;
//! - [`ui`]: drawing with ratatui;
//! - [`run`]: the terminal setup and the event loop.

pub mod app;
pub mod client;
pub mod console;
pub mod exec_output;
pub mod run;
pub mod ui;
