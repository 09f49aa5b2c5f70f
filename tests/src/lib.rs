//! Workspace-level integration tests (API, socket and end-to-end tests of
//! `fastvmd serve`) live in `tests/tests/`. The monitor's own tests, which
//! drive the `fastvmd vmm` binary, are in `fastvmd/tests/` so cargo builds
//! that binary for them.
