//! Mailpit's search language, the part of it that matters for a sink.
//!
//! A query is words separated by spaces; `"double quotes"` group words (also after a
//! prefix: `subject:"Your order"`). Every word must match (AND). A leading `-` or `!`
//! negates a word. Matching is case-insensitive and by substring, as in Mailpit.
//!
//! | word | matches |
//! |------|---------|
//! | `to:x` `from:x` `cc:x` `bcc:x` `reply-to:x` | that header's names and addresses |
//! | `addressed:x` | any of the above |
//! | `rcpt:x` | an envelope recipient (`RCPT TO`); not in Mailpit |
//! | `subject:x` | the decoded subject |
//! | `message-id:x` | the `Message-ID` |
//! | `is:read` `is:unread` | read state (a message is read once fetched in full) |
//! | `has:attachment` `has:inline` | attachments / inline parts |
//! | anything else | subject, addresses, attachment names or text body |

use crate::store::Entry;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    To,
    From,
    Cc,
    Bcc,
    ReplyTo,
    Addressed,
    Rcpt,
    Subject,
    MessageId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Condition {
    /// `field` contains the (lower-cased) text.
    Contains(Field, String),
    Read,
    Unread,
    HasAttachment,
    HasInline,
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    negated: bool,
    condition: Condition,
}

/// A parsed query; matches everything when it has no terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Query {
    terms: Vec<Term>,
}

/// Split on spaces outside double quotes, dropping the quotes.
fn words(query: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in query.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

const PREFIXES: [(&str, Field); 9] = [
    ("to:", Field::To),
    ("from:", Field::From),
    ("cc:", Field::Cc),
    ("bcc:", Field::Bcc),
    ("reply-to:", Field::ReplyTo),
    ("addressed:", Field::Addressed),
    ("rcpt:", Field::Rcpt),
    ("subject:", Field::Subject),
    ("message-id:", Field::MessageId),
];

impl Query {
    pub(crate) fn parse(query: &str) -> Query {
        let mut terms = Vec::new();
        for word in words(query) {
            let mut word = word.to_lowercase();
            let negated = word.len() > 1 && (word.starts_with('-') || word.starts_with('!'));
            if negated {
                word.remove(0);
            }
            let condition = match word.as_str() {
                "is:read" => Condition::Read,
                "is:unread" => Condition::Unread,
                "has:attachment" | "has:attachments" => Condition::HasAttachment,
                "has:inline" | "has:inlines" => Condition::HasInline,
                _ => {
                    let prefixed = PREFIXES.iter().find_map(|(prefix, field)| {
                        word.strip_prefix(prefix)
                            .map(|rest| (field.clone(), rest.trim().to_string()))
                    });
                    match prefixed {
                        // `to:` alone says nothing; Mailpit ignores it too.
                        Some((_, rest)) if rest.is_empty() => continue,
                        Some((field, rest)) => Condition::Contains(field, rest),
                        None => Condition::Text(word.trim().to_string()),
                    }
                }
            };
            terms.push(Term { negated, condition });
        }
        Query { terms }
    }

    pub(crate) fn matches(&self, entry: &Entry) -> bool {
        self.terms
            .iter()
            .all(|term| term.condition.holds(entry) != term.negated)
    }
}

impl Condition {
    fn holds(&self, entry: &Entry) -> bool {
        let summary = &entry.summary;
        match self {
            Condition::Contains(field, needle) => {
                let in_list = |list: &[crate::mime::Address]| {
                    list.iter().any(|address| address.contains(needle))
                };
                match field {
                    Field::To => in_list(&summary.to),
                    Field::From => summary
                        .from
                        .as_ref()
                        .is_some_and(|from| from.contains(needle)),
                    Field::Cc => in_list(&summary.cc),
                    Field::Bcc => in_list(&summary.bcc),
                    Field::ReplyTo => in_list(&summary.reply_to),
                    Field::Addressed => {
                        in_list(&summary.to)
                            || summary
                                .from
                                .as_ref()
                                .is_some_and(|from| from.contains(needle))
                            || in_list(&summary.cc)
                            || in_list(&summary.bcc)
                            || in_list(&summary.reply_to)
                    }
                    Field::Rcpt => entry
                        .message
                        .recipients
                        .iter()
                        .any(|recipient| recipient.to_lowercase().contains(needle)),
                    Field::Subject => summary.subject.to_lowercase().contains(needle),
                    Field::MessageId => summary.message_id.to_lowercase().contains(needle),
                }
            }
            Condition::Read => entry.is_read(),
            Condition::Unread => !entry.is_read(),
            Condition::HasAttachment => summary.attachments > 0,
            Condition::HasInline => summary.inline > 0,
            Condition::Text(text) => summary.search_text.contains(text.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_group_words_and_prefixes_are_recognised() {
        assert_eq!(
            words(r#"to:a@b subject:"Your order"  "two words" -x"#),
            vec!["to:a@b", "subject:Your order", "two words", "-x"]
        );
        let query = Query::parse(r#"TO:Alice@Example.com !subject:"Big News" hello is:unread to:"#);
        assert_eq!(
            query.terms,
            vec![
                Term {
                    negated: false,
                    condition: Condition::Contains(Field::To, "alice@example.com".into())
                },
                Term {
                    negated: true,
                    condition: Condition::Contains(Field::Subject, "big news".into())
                },
                Term {
                    negated: false,
                    condition: Condition::Text("hello".into())
                },
                Term {
                    negated: false,
                    condition: Condition::Unread
                },
            ]
        );
    }
}
