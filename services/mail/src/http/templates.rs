//! `/templates`: the mail templates (admins only). Editing a template adds a version; messages
//! keep the version they were rendered from, and `?version=` shows any of them.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use identity::{Admin, RequireRole};
use kit::{ApiError, ApiResult, FieldErrors, Json, Page, PageParams, Path, Query};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use crate::domain::template::context;
use crate::domain::{
    Category, Compiled, EmailAddress, Locale, LocaleContent, TemplateContent, TemplateKey,
};
use crate::store::templates::{self, NewVersion, TemplateRow};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_templates, create_template))
        .routes(routes!(get_template, update_template, archive_template))
        .routes(routes!(render_template))
}

/// A template at one version.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Template {
    pub key: String,
    pub description: String,
    /// The category of its mail unless a send says otherwise.
    pub category: Category,
    /// The version shown.
    pub version: u32,
    /// The newest version: what new mail uses.
    pub latest_version: u32,
    pub default_locale: String,
    /// Subject, text and HTML per language tag.
    pub locales: BTreeMap<String, LocaleContent>,
    /// Example data: what a preview renders when given none.
    #[schema(value_type = Object)]
    pub sample_data: serde_json::Value,
    /// The admin who wrote this version (none for seed data).
    pub version_created_by: Option<Uuid>,
    pub version_created_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Archived templates send nothing; editing one restores it.
    pub archived_at: Option<DateTime<Utc>>,
}

impl From<TemplateRow> for Template {
    fn from(row: TemplateRow) -> Self {
        Template {
            key: row.key,
            description: row.description,
            category: Category::parse(&row.category).unwrap_or(Category::Transactional),
            version: row.version.unsigned_abs(),
            latest_version: row.latest_version.unsigned_abs(),
            default_locale: row.default_locale,
            locales: row.locales.0,
            sample_data: row.sample_data,
            version_created_by: row.created_by,
            version_created_at: row.version_created_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
            archived_at: row.archived_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    #[schema(
        pattern = "^[a-z][a-z0-9_-]*(\\.[a-z][a-z0-9_-]*)*$",
        max_length = 100,
        example = "events.reminder"
    )]
    pub key: String,
    #[serde(default)]
    #[schema(
        max_length = 500,
        pattern = r"^[^\x00]*$",
        example = "Reminder the day before an event"
    )]
    pub description: String,
    #[serde(default = "transactional")]
    pub category: Category,
    /// One of `locales`: what a send for another language falls back to.
    #[schema(pattern = "^[a-zA-Z]{2,3}([-_][a-zA-Z]{2})?$", example = "en")]
    pub default_locale: String,
    /// Subject, text and optional HTML (Jinja syntax) per language tag.
    #[schema(schema_with = locales_schema)]
    pub locales: BTreeMap<String, LocaleContent>,
    /// Example data for previews (none or `null`: an empty object).
    #[serde(default)]
    #[schema(value_type = Option<Object>, example = json!({"name": "Ada", "event": {"title": "Rust meetup", "venue": "The Hatchery"}}))]
    pub sample_data: serde_json::Map<String, serde_json::Value>,
}

impl CreateTemplate {
    fn split(self) -> (String, TemplateInput) {
        (
            self.key,
            TemplateInput {
                description: self.description,
                category: self.category,
                default_locale: self.default_locale,
                locales: self.locales,
                sample_data: self.sample_data,
            },
        )
    }
}

/// A template's content: what a new version consists of.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    #[serde(default)]
    #[schema(
        max_length = 500,
        pattern = r"^[^\x00]*$",
        example = "Reminder the day before an event"
    )]
    pub description: String,
    #[serde(default = "transactional")]
    pub category: Category,
    /// One of `locales`: what a send for another language falls back to.
    #[schema(pattern = "^[a-zA-Z]{2,3}([-_][a-zA-Z]{2})?$", example = "en")]
    pub default_locale: String,
    /// Subject, text and optional HTML (Jinja syntax) per language tag.
    #[schema(schema_with = locales_schema)]
    pub locales: BTreeMap<String, LocaleContent>,
    /// Example data for previews (none or `null`: an empty object).
    #[serde(default)]
    #[schema(value_type = Option<Object>, example = json!({"name": "Ada", "event": {"title": "Rust meetup", "venue": "The Hatchery"}}))]
    pub sample_data: serde_json::Map<String, serde_json::Value>,
}

