//! Whole-word renaming of the template into a new service.
//!
//! `template` → `<name>`, `Template` → `<Name>`, `TEMPLATE` → `<NAME>` and the
//! template's port → the new port, but only where the word is not adjacent to
//! an ASCII letter or digit. `_` counts as a boundary, so `template_notes`
//! and `TEMPLATE__HTTP__PORT` are rewritten while `templates`, `Templated`
//! and `18005` are not.

/// Rewrites text (and path components) from the template to a new service.
#[derive(Debug, Clone)]
pub struct Renamer {
    pairs: Vec<(String, String)>,
}

impl Renamer {
    /// Rename `from` (lower-case, e.g. `template`) to `to` and port `from_port` to `to_port`.
    pub fn new(from: &str, to: &str, from_port: u16, to_port: u16) -> Renamer {
        Renamer {
            pairs: vec![
                (from.to_string(), to.to_string()),
                (capitalize(from), capitalize(to)),
                (from.to_ascii_uppercase(), to.to_ascii_uppercase()),
                (from_port.to_string(), to_port.to_string()),
            ],
        }
    }

    /// Apply every whole-word replacement to `text`.
    pub fn apply(&self, text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut copied = 0; // bytes of `text` already copied to `out`
        let mut index = 0;
        while index < bytes.len() {
            let boundary_before = index == 0 || !bytes[index - 1].is_ascii_alphanumeric();
            let found = if boundary_before {
                self.pairs.iter().find(|(from, _)| {
                    let end = index + from.len();
                    bytes[index..].starts_with(from.as_bytes())
                        && (end == bytes.len() || !bytes[end].is_ascii_alphanumeric())
                })
            } else {
                None
            };
            match found {
                Some((from, to)) => {
                    // Patterns are ASCII, so these are char boundaries.
                    out.push_str(&text[copied..index]);
                    out.push_str(to);
                    index += from.len();
                    copied = index;
                }
                None => index += 1,
            }
        }
        out.push_str(&text[copied..]);
        out
    }
}

/// `mail` → `Mail`.
pub fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renamer() -> Renamer {
        Renamer::new("template", "billing", 8005, 8007)
    }

    #[test]
    fn rewrites_whole_words_in_all_cases() {
        let r = renamer();
        assert_eq!(r.apply("template"), "billing");
        assert_eq!(r.apply("Template"), "Billing");
        assert_eq!(r.apply("TEMPLATE"), "BILLING");
        assert_eq!(
            r.apply("name = \"template\"\nuse template::App;"),
            "name = \"billing\"\nuse billing::App;"
        );
        assert_eq!(r.apply("/api/template/v1/notes"), "/api/billing/v1/notes");
        assert_eq!(r.apply("The Template service."), "The Billing service.");
    }

    #[test]
    fn underscore_is_a_boundary() {
        let r = renamer();
        assert_eq!(
            r.apply("TEMPLATE__HTTP__PORT=8005"),
            "BILLING__HTTP__PORT=8007"
        );
        assert_eq!(r.apply("template_notes"), "billing_notes");
        assert_eq!(
            r.apply("CREATE TABLE template_notes"),
            "CREATE TABLE billing_notes"
        );
        assert_eq!(r.apply("my_template_db"), "my_billing_db");
        assert_eq!(r.apply("TEMPLATE_"), "BILLING_");
    }

    #[test]
    fn leaves_longer_words_alone() {
        let r = renamer();
        assert_eq!(r.apply("templates"), "templates");
        assert_eq!(
            r.apply("Templated TemplateConfig"),
            "Templated TemplateConfig"
        );
        assert_eq!(r.apply("xtemplate template2"), "xtemplate template2");
        assert_eq!(r.apply("TEMPLATES"), "TEMPLATES");
        assert_eq!(r.apply("TeMpLaTe"), "TeMpLaTe");
    }

    #[test]
    fn rewrites_the_port_as_a_whole_number() {
        let r = renamer();
        assert_eq!(r.apply("port = 8005"), "port = 8007");
        assert_eq!(r.apply("\"8005:8005\""), "\"8007:8007\"");
        assert_eq!(r.apply("127.0.0.1:8005/readyz"), "127.0.0.1:8007/readyz");
        assert_eq!(r.apply("18005 80050 8005a"), "18005 80050 8005a");
    }

    #[test]
    fn keeps_non_ascii_text_intact() {
        let r = renamer();
        assert_eq!(r.apply("é template ü"), "é billing ü");
        assert_eq!(r.apply("→template←"), "→billing←");
        assert_eq!(r.apply(""), "");
    }

    #[test]
    fn capitalizes() {
        assert_eq!(capitalize("mail"), "Mail");
        assert_eq!(capitalize("a1"), "A1");
        assert_eq!(capitalize(""), "");
    }
}
