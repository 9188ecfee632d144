//! The anonymizer: rewrites a copy of a service's database (a restored backup) so it holds no
//! personal data, keeping its shape — every row, UUID and foreign key stays — so a QA or staging
//! environment runs on production-shaped data.
//!
//! Each service declares which of its columns hold personal data and how to replace them
//! (`kit::Database::personal`); a shared crate declares its own tables once
//! (`SharedSchema::personal`: identity for `users`, bus for the outbox, kit for stored
//! idempotent responses). The replacements are deterministic per platform user: an email
//! becomes `u<uuid>@anonymized.invalid` and a name a fake name picked from the user's UUID, so
//! the same user has the same fake identity in every service's database. Values that belong to
//! no known user are replaced by a salted hash (one salt for a whole `cargo xtask anonymize`
//! run, so equal values stay equal across services and unequal ones stay apart).
//!
//! `<service> anonymize --database NAME` refuses the service's own configured database unless
//! given `--i-mean-it`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection};

use crate::db::quote_identifier;

/// How a personal value is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// An email address: `u<uuid>@anonymized.invalid` for a platform user, found by `user` (an
    /// SQL expression over the row giving the user's UUID, such as `uuid` or
    /// `(SELECT uuid FROM users WHERE id = messages.user_id)`) or by the original address among
    /// the service's users; `x<hash>@anonymized.invalid` otherwise.
    Email { user: Option<&'static str> },
    /// A person's name: a fake first and last name picked from the user's UUID (found as for
    /// `Email`, by `user` or by the original name among the users), from a hash otherwise.
    Name { user: Option<&'static str> },
    /// An IP address (text): IPv4 into 192.0.2.0/24, IPv6 into 2001:db8::/32 (the documentation
    /// ranges), the same address always to the same replacement.
    Ip,
    /// Free text: `[redacted]`.
    Text,
    /// JSON (`json` or `jsonb`): every string in it becomes `[redacted]`; the structure,
    /// numbers and booleans stay.
    Json,
    /// A secret or a credential (a password hash, a token, a key): random bytes or text of the
    /// column's type, which nothing can use.
    Secret,
    /// Emptied (`NULL`).
    Null,
}

/// One declaration: a personal column, or a table whose rows are removed altogether (stored
/// responses, unpublished events, tokens: nothing a copy needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personal {
    Column {
        table: &'static str,
        column: &'static str,
        replace: Replace,
    },
    Clear {
        table: &'static str,
    },
}

impl Personal {
    pub const fn column(table: &'static str, column: &'static str, replace: Replace) -> Self {
        Personal::Column {
            table,
            column,
            replace,
        }
    }

    pub const fn clear(table: &'static str) -> Self {
        Personal::Clear { table }
    }

    pub fn table(&self) -> &'static str {
        match self {
            Personal::Column { table, .. } | Personal::Clear { table } => table,
        }
    }
}

/// What an anonymizing run did.
#[derive(Debug, Default)]
pub struct Report {
    /// Rows rewritten per table.
    pub rewritten: BTreeMap<String, u64>,
    /// Rows removed per cleared table.
    pub cleared: BTreeMap<String, u64>,
    pub took: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rewritten: u64 = self.rewritten.values().sum();
        let cleared: u64 = self.cleared.values().sum();
        write!(
            f,
            "{rewritten} row(s) rewritten in {} table(s), {cleared} row(s) removed from {} table(s), in {} ms",
            self.rewritten.len(),
            self.cleared.len(),
            self.took.as_millis()
        )
    }
}

const FIRST_NAMES: [&str; 32] = [
    "Avery", "Blake", "Casey", "Dana", "Eden", "Finley", "Gray", "Harper", "Indigo", "Jules",
    "Kai", "Logan", "Morgan", "Noel", "Oakley", "Parker", "Quinn", "Reese", "Sage", "Taylor",
    "Umber", "Val", "Wren", "Xen", "Yael", "Zion", "Ari", "Bo", "Cruz", "Drew", "Emery", "Frost",
];

const LAST_NAMES: [&str; 32] = [
    "Alder", "Birch", "Cedar", "Dune", "Elm", "Fern", "Glen", "Heath", "Iris", "Juniper",
    "Kestrel", "Larch", "Maple", "North", "Oak", "Pine", "Quill", "Rowan", "Spruce", "Thorn",
    "Upland", "Vale", "Willow", "Yarrow", "Zephyr", "Ash", "Brook", "Cliff", "Dale", "Ember",
    "Field", "Grove",
];

