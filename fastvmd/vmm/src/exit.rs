//! Why a monitor ends, and the process exit status that says so.

/// What the guest asked the machine to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestRequest {
    PowerOff,
    Reboot,
}

/// An event that ends the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitEvent {
    /// The guest powered off or rebooted.
    Guest(GuestRequest),
    /// The guest crashed (triple fault, failed entry, KVM internal error).
    Crashed(String),
    /// The host asked the monitor to stop (control `stop`, SIGTERM, SIGINT).
    Stop(&'static str),
}

pub use fastvm_proto::monitor::{
    EXIT_CRASHED, EXIT_ERROR, EXIT_POWER_OFF, EXIT_REBOOT, EXIT_STOPPED,
};

impl ExitEvent {
    /// The process exit status for this event.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitEvent::Guest(GuestRequest::PowerOff) => EXIT_POWER_OFF,
            ExitEvent::Guest(GuestRequest::Reboot) => EXIT_REBOOT,
            ExitEvent::Crashed(_) => EXIT_CRASHED,
            ExitEvent::Stop(_) => EXIT_STOPPED,
        }
    }

    /// One line for stderr.
    pub fn describe(&self) -> String {
        match self {
            ExitEvent::Guest(GuestRequest::PowerOff) => "guest powered off".into(),
            ExitEvent::Guest(GuestRequest::Reboot) => "guest rebooted".into(),
            ExitEvent::Crashed(why) => format!("guest crashed: {why}"),
            ExitEvent::Stop(by) => format!("stopped by {by}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ending_has_its_own_status() {
        let codes = [
            ExitEvent::Stop("test").exit_code(),
            ExitEvent::Guest(GuestRequest::PowerOff).exit_code(),
            ExitEvent::Guest(GuestRequest::Reboot).exit_code(),
            ExitEvent::Crashed("x".into()).exit_code(),
            EXIT_ERROR,
        ];
        let mut unique = codes.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), codes.len());
    }
}
