//! Template content and rendering. A template has, per locale, a subject, a text part and an
//! optional HTML part, written in Jinja syntax (minijinja). Rendering is strict: a variable the
//! data does not have is an error naming it, never a blank in a sent mail (`is defined` and
//! `default(...)` are how a template makes one optional). The HTML part is autoescaped; the
//! subject and the text part are not, so text stays readable (`&` stays `&`).
//!
//! The context is the send's `data` with `recipient` (`email`, `name`) added. Beyond Jinja's
//! built-in filters there is `datetime`: an RFC 3339 time as `2026-12-01 10:00 UTC`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Locale;

/// Longest template source per part, in characters.
pub const MAX_SUBJECT_CHARS: usize = 1_000;
pub const MAX_TEXT_CHARS: usize = 100_000;
pub const MAX_HTML_CHARS: usize = 500_000;
/// Most locales one template version has.
pub const MAX_LOCALES: usize = 50;

/// One locale's parts, as written (Jinja source).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocaleContent {
    /// One line once rendered (line breaks become spaces).
    #[schema(
        min_length = 1,
        max_length = 1000,
        example = "Confirm your email address, {{ name }}"
    )]
    pub subject: String,
    /// The plain-text part (never escaped).
    #[schema(
        min_length = 1,
        max_length = 100000,
        example = "Hello {{ name }},\n\nconfirm your address: {{ url }}\n"
    )]
    pub text: String,
    /// The HTML part (autoescaped); none = a text-only mail.
    #[serde(default)]
    #[schema(
        max_length = 500000,
        example = "<p>Hello {{ name }},</p><p><a href=\"{{ url }}\">Confirm</a></p>"
    )]
    pub html: Option<String>,
}

/// The parts of a template's locale, for errors and rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Subject,
    Text,
    Html,
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Subject => "subject",
            Part::Text => "text",
            Part::Html => "html",
        }
    }

    /// The name the part has in the environment; `.html` switches autoescaping on.
    fn template_name(self, locale: &Locale) -> String {
        match self {
            Part::Subject => format!("{locale}/subject.txt"),
            Part::Text => format!("{locale}/text.txt"),
            Part::Html => format!("{locale}/body.html"),
        }
    }
}

/// A template version's content, validated: the default locale exists, every part compiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateContent {
    pub default_locale: Locale,
    pub locales: BTreeMap<Locale, LocaleContent>,
}

impl TemplateContent {
    /// Checks `locales` (keyed by language tag) and `default_locale`; every problem is reported
    /// under its field (`default_locale`, `locales.es`, `locales.es.html`).
    pub fn parse(
        default_locale: &str,
        locales: &BTreeMap<String, LocaleContent>,
    ) -> Result<TemplateContent, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let default = Locale::parse(default_locale)
            .map_err(|why| errors.push(("default_locale".to_owned(), why)))
            .ok();
        if locales.is_empty() {
            errors.push((
                "locales".to_owned(),
                "must have at least one locale".to_owned(),
            ));
        }
        if locales.len() > MAX_LOCALES {
            errors.push((
                "locales".to_owned(),
                format!("must have at most {MAX_LOCALES} locales"),
            ));
        }
        let mut parsed = BTreeMap::new();
        for (tag, content) in locales {
            let field = format!("locales.{tag}");
            let locale = match Locale::parse(tag) {
                Ok(locale) => locale,
                Err(why) => {
                    errors.push((field, why));
                    continue;
                }
            };
            let limits = [
                (Part::Subject, Some(&content.subject), MAX_SUBJECT_CHARS),
                (Part::Text, Some(&content.text), MAX_TEXT_CHARS),
                (Part::Html, content.html.as_ref(), MAX_HTML_CHARS),
            ];
            for (part, source, max) in limits {
                let Some(source) = source else { continue };
                let chars = source.chars().count();
                if part != Part::Html && source.trim().is_empty() {
                    errors.push((
                        format!("{field}.{}", part.as_str()),
                        "must not be empty".into(),
                    ));
                } else if chars > max {
                    errors.push((
                        format!("{field}.{}", part.as_str()),
                        format!("must be at most {max} characters"),
                    ));
                } else if source.contains('\0') {
                    errors.push((
                        format!("{field}.{}", part.as_str()),
                        "must not contain NUL characters".into(),
                    ));
                }
            }
            if parsed.insert(locale.clone(), content.clone()).is_some() {
                errors.push((field, format!("{locale} is given twice")));
            }
        }
        if let Some(default) = &default
            && !locales.is_empty()
            && !parsed.contains_key(default)
        {
            errors.push((
                "default_locale".to_owned(),
                format!("{default} is not one of the template's locales"),
            ));
        }
        let content = match (default, errors.is_empty()) {
            (Some(default_locale), true) => TemplateContent {
                default_locale,
                locales: parsed,
            },
            _ => return Err(errors),
        };
        // Syntax last: it is only worth reading once the shape is right.
        Compiled::new(&content)?;
        Ok(content)
    }
}

