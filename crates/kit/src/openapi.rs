//! The OpenAPI document every service serves at `/openapi.json`, and its rendering at `/docs`.
//!
//! Handlers describe what is theirs (`#[utoipa::path]`: parameters, request body, success
//! responses, the errors only they produce, and `security(("bearer" = []))` when they need a
//! token). [`finish`] then adds, once for every service, what kit answers on their behalf, read
//! from what each operation declares:
//!
//! | the operation has | kit may answer |
//! |---|---|
//! | anything | 500 `internal_error`, 504 `timeout` |
//! | a JSON request body | 400 `malformed_json`, 413 `payload_too_large`, 415 `unsupported_media_type`, 422 `validation_failed` |
//! | query or header parameters | 400 `invalid_query` / `invalid_idempotency_key` |
//! | path parameters | 404 `not_found` (a malformed id names nothing) |
//! | `security` | 401 `unauthorized` (with `WWW-Authenticate: Bearer`), 403 `forbidden`, 503 `auth_unavailable` |
//!
//! Every error body is `application/problem+json` with the `Problem` schema (a handler's own
//! `body = kit::Problem` responses are moved to that content type too); every response carries
//! `X-Request-Id`. A status the handler already documents keeps the handler's description. The
//! document also gets the project's `info` (contact, license), the `bearer` security scheme
//! (HTTP bearer, JWT) and a description on every response (OpenAPI requires one).
//!
//! [`docs`] serves Swagger UI from files compiled into the binary (no CDN), pointed at the
//! service's own `/openapi.json`.

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use utoipa::PartialSchema;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::info::{ContactBuilder, LicenseBuilder};
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    Components, Content, ContentBuilder, Object, ObjectBuilder, OpenApi, Ref, RefOr,
    Response as ApiResponse, ResponseBuilder, Schema, Type,
};

use crate::error::{ApiError, PROBLEM_JSON, Problem};

/// The security scheme handlers name: `security(("bearer" = []))`.
pub const BEARER: &str = "bearer";
/// Who answers for the API (the document's `info.contact`).
pub const CONTACT_NAME: &str = "Hatchery platform team";
/// The workspace's license (an SPDX expression), the document's `info.license`.
pub const LICENSE: &str = env!("CARGO_PKG_LICENSE");
/// Where `/docs` finds the document, relative to `/docs/` (so it works behind a path prefix).
const DOCUMENT_FROM_DOCS: &str = "../openapi.json";

/// The responses kit may answer on a handler's behalf, by status.
struct Standard {
    status: u16,
    name: &'static str,
    description: &'static str,
    example: fn() -> ApiError,
    /// Response headers beyond `X-Request-Id`.
    headers: &'static [&'static str],
}

const REQUEST_ID: &str = "X-Request-Id";
const RETRY_AFTER: &str = "Retry-After";
const WWW_AUTHENTICATE: &str = "WWW-Authenticate";

const STANDARD: &[Standard] = &[
    Standard {
        status: 400,
        name: "BadRequest",
        description: "The request cannot be read: the body is not JSON (`malformed_json`), the query string does not parse (`invalid_query`), or a header is malformed (e.g. `invalid_idempotency_key`).",
        example: || {
            ApiError::bad_request(
                "malformed_json",
                "The request body is not valid JSON: EOF while parsing an object.",
            )
        },
        headers: &[],
    },
    Standard {
        status: 401,
        name: "Unauthorized",
        description: "No bearer token, or one that is invalid, expired or signed out (`unauthorized`).",
        example: || ApiError::unauthorized("This endpoint needs a bearer token."),
        headers: &[WWW_AUTHENTICATE],
    },
    Standard {
        status: 403,
        name: "Forbidden",
        description: "The token is valid but not allowed here (`forbidden`, `account_disabled`).",
        example: || ApiError::forbidden("This needs the `admin` role."),
        headers: &[],
    },
    Standard {
        status: 404,
        name: "NotFound",
        description: "Nothing is at this path, or not for you (`not_found`). A malformed id names nothing either.",
        example: || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "No resource at this path.",
            )
        },
        headers: &[],
    },
    Standard {
        status: 405,
        name: "MethodNotAllowed",
        description: "The path exists but not with this method (`method_not_allowed`); `Allow` lists the methods it has.",
        example: || {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "This resource does not support this method.",
            )
        },
        headers: &[],
    },
    Standard {
        status: 413,
        name: "PayloadTooLarge",
        description: "The body is larger than the service accepts (`payload_too_large`; 1 MiB by default).",
        example: || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The request body is larger than this endpoint accepts.",
            )
        },
        headers: &[],
    },
    Standard {
        status: 415,
        name: "UnsupportedMediaType",
        description: "The body is not sent as `Content-Type: application/json` (`unsupported_media_type`).",
        example: || {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Expected a request body with `Content-Type: application/json`.",
            )
        },
        headers: &[],
    },
    Standard {
        status: 422,
        name: "ValidationFailed",
        description: "The JSON is well-formed but some fields are invalid (`validation_failed`): `errors` names each field with its messages.",
        example: || {
            let mut errors = crate::FieldErrors::default();
            errors.add("title", "must not be empty");
            errors.into()
        },
        headers: &[],
    },
    Standard {
        status: 429,
        name: "RateLimited",
        description: "Too many requests (`rate_limited`); `Retry-After` says when to try again.",
        example: || {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests; try again in 60 seconds.",
            )
        },
        headers: &[RETRY_AFTER],
    },
    Standard {
        status: 500,
        name: "InternalError",
        description: "Something failed on the service's side (`internal_error`); quote the request id when reporting it.",
        example: || ApiError::internal(anyhow::anyhow!("example")),
        headers: &[],
    },
    Standard {
        status: 503,
        name: "AuthUnavailable",
        description: "The token cannot be checked right now (`auth_unavailable`): the credentials may be fine, retry after `Retry-After` seconds.",
        example: || {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_unavailable",
                "Your credentials cannot be checked right now; retry shortly.",
            )
        },
        headers: &[RETRY_AFTER],
    },
    Standard {
        status: 504,
        name: "Timeout",
        description: "The request took longer than the service's limit and was abandoned (`timeout`).",
        example: || {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "The request took longer than 30 s and was abandoned.",
            )
        },
        headers: &[],
    },
];

