//! The monitor's service thread: one epoll loop for the console socket, the
//! control socket and the termination signals (a signalfd). No thread is
//! made per client or per request, so once the VM runs no monitor thread
//! starts another, and this thread's seccomp list has no `clone`.
//!
//! The console part starts as soon as the devices exist (input waits in
//! the serial port until a vCPU runs); the control part and the signals
//! join when the machine is complete ([`Service::serve_control`]).

mod clients;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::bus::lock;
use crate::console::{ConsoleHub, ConsoleSerial};
use crate::control::ControlTarget;
use crate::exit::ExitEvent;
use crate::seccomp::ThreadKind;
use crate::wakeup::Wakeup;
use clients::{Client, ConsoleClient, ControlClient, Step};

/// Control clients served at once; one more is told so and closed.
pub const MAX_CONTROL_CLIENTS: usize = 16;

const TOKEN_KICK: u64 = 0;
const TOKEN_SIGNALS: u64 = 1;
const TOKEN_CONSOLE: u64 = 2;
const TOKEN_CONTROL: u64 = 3;
const FIRST_CLIENT: u64 = 4;
/// How soon console input the UART could not take yet is offered again.
const RETRY_MS: i32 = 1;

/// What the console part serves.
pub struct ConsolePart {
    pub listener: UnixListener,
    pub hub: Arc<ConsoleHub>,
    pub serial: ConsoleSerial,
    pub wakeup: Arc<Wakeup>,
}

/// What the control part serves: requests on `listener` go to `target`;
/// with `events`, SIGTERM and SIGINT become a stop there.
pub struct ControlPart {
    pub listener: UnixListener,
    pub target: Arc<dyn ControlTarget>,
    pub events: Option<Sender<ExitEvent>>,
}

/// The control part handed to the running loop, with its signalfd.
type ControlSlot = Arc<Mutex<Option<(ControlPart, Option<OwnedFd>)>>>;

/// The running service thread.
pub struct Service {
    control: ControlSlot,
    kick: EventFd,
}

impl Service {
    /// Starts the thread, serving `console` (if any) at once.
    pub fn start(console: Option<ConsolePart>) -> io::Result<Service> {
        let epoll = Epoll::new()?;
        let kick = EventFd::new(EFD_NONBLOCK)?;
        watch(&epoll, kick.as_raw_fd(), TOKEN_KICK, EventSet::IN)?;
        if let Some(console) = &console {
            console.listener.set_nonblocking(true)?;
            watch(
                &epoll,
                console.listener.as_raw_fd(),
                TOKEN_CONSOLE,
                EventSet::IN,
            )?;
        }
        let control = Arc::new(Mutex::new(None));
        let mut state = State {
            epoll,
            kick: kick.try_clone()?,
            slot: control.clone(),
            console,
            control: None,
            signals: None,
            clients: HashMap::new(),
            next_token: FIRST_CLIENT,
        };
        crate::threads::spawn(ThreadKind::Service, "service", move || state.run())?;
        Ok(Service { control, kick })
    }

    /// Adds the control socket (and, with `events`, the termination
    /// signals, which must be blocked in every thread already).
    pub fn serve_control(&self, part: ControlPart) -> io::Result<()> {
        part.listener.set_nonblocking(true)?;
        // Made here, so the loop's allow list needs no `signalfd4`.
        let signals = match part.events {
            Some(_) => Some(termination_fd()?),
            None => None,
        };
        *lock(&self.control) = Some((part, signals));
        self.kick.write(1)
    }
}

fn watch(epoll: &Epoll, fd: i32, token: u64, events: EventSet) -> io::Result<()> {
    epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
}