/// `locales`: 1 to 50 language tags, each with its parts.
fn locales_schema() -> utoipa::openapi::Object {
    use utoipa::PartialSchema;
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::Object)
        .property_names(Some(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::Type::String)
                .pattern(Some("^[a-zA-Z]{2,3}([-_][a-zA-Z]{2})?$")),
        ))
        .additional_properties(Some(LocaleContent::schema()))
        .min_properties(Some(1))
        .max_properties(Some(crate::domain::template::MAX_LOCALES))
        .examples([serde_json::json!({"en": {
            "subject": "Tomorrow: {{ event.title }}",
            "text": "Hello {{ name }}, see you tomorrow at {{ event.venue }}.\n",
            "html": "<p>Hello {{ name }}, see you tomorrow at {{ event.venue }}.</p>"
        }})])
        .description(Some(
            "Subject, text and optional HTML (Jinja syntax) per language tag.",
        ))
        .build()
}

fn transactional() -> Category {
    Category::Transactional
}

impl TemplateInput {
    /// The content, or its problems recorded in `errors`.
    fn parse(&self, errors: &mut FieldErrors) -> Option<TemplateContent> {
        if self.description.chars().count() > 500 || self.description.contains('\0') {
            errors.add("description", "must be at most 500 characters, without NUL");
        }
        if crate::domain::contains_nul(&serde_json::Value::Object(self.sample_data.clone())) {
            errors.add("sample_data", "must not contain NUL characters");
        }
        match TemplateContent::parse(&self.default_locale, &self.locales) {
            Ok(content) => Some(content),
            Err(problems) => {
                for (field, message) in problems {
                    errors.add(field, message);
                }
                None
            }
        }
    }

    fn version<'a>(
        &'a self,
        content: &'a TemplateContent,
        sample: &'a serde_json::Value,
        by: Uuid,
    ) -> NewVersion<'a> {
        NewVersion {
            description: &self.description,
            category: self.category,
            content,
            sample_data: sample,
            created_by: Some(by),
        }
    }
}

/// Create a template (version 1).
#[utoipa::path(
    post, path = "/templates", tag = "templates",
    request_body = CreateTemplate,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Template,
            headers(("Location" = String, description = "The template's URL")),
            links(
                ("GetTemplate" = (operation_id = "get_template", parameters(("key" = "$response.body#/key")))),
                ("UpdateTemplate" = (operation_id = "update_template", parameters(("key" = "$response.body#/key")))),
                ("RenderTemplate" = (operation_id = "render_template", parameters(("key" = "$response.body#/key")))),
                ("ArchiveTemplate" = (operation_id = "archive_template", parameters(("key" = "$response.body#/key")))),
            )),
        (status = 409, description = "A template with this key exists, archived or not (`template_exists`)", body = kit::Problem),
        (status = 422, description = "Invalid fields, or a part that is not a valid template (`validation_failed`, the part named)", body = kit::Problem),
    )
)]
async fn create_template(
    State(state): State<AppState>,
    admin: RequireRole<Admin>,
    Json(input): Json<CreateTemplate>,
) -> ApiResult<Response> {
    let (key, input) = input.split();
    let mut errors = FieldErrors::default();
    let key = errors.take("key", TemplateKey::parse(&key));
    let content = input.parse(&mut errors);
    errors.into_result()?;
    let (Some(key), Some(content)) = (key, content) else {
        return Err(ApiError::internal(anyhow::anyhow!("checked above")));
    };
    let sample = serde_json::Value::Object(input.sample_data.clone());
    let mut tx = state.db.begin().await?;
    let created =
        templates::insert(&mut tx, &key, &input.version(&content, &sample, admin.uuid)).await?;
    if !created {
        return Err(ApiError::conflict(
            "template_exists",
            format!(
                "A template `{key}` exists already (it may be archived: edit it to restore it)."
            ),
        ));
    }
    let row = templates::find(&mut *tx, key.as_str(), None)
        .await?
        .ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("template {key} vanished after insert"))
        })?;
    tx.commit().await?;
    tracing::info!(template = %key, "template created");
    Ok((
        StatusCode::CREATED,
        [(LOCATION, format!("/api/mail/v1/templates/{key}"))],
        Json(Template::from(row)),
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionParam {
    /// A past version (default: the newest).
    #[param(minimum = 1, maximum = 2147483647)]
    pub version: Option<u32>,
}

fn template_path_key(key: &str) -> Result<TemplateKey, ApiError> {
    TemplateKey::parse(key).map_err(|_| ApiError::not_found("template"))
}

/// A live template at its newest version, or at `?version=` (archived templates are listed
/// with `?archived=true`).
#[utoipa::path(
    get, path = "/templates/{key}", tag = "templates",
    params(("key" = String, Path, description = "The template's key", max_length = 100), VersionParam),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The template", body = Template),
        (status = 404, description = "No such template or version, or archived", body = kit::Problem),
    )
)]
async fn get_template(
    State(state): State<AppState>,
    _admin: RequireRole<Admin>,
    Path(key): Path<String>,
    Query(params): Query<VersionParam>,
) -> ApiResult<Json<Template>> {
    let key = template_path_key(&key)?;
    let version = params.version.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    let row = templates::find(&state.db, key.as_str(), version)
        .await?
        .filter(|row| row.archived_at.is_none())
        .ok_or_else(|| ApiError::not_found("template"))?;
    Ok(Json(row.into()))
}