/// Completes a service's document: the project's contact and license, the `bearer` security
/// scheme, the `Problem` schema, and on every operation the responses kit may give (see the
/// module documentation). Title, version and description are the caller's.
pub fn finish(doc: &mut OpenApi) {
    doc.info.contact = Some(ContactBuilder::new().name(Some(CONTACT_NAME)).build());
    doc.info.license = Some(
        LicenseBuilder::new()
            .name(LICENSE)
            .identifier(Some(LICENSE))
            .build(),
    );
    let components = doc.components.get_or_insert_with(Components::new);
    add_components(components);
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            finish_operation(operation);
        }
    }
}

fn add_components(components: &mut Components) {
    components.security_schemes.insert(
        BEARER.to_owned(),
        RefOr::T(SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "An access token from auth's `POST /api/auth/v1/token`, sent as `Authorization: Bearer <token>`.",
                ))
                .build(),
        )),
    );
    components
        .schemas
        .insert("Problem".to_owned(), Problem::schema());
    let header = |schema: Type, minimum: Option<i32>, description: &str| {
        let schema = ObjectBuilder::new()
            .schema_type(schema)
            .minimum(minimum)
            .build();
        RefOr::T(
            HeaderBuilder::new()
                .schema(Some(Schema::Object(schema)))
                .description(Some(description))
                .build(),
        )
    };
    components.headers.insert(
        REQUEST_ID.to_owned(),
        header(
            Type::String,
            None,
            "The request's id (the client's, if sane, else a new UUIDv7): quote it when reporting a problem.",
        ),
    );
    components.headers.insert(
        RETRY_AFTER.to_owned(),
        header(
            Type::Integer,
            Some(0),
            "Seconds to wait before trying again.",
        ),
    );
    components.headers.insert(
        WWW_AUTHENTICATE.to_owned(),
        header(Type::String, None, "`Bearer`."),
    );
    for standard in STANDARD {
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .example(serde_json::to_value((standard.example)().to_problem()).ok())
            .build();
        let mut response = ResponseBuilder::new()
            .description(standard.description)
            .content(PROBLEM_JSON, content);
        for name in [REQUEST_ID].iter().chain(standard.headers) {
            response = response.header_ref(*name, header_ref(name));
        }
        components
            .responses
            .insert(standard.name.to_owned(), RefOr::T(response.build()));
    }
}

fn header_ref(name: &str) -> Ref {
    Ref::new(format!("#/components/headers/{name}"))
}

fn standard_ref(status: u16) -> Option<RefOr<ApiResponse>> {
    STANDARD
        .iter()
        .find(|s| s.status == status)
        .map(|s| RefOr::Ref(Ref::from_response_name(s.name)))
}

