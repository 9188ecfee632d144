//! The OpenAPI document every service serves at `/openapi.json`: the routes' own description,
//! finished with the project's `info` and the bearer security scheme.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Components, Contact, License, OpenApi};

/// Name of the bearer security scheme operations refer to (`security(("bearer" = []))`).
pub const BEARER: &str = "bearer";

/// What the document says about the service.
pub struct About {
    pub name: &'static str,
    pub version: &'static str,
    pub description: &'static str,
}

/// Sets the project's `info` and declares the bearer scheme.
pub fn finish(document: &mut OpenApi, about: &About) {
    document.info.title = format!("Hatchery {} service", about.name);
    document.info.version = about.version.to_owned();
    document.info.description = Some(about.description.to_owned());
    let mut contact = Contact::new();
    contact.name = Some("Hatchery".to_owned());
    document.info.contact = Some(contact);
    let mut license = License::new("MIT OR Apache-2.0");
    // An SPDX expression (OpenAPI 3.1 `license.identifier`).
    license.identifier = Some("MIT OR Apache-2.0".to_owned());
    document.info.license = Some(license);
    let components = document.components.get_or_insert_with(Components::new);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
}
