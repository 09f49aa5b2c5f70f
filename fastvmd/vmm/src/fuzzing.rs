//! Entry points of the monitor's device fuzz targets (run from
//! `fastvmd/fuzz`, listed with the others in `fastvmd::fuzzing`): queue
//! processing of virtio-vsock and virtio-net over guest memory the fuzzer
//! writes. The monitor program never calls them.

pub use crate::devices::virtio::net::fuzz::virtio_net;
pub use crate::devices::virtio::vsock::fuzz::virtio_vsock;