/// Whether the operation names a security requirement (an empty `{}` one means optional).
fn is_secured(operation: &Operation) -> bool {
    operation.security.as_ref().is_some_and(|requirements| {
        !requirements.is_empty()
            && requirements.iter().all(|requirement| {
                serde_json::to_value(requirement)
                    .ok()
                    .and_then(|value| value.as_object().map(|o| !o.is_empty()))
                    .unwrap_or(false)
            })
    })
}

fn finish_operation(operation: &mut Operation) {
    let parameters = operation.parameters.as_deref().unwrap_or_default();
    let has_param = |place: ParameterIn| {
        parameters
            .iter()
            .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == place))
    };
    let json_body = operation
        .request_body
        .as_ref()
        .is_some_and(|body| match body {
            RefOr::T(body) => body
                .content
                .keys()
                .any(|ct| ct == "application/json" || ct.ends_with("+json")),
            RefOr::Ref(_) => false,
        });
    let mut statuses: Vec<u16> = vec![500, 504];
    if json_body {
        statuses.extend([400, 413, 415, 422]);
    }
    if has_param(ParameterIn::Query) || has_param(ParameterIn::Header) {
        statuses.push(400);
    }
    if has_param(ParameterIn::Path) {
        statuses.push(404);
    }
    if is_secured(operation) {
        statuses.extend([401, 403, 503]);
    }
    let responses = &mut operation.responses.responses;
    // A problem response the handler wrote without a description of its own is the standard
    // one (with its description, example and headers).
    for (status, response) in responses.iter_mut() {
        let standard = status.parse().ok().and_then(standard_ref);
        if let (RefOr::T(own), Some(standard)) = (&*response, standard)
            && own.description.is_empty()
            && own.content.get("application/json").is_some_and(is_problem)
        {
            *response = standard;
        }
    }
    for status in statuses {
        if let (false, Some(standard)) = (
            responses.contains_key(&status.to_string()),
            standard_ref(status),
        ) {
            responses.insert(status.to_string(), standard);
        }
    }
    for (status, response) in responses.iter_mut() {
        if let RefOr::T(response) = response {
            finish_response(status, response);
        }
    }
}

/// Whether a response content is a `Problem` document.
fn is_problem(content: &RefOr<Content>) -> bool {
    let problem = Ref::from_schema_name("Problem").ref_location;
    matches!(content, RefOr::T(Content { schema: Some(RefOr::Ref(r)), .. }) if r.ref_location == problem)
}

/// A handler's own response: a description if it has none, problem bodies as
/// `application/problem+json`, and the request id header.
fn finish_response(status: &str, response: &mut ApiResponse) {
    if response.description.is_empty() {
        response.description = status
            .parse::<u16>()
            .ok()
            .and_then(|code| StatusCode::from_u16(code).ok())
            .and_then(|code| code.canonical_reason())
            .unwrap_or("Response")
            .to_owned();
    }
    if response
        .content
        .get("application/json")
        .is_some_and(is_problem)
        && let Some(content) = response.content.shift_remove("application/json")
    {
        response.content.insert(PROBLEM_JSON.to_owned(), content);
    }
    response
        .headers
        .entry(REQUEST_ID.to_owned())
        .or_insert_with(|| RefOr::Ref(header_ref(REQUEST_ID)));
}

/// `/docs`: Swagger UI for the service's `/openapi.json`, from files compiled into the binary.
pub fn docs() -> Router {
    let config = Arc::new(
        utoipa_swagger_ui::Config::new([DOCUMENT_FROM_DOCS])
            // Swagger UI otherwise sends the document to an online validator for a badge.
            .validator_url("none")
            .persist_authorization(true)
            .display_operation_id(true)
            .display_request_duration(true),
    );
    let index = config.clone();
    Router::new()
        .route("/docs", get(|| async { Redirect::permanent("docs/") }))
        .route(
            "/docs/",
            get(move || serve_docs(String::new(), index.clone())),
        )
        .route(
            "/docs/{*file}",
            get(move |Path(file): Path<String>| serve_docs(file, config.clone())),
        )
}