/// A signalfd for SIGTERM and SIGINT.
fn termination_fd() -> io::Result<OwnedFd> {
    let set = crate::signals::termination_set();
    // SAFETY: creates a new descriptor from a valid signal set.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The service thread's state.
struct State {
    epoll: Epoll,
    kick: EventFd,
    slot: ControlSlot,
    console: Option<ConsolePart>,
    control: Option<ControlPart>,
    signals: Option<OwnedFd>,
    clients: HashMap<u64, Client>,
    next_token: u64,
}

impl State {
    fn run(&mut self) {
        let mut events = vec![EpollEvent::default(); 32];
        loop {
            let waiting = self.clients.values().any(Client::has_pending_input);
            let timeout = if waiting { RETRY_MS } else { -1 };
            let n = match self.epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("service loop: epoll: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_KICK => self.take_control(),
                    TOKEN_SIGNALS => self.read_signals(),
                    TOKEN_CONSOLE => self.accept_console(),
                    TOKEN_CONTROL => self.accept_control(),
                    token => self.serve_client(token, ev.event_set()),
                }
            }
            if waiting {
                let tokens: Vec<u64> = self.clients.keys().copied().collect();
                for token in tokens {
                    self.retry_input(token);
                }
            }
        }
    }

    fn take_control(&mut self) {
        let _ = self.kick.read();
        let Some((part, signals)) = lock(&self.slot).take() else {
            return;
        };
        if let Err(e) = watch(
            &self.epoll,
            part.listener.as_raw_fd(),
            TOKEN_CONTROL,
            EventSet::IN,
        ) {
            tracing::error!("control socket: {e}");
        }
        if let Some(fd) = signals {
            match watch(&self.epoll, fd.as_raw_fd(), TOKEN_SIGNALS, EventSet::IN) {
                Ok(()) => self.signals = Some(fd),
                Err(e) => tracing::error!("termination signals: {e}"),
            }
        }
        self.control = Some(part);
    }

    fn read_signals(&mut self) {
        let Some(fd) = &self.signals else { return };
        // struct signalfd_siginfo: 128 bytes, the signal number first.
        let mut info = [0u8; 128];
        // SAFETY: reads at most `info.len()` bytes into `info`.
        let n = unsafe { libc::read(fd.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) };
        if n != info.len() as isize {
            return;
        }
        let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
        let by = if signo == libc::SIGINT as u32 {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        if let Some(events) = self.control.as_ref().and_then(|c| c.events.as_ref()) {
            let _ = events.send(ExitEvent::Stop(by));
        }
    }

    fn add_client(&mut self, client: Client) {
        let token = self.next_token;
        self.next_token += 1;
        match watch(&self.epoll, client.fd(), token, EventSet::IN) {
            Ok(()) => {
                self.clients.insert(token, client);
            }
            Err(e) => {
                tracing::warn!("service loop: {e}");
                client.gone();
            }
        }
    }

    fn accept_console(&mut self) {
        let Some(console) = &self.console else { return };
        let mut accepted = Vec::new();
        while let Ok((stream, _)) = console.listener.accept() {
            match ConsoleClient::attach(stream, console) {
                Ok(Some(client)) => accepted.push(Client::Console(client)),
                Ok(None) => {}
                Err(e) => tracing::warn!("console client: {e}"),
            }
        }
        for client in accepted {
            self.add_client(client);
        }
    }

    fn accept_control(&mut self) {
        let Some(control) = &self.control else { return };
        let mut accepted = Vec::new();
        let served = self
            .clients
            .values()
            .filter(|c| matches!(c, Client::Control(_)))
            .count();
        while let Ok((stream, _)) = control.listener.accept() {
            match ControlClient::new(stream, served + accepted.len() < MAX_CONTROL_CLIENTS) {
                Ok(Some(client)) => accepted.push(Client::Control(client)),
                Ok(None) => {}
                Err(e) => tracing::warn!("control client: {e}"),
            }
        }
        for client in accepted {
            self.add_client(client);
        }
    }

    fn serve_client(&mut self, token: u64, events: EventSet) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        let step = match client {
            // A request whose client has gone is not carried out: the client
            // gave up on it (a daemon whose call timed out may have stored
            // that the change failed), so doing it late would make the VM
            // run on something nobody asked for any more.
            Client::Control(_) if events.intersects(EventSet::HANG_UP | EventSet::ERROR) => {
                Step::Close
            }
            Client::Control(c) => match &self.control {
                Some(control) => c.serve(control.target.as_ref()),
                None => Step::Keep,
            },
            Client::Console(c) => match &self.console {
                // Input waiting for the UART: only a hang-up is news (it is
                // reported even while the input is not watched).
                Some(_) if c.has_pending() => {
                    if events.intersects(EventSet::HANG_UP | EventSet::ERROR) {
                        Step::Close
                    } else {
                        Step::Keep
                    }
                }
                Some(console) => c.read_input(console),
                None => Step::Keep,
            },
        };
        self.after(token, step);
    }

    fn retry_input(&mut self, token: u64) {
        let (Some(Client::Console(c)), Some(console)) =
            (self.clients.get_mut(&token), &self.console)
        else {
            return;
        };
        let step = c.offer_pending(console);
        self.after(token, step);
    }

    /// Applies what serving a client asked for.
    fn after(&mut self, token: u64, step: Step) {
        let Some(client) = self.clients.get(&token) else {
            return;
        };
        let fd = client.fd();
        match step {
            Step::Keep => {}
            Step::Pause | Step::Listen => {
                let events = if step == Step::Pause {
                    EventSet::empty()
                } else {
                    EventSet::IN
                };
                let ev = EpollEvent::new(events, token);
                if let Err(e) = self.epoll.ctl(ControlOperation::Modify, fd, ev) {
                    tracing::warn!("service loop: {e}");
                }
            }
            Step::Close => {
                let _ = self
                    .epoll
                    .ctl(ControlOperation::Delete, fd, EpollEvent::default());
                if let Some(client) = self.clients.remove(&token) {
                    client.gone();
                }
            }
        }
    }
}