fn sql_array(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
    format!("ARRAY[{}]", quoted.join(","))
}

/// The helper functions (in `pg_temp`, gone with the connection) and the people known before
/// anything changes.
fn setup(salt: &str) -> String {
    let salt = salt.replace('\'', "''");
    format!(
        r#"
CREATE FUNCTION pg_temp.anon_hash(value text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT md5('{salt}' || value)
$$;
CREATE FUNCTION pg_temp.anon_int(value text) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT ('x' || substr(md5('{salt}' || value), 1, 8))::bit(32)::bigint
$$;
CREATE FUNCTION pg_temp.anon_email(person uuid, original text) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN person IS NOT NULL
        THEN 'u' || replace(person::text, '-', '') || '@anonymized.invalid'
        ELSE 'x' || substr(pg_temp.anon_hash(lower(trim(original))), 1, 24) || '@anonymized.invalid'
    END
$$;
CREATE FUNCTION pg_temp.anon_name(person uuid, original text) RETURNS text LANGUAGE sql AS $$
    SELECT (({first}))[1 + (h % 32)] || ' ' || (({last}))[1 + ((h / 32) % 32)]
    FROM (SELECT CASE WHEN person IS NOT NULL
                      THEN ('x' || substr(md5(person::text), 1, 8))::bit(32)::bigint
                      ELSE pg_temp.anon_int(original) END AS h) AS x
$$;
CREATE FUNCTION pg_temp.anon_ip(original text) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN original LIKE '%:%'
        THEN '2001:db8::' || to_hex(pg_temp.anon_int(original) % 65536)
        ELSE '192.0.2.' || (1 + pg_temp.anon_int(original) % 254)
    END
$$;
CREATE FUNCTION pg_temp.anon_json(value jsonb) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN CASE jsonb_typeof(value)
        WHEN 'string' THEN to_jsonb('[redacted]'::text)
        WHEN 'object' THEN coalesce((SELECT jsonb_object_agg(k, pg_temp.anon_json(v))
                                     FROM jsonb_each(value) AS e (k, v)), '{{}}'::jsonb)
        WHEN 'array' THEN coalesce((SELECT jsonb_agg(pg_temp.anon_json(v) ORDER BY n)
                                    FROM jsonb_array_elements(value) WITH ORDINALITY AS a (v, n)),
                                   '[]'::jsonb)
        ELSE value
    END;
END
$$;
CREATE TEMPORARY TABLE anon_people (uuid uuid, email text, name text);
"#,
        first = sql_array(&FIRST_NAMES),
        last = sql_array(&LAST_NAMES),
    )
}

/// The replacement expression for `column` (of SQL type `data_type`) in `table`.
fn expression(table: &str, column: &str, data_type: &str, replace: Replace) -> String {
    let col = format!("{}.{}", quote_identifier(table), quote_identifier(column));
    let person = |user: Option<&str>, by: &str| {
        let lookup = format!(
            "(SELECT p.uuid FROM pg_temp.anon_people p WHERE p.{by} = lower(trim({col}::text)) LIMIT 1)"
        );
        match user {
            Some(user) => format!("coalesce(({user})::uuid, {lookup})"),
            None => lookup,
        }
    };
    let value = match replace {
        Replace::Email { user } => {
            format!("pg_temp.anon_email({}, {col}::text)", person(user, "email"))
        }
        Replace::Name { user } => {
            format!("pg_temp.anon_name({}, {col}::text)", person(user, "name"))
        }
        Replace::Ip => format!("pg_temp.anon_ip({col}::text)"),
        Replace::Text => "'[redacted]'".to_owned(),
        Replace::Json => format!("pg_temp.anon_json({col}::jsonb)"),
        Replace::Secret => match data_type {
            "bytea" => "decode(md5(random()::text) || md5(random()::text), 'hex')".to_owned(),
            _ => "'anonymized-' || md5(random()::text)".to_owned(),
        },
        Replace::Null => return "NULL".to_owned(),
    };
    // Empty text stays empty: there is nothing personal in it, and "no name" keeps its meaning.
    let keeps_empty = matches!(
        replace,
        Replace::Email { .. } | Replace::Name { .. } | Replace::Ip | Replace::Text
    );
    if keeps_empty {
        format!(
            "CASE WHEN {col} IS NULL THEN NULL WHEN {col}::text = '' THEN {col} ELSE ({value})::{data_type} END"
        )
    } else {
        format!("CASE WHEN {col} IS NULL THEN NULL ELSE ({value})::{data_type} END")
    }
}

/// The SQL type of every declared column (a declared table or column the database lacks is an
/// error: the copy is of another version, migrate it first).
async fn column_types(
    conn: &mut PgConnection,
    personal: &[&Personal],
) -> anyhow::Result<BTreeMap<(String, String), String>> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text,
                CASE WHEN data_type = 'ARRAY' THEN udt_name::text ELSE data_type::text END
         FROM information_schema.columns WHERE table_schema = current_schema()",
    )
    .fetch_all(&mut *conn)
    .await?;
    let types: BTreeMap<(String, String), String> =
        rows.into_iter().map(|(t, c, ty)| ((t, c), ty)).collect();
    for rule in personal {
        match rule {
            Personal::Column { table, column, .. } => {
                if !types.contains_key(&((*table).to_owned(), (*column).to_owned())) {
                    bail!(
                        "{table}.{column} is declared personal but the database has no such column \
                         (a copy of another version? run `migrate` on it first)"
                    );
                }
            }
            Personal::Clear { table } => {
                if !types.keys().any(|(t, _)| t == table) {
                    bail!("{table} is declared personal but the database has no such table");
                }
            }
        }
    }
    Ok(types)
}