/// A template version ready to render (its parts compiled once).
pub struct Compiled {
    env: Environment<'static>,
    default_locale: Locale,
    locales: BTreeSet<Locale>,
    with_html: BTreeSet<Locale>,
}

impl fmt::Debug for Compiled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compiled")
            .field("default_locale", &self.default_locale)
            .field("locales", &self.locales)
            .finish()
    }
}

/// What a template renders to for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub locale: Locale,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

/// Why a template did not render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    pub locale: Locale,
    pub part: Part,
    pub line: Option<usize>,
    /// The expression that was undefined (`name`, `event.venue`), when that is the cause.
    pub undefined: Option<String>,
    pub message: String,
}

impl RenderError {
    /// Where in the request the fix belongs: `data.<variable>` for a missing variable.
    pub fn field(&self) -> String {
        match &self.undefined {
            Some(expression) => format!("data.{expression}"),
            None => "data".to_owned(),
        }
    }

    fn location(&self) -> String {
        match self.line {
            Some(line) => format!("the {} {} (line {line})", self.locale, self.part.as_str()),
            None => format!("the {} {}", self.locale, self.part.as_str()),
        }
    }
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.undefined {
            Some(expression) => write!(f, "`{expression}` is missing: {} uses it", self.location()),
            None => write!(f, "{} does not render: {}", self.location(), self.message),
        }
    }
}

