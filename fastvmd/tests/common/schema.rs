//! Validates response bodies against the schemas of `openapi.yaml`.
//!
//! OpenAPI 3.0 schemas are JSON Schema with two differences handled here:
//! `nullable: true` becomes a `null` alternative, and `$ref`s point into
//! `#/components/schemas`, which is kept as the root document.

use std::sync::OnceLock;

use serde_json::{Value, json};

const SPEC: &str = include_str!("../../../fastvm-proto/openapi.yaml");

fn convert_nullable(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("nullable") == Some(&Value::Bool(true)) {
                map.remove("nullable");
                if let Some(Value::String(t)) = map.get("type").cloned() {
                    map.insert("type".into(), json!([t, "null"]));
                }
            }
            for child in map.values_mut() {
                convert_nullable(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(convert_nullable),
        _ => {}
    }
}

fn components() -> &'static Value {
    static COMPONENTS: OnceLock<Value> = OnceLock::new();
    COMPONENTS.get_or_init(|| {
        let spec: Value = serde_yaml_ng::from_str(SPEC).expect("openapi.yaml parses");
        let mut components = spec["components"].clone();
        convert_nullable(&mut components);
        components
    })
}

/// Checks `body` against `#/components/schemas/<name>`; `array_of` checks a
/// JSON array of them. Panics with every violation listed.
pub fn assert_schema(name: &str, body: &Value) {
    check(
        json!({ "$ref": format!("#/components/schemas/{name}") }),
        name,
        body,
    );
}

/// Checks that `body` is an array whose items match `name`.
pub fn assert_array_of(name: &str, body: &Value) {
    check(
        json!({ "type": "array", "items": { "$ref": format!("#/components/schemas/{name}") } }),
        name,
        body,
    );
}

fn check(mut schema: Value, name: &str, body: &Value) {
    schema["components"] = components().clone();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("schema {name}: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "body does not match {name}:\n{}\nbody: {body}",
        errors.join("\n")
    );
}