/// Replace a template's content: a new version, used by mail sent from now on (mail already
/// queued keeps its version). Editing an archived template restores it.
#[utoipa::path(
    put, path = "/templates/{key}", tag = "templates",
    params(("key" = String, Path, description = "The template's key", max_length = 100)),
    request_body = TemplateInput,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new version", body = Template),
        (status = 404, description = "No such template", body = kit::Problem),
        (status = 422, description = "Invalid fields, or a part that is not a valid template", body = kit::Problem),
    )
)]
async fn update_template(
    State(state): State<AppState>,
    admin: RequireRole<Admin>,
    Path(key): Path<String>,
    Json(input): Json<TemplateInput>,
) -> ApiResult<Json<Template>> {
    let key = template_path_key(&key)?;
    let mut errors = FieldErrors::default();
    let content = input.parse(&mut errors);
    errors.into_result()?;
    let content = content.ok_or_else(|| ApiError::internal(anyhow::anyhow!("checked above")))?;
    let sample = serde_json::Value::Object(input.sample_data.clone());
    let mut tx = state.db.begin().await?;
    if !templates::add_version(
        &mut tx,
        key.as_str(),
        &input.version(&content, &sample, admin.uuid),
    )
    .await?
    {
        return Err(ApiError::not_found("template"));
    }
    let row = templates::find(&mut *tx, key.as_str(), None)
        .await?
        .ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("template {key} vanished after update"))
        })?;
    tx.commit().await?;
    tracing::info!(template = %key, version = row.version, "template updated");
    Ok(Json(row.into()))
}

