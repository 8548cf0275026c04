//! Typed payloads: the JSON schema of a queue's payload type, checked on submission and shown in
//! the OpenAPI document.
//!
//! Where a worker's handler takes `Job<T>` and `T: utoipa::ToSchema`, `#[task]` registers
//! `T`'s schema for the task's queue ([`PayloadSchema::of`]); the service then refuses a
//! submission whose payload does not match it (400 `validation_failed`, naming the field) and
//! documents `POST /v1/jobs` with one submission schema per typed queue.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::value::RawValue;
use utoipa::openapi::{RefOr, Schema};

use super::FieldError;

/// Longest message one field error carries: a schema error quotes the value it refuses, which
/// may be the whole payload.
const MAX_MESSAGE: usize = 200;

/// A payload type's JSON schema: its name in the OpenAPI document, every schema it refers to,
/// and the validator compiled from them once.
#[derive(Clone)]
pub struct PayloadSchema {
    name: String,
    /// The type's schema and those it refers to, by component name.
    components: BTreeMap<String, RefOr<Schema>>,
    check: Arc<Check>,
}

impl std::fmt::Debug for PayloadSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadSchema")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The compiled validator, and one per branch when the type is a `oneOf` (an enum): a failed
/// `oneOf` says only that nothing matched, so the branch the payload meant is asked why.
struct Check {
    whole: jsonschema::Validator,
    branches: Vec<jsonschema::Validator>,
}

impl PayloadSchema {
    /// The schema `T` describes (`#[derive(utoipa::ToSchema)]`).
    ///
    /// # Panics
    ///
    /// If utoipa's schema for `T` is not a JSON schema the validator can compile, which would be
    /// a bug in the derive.
    pub fn of<T: utoipa::ToSchema>() -> Self {
        let name = T::name().into_owned();
        let mut referenced = Vec::new();
        T::schemas(&mut referenced);
        let mut components: BTreeMap<String, RefOr<Schema>> = referenced.into_iter().collect();
        components.insert(name.clone(), T::schema());
        close_tagged_variants(&mut components);
        Self::from_components(name, components)
            .unwrap_or_else(|err| panic!("the schema utoipa derives for a payload type: {err}"))
    }

    /// The schema named `name` among `components` (OpenAPI component schemas, which refer to
    /// each other as `#/components/schemas/NAME`).
    pub fn from_components(
        name: String,
        components: BTreeMap<String, RefOr<Schema>>,
    ) -> Result<Self, String> {
        let defs = serde_json::to_value(&components).map_err(|e| e.to_string())?;
        let compile = |pointer: String| {
            let document = serde_json::json!({
                "$ref": pointer,
                "components": { "schemas": defs },
            });
            jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .build(&document)
                .map_err(|e| e.to_string())
        };
        let whole = compile(format!("#/components/schemas/{name}"))?;
        let branches = match components.get(&name) {
            Some(RefOr::T(Schema::OneOf(one_of))) => (0..one_of.items.len())
                .map(|i| compile(format!("#/components/schemas/{name}/oneOf/{i}")))
                .collect::<Result<_, _>>()?,
            _ => Vec::new(),
        };
        Ok(Self {
            name,
            components,
            check: Arc::new(Check { whole, branches }),
        })
    }

    /// Its name in the OpenAPI document's components.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schemas to add to the document's components.
    pub(crate) fn components(&self) -> &BTreeMap<String, RefOr<Schema>> {
        &self.components
    }

    /// Checks a submitted payload; field errors are named from the body's root
    /// (`payload.values[1]`).
    pub fn check(&self, payload: &RawValue) -> Result<(), Vec<FieldError>> {
        let value: serde_json::Value =
            serde_json::from_str(payload.get()).map_err(|e| vec![error("", &e.to_string())])?;
        let check = &self.check;
        if check.whole.is_valid(&value) {
            return Ok(());
        }
        if !check.branches.is_empty() {
            return Err(branch_errors(&check.branches, &value));
        }
        Err(errors(&check.whole, &value))
    }
}

