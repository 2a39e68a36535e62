//! Checks responses against intake's OpenAPI document: the status must be
//! documented for the operation, the content type must match, and the body
//! must validate against the documented schema.

use std::sync::OnceLock;

use serde_json::Value;
use utoipa::OpenApi;

fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        serde_json::to_value(stowage_intake::routes::ApiDoc::openapi()).expect("document is JSON")
    })
}

/// The documented path template `path` (without query) matches.
fn template_for(path: &str) -> Option<&'static str> {
    let path = path.split('?').next().unwrap_or(path);
    let paths = document()["paths"].as_object()?;
    let segments: Vec<&str> = path.split('/').collect();
    paths
        .keys()
        .find(|template| {
            let parts: Vec<&str> = template.split('/').collect();
            // A trailing `{path}` parameter takes the rest, slashes included.
            let greedy = parts.last().is_some_and(|p| *p == "{path}");
            let fits = if greedy {
                segments.len() >= parts.len()
            } else {
                segments.len() == parts.len()
            };
            let last = parts.len() - 1;
            fits && parts.iter().enumerate().all(|(i, p)| {
                if greedy && i == last {
                    !segments[i..].concat().is_empty()
                } else {
                    p.starts_with('{') && !segments[i].is_empty() || *p == segments[i]
                }
            })
        })
        .map(String::as_str)
}

/// A JSON pointer token, as it appears in a URI fragment.
fn escape(pointer_part: &str) -> String {
    pointer_part
        .replace('~', "~0")
        .replace('/', "~1")
        .replace('{', "%7B")
        .replace('}', "%7D")
}

/// Panics, naming the mismatch, unless the response conforms.
pub fn check(method: &str, path: &str, status: u16, content_type: Option<&str>, body: &[u8]) {
    let what = format!("{method} {path} -> {status}");
    let template =
        template_for(path).unwrap_or_else(|| panic!("{what}: path is not in the OpenAPI document"));
    let method = method.to_ascii_lowercase();
    let operation = &document()["paths"][template][&method];
    assert!(
        operation.is_object(),
        "{what}: {method} is not documented for {template}"
    );
    let response = &operation["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{what}: status {status} is not documented for {method} {template}"
    );
    let Some(content) = response["content"].as_object() else {
        assert!(
            body.is_empty(),
            "{what}: documented without a body, got one"
        );
        return;
    };
    let content_type = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
        .unwrap_or_default();
    assert!(
        content.contains_key(&content_type),
        "{what}: content type {content_type:?} is not documented ({:?})",
        content.keys().collect::<Vec<_>>()
    );
    let instance: Value =
        serde_json::from_slice(body).unwrap_or_else(|e| panic!("{what}: body is not JSON: {e}"));
    let mut schema = document().clone();
    schema["$ref"] = Value::String(format!(
        "#/paths/{}/{method}/responses/{status}/content/{}/schema",
        escape(template),
        escape(&content_type)
    ));
    let validator = jsonschema::draft202012::new(&schema)
        .unwrap_or_else(|e| panic!("{what}: documented schema does not compile: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: body does not match the OpenAPI document: {errors:?}\n{instance}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_their_templates() {
        assert_eq!(template_for("/v1/usage"), Some("/v1/usage"));
        assert_eq!(template_for("/v1/objects?limit=3"), Some("/v1/objects"));
        assert_eq!(
            template_for("/v1/objects/a/b/c.txt"),
            Some("/v1/objects/{path}")
        );
        assert_eq!(
            template_for("/v1/uploads/0b8e9f3a-0000-4000-8000-000000000000"),
            Some("/v1/uploads/{grant_id}")
        );
        assert_eq!(template_for("/v1/nothing"), None);
    }

    #[test]
    fn a_conforming_body_passes_and_a_wrong_one_fails() {
        check(
            "GET",
            "/healthz",
            200,
            Some("application/json"),
            br#"{"status":"ok"}"#,
        );
        let wrong = std::panic::catch_unwind(|| {
            check(
                "GET",
                "/healthz",
                200,
                Some("application/json"),
                br#"{"state":1}"#,
            )
        });
        assert!(wrong.is_err());
        let undocumented = std::panic::catch_unwind(|| {
            check("GET", "/healthz", 418, Some("application/json"), b"{}")
        });
        assert!(undocumented.is_err());
    }
}