/// Archive a template: it is kept (with every version) and listed with `?archived=true`, and
/// sends naming it are refused (`template_archived`) until it is edited again.
#[utoipa::path(
    delete, path = "/templates/{key}", tag = "templates",
    params(("key" = String, Path, description = "The template's key", max_length = 100)),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Archived"),
        (status = 404, description = "No such live template", body = kit::Problem),
    )
)]
async fn archive_template(
    State(state): State<AppState>,
    _admin: RequireRole<Admin>,
    Path(key): Path<String>,
) -> ApiResult<StatusCode> {
    let key = template_path_key(&key)?;
    if templates::archive(&state.db, key.as_str()).await? {
        tracing::info!(template = %key, "template archived");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("template"))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TemplateFilter {
    /// Include archived templates.
    #[serde(default)]
    pub archived: bool,
}

/// List templates by key (their newest versions).
#[utoipa::path(
    get, path = "/templates", tag = "templates",
    params(TemplateFilter, PageParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of templates", body = Page<Template>),
        (status = 422, description = "A cursor this listing did not issue", body = kit::Problem),
    )
)]
async fn list_templates(
    State(state): State<AppState>,
    _admin: RequireRole<Admin>,
    Query(filter): Query<TemplateFilter>,
    Query(paging): Query<PageParams>,
) -> ApiResult<Json<Page<Template>>> {
    let page = paging.parse::<String>()?;
    let rows = templates::list(&state.db, filter.archived, &page).await?;
    Ok(Json(Page::from_rows(
        rows,
        &page,
        TemplateRow::key_of,
        Template::from,
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenderRequest {
    /// Language tag (falls back as a send does).
    #[serde(default)]
    #[schema(pattern = "^[a-zA-Z]{2,3}([-_][a-zA-Z]{2})?$", example = "es")]
    pub locale: Option<String>,
    /// The variables; the template's sample data when absent.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
    /// A past version (default: the newest).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 2147483647)]
    pub version: Option<u32>,
    /// The recipient the preview is for (`recipient.email`, `recipient.name`).
    #[serde(default)]
    #[schema(format = "email", max_length = 254, example = "ada@hatchery.test")]
    pub email: Option<String>,
    #[serde(default)]
    #[schema(max_length = 200, example = "Ada Admin")]
    pub name: Option<String>,
}

/// A template rendered for one recipient.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Rendered {
    pub version: u32,
    /// The locale rendered.
    pub locale: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

/// Preview: render a template with sample data, as a send would (a missing variable is a 422
/// naming it).
#[utoipa::path(
    post, path = "/templates/{key}/render", tag = "templates",
    params(("key" = String, Path, description = "The template's key", max_length = 100)),
    request_body = RenderRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The rendered parts", body = Rendered),
        (status = 404, description = "No such template or version", body = kit::Problem),
        (status = 422, description = "Invalid fields, or a variable the template needs is not in `data` (`missing_variable`, named under `errors`)", body = kit::Problem),
    )
)]
async fn render_template(
    State(state): State<AppState>,
    _admin: RequireRole<Admin>,
    Path(key): Path<String>,
    Json(input): Json<RenderRequest>,
) -> ApiResult<Json<Rendered>> {
    let key = template_path_key(&key)?;
    let mut errors = FieldErrors::default();
    let locale = input.locale.as_deref().map(Locale::parse).transpose();
    let locale = errors.take("locale", locale).flatten();
    let email = input.email.as_deref().map(EmailAddress::parse).transpose();
    let email = errors.take("email", email).flatten();
    if input
        .name
        .as_ref()
        .is_some_and(|n| n.chars().count() > 200 || n.chars().any(char::is_control))
    {
        errors.add("name", "must be one line of at most 200 characters");
    }
    errors.into_result()?;
    let version = input.version.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    let row = templates::find(&state.db, key.as_str(), version)
        .await?
        .ok_or_else(|| ApiError::not_found("template"))?;
    let content =
        TemplateContent::parse(&row.default_locale, &row.locales.0).map_err(|problems| {
            ApiError::internal(anyhow::anyhow!(
                "stored template {key} is invalid: {problems:?}"
            ))
        })?;
    let compiled = Compiled::new(&content).map_err(|problems| {
        ApiError::internal(anyhow::anyhow!("stored template {key}: {problems:?}"))
    })?;
    let data = match input.data {
        Some(data) => serde_json::Value::Object(data),
        None => row.sample_data.clone(),
    };
    let email = email.map_or_else(|| "recipient@example.com".to_owned(), |e| e.to_string());
    let locale = compiled.locale_for(locale.as_ref());
    let rendered = compiled
        .render(
            &locale,
            &context(&data, &email, input.name.as_deref().unwrap_or("")),
        )
        .map_err(|error| {
            let mut errors = FieldErrors::default();
            errors.add(error.field(), error.to_string());
            let code = if error.undefined.is_some() {
                "missing_variable"
            } else {
                "template_error"
            };
            ApiError::unprocessable(code, error.to_string()).with_errors(errors)
        })?;
    Ok(Json(Rendered {
        version: row.version.unsigned_abs(),
        locale: rendered.locale.to_string(),
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
    }))
}
