//! Seed data: `populator/<scenario>/mail/*.yaml` → rows, get-or-create (templates by key, event
//! mappings by event type, users by UUID): an existing row is never changed, so an edited
//! template survives every restart.
//!
//! ```yaml
//! users:
//!   - id: 0193a000-0000-7000-8000-000000000001
//!     email: ada@hatchery.test
//!     name: Ada Admin
//!     roles: [admin]
//! templates:
//!   - key: auth.verify_email
//!     description: Sent after signing up
//!     category: transactional            # or notification (default transactional)
//!     default_locale: en
//!     sample_data: {name: Ada, url: "https://..."}
//!     locales:
//!       en: {subject: "...", text: "...", html: "..."}   # html optional
//!       es: {subject: "...", text: "..."}
//! event_mails:
//!   - event: auth.email.verification_requested   # the event type (routing key)
//!     template: auth.verify_email                 # a template of this scenario or the database
//!     email: /email                               # JSON pointers into the event's data
//!     name: /name                                 # optional
//!     user: /user                                 # optional: the recipient's user id
//!     locale: /locale                             # optional: a language tag
//!     category: notification                      # optional: else the template's
//! ```

use std::collections::{BTreeMap, HashSet};

use futures_util::future::BoxFuture;
use populator::{Error, Report, Scenario, Spanned};
use serde::Deserialize;
use sqlx::PgConnection;

use crate::domain::{Category, LocaleContent, TemplateContent, TemplateKey};
use crate::store::event_mails::{self, EventMail};
use crate::store::templates::{self, NewVersion};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    #[serde(default)]
    pub users: Vec<identity::users::UserSeed>,
    #[serde(default)]
    pub templates: Vec<TemplateSeed>,
    #[serde(default)]
    pub event_mails: Vec<EventMailSeed>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSeed {
    pub key: Spanned<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub category: Option<Spanned<String>>,
    pub default_locale: String,
    pub locales: BTreeMap<String, LocaleContent>,
    #[serde(default)]
    pub sample_data: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventMailSeed {
    pub event: Spanned<String>,
    pub template: Spanned<String>,
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub locale: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
}

/// Loads the scenario's files for this service: users, templates, then the event mappings that
/// name templates.
pub fn load<'a>(
    conn: &'a mut PgConnection,
    scenario: &'a Scenario,
) -> BoxFuture<'a, Result<Report, Error>> {
    Box::pin(async move {
        let sources = scenario.read::<Document>(<crate::Mail as kit::Service>::NAME)?;
        let mut report = Report::default();
        identity::users::seed(conn, &sources, |doc| &doc.users, &mut report).await?;
        let mut defined = HashSet::new();
        for source in &sources {
            for template in &source.doc.templates {
                let line = template.key.line();
                let key = TemplateKey::parse(&template.key.value)
                    .map_err(|why| source.error_at(line, format!("key {why}")))?;
                if !defined.insert(key.as_str().to_owned()) {
                    return Err(source.error_at(line, format!("template `{key}` is defined twice")));
                }
                let category = match &template.category {
                    None => Category::Transactional,
                    Some(category) => Category::parse(&category.value).ok_or_else(|| {
                        source.error_at(
                            category.line(),
                            "category must be `transactional` or `notification`",
                        )
                    })?,
                };
                let content = TemplateContent::parse(&template.default_locale, &template.locales)
                    .map_err(|problems| {
                    let why: Vec<String> = problems
                        .into_iter()
                        .map(|(field, message)| format!("{field} {message}"))
                        .collect();
                    source.error_at(line, format!("template `{key}`: {}", why.join("; ")))
                })?;
                let sample = serde_json::Value::Object(template.sample_data.clone());
                let created = templates::insert(
                    conn,
                    &key,
                    &NewVersion {
                        description: &template.description,
                        category,
                        content: &content,
                        sample_data: &sample,
                        created_by: None,
                    },
                )
                .await
                .map_err(|err| source.database_error(line, err))?;
                report.record("templates", created);
            }
        }
        for source in &sources {
            for mapping in &source.doc.event_mails {
                let line = mapping.event.line();
                if !contracts::is_valid_type(&mapping.event.value) {
                    return Err(source.error_at(
                        line,
                        format!(
                            "event `{}` is not an event type (`<service>.<entity>.<verb>`)",
                            mapping.event.value
                        ),
                    ));
                }
                let template = &mapping.template.value;
                let known = defined.contains(template)
                    || templates::current(&mut *conn, template)
                        .await
                        .map_err(|err| source.database_error(line, err))?
                        .is_some();
                if !known {
                    return Err(source.error_at(
                        mapping.template.line(),
                        format!("template `{template}` is not defined (here or in the database)"),
                    ));
                }
                let pointers = [
                    ("email", Some(&mapping.email)),
                    ("name", mapping.name.as_ref()),
                    ("user", mapping.user.as_ref()),
                    ("locale", mapping.locale.as_ref()),
                ];
                for (field, pointer) in pointers {
                    if pointer.is_some_and(|p| !p.starts_with('/')) {
                        return Err(source.error_at(
                            line,
                            format!("{field} must be a JSON pointer such as `/{field}`"),
                        ));
                    }
                }
                if let Some(category) = &mapping.category
                    && Category::parse(category).is_none()
                {
                    return Err(
                        source.error_at(line, "category must be `transactional` or `notification`")
                    );
                }
                let row = EventMail {
                    event_type: mapping.event.value.clone(),
                    template_key: template.clone(),
                    email_pointer: mapping.email.clone(),
                    name_pointer: mapping.name.clone(),
                    user_pointer: mapping.user.clone(),
                    locale_pointer: mapping.locale.clone(),
                    category: mapping.category.clone(),
                };
                let created = event_mails::insert_if_missing(&mut *conn, &row)
                    .await
                    .map_err(|err| source.database_error(line, err))?;
                report.record("event_mails", created);
            }
        }
        Ok(report)
    })
}
