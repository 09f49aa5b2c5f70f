//! The schema checker the API tests rely on accepts conforming bodies and
//! rejects ones that break the spec.

mod common;

use common::schema::{assert_array_of, assert_schema};
use serde_json::json;

fn vm() -> serde_json::Value {
    json!({
        "id": "0b7a3f2e-6a3c-4c1f-9a55-2f1f1f1f1f1f",
        "name": "web",
        "orgId": "org-1",
        "machineName": "c1m2",
        "cpu": 1,
        "memoryMiB": 2048,
        "diskGiB": 10,
        "status": "running",
        "createdAt": "2026-11-28T12:00:00Z",
        "deletedAt": null
    })
}

#[test]
fn conforming_bodies_pass() {
    assert_schema("VMInstance", &vm());
    assert_array_of("VMInstance", &json!([vm(), vm()]));
    assert_schema("ErrorResponse", &json!({"error": "nope"}));
}

#[test]
#[should_panic(expected = "does not match VMInstance")]
fn a_bad_status_fails() {
    let mut body = vm();
    body["status"] = json!("sleeping");
    assert_schema("VMInstance", &body);
}

#[test]
#[should_panic(expected = "does not match VMInstance")]
fn a_missing_field_fails() {
    let mut body = vm();
    body.as_object_mut().unwrap().remove("memoryMiB");
    assert_schema("VMInstance", &body);
}

#[test]
#[should_panic(expected = "does not match VMInstance")]
fn a_malformed_uuid_fails() {
    let mut body = vm();
    body["id"] = json!("not-a-uuid");
    assert_schema("VMInstance", &body);
}