/// Types `POST /v1/jobs` (and each job of a batch) in `doc` by queue: the `SubmitJob` schema
/// becomes a `oneOf` of one submission per typed queue (`SubmitJob_QUEUE`, its `queue` fixed
/// to that name and its `payload` the queue's schema) and, when some served queues are untyped,
/// `SubmitUntypedJob` for those; with one queue served, and typed, `SubmitJob` is that queue's
/// submission. Nothing changes when no served queue is typed.
pub(crate) fn type_submissions(
    doc: &mut utoipa::openapi::OpenApi,
    served: &[String],
    schemas: &BTreeMap<String, PayloadSchema>,
) {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Ref, Type};
    if schemas.is_empty() {
        return;
    }
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    let Some(RefOr::T(Schema::Object(generic))) = components.schemas.get("SubmitJob").cloned()
    else {
        return;
    };
    let queue_field = |names: &[&String]| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(names.iter().map(|n| n.as_str())))
            .description(Some(
                "The queue; may be left out when the service serves one queue.",
            ))
            .build()
    };
    let mut one_of = OneOfBuilder::new();
    let mut untyped = Vec::new();
    let mut alternatives = Vec::new();
    for queue in served {
        let Some(schema) = schemas.get(queue) else {
            untyped.push(queue);
            continue;
        };
        for (name, component) in schema.components() {
            components.schemas.insert(name.clone(), component.clone());
        }
        let mut submission = generic.clone();
        submission.description = Some(format!("A job for queue `{queue}`."));
        submission
            .properties
            .insert("queue".into(), queue_field(&[queue]).into());
        submission.properties.insert(
            "payload".into(),
            Ref::from_schema_name(schema.name()).into(),
        );
        if served.len() > 1 {
            submission.required.push("queue".into());
        }
        alternatives.push((format!("SubmitJob_{queue}"), submission));
    }
    // One queue, typed: `SubmitJob` is its submission (generated clients name it so).
    if let ([(_, only)], true) = (alternatives.as_slice(), untyped.is_empty()) {
        components
            .schemas
            .insert("SubmitJob".into(), only.clone().into());
        return;
    }
    for (name, submission) in alternatives {
        components.schemas.insert(name.clone(), submission.into());
        one_of = one_of.item(Ref::from_schema_name(name));
    }
    if !untyped.is_empty() {
        let mut submission = generic;
        submission
            .properties
            .insert("queue".into(), queue_field(&untyped).into());
        if !submission.required.iter().any(|r| r == "queue") {
            submission.required.push("queue".into());
        }
        components
            .schemas
            .insert("SubmitUntypedJob".into(), submission.into());
        one_of = one_of.item(Ref::from_schema_name("SubmitUntypedJob"));
    }
    components.schemas.insert(
        "SubmitJob".into(),
        RefOr::T(Schema::OneOf(
            one_of
                .description(Some(
                    "A job to submit; its payload's schema depends on its queue.",
                ))
                .build(),
        )),
    );
}

/// utoipa writes a variant of a tagged enum (`#[serde(tag = "type")]`) around a struct as
/// `allOf: [{$ref: Struct}, {properties: {type}}]`. When the struct refuses unknown fields
/// (`additionalProperties: false`, from `#[serde(deny_unknown_fields)]`), that `allOf` refuses
/// its own tag, so no payload could match: such a variant becomes one object with the tag's and
/// the struct's properties, closed as the struct is (what serde accepts).
fn close_tagged_variants(components: &mut BTreeMap<String, RefOr<Schema>>) {
    let Ok(serde_json::Value::Object(all)) = serde_json::to_value(&*components) else {
        return;
    };
    let closed = |reference: &serde_json::Value| {
        let name = reference
            .get("$ref")?
            .as_str()?
            .strip_prefix("#/components/schemas/")?;
        let target = all.get(name)?;
        (target.get("additionalProperties") == Some(&serde_json::Value::Bool(false))
            && target.get("properties").is_some())
        .then_some(target)
    };
    let merge = |parts: &[serde_json::Value]| -> Option<serde_json::Value> {
        let mut properties = serde_json::Map::new();
        let mut required = Vec::new();
        let mut description = None;
        let mut closes = false;
        for part in parts {
            let part = match closed(part) {
                Some(target) => {
                    closes = true;
                    description = target.get("description").cloned();
                    target
                }
                None if part.get("$ref").is_none() && part.get("properties").is_some() => part,
                None => return None,
            };
            properties.extend(part.get("properties")?.as_object()?.clone());
            if let Some(names) = part.get("required").and_then(|r| r.as_array()) {
                required.extend(names.iter().cloned());
            }
        }
        if !closes {
            return None;
        }
        let mut object = serde_json::json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        });
        if let Some(description) = description {
            object["description"] = description;
        }
        Some(object)
    };
    fn rewrite(
        value: &mut serde_json::Value,
        merge: &dyn Fn(&[serde_json::Value]) -> Option<serde_json::Value>,
    ) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(merged) = map
                    .get("allOf")
                    .and_then(|a| a.as_array())
                    .and_then(|parts| merge(parts))
                {
                    *value = merged;
                    return;
                }
                for child in map.values_mut() {
                    rewrite(child, merge);
                }
            }
            serde_json::Value::Array(items) => {
                for child in items {
                    rewrite(child, merge);
                }
            }
            _ => {}
        }
    }
    for (name, schema) in components.iter_mut() {
        let Some(mut value) = all.get(name).cloned() else {
            continue;
        };
        rewrite(&mut value, &merge);
        if let Ok(rewritten) = serde_json::from_value(value) {
            *schema = rewritten;
        }
    }
}

