//! Every process of a terminal session, found in `/proc`: a TTY exec runs
//! as the leader of a session of its own, and a job-control shell puts each
//! job in a process group of its own inside it, so stopping the command
//! means signalling the whole session, not one group.

/// The session id in the text of `/proc/PID/stat`.
fn session_of(stat: &str) -> Option<libc::pid_t> {
    // Fields after the command name (which may hold spaces and parentheses):
    // state, ppid, pgrp, session.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(3)?.parse().ok()
}

/// Sends `signal` to every process of session `sid`.
pub fn signal_all(sid: libc::pid_t, signal: i32) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        let in_session = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| session_of(&stat))
            == Some(sid);
        if in_session {
            // SAFETY: kill takes plain integers; a process already gone is fine.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_field_follows_a_command_name_with_spaces() {
        let stat = "4242 (a (weird) name) S 1 4242 4200 34816 4242 4194560 0";
        assert_eq!(session_of(stat), Some(4200));
        assert_eq!(session_of("garbage"), None);
        // SAFETY: getsid(0) only reads the caller's session id.
        let own = unsafe { libc::getsid(0) };
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert_eq!(session_of(&stat), Some(own));
    }
}
