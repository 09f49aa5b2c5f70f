//! A starting VM's status from what its guest agent said when it came up
//! (`supervisor::Readiness`): the one place that decision is made, for a
//! create and for a VM re-adopted at daemon start.
//!
//! - agent up, clock and network taken: `running`;
//! - clock not set: `running`, with a warning (the guest keeps its own
//!   time, for a clone the snapshot's; everything else works);
//! - network refused by the agent: `running`, with a warning (the agent is
//!   up and keeps the network it configured itself at boot);
//! - network sent but never confirmed: `error` (a VM that was given a
//!   network and has, as far as anyone knows, none is broken);
//! - agent not up: the caller's choice (still `provisioning` while a wait
//!   goes on in the background, `error` when that wait gives up).

use super::Inner;
use super::admin::emit_quota;
use super::vms::set_status_if;
use crate::store::VmStatus;
use crate::supervisor::{Readiness, SetupProblem};

/// The status `readiness` decides; `None` when the agent did not answer.
pub(super) fn status_after(readiness: &Readiness) -> Option<VmStatus> {
    match readiness {
        Readiness::Ready => Some(VmStatus::Running),
        Readiness::ReadyWithProblems(problems) if problems.iter().any(SetupProblem::is_fatal) => {
            Some(VmStatus::Error)
        }
        Readiness::ReadyWithProblems(_) => Some(VmStatus::Running),
        Readiness::NotReady(_) => None,
    }
}

/// Logs every problem in `readiness`, then moves provisioning VM `id` to
/// the status it decides, or to `not_ready` when the agent did not answer
/// (`None`: it stays `provisioning`). A VM no longer provisioning (deleted,
/// or its monitor ended meanwhile) is left as it is. True when it moved.
pub(super) fn settle(
    inner: &Inner,
    id: &str,
    readiness: &Readiness,
    not_ready: Option<VmStatus>,
) -> bool {
    match readiness {
        Readiness::ReadyWithProblems(problems) => {
            for problem in problems {
                tracing::warn!("VM {id}: {problem}");
            }
        }
        Readiness::NotReady(why) if not_ready.is_some() => {
            tracing::warn!("VM {id}: the guest agent did not answer: {why}");
        }
        _ => {}
    }
    let Some(status) = status_after(readiness).or(not_ready) else {
        return false;
    };
    let moved = set_status_if(inner, id, VmStatus::Provisioning, status);
    if moved && status == VmStatus::Error {
        // An `error` VM holds no quota.
        if let Ok(Some(row)) = inner.store.get_vm_any(id) {
            emit_quota(inner, &row.org_id);
        }
    }
    moved
}

impl super::Service {
    /// [`settle`] on the store's threads, for a readiness found without one.
    pub(super) async fn settle(
        &self,
        id: String,
        readiness: Readiness,
        not_ready: Option<VmStatus>,
    ) {
        let _ = self
            .db(move |inner| Ok(settle(inner, &id, &readiness, not_ready)))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{Service, ServiceConfig};
    use crate::store::NewVm;
    use crate::supervisor::GuestChoice;

    /// A service on a new data dir, and a provisioning VM row in it.
    fn service_with_vm(tmp: &std::path::Path) -> (Service, String) {
        let mut config = ServiceConfig::new(tmp.into(), GuestChoice::Test, "/bin/false".into());
        config.network = false;
        let service = Service::open_blocking(config).unwrap().service;
        let store = &service.inner.store;
        let org = store.default_org().unwrap().unwrap();
        let row = store
            .create_vm_within_quota(NewVm {
                org_id: org.id,
                name: "vm".into(),
                machine_name: "c1m2".into(),
                source_name: None,
                source_snapshot_id: None,
                vcpus: 1,
                memory_mib: 2048,
                disk_gib: 10,
                status: VmStatus::Provisioning,
                firewall_json: r#"{"mode":"restricted","ingress":[]}"#.into(),
                public_ipv6: None,
                run_json: "{}".into(),
            })
            .unwrap();
        (service, row.id)
    }

    fn status(service: &Service, id: &str) -> VmStatus {
        service.inner.store.get_vm_any(id).unwrap().unwrap().status
    }

    #[test]
    fn settling_moves_only_a_provisioning_vm_and_tells_watchers() {
        let tmp = tempfile::tempdir().unwrap();
        let (service, id) = service_with_vm(tmp.path());
        let mut events = service.subscribe();
        let failed = Readiness::ReadyWithProblems(vec![SetupProblem::NetworkFailed("gone".into())]);
        assert!(settle(&service.inner, &id, &failed, None));
        assert_eq!(status(&service, &id), VmStatus::Error);
        let event = events.try_recv().unwrap();
        assert_eq!(event.data["status"], "error");
        // Decided already: a later answer changes nothing.
        assert!(!settle(&service.inner, &id, &Readiness::Ready, None));
        assert_eq!(status(&service, &id), VmStatus::Error);

        let tmp = tempfile::tempdir().unwrap();
        let (service, id) = service_with_vm(tmp.path());
        let clock = Readiness::ReadyWithProblems(vec![SetupProblem::Clock("refused".into())]);
        assert!(settle(&service.inner, &id, &clock, None));
        assert_eq!(status(&service, &id), VmStatus::Running);
    }

    #[test]
    fn an_agent_that_does_not_answer_leaves_the_choice_to_the_caller() {
        let tmp = tempfile::tempdir().unwrap();
        let (service, id) = service_with_vm(tmp.path());
        let silent = Readiness::NotReady("timeout".into());
        assert!(!settle(&service.inner, &id, &silent, None));
        assert_eq!(status(&service, &id), VmStatus::Provisioning);
        assert!(settle(&service.inner, &id, &silent, Some(VmStatus::Error)));
        assert_eq!(status(&service, &id), VmStatus::Error);
    }

    #[test]
    fn only_an_unconfirmed_network_makes_a_ready_agent_an_error() {
        let with = |p: Vec<SetupProblem>| status_after(&Readiness::ReadyWithProblems(p));
        assert_eq!(status_after(&Readiness::Ready), Some(VmStatus::Running));
        assert_eq!(
            with(vec![SetupProblem::Clock("refused".into())]),
            Some(VmStatus::Running)
        );
        assert_eq!(
            with(vec![SetupProblem::NetworkRefused("no".into())]),
            Some(VmStatus::Running)
        );
        assert_eq!(
            with(vec![
                SetupProblem::Clock("timeout".into()),
                SetupProblem::NetworkFailed("closed".into()),
            ]),
            Some(VmStatus::Error)
        );
        assert_eq!(status_after(&Readiness::NotReady("x".into())), None);
    }
}