impl Compiled {
    /// Compiles every part; syntax errors are reported under `locales.<tag>.<part>`.
    pub fn new(content: &TemplateContent) -> Result<Compiled, Vec<(String, String)>> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Debug info names the undefined expression in errors.
        env.set_debug(true);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.add_filter("datetime", datetime);
        let mut errors = Vec::new();
        let mut with_html = BTreeSet::new();
        for (locale, parts) in &content.locales {
            let sources = [
                (Part::Subject, Some(&parts.subject)),
                (Part::Text, Some(&parts.text)),
                (Part::Html, parts.html.as_ref()),
            ];
            for (part, source) in sources {
                let Some(source) = source else { continue };
                if part == Part::Html {
                    with_html.insert(locale.clone());
                }
                if let Err(err) = env.add_template_owned(part.template_name(locale), source.clone())
                {
                    let line = err
                        .line()
                        .map(|l| format!(" (line {l})"))
                        .unwrap_or_default();
                    errors.push((
                        format!("locales.{locale}.{}", part.as_str()),
                        format!(
                            "is not a valid template{line}: {}",
                            err.detail().unwrap_or("syntax error")
                        ),
                    ));
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Compiled {
            env,
            default_locale: content.default_locale.clone(),
            locales: content.locales.keys().cloned().collect(),
            with_html,
        })
    }

    /// The locale to render for `requested`: the same tag, else its language (`es` for
    /// `es-MX`), else the template's default.
    pub fn locale_for(&self, requested: Option<&Locale>) -> Locale {
        let Some(requested) = requested else {
            return self.default_locale.clone();
        };
        if self.locales.contains(requested) {
            return requested.clone();
        }
        match requested.language() {
            Some(language) if self.locales.contains(&language) => language,
            _ => self.default_locale.clone(),
        }
    }

    /// Renders every part of `locale` (one of [`Self::locale_for`]'s answers) with `context`.
    pub fn render(&self, locale: &Locale, context: &Value) -> Result<Rendered, RenderError> {
        let subject = self.render_part(locale, Part::Subject, context)?;
        let text = self.render_part(locale, Part::Text, context)?;
        let html = if self.with_html.contains(locale) {
            Some(self.render_part(locale, Part::Html, context)?)
        } else {
            None
        };
        Ok(Rendered {
            locale: locale.clone(),
            subject: one_line(&subject),
            text,
            html,
        })
    }

    fn render_part(
        &self,
        locale: &Locale,
        part: Part,
        context: &Value,
    ) -> Result<String, RenderError> {
        let failed = |message: String| RenderError {
            locale: locale.clone(),
            part,
            line: None,
            undefined: None,
            message,
        };
        let template = self
            .env
            .get_template(&part.template_name(locale))
            .map_err(|err| failed(err.to_string()))?;
        template.render(context).map_err(|err| RenderError {
            locale: locale.clone(),
            part,
            line: err.line(),
            undefined: undefined_expression(&err),
            message: err.detail().unwrap_or("rendering failed").to_owned(),
        })
    }
}

/// The render context: the send's `data` (an object) with `recipient` added.
pub fn context(data: &serde_json::Value, email: &str, name: &str) -> Value {
    let mut object = match data {
        serde_json::Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    object.insert(
        "recipient".to_owned(),
        serde_json::json!({"email": email, "name": name}),
    );
    Value::from(minijinja::value::Serde(serde_json::Value::Object(object)))
}

/// minijinja's debug detail for an undefined value reads "`user.name` is undefined".
fn undefined_expression(err: &minijinja::Error) -> Option<String> {
    if err.kind() != minijinja::ErrorKind::UndefinedError {
        return None;
    }
    let detail = err.detail()?;
    let start = detail.find('`')? + 1;
    let end = start + detail[start..].find('`')?;
    let expression = &detail[start..end];
    (!expression.is_empty() && !expression.contains("(...)")).then(|| expression.to_owned())
}

/// Line breaks (and runs of spaces around them) become one space: a subject is one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `{{ starts_at|datetime }}`: an RFC 3339 time as `2026-12-01 10:00 UTC`.
fn datetime(value: String) -> Result<String, minijinja::Error> {
    chrono::DateTime::parse_from_rfc3339(&value)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M UTC")
                .to_string()
        })
        .map_err(|_| {
            minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("datetime: {value:?} is not an RFC 3339 time"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(locales: &[(&str, &str, &str, Option<&str>)]) -> BTreeMap<String, LocaleContent> {
        locales
            .iter()
            .map(|(tag, subject, text, html)| {
                (
                    (*tag).to_owned(),
                    LocaleContent {
                        subject: (*subject).to_owned(),
                        text: (*text).to_owned(),
                        html: html.map(str::to_owned),
                    },
                )
            })
            .collect()
    }

    fn compiled(locales: &[(&str, &str, &str, Option<&str>)]) -> Compiled {
        Compiled::new(&TemplateContent::parse("en", &content(locales)).unwrap()).unwrap()
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let template = compiled(&[(
            "en",
            "Hi\n  {{ name }}",
            "{{ name }} & co",
            Some("<b>{{ name }}</b>"),
        )]);
        let data = serde_json::json!({"name": "Tom & <Jerry>"});
        let en = Locale::parse("en").unwrap();
        let out = template
            .render(&en, &context(&data, "t@example.com", ""))
            .unwrap();
        assert_eq!(out.subject, "Hi Tom & <Jerry>");
        assert_eq!(out.text, "Tom & <Jerry> & co");
        assert_eq!(out.html.as_deref(), Some("<b>Tom &amp; &lt;Jerry&gt;</b>"));
    }

    #[test]
    fn a_missing_variable_is_named() {
        let template = compiled(&[("en", "Hello", "line one\n{{ event.venue }}", None)]);
        let en = Locale::parse("en").unwrap();
        let data = serde_json::json!({"event": {"title": "Meetup"}});
        let err = template
            .render(&en, &context(&data, "t@example.com", ""))
            .unwrap_err();
        assert_eq!(err.undefined.as_deref(), Some("event.venue"));
        assert_eq!(err.field(), "data.event.venue");
        assert_eq!(err.line, Some(2));
        assert!(err.to_string().contains("en text"), "{err}");
        // Optional by choice: `is defined` and `default`.
        let optional = compiled(&[(
            "en",
            "{{ nickname|default('friend') }}",
            "{% if venue is defined %}{{ venue }}{% endif %}.",
            None,
        )]);
        let out = optional
            .render(&en, &context(&serde_json::json!({}), "t@example.com", ""))
            .unwrap();
        assert_eq!((out.subject.as_str(), out.text.as_str()), ("friend", "."));
    }

    #[test]
    fn locales_fall_back_to_the_language_then_the_default() {
        let template = compiled(&[("en", "Hi", "en", None), ("es", "Hola", "es", None)]);
        let pick = |tag: &str| {
            template
                .locale_for(Some(&Locale::parse(tag).unwrap()))
                .to_string()
        };
        assert_eq!(pick("es"), "es");
        assert_eq!(pick("es-MX"), "es");
        assert_eq!(pick("fr"), "en");
        assert_eq!(template.locale_for(None).to_string(), "en");
    }

    #[test]
    fn bad_content_is_reported_per_field() {
        let errors = TemplateContent::parse(
            "fr",
            &content(&[
                ("en", "{{ unclosed", "ok", Some("{% if %}")),
                ("bad tag", "x", "y", None),
            ]),
        )
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert!(fields.contains(&"locales.bad tag"), "{errors:?}");
        assert!(fields.contains(&"default_locale"), "{errors:?}");
        let errors = TemplateContent::parse(
            "en",
            &content(&[("en", "{{ unclosed", "ok", Some("{% if %}"))]),
        )
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["locales.en.subject", "locales.en.html"],
            "{errors:?}"
        );
    }

    #[test]
    fn datetimes_are_formatted() {
        let template = compiled(&[("en", "{{ at|datetime }}", "x", None)]);
        let en = Locale::parse("en").unwrap();
        let out = template
            .render(
                &en,
                &context(
                    &serde_json::json!({"at": "2026-12-01T11:00:00+01:00"}),
                    "t@example.com",
                    "",
                ),
            )
            .unwrap();
        assert_eq!(out.subject, "2026-12-01 10:00 UTC");
    }
}