async fn serve_docs(file: String, config: Arc<utoipa_swagger_ui::Config<'static>>) -> Response {
    match utoipa_swagger_ui::serve(&file, config) {
        Ok(Some(found)) => {
            let content_type = HeaderValue::from_str(&found.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            let mut response = (
                [(header::CONTENT_TYPE, content_type)],
                found.bytes.into_owned(),
            )
                .into_response();
            if found.gzpipped {
                response
                    .headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            response
        }
        Ok(None) => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "No resource at this path.",
        )
        .into_response(),
        Err(err) => {
            ApiError::internal(anyhow::anyhow!("rendering the API docs: {err}")).into_response()
        }
    }
}

/// What `str::trim` removes (Unicode `White_Space`), as the inside of a regex class in the
/// syntax JSON Schema (ECMA-262), Python and Rust share.
pub const WHITESPACE: &str = r"\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// What `char::is_control` is true for (Unicode `Cc`), likewise.
pub const CONTROL: &str = r"\x00-\x1f\x7f-\x9f";

/// The schema of a one-line text field parsed by trimming whitespace, then requiring 1 to
/// `max_chars` characters and no control characters (titles, names). Leading and trailing
/// whitespace does not count, so the rule is a `pattern`, not `minLength`/`maxLength`.
pub fn trimmed_text(max_chars: usize, nullable: bool) -> Object {
    let edge = format!("[^{WHITESPACE}{CONTROL}]");
    let core = match max_chars {
        0 => "(?!)".to_owned(),
        1 => edge.clone(),
        n => format!("{edge}(?:[^{CONTROL}]{{0,{}}}{edge})?", n - 2),
    };
    ObjectBuilder::new()
        .schema_type(string_type(nullable))
        .pattern(Some(format!("^[{WHITESPACE}]*{core}[{WHITESPACE}]*$")))
        .description(Some(format!(
            "1 to {max_chars} characters once leading and trailing whitespace is trimmed; no control characters."
        )))
        .build()
}

/// The schema of free text of at most `max_chars` characters without NUL (bodies, notes).
pub fn free_text(max_chars: usize, nullable: bool) -> Object {
    ObjectBuilder::new()
        .schema_type(string_type(nullable))
        .max_length(Some(max_chars))
        .pattern(Some(r"^[^\x00]*$"))
        .description(Some(format!("At most {max_chars} characters; no NUL.")))
        .build()
}

fn string_type(nullable: bool) -> utoipa::openapi::schema::SchemaType {
    if nullable {
        [Type::String, Type::Null].into_iter().collect()
    } else {
        Type::String.into()
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::extract::State;
    use http::Request;
    use http_body_util::BodyExt;
    use serde_json::{Value, json};
    use tower::ServiceExt;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;

    use super::*;
    use crate::config::HttpSettings;
    use crate::{Json, Path};

    #[derive(serde::Deserialize, utoipa::ToSchema)]
    struct NewThing {
        #[schema(schema_with = thing_name)]
        name: String,
    }

    fn thing_name() -> Object {
        trimmed_text(20, false)
    }

    /// Create a thing (public).
    #[utoipa::path(post, path = "/things", request_body = NewThing,
        responses((status = 201), (status = 409, description = "Taken", body = Problem)))]
    async fn create_thing(Json(thing): Json<NewThing>) -> StatusCode {
        if thing.name.is_empty() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::CREATED
        }
    }

    /// Fetch a thing (needs a token).
    #[utoipa::path(get, path = "/things/{id}", params(("id" = uuid::Uuid, Path)),
        security(("bearer" = [])),
        responses((status = 200, description = "The thing"), (status = 429, body = Problem)))]
    async fn get_thing(State(()): State<()>, Path(_): Path<uuid::Uuid>) -> StatusCode {
        StatusCode::OK
    }

    fn finished() -> Value {
        let (_, mut doc) = OpenApiRouter::new()
            .routes(routes!(create_thing))
            .routes(routes!(get_thing))
            .split_for_parts();
        finish(&mut doc);
        serde_json::to_value(&doc).unwrap()
    }

    fn statuses(operation: &Value) -> Vec<&str> {
        let mut statuses: Vec<&str> = operation["responses"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        statuses.sort_unstable();
        statuses
    }

    #[test]
    fn info_and_security_scheme_are_the_projects() {
        let doc = finished();
        assert_eq!(doc["info"]["contact"]["name"], CONTACT_NAME);
        assert_eq!(doc["info"]["license"]["identifier"], "MIT OR Apache-2.0");
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"],
            json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "An access token from auth's `POST /api/auth/v1/token`, sent as `Authorization: Bearer <token>`."})
        );
    }

    #[test]
    fn every_operation_gets_what_kit_may_answer() {
        let doc = finished();
        let create = &doc["paths"]["/things"]["post"];
        assert_eq!(
            statuses(create),
            ["201", "400", "409", "413", "415", "422", "500", "504"]
        );
        assert!(create.get("security").is_none(), "public stays public");
        let get = &doc["paths"]["/things/{id}"]["get"];
        assert_eq!(
            statuses(get),
            ["200", "401", "403", "404", "429", "500", "503", "504"]
        );
        assert_eq!(get["security"], json!([{"bearer": []}]));
        assert_eq!(
            get["responses"]["401"],
            json!({"$ref": "#/components/responses/Unauthorized"})
        );
        // A problem response without a description of its own is the standard one.
        assert_eq!(
            get["responses"]["429"],
            json!({"$ref": "#/components/responses/RateLimited"})
        );
        let limited = &doc["components"]["responses"]["RateLimited"];
        assert!(limited["headers"]["Retry-After"].is_object());
        // A handler's own problem response keeps its words, as problem+json.
        let taken = &create["responses"]["409"];
        assert_eq!(taken["description"], "Taken");
        assert_eq!(
            taken["content"]["application/problem+json"]["schema"]["$ref"],
            "#/components/schemas/Problem"
        );
        assert!(taken["content"].get("application/json").is_none());
        // OpenAPI requires a description on every response.
        assert_eq!(create["responses"]["201"]["description"], "Created");
        assert!(create["responses"]["201"]["headers"]["X-Request-Id"].is_object());
    }

    #[test]
    fn standard_responses_are_problem_json_matching_kits_problem() {
        let doc = finished();
        let problem = &doc["components"]["schemas"]["Problem"];
        let mut required: Vec<&str> = problem["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        required.sort_unstable();
        assert_eq!(required, ["code", "status", "title", "type"]);
        for standard in STANDARD {
            let response = &doc["components"]["responses"][standard.name];
            let content = &response["content"][PROBLEM_JSON];
            assert_eq!(
                content["schema"]["$ref"], "#/components/schemas/Problem",
                "{}",
                standard.name
            );
            // The example is what kit really sends for that status.
            let example: Problem = serde_json::from_value(content["example"].clone()).unwrap();
            assert_eq!(example.status, standard.status, "{}", standard.name);
            assert_eq!(
                example.kind,
                format!("urn:hatchery:problem:{}", example.code)
            );
        }
    }

    #[test]
    fn trimmed_text_matches_the_parsing_rule() {
        let pattern = trimmed_text(5, false).pattern.unwrap();
        let schema = regex::Regex::new(&pattern).unwrap();
        // The rule the domain types apply: trim, then 1..=5 characters, no control characters.
        let rule = |text: &str| {
            let trimmed = text.trim();
            !trimmed.is_empty()
                && trimmed.chars().count() <= 5
                && !trimmed.chars().any(char::is_control)
        };
        for text in [
            "",
            " ",
            "a",
            " a ",
            "abcde",
            "abcdef",
            "  abcde\t\n",
            "a b",
            "a\u{7}b",
            "\u{85}x",
            "x\u{a0}",
            "\u{3000}\u{3000}",
            "é",
            "ab\u{9f}",
            "\tab",
            "a\u{2028}b",
            "a\nb",
        ] {
            assert_eq!(schema.is_match(text), rule(text), "{text:?}");
        }
        let free = regex::Regex::new(&free_text(10, true).pattern.unwrap()).unwrap();
        assert!(free.is_match("any\ntext"));
        assert!(!free.is_match("nul\0"));
    }

    async fn get(router: &Router, path: &str) -> (StatusCode, http::HeaderMap, Vec<u8>) {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body.to_vec())
    }

    #[tokio::test]
    async fn docs_render_from_local_assets_only() {
        let router = crate::http::stack(
            Router::new(),
            crate::http::Ops {
                checks: Vec::new(),
                openapi_json: "{}".to_owned(),
            },
            &HttpSettings::default(),
        );
        let (status, headers, _) = get(&router, "/docs").await;
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(headers[header::LOCATION], "docs/");

        let (status, headers, body) = get(&router, "/docs/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let html = String::from_utf8(body).unwrap();
        let assets: Vec<&str> = ["src=\"", "href=\""]
            .iter()
            .flat_map(|attribute| html.split(attribute).skip(1))
            .filter_map(|rest| rest.split('"').next())
            .collect();
        assert!(assets.len() >= 4, "{html}");
        for asset in assets {
            assert!(
                !asset.contains("//") && !asset.starts_with('/'),
                "not a local asset: {asset}"
            );
            let path = format!("/docs/{}", asset.trim_start_matches("./"));
            let (status, _, body) = get(&router, &path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(!body.is_empty(), "{path}");
        }
        let (_, _, initializer) = get(&router, "/docs/swagger-initializer.js").await;
        let initializer = String::from_utf8(initializer).unwrap();
        assert!(initializer.contains(DOCUMENT_FROM_DOCS), "{initializer}");
        assert!(
            initializer.contains("\"validatorUrl\": \"none\""),
            "{initializer}"
        );

        let (status, headers, _) = get(&router, "/docs/no-such-file.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers[header::CONTENT_TYPE], PROBLEM_JSON);
    }
}