/// Why `value` fits no branch of a `oneOf`: the errors of the branch it meant, which is the
/// one whose tag (a property fixed to one value) it has; when it has no branch's tag, what the
/// tag may be.
fn branch_errors(branches: &[jsonschema::Validator], value: &serde_json::Value) -> Vec<FieldError> {
    let per_branch: Vec<Vec<jsonschema::ValidationError<'_>>> = branches
        .iter()
        .map(|b| b.iter_errors(value).collect())
        .collect();
    use jsonschema::error::ValidationErrorKind;
    let missing = |errors: &[jsonschema::ValidationError<'_>]| -> Vec<String> {
        errors
            .iter()
            .filter(|e| e.instance_path().as_str().is_empty())
            .filter_map(|e| match e.kind() {
                ValidationErrorKind::Required { property } => property.as_str().map(str::to_owned),
                _ => None,
            })
            .collect()
    };
    // A property every branch misses is the tag, left out.
    let missing_tags: Vec<String> = per_branch.first().map_or_else(Vec::new, |first| {
        missing(first)
            .into_iter()
            .filter(|p| per_branch.iter().all(|b| missing(b).contains(p)))
            .collect()
    });
    let is_tag_error = |e: &jsonschema::ValidationError<'_>| match e.kind() {
        ValidationErrorKind::Enum { .. } | ValidationErrorKind::Constant { .. } => {
            e.instance_path().as_str().matches('/').count() == 1
        }
        ValidationErrorKind::Required { property } => {
            e.instance_path().as_str().is_empty()
                && property
                    .as_str()
                    .is_some_and(|p| missing_tags.iter().any(|t| t == p))
        }
        _ => false,
    };
    if let Some(meant) = per_branch
        .iter()
        .find(|errors| !errors.is_empty() && !errors.iter().any(is_tag_error))
    {
        return meant.iter().flat_map(field_errors).collect();
    }
    // Every branch refuses the tag (or a missing one): say which values it may take.
    let mut tag = None;
    let mut allowed = Vec::new();
    for error in per_branch.iter().flatten().filter(|e| is_tag_error(e)) {
        match error.kind() {
            ValidationErrorKind::Enum { options } => {
                tag.get_or_insert_with(|| error.instance_path().to_string());
                if let Some(options) = options.as_array() {
                    allowed.extend(options.iter().map(ToString::to_string));
                }
            }
            ValidationErrorKind::Constant { expected_value } => {
                tag.get_or_insert_with(|| error.instance_path().to_string());
                allowed.push(expected_value.to_string());
            }
            _ => {}
        }
    }
    match tag {
        Some(tag) => vec![error(
            &tag,
            &format!("expected one of {}", allowed.join(", ")),
        )],
        None if !missing_tags.is_empty() => missing_tags
            .iter()
            .map(|t| error(&format!("/{t}"), "missing field"))
            .collect(),
        None => per_branch
            .first()
            .map(|errors| errors.iter().flat_map(field_errors).collect())
            .unwrap_or_default(),
    }
}

fn errors(validator: &jsonschema::Validator, value: &serde_json::Value) -> Vec<FieldError> {
    validator
        .iter_errors(value)
        .flat_map(|e| field_errors(&e))
        .collect()
}

/// The field errors one schema error stands for: an unknown or missing property is named as the
/// field itself (`payload.extra`), not as the object holding it.
fn field_errors(e: &jsonschema::ValidationError<'_>) -> Vec<FieldError> {
    use jsonschema::error::ValidationErrorKind;
    let at = e.instance_path().as_str();
    match e.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|name| error(&format!("{at}/{name}"), "unknown field"))
            .collect(),
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_owned);
            vec![error(&format!("{at}/{name}"), "missing field")]
        }
        _ => vec![error(at, &e.to_string())],
    }
}

