//! Starting a helper thread on another core. A new thread is often queued
//! behind the thread that made it, and then waits for that thread's time
//! slice to end (most of a millisecond) while another core sits idle; a
//! restore's KVM thread is steered off its parent's core for its start, and
//! takes back the full set of cores once running.

use std::mem::{size_of, zeroed};
use std::os::unix::thread::JoinHandleExt;
use std::thread::JoinHandle;

/// The cores a thread may run on.
#[derive(Clone, Copy)]
pub struct CpuSet(libc::cpu_set_t);

impl CpuSet {
    /// The calling thread's cores.
    pub fn current() -> Option<CpuSet> {
        // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
        let mut set: libc::cpu_set_t = unsafe { zeroed() };
        // SAFETY: fills `set`, whose size is passed, for this thread (0).
        let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
        (rc == 0).then_some(CpuSet(set))
    }

    /// Makes the calling thread run on these cores.
    pub fn apply_to_this_thread(&self) {
        // SAFETY: sets this thread's (0) affinity from a valid set.
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &self.0) };
    }

    /// These cores without the one the caller runs on now, unless that
    /// leaves none.
    fn without_this_core(&self) -> Option<CpuSet> {
        // SAFETY: reads the calling thread's current CPU; no arguments.
        let cpu = unsafe { libc::sched_getcpu() };
        let cpu = usize::try_from(cpu).ok()?;
        let mut others = self.0;
        // SAFETY: CPU_CLR and CPU_COUNT only touch the set given.
        unsafe { libc::CPU_CLR(cpu, &mut others) };
        // SAFETY: as above.
        (unsafe { libc::CPU_COUNT(&others) } > 0).then_some(CpuSet(others))
    }
}

/// Keeps `thread`, just spawned by the caller, off the caller's core, so it
/// starts at once on another; it should apply `all` to itself once running.
pub fn start_elsewhere<T>(thread: &JoinHandle<T>, all: &CpuSet) {
    if let Some(others) = all.without_this_core() {
        // SAFETY: the handle's pthread is alive (not joined); the set is valid.
        unsafe {
            libc::pthread_setaffinity_np(
                thread.as_pthread_t(),
                size_of::<libc::cpu_set_t>(),
                &others.0,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn a_steered_thread_avoids_the_callers_core_then_takes_all_back() {
        let all = CpuSet::current().unwrap();
        // SAFETY: as in `without_this_core`.
        if unsafe { libc::CPU_COUNT(&all.0) } < 2 {
            eprintln!("SKIP a_steered_thread_avoids_the_callers_core: one core");
            return;
        }
        let (go, wait) = channel::<()>();
        let (report, reported) = channel();
        let thread = std::thread::spawn(move || {
            wait.recv().unwrap();
            let steered = CpuSet::current().unwrap();
            all.apply_to_this_thread();
            let after = CpuSet::current().unwrap();
            // SAFETY: as above.
            report
                .send(unsafe { (libc::CPU_COUNT(&steered.0), libc::CPU_COUNT(&after.0)) })
                .unwrap();
        });
        // Pin this thread, so "this core" stays the same while steering.
        // SAFETY: as above.
        let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).unwrap();
        // SAFETY: as in `current`.
        let mut one: libc::cpu_set_t = unsafe { zeroed() };
        // SAFETY: CPU_SET only touches the set given.
        unsafe { libc::CPU_SET(cpu, &mut one) };
        CpuSet(one).apply_to_this_thread();
        start_elsewhere(&thread, &all);
        all.apply_to_this_thread();
        go.send(()).unwrap();
        let (steered, after) = reported.recv().unwrap();
        thread.join().unwrap();
        // SAFETY: as above.
        let total = unsafe { libc::CPU_COUNT(&all.0) };
        assert_eq!((steered, after), (total - 1, total));
    }
}
