//! Streaming exec: a command in a running VM with its output as it comes,
//! stdin, a terminal, its size and signals, spoken in exec channel messages
//! ([`fastvm_proto::exec_channel`]) that both front ends only frame (one
//! WebSocket message each, or length-prefixed on the socket). The command
//! runs on an agent connection of its own, which the session holds: when
//! the client goes away the session is dropped, the connection closes and
//! the agent kills the command's process group. A session holds one of its
//! org's exec slots for as long as it lasts.

use fastvm_proto::agent::Frame;
use fastvm_proto::agent_stream::{CHANNEL_ERR, CHANNEL_IN, CHANNEL_OUT};
use fastvm_proto::api::ExecStreamRequest;
use fastvm_proto::exec_channel::{
    self, CLOSE, RESIZE, SIGNAL, STATUS, STDERR, STDIN, STDOUT, SignalRequest, TerminalSize,
};

use super::exec_slots::Slot;
use super::streams::{Opened, STREAM_ID, upstream};
use super::vms::apply_run_defaults;
use super::{Caller, Service, ServiceError};
use crate::agent::AgentError;
use crate::agent_stream::{StreamReader, StreamWriter};

/// An exec under way: what the client sends goes in through
/// [`SessionInput`], what it is sent comes from [`SessionOutput`].
pub struct ExecSession {
    pub vm_id: String,
    pub input: SessionInput,
    pub output: SessionOutput,
}

/// The client's side of the session, into the guest.
pub struct SessionInput {
    writer: StreamWriter,
    stdin_open: bool,
}

/// The guest's side of the session, out to the client.
pub struct SessionOutput {
    reader: StreamReader,
    ended: bool,
    _slot: Slot,
}

/// Why a client message was not passed on.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The client sent something malformed; the session ends saying so.
    #[error("{0}")]
    Client(String),
    /// The agent's connection broke; the output side reports it.
    #[error("{0}")]
    Agent(#[from] AgentError),
}

impl std::fmt::Debug for ExecSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSession")
            .field("vm_id", &self.vm_id)
            .finish_non_exhaustive()
    }
}

impl SessionInput {
    /// Passes on one client message: stdin bytes, stdin's close, a new
    /// terminal size, a signal. Other channels are refused.
    pub async fn message(&mut self, channel: u8, bytes: &[u8]) -> Result<(), InputError> {
        let w = &mut self.writer;
        match channel {
            STDIN if self.stdin_open => w.send_data(STREAM_ID, CHANNEL_IN, bytes).await?,
            // Bytes after stdin's close have nowhere to go.
            STDIN => {}
            CLOSE => {
                if bytes.first() == Some(&STDIN) && self.stdin_open {
                    self.stdin_open = false;
                    let end = Frame::StreamEnd {
                        id: STREAM_ID,
                        channel: CHANNEL_IN,
                    };
                    w.send(&end).await?;
                }
            }
            RESIZE => {
                let size: TerminalSize = serde_json::from_slice(bytes).map_err(|e| {
                    InputError::Client(format!(
                        "resize: expected {{\"Width\":W,\"Height\":H}}: {e}"
                    ))
                })?;
                let resize = Frame::Resize {
                    id: STREAM_ID,
                    cols: size.width,
                    rows: size.height,
                };
                w.send(&resize).await?;
            }
            SIGNAL => {
                let req: SignalRequest = serde_json::from_slice(bytes).map_err(|e| {
                    InputError::Client(format!("signal: expected {{\"Signal\":N}}: {e}"))
                })?;
                if !(1..=64).contains(&req.signal) {
                    return Err(InputError::Client(format!(
                        "signal: {} is not a signal number (1 to 64)",
                        req.signal
                    )));
                }
                let signal = Frame::Signal {
                    id: STREAM_ID,
                    signal: req.signal,
                };
                w.send(&signal).await?;
            }
            other => {
                return Err(InputError::Client(format!(
                    "channel {other} is not one a client sends on (0 stdin, 4 resize, 5 signal, 255 close)"
                )));
            }
        }
        Ok(())
    }
}

impl SessionOutput {
    /// The next message for the client as (channel, bytes): output as it
    /// comes, then one [`STATUS`] when the command has ended (or the
    /// session failed); `None` after that.
    pub async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        while !self.ended {
            let frame = match self.reader.next().await {
                Ok(frame) => frame,
                Err(e) => {
                    return self.end(exec_channel::failure_status(&format!(
                        "the guest agent's connection ended before the command did: {e}"
                    )));
                }
            };
            match frame {
                Frame::Data(data) if data.id == STREAM_ID => match data.channel {
                    CHANNEL_OUT => return Some((STDOUT, data.bytes)),
                    CHANNEL_ERR => return Some((STDERR, data.bytes)),
                    _ => {}
                },
                Frame::ExecExit(exit) if exit.id == STREAM_ID => {
                    return self.end(exec_channel::exit_status(exit.exit_code, exit.timed_out));
                }
                Frame::StreamError(e) if e.id == STREAM_ID => {
                    return self.end(exec_channel::failure_status(&e.message));
                }
                Frame::Error { message } => {
                    return self.end(exec_channel::failure_status(&format!(
                        "the guest agent refused the command: {message}"
                    )));
                }
                _ => {}
            }
        }
        None
    }

    /// A failure [`STATUS`] for the client, ending the session (a client
    /// message that could not be passed on).
    pub fn fail(&mut self, message: &str) -> Option<(u8, Vec<u8>)> {
        if self.ended {
            return None;
        }
        self.end(exec_channel::failure_status(message))
    }

    fn end(&mut self, status: serde_json::Value) -> Option<(u8, Vec<u8>)> {
        self.ended = true;
        Some((STATUS, status.to_string().into_bytes()))
    }
}

impl Service {
    /// execStream: starts `req` in VM `id` on an agent connection of its
    /// own. Errors come before anything streams: 400 for a bad request,
    /// 404, 409 when the VM is not running or its agent has no streams,
    /// 429 past the org's exec slots, 502 when the agent cannot be reached.
    pub async fn exec_stream(
        &self,
        caller: &Caller,
        id: &str,
        req: ExecStreamRequest,
    ) -> Result<ExecSession, ServiceError> {
        req.validate()?;
        let Opened { row, stream, slot } = self.open_stream(caller, id, "exec").await?;
        let mut start = req.to_agent(STREAM_ID);
        apply_run_defaults(
            &mut start.env,
            &mut start.cwd,
            &mut start.user,
            &row.run_json,
        );
        let mut writer = stream.writer;
        writer
            .send(&Frame::ExecStart(start))
            .await
            .map_err(|e| upstream(&row.id, e))?;
        Ok(ExecSession {
            vm_id: row.id,
            input: SessionInput {
                writer,
                stdin_open: true,
            },
            output: SessionOutput {
                reader: stream.reader,
                ended: false,
                _slot: slot,
            },
        })
    }
}