/// Anonymizes the database `conn` is connected to, in one transaction, by the `personal`
/// declarations (the shared schemas' first, then the service's). `salt` keys the hashes of
/// values that belong to no known user.
pub async fn anonymize(
    conn: &mut PgConnection,
    personal: &[&Personal],
    salt: &str,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut tx = conn.begin().await?;
    let types = column_types(&mut tx, personal).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(setup(salt)))
        .execute(&mut *tx)
        .await
        .context("cannot set up the anonymizer's functions")?;
    // Who is who, before any name or address changes.
    if types.contains_key(&("users".to_owned(), "uuid".to_owned())) {
        sqlx::query(
            "INSERT INTO pg_temp.anon_people SELECT uuid, lower(trim(email)), lower(trim(name)) FROM users",
        )
        .execute(&mut *tx)
        .await?;
    }
    let mut report = Report::default();
    for rule in personal {
        if let Personal::Clear { table } = rule {
            let removed = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {}",
                quote_identifier(table)
            )))
            .execute(&mut *tx)
            .await
            .with_context(|| format!("cannot clear {table}"))?
            .rows_affected();
            report.cleared.insert((*table).to_owned(), removed);
        }
    }
    // One UPDATE per table, every declared column at once.
    let mut by_table: BTreeMap<&str, Vec<(&str, Replace)>> = BTreeMap::new();
    for rule in personal {
        if let Personal::Column {
            table,
            column,
            replace,
        } = rule
        {
            by_table.entry(table).or_default().push((column, *replace));
        }
    }
    // Users are found by their original addresses and names in `anon_people`, filled before
    // anything changed: the tables can be rewritten in any order.
    for (table, columns) in by_table {
        let sets: Vec<String> = columns
            .iter()
            .map(|(column, replace)| {
                let data_type = &types[&(table.to_owned(), (*column).to_owned())];
                format!(
                    "{} = {}",
                    quote_identifier(column),
                    expression(table, column, data_type, *replace)
                )
            })
            .collect();
        let statement = format!("UPDATE {} SET {}", quote_identifier(table), sets.join(", "));
        let rewritten = sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await
            .with_context(|| format!("cannot anonymize {table}"))?
            .rows_affected();
        report.rewritten.insert(table.to_owned(), rewritten);
    }
    tx.commit().await?;
    report.took = started.elapsed();
    Ok(report)
}

/// A fresh random salt (hex), for one anonymizing run.
pub fn random_salt() -> String {
    use sha2::Digest;
    let seed = format!(
        "{:?}{}{}",
        std::time::SystemTime::now(),
        std::process::id(),
        uuid::Uuid::now_v7()
    );
    sha2::Sha256::digest(seed.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}
