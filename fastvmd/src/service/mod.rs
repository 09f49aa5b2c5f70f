//! The operation layer: one method per OpenAPI operationId, used by both the
//! HTTP and the Unix-socket front ends. All rules live here.

pub mod error;

pub use error::ServiceError;
