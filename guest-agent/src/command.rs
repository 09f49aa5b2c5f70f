//! The command an exec names (program, arguments, environment, working
//! directory, user), checked before anything starts, for both the buffered
//! exec ([`crate::exec`]) and the streaming one ([`crate::stream_exec`]).
//! What cannot start is answered as a shell answers it: exit code 127 for a
//! program that is not there, 126 for one that cannot run (or a `cwd` that
//! is not a directory, or a `user` the image does not know).

use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Why a command was not started, and the exit code that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub exit_code: i32,
    /// The reason, without the agent's name.
    pub reason: String,
}

impl Refusal {
    fn new(exit_code: i32, reason: String) -> Refusal {
        Refusal { exit_code, reason }
    }

    /// The line the command's stderr gets.
    pub fn line(&self) -> String {
        format!("guest-agent: {}\n", self.reason)
    }
}

/// A [`Command`] for `argv` with `env` added to the agent's environment,
/// run in `cwd` as `user`; stdio and process group are the caller's.
pub fn build(
    argv: &[String],
    env: &BTreeMap<String, String>,
    cwd: Option<&str>,
    user: Option<&str>,
) -> Result<Command, Refusal> {
    let Some(program) = argv.first() else {
        return Err(Refusal::new(127, "empty argv".into()));
    };
    if program.is_empty() {
        return Err(Refusal::new(127, "the program name is empty".into()));
    }
    if let Some(cwd) = cwd
        && !std::path::Path::new(cwd).is_dir()
    {
        return Err(Refusal::new(126, format!("cwd {cwd}: not a directory")));
    }
    let mut cmd = Command::new(program);
    cmd.args(&argv[1..]).envs(env);
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    if let Some(user) = user {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let (uid, gid) = crate::user::resolve(user, &read("/etc/passwd"), &read("/etc/group"))
            .map_err(|why| Refusal::new(126, why))?;
        // std drops the supplementary groups when root sets a uid.
        cmd.uid(uid).gid(gid);
    }
    Ok(cmd)
}

/// The refusal for `program` whose spawn failed with `e`: 127 when it is
/// not found, 126 otherwise.
pub fn not_started(program: &str, e: &io::Error) -> Refusal {
    let code = if e.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    Refusal::new(code, format!("{program}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn what_cannot_start_gets_a_shells_exit_code() {
        let env = BTreeMap::new();
        let refused = |argv: &[String], cwd, user| build(argv, &env, cwd, user).unwrap_err();
        assert_eq!(refused(&[], None, None).exit_code, 127);
        assert_eq!(refused(&argv(&[""]), None, None).exit_code, 127);
        let r = refused(&argv(&["true"]), Some("/no/such/dir"), None);
        assert_eq!(r.exit_code, 126);
        assert_eq!(r.line(), "guest-agent: cwd /no/such/dir: not a directory\n");
        let r = refused(&argv(&["true"]), None, Some("no-such-user-here"));
        assert_eq!(r.exit_code, 126);
        let missing = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(not_started("x", &missing).exit_code, 127);
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(not_started("x", &denied).exit_code, 126);
    }
}