/// A field error at `pointer` (a JSON pointer into the payload, `/values/1`), as the API names
/// fields: `payload.values[1]`.
fn error(pointer: &str, message: &str) -> FieldError {
    let mut field = String::from("payload");
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
            field.push_str(&format!("[{token}]"));
        } else {
            field.push('.');
            field.push_str(&token);
        }
    }
    let mut message = message.to_owned();
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    FieldError { field, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, utoipa::ToSchema)]
    #[allow(dead_code)]
    struct Resize {
        url: String,
        width: u32,
    }

    #[derive(serde::Deserialize, utoipa::ToSchema)]
    #[serde(tag = "type", rename_all = "snake_case")]
    #[allow(dead_code)]
    enum Work {
        Resize(Resize),
        Sleep { ms: u64 },
    }

    fn raw(value: serde_json::Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(&value).expect("JSON")
    }

    #[test]
    fn a_payload_that_fits_passes_and_one_that_does_not_names_its_field() {
        let schema = PayloadSchema::of::<Resize>();
        assert_eq!(schema.name(), "Resize");
        assert!(
            schema
                .check(&raw(serde_json::json!({"url": "u", "width": 3})))
                .is_ok()
        );
        let errors = schema
            .check(&raw(serde_json::json!({"url": "u", "width": "wide"})))
            .unwrap_err();
        assert_eq!(errors[0].field, "payload.width", "{errors:?}");
        let errors = schema
            .check(&raw(serde_json::json!({"url": "u"})))
            .unwrap_err();
        assert_eq!(errors[0].field, "payload.width", "{errors:?}");
        assert_eq!(errors[0].message, "missing field");
    }

    #[test]
    fn an_enum_payload_is_checked_against_the_variant_its_tag_names() {
        let schema = PayloadSchema::of::<Work>();
        for fits in [
            serde_json::json!({"type": "resize", "url": "u", "width": 3}),
            serde_json::json!({"type": "sleep", "ms": 10}),
        ] {
            assert!(schema.check(&raw(fits.clone())).is_ok(), "{fits}");
        }
        let errors = schema
            .check(&raw(serde_json::json!({"type": "sleep", "ms": "long"})))
            .unwrap_err();
        assert_eq!(errors[0].field, "payload.ms", "{errors:?}");
        let errors = schema
            .check(&raw(serde_json::json!({"type": "sleep"})))
            .unwrap_err();
        assert_eq!(errors[0].field, "payload.ms", "{errors:?}");
        let errors = schema
            .check(&raw(serde_json::json!({"ms": 1})))
            .unwrap_err();
        assert_eq!(errors[0].field, "payload.type", "{errors:?}");
        assert_eq!(errors[0].message, "missing field");
        let errors = schema
            .check(&raw(serde_json::json!({"type": "teleport"})))
            .unwrap_err();
        assert_eq!(errors[0].field, "payload.type", "{errors:?}");
        assert!(errors[0].message.contains("\"sleep\""), "{errors:?}");
    }

    #[derive(serde::Deserialize, utoipa::ToSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Strict {
        ms: u64,
    }

    #[derive(serde::Deserialize, utoipa::ToSchema)]
    #[serde(tag = "type", rename_all = "snake_case")]
    #[allow(dead_code)]
    enum StrictWork {
        Sleep(Strict),
    }

    #[test]
    fn a_tagged_variant_of_a_strict_struct_takes_its_tag_and_refuses_other_fields() {
        let schema = PayloadSchema::of::<StrictWork>();
        let doc = serde_json::to_string(schema.components()).unwrap_or_default();
        assert!(
            schema
                .check(&raw(serde_json::json!({"type": "sleep", "ms": 1})))
                .is_ok(),
            "{doc}"
        );
        let errors = schema
            .check(&raw(
                serde_json::json!({"type": "sleep", "ms": 1, "extra": 2}),
            ))
            .unwrap_err();
        assert_eq!(errors[0].field, "payload.extra", "{errors:?} {doc}");
        assert_eq!(errors[0].message, "unknown field");
    }

    #[test]
    fn messages_are_bounded() {
        let schema = PayloadSchema::of::<Resize>();
        let long = "x".repeat(10_000);
        let errors = schema
            .check(&raw(serde_json::json!({"url": 1, "width": long})))
            .unwrap_err();
        assert!(errors.iter().all(|e| e.message.len() <= MAX_MESSAGE + 3));
    }
}
