//! The terminal side: raw mode and the alternate screen (restored on exit
//! and on panic), an input thread, and the event loop that applies input
//! and client reports to the [`App`] and redraws only when something changed.

use std::io;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{
    self, DisableMouseCapture, EnableMouseCapture, Event as TermEvent,
};
use ratatui::crossterm::execute;
use time::OffsetDateTime;
use tokio::sync::mpsc::UnboundedSender;

use crate::app::{App, Mode};
use crate::client::{self, ClientEvent, Command};
use crate::ui;

/// How often ages are refreshed when nothing else happens.
pub const TICK: Duration = Duration::from_secs(1);

/// Longest wait on exit for the client's tasks to be dropped.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(500);

/// Why the dashboard could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Nothing answers on the socket.
    #[error(
        "cannot reach the daemon at {path}: {source}\n\
         Is `fastvmd serve` running? Start it, or point fastvm-tui at its socket \
         with --socket PATH (or $FASTVM_SOCKET)."
    )]
    NoDaemon {
        /// The socket path tried.
        path: String,
        /// Why connecting failed.
        source: io::Error,
    },
    /// The terminal or the runtime failed.
    #[error("terminal error: {0}")]
    Io(#[from] io::Error),
}

/// Everything the UI loop reacts to.
#[derive(Debug)]
pub enum Event {
    /// A terminal event (key, mouse, resize, paste).
    Input(TermEvent),
    /// Reading terminal input failed.
    InputFailed(String),
    /// A report from the socket client.
    Client(ClientEvent),
    /// SIGTERM or SIGHUP: quit, restoring the terminal.
    Terminate,
}

/// Runs the dashboard against the daemon at `socket` until the user quits.
pub fn run(socket: PathBuf) -> Result<(), RunError> {
    std::os::unix::net::UnixStream::connect(&socket).map_err(|source| RunError::NoDaemon {
        path: socket.display().to_string(),
        source,
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fastvm-tui-client")
        .enable_all()
        .build()?;
    let (tx, rx) = mpsc::channel();
    let commands = {
        let _enter = runtime.enter();
        spawn_signal_watch(tx.clone())?;
        client::spawn(socket.clone(), tx.clone(), Event::Client)
    };
    std::thread::Builder::new()
        .name("fastvm-tui-input".into())
        .spawn(move || read_input(tx))?;

    let mut terminal = ratatui::init();
    install_mouse_restore_hook();
    let _ = execute!(io::stdout(), EnableMouseCapture);
    let mut app = App::new(socket.display().to_string());
    let result = event_loop(&mut terminal, &mut app, &rx, &commands);
    let _ = commands.send(Command::DetachConsole);
    let _ = execute!(io::stdout(), DisableMouseCapture);
    ratatui::restore();
    // Dropping the client's tasks ends a running copy as a cancel does
    // (a download's partial file removed); the wait is bounded.
    runtime.shutdown_timeout(SHUTDOWN_WAIT);
    result
}

/// Turns SIGTERM and SIGHUP into [`Event::Terminate`].
fn spawn_signal_watch(tx: mpsc::Sender<Event>) -> io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
        let _ = tx.send(Event::Terminate);
    });
    Ok(())
}

/// Forwards terminal events to the UI loop until it goes away.
fn read_input(tx: mpsc::Sender<Event>) {
    loop {
        let event = match event::read() {
            Ok(e) => Event::Input(e),
            Err(e) => {
                let _ = tx.send(Event::InputFailed(e.to_string()));
                return;
            }
        };
        if tx.send(event).is_err() {
            return;
        }
    }
}

/// Turns off mouse reporting before ratatui's own hook restores the screen.
fn install_mouse_restore_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = execute!(io::stdout(), DisableMouseCapture);
        previous(info);
    }));
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    rx: &mpsc::Receiver<Event>,
    commands: &UnboundedSender<Command>,
) -> Result<(), RunError> {
    let size = terminal.size()?;
    app.size = (size.width, size.height);
    let mut last_tick = Instant::now();
    loop {
        if app.dirty {
            terminal.draw(|frame| ui::draw(frame, app))?;
            app.dirty = false;
        }
        if app.quit {
            return Ok(());
        }
        let wait = TICK.saturating_sub(last_tick.elapsed());
        match rx.recv_timeout(wait) {
            Ok(event) => {
                handle(app, event, commands)?;
                // Apply everything already queued before drawing once.
                while let Ok(event) = rx.try_recv() {
                    handle(app, event, commands)?;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            app.tick(OffsetDateTime::now_utc());
        }
    }
}

/// Applies one event and sends the commands it causes.
pub fn handle(
    app: &mut App,
    event: Event,
    commands: &UnboundedSender<Command>,
) -> Result<(), RunError> {
    let out = match event {
        Event::Input(TermEvent::Key(key)) => app.on_key(key),
        Event::Input(TermEvent::Mouse(m)) => app.on_mouse(m),
        Event::Input(TermEvent::Resize(w, h)) => {
            app.size = (w, h);
            app.dirty = true;
            Vec::new()
        }
        Event::Input(TermEvent::Paste(text)) => app.on_paste(&text),
        Event::Input(_) => Vec::new(),
        Event::InputFailed(why) => {
            return Err(RunError::Io(io::Error::other(format!(
                "reading the terminal failed: {why}"
            ))));
        }
        Event::Client(e) => app.on_client(e),
        Event::Terminate => {
            app.quit = true;
            Vec::new()
        }
    };
    for cmd in out {
        let _ = commands.send(cmd);
    }
    Ok(())
}

/// The default socket: `$FASTVM_SOCKET`, else `fastvmd.sock` in the data
/// directory (`$FASTVM_HOME`, `/var/lib/fastvm` as root, else
/// `~/.local/share/fastvm`), like `fastvmd`.
pub fn default_socket() -> PathBuf {
    if let Some(s) = std::env::var_os("FASTVM_SOCKET") {
        return PathBuf::from(s);
    }
    let dir = if let Some(home) = std::env::var_os("FASTVM_HOME") {
        PathBuf::from(home)
    } else if is_root() {
        PathBuf::from("/var/lib/fastvm")
    } else {
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
        home.join(".local/share/fastvm")
    };
    dir.join("fastvmd.sock")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl App {
    /// Pasted text: raw into the console, typed into an open text field.
    pub fn on_paste(&mut self, text: &str) -> Vec<Command> {
        self.dirty = true;
        match &mut self.mode {
            Mode::Console => vec![Command::ConsoleInput(text.as_bytes().to_vec())],
            Mode::Filter => {
                text.chars()
                    .filter(|c| !c.is_control())
                    .for_each(|c| self.filter.insert(c));
                Vec::new()
            }
            Mode::Prompt(p) => {
                text.chars()
                    .filter(|c| !c.is_control())
                    .for_each(|c| p.input.insert(c));
                Vec::new()
            }
            Mode::CopyForm(form) => {
                if let Some(input) = form.focused_input() {
                    text.chars()
                        .filter(|c| !c.is_control())
                        .for_each(|c| input.insert(c));
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }
}
