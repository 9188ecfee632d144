//! Reading scenarios from real directories.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use populator::{Error, Keys, Scenario, Source, Spanned, When};
use serde::Deserialize;
use uuid::Uuid;

/// A fresh directory under the system temp dir, removed on drop.
struct TempRoot(PathBuf);

impl TempRoot {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let unique = format!(
            "populator-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(unique).join("populator");
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    /// Writes `root/<rel>`, creating directories; returns the path.
    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.0.join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("create dirs");
        fs::write(&path, text).expect("write file");
        path
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        if let Some(parent) = self.0.parent() {
            let _ = fs::remove_dir_all(parent);
        }
    }
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    notes: Vec<Note>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Note {
    id: Spanned<Uuid>,
    #[serde(default)]
    owner: Option<Spanned<Uuid>>,
    title: String,
    #[serde(default)]
    pinned: bool,
    #[serde(default)]
    votes: u32,
    created_at: Spanned<When>,
    #[serde(default, deserialize_with = "populator::when::optional")]
    deleted_at: Option<When>,
    #[serde(default, deserialize_with = "populator::when::optional_spanned")]
    due_at: Option<Spanned<When>>,
}

const ID_1: &str = "0190a8f2-6c1e-7d4b-9a3e-2f1c5b7d0001";
const ID_2: &str = "0190a8f2-6c1e-7d4b-9a3e-2f1c5b7d0002";

fn note(id: &str, created_at: &str) -> String {
    format!("  - id: {id}\n    title: t\n    created_at: {created_at}\n")
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-10T12:00:00Z")
        .expect("valid")
        .with_timezone(&Utc)
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("valid")
        .with_timezone(&Utc)
}

fn read(root: &TempRoot) -> Result<Vec<Source<Doc>>, Error> {
    Scenario::open(root.path(), "demo")?.read::<Doc>("template")
}

/// Reads a single file with `yaml` and returns the error, displayed.
fn read_err(yaml: &str) -> (String, PathBuf) {
    let root = TempRoot::new();
    let path = root.write("demo/template/notes.yaml", yaml);
    match read(&root) {
        Ok(docs) => panic!("expected an error, got {docs:?}"),
        Err(err) => (err.to_string(), path),
    }
}

fn assert_error_at(yaml: &str, line: usize, reason: &str) {
    let (message, path) = read_err(yaml);
    let expected_prefix = format!("{}:{line}: ", path.display());
    assert!(
        message.starts_with(&expected_prefix),
        "expected `{expected_prefix}…`, got `{message}`"
    );
    assert!(
        message.contains(reason),
        "expected `{reason}` in `{message}`"
    );
}

#[test]
fn files_are_read_in_name_order() {
    let root = TempRoot::new();
    root.write(
        "demo/template/20-later.yaml",
        &format!("notes:\n{}", note(ID_2, "!now")),
    );
    root.write(
        "demo/template/10-first.yml",
        &format!("notes:\n{}", note(ID_1, "!now")),
    );
    // Not seed files: other extensions, hidden files, directories, other services.
    root.write("demo/template/notes.json", "{");
    root.write("demo/template/.draft.yaml", "{");
    root.write("demo/template/sub.yaml/x.yaml", "{");
    root.write("demo/other/a.yaml", "{");

    let scenario = Scenario::open(root.path(), "demo").expect("open");
    assert_eq!(scenario.name(), "demo");
    let sources = scenario.read::<Doc>("template").expect("read");
    let paths: Vec<_> = sources.iter().map(|s| s.path.clone()).collect();
    let dir = root.path().join("demo").join("template");
    assert_eq!(paths, [dir.join("10-first.yml"), dir.join("20-later.yaml")]);
    assert_eq!(sources[0].doc.notes[0].id.value.to_string(), ID_1);
    assert_eq!(sources[0].doc.notes[0].id.line(), 2);
    assert_eq!(sources[1].doc.notes[0].id.value.to_string(), ID_2);
}

#[test]
fn missing_service_directory_is_empty() {
    let root = TempRoot::new();
    fs::create_dir_all(root.path().join("demo")).expect("mkdir");
    assert!(read(&root).expect("read").is_empty());
}

#[test]
fn empty_files_are_default_documents() {
    let root = TempRoot::new();
    root.write("demo/template/a.yaml", "");
    root.write("demo/template/b.yaml", "# nothing here yet\n\n# really\n");
    root.write("demo/template/c.yaml", "---\n");
    let sources = read(&root).expect("read");
    assert_eq!(sources.len(), 3);
    assert!(sources.iter().all(|source| source.doc == Doc::default()));
}

#[test]
fn times_absolute_and_relative() {
    let root = TempRoot::new();
    let yaml = "\
notes:
  - id: 0190a8f2-6c1e-7d4b-9a3e-2f1c5b7d0001
    title: absolute
    created_at: 2026-01-02T10:00:00Z
  - id: 0190a8f2-6c1e-7d4b-9a3e-2f1c5b7d0002
    title: offset
    created_at: '2026-01-02T12:00:00+02:00'
  - id: 0190a8f2-6c1e-7d4b-9a3e-2f1c5b7d0003
    title: ago days
    created_at: !ago 35d
  - id: 0190a8f2-6c1e-7d4b-9a3e-2f1c5b7d0004
    title: ago compound
    created_at: !ago 2h 30m
  - id: 0190a8f2-6c1e-7d4b-9a3e-2f1c5b7d0005
    title: in
    created_at: !in 3d
  - id: 0190a8f2-6c1e-7d4b-9a3e-2f1c5b7d0006
    title: now
    created_at: !now
  - id: 0190a8f2-6c1e-7d4b-9a3e-2f1c5b7d0007
    title: now null
    created_at: !now ~
  - id: 0190a8f2-6c1e-7d4b-9a3e-2f1c5b7d0008
    title: weeks and seconds
    created_at: !in 1w 2d 5s
";
    root.write("demo/template/notes.yaml", yaml);
    let sources = read(&root).expect("read");
    let notes = &sources[0].doc.notes;
    let whens: Vec<When> = notes.iter().map(|n| n.created_at.value).collect();
    assert_eq!(
        whens,
        [
            When::At(at("2026-01-02T10:00:00Z")),
            When::At(at("2026-01-02T10:00:00Z")),
            When::Ago(Duration::from_secs(35 * 86_400)),
            When::Ago(Duration::from_secs(2 * 3_600 + 30 * 60)),
            When::In(Duration::from_secs(3 * 86_400)),
            When::Now,
            When::Now,
            When::In(Duration::from_secs(9 * 86_400 + 5)),
        ]
    );
    let resolved: Vec<_> = whens.iter().map(|w| w.resolve(now())).collect();
    assert_eq!(
        resolved,
        [
            at("2026-01-02T10:00:00Z"),
            at("2026-01-02T10:00:00Z"),
            at("2026-02-03T12:00:00Z"),
            at("2026-03-10T09:30:00Z"),
            at("2026-03-13T12:00:00Z"),
            now(),
            now(),
            at("2026-03-19T12:00:05Z"),
        ]
    );
    let lines: Vec<usize> = notes.iter().map(|n| n.created_at.line()).collect();
    assert_eq!(lines, [4, 7, 10, 13, 16, 19, 22, 25]);
}

#[test]
fn optional_times() {
    let root = TempRoot::new();
    let yaml = format!(
        "notes:\n{}    deleted_at: !now\n    due_at: !in 1h\n{}    deleted_at: ~\n    due_at:\n{}",
        note(ID_1, "!now"),
        note(ID_2, "!now"),
        note("0190a8f2-6c1e-7d4b-9a3e-2f1c5b7d0003", "!now"),
    );
    root.write("demo/template/notes.yaml", &yaml);
    let sources = read(&root).expect("read");
    let notes = &sources[0].doc.notes;
    assert_eq!(notes[0].deleted_at, Some(When::Now));
    assert_eq!(
        notes[0].due_at,
        Some(Spanned::new(When::In(Duration::from_secs(3_600)), 6))
    );
    assert_eq!(notes[1].deleted_at, None);
    assert_eq!(notes[1].due_at, None);
    assert_eq!(notes[2].deleted_at, None);
    assert_eq!(notes[2].due_at, None);
}

/// Pins the serde-saphyr behaviour that `when::optional` exists for: a tag with an empty value
/// is null to `Option<T>`, so a plain `Option<When>` reads `!now` as `None`. If this starts
/// failing, serde-saphyr changed and plain `Option<When>` may be fine.
#[test]
fn plain_option_reads_bare_now_as_none() {
    #[derive(Debug, Default, Deserialize)]
    struct Plain {
        at: Option<When>,
        ago: Option<When>,
    }
    let root = TempRoot::new();
    root.write("demo/template/a.yaml", "at: !now\nago: !ago 1d\n");
    let sources = Scenario::open(root.path(), "demo")
        .and_then(|s| s.read::<Plain>("template"))
        .expect("read");
    assert_eq!(sources[0].doc.at, None);
    assert_eq!(
        sources[0].doc.ago,
        Some(When::Ago(Duration::from_secs(86_400)))
    );
}

#[test]
fn yaml_syntax_error() {
    assert_error_at(
        &format!("notes:\n  - id: {ID_1}\n    title: b\n    created_at: !now\n  body: x\n"),
        5,
        "did not find expected '-' indicator",
    );
    assert_error_at("notes:\n\t- id: 1\n", 2, "tabs disallowed");
    // Detected at the end of the input.
    assert_error_at("notes:\n  - title: \"unterminated\n", 3, "quoted scalar");
    assert_error_at("notes: []\n---\nnotes: []\n", 3, "multiple");
}

#[test]
fn unknown_field() {
    let yaml = format!("notes:\n{}    titel: typo\n", note(ID_1, "!now"));
    assert_error_at(
        &yaml,
        5,
        "unknown field `titel`, expected one of `id`, `owner`, `title`, `pinned`, `votes`, \
         `created_at`, `deleted_at`, `due_at`",
    );
    assert_error_at("nots: []\n", 1, "unknown field `nots`, expected `notes`");
}

#[test]
fn wrong_type() {
    let base = note(ID_1, "!now");
    assert_error_at(
        &format!("notes:\n{base}    votes: many\n"),
        5,
        "expected u32",
    );
    assert_error_at(
        &format!("notes:\n{base}    pinned: yes\n"),
        5,
        "true or false",
    );
    assert_error_at(&format!("notes:\n{base}    owner: nobody\n"), 5, "invalid");
    assert_error_at("notes:\n  - title: [a, b]\n", 2, "");
    assert_error_at("notes: 3\n", 1, "");
}

#[test]
fn missing_field() {
    // serde-saphyr reports a missing field at the last key of the mapping that lacks it.
    let yaml = format!(
        "notes:\n{}  - id: {ID_2}\n    created_at: !now\n{}",
        note(ID_1, "!now"),
        note("0190a8f2-6c1e-7d4b-9a3e-2f1c5b7d0003", "!now")
    );
    assert_error_at(&yaml, 6, "missing field `title`");
}

#[test]
fn duplicate_mapping_key() {
    let yaml = format!("notes:\n{}    title: again\n", note(ID_1, "!now"));
    assert_error_at(&yaml, 5, "duplicate mapping key `title`");
}

#[test]
fn bad_times() {
    let cases = [
        (
            "!ago 35",
            "invalid duration `35` after `!ago`: missing unit after `35`",
        ),
        ("!ago 3y", "unknown unit `y`"),
        ("!in", "`!in` needs a duration like `35d`"),
        ("!now 3d", "`!now` takes no value, found `3d`"),
        ("!agoo 3d", "unknown tag `!agoo` for a time"),
        (
            "35d",
            "invalid time `35d`: write `!ago 35d` or `!in 35d` for a relative time",
        ),
        (
            "2026-13-01T00:00:00Z",
            "invalid time `2026-13-01T00:00:00Z`",
        ),
        ("", "missing time"),
    ];
    for (value, reason) in cases {
        let yaml = format!("# notes\nnotes:\n{}", note(ID_1, value));
        assert_error_at(&yaml, 5, reason);
        let accepted = if value.starts_with("!ago ") || value == "!in" {
            "units: s, m, h, d, w"
        } else {
            "`!ago <duration>`, `!in <duration>`, `!now`"
        };
        if !value.starts_with("!now") {
            assert_error_at(&yaml, 5, accepted);
        }
    }
    let yaml = format!("notes:\n{}    due_at: !ago soon\n", note(ID_1, "!now"));
    assert_error_at(&yaml, 5, "expected a number at `soon`");
    let yaml = format!("notes:\n{}    deleted_at: !in\n", note(ID_1, "!now"));
    assert_error_at(&yaml, 5, "`!in` needs a duration");
}

#[test]
fn tag_on_field_name_is_rejected() {
    let yaml = format!("notes:\n{}    !ago deleted_at: 3d\n", note(ID_1, "!now"));
    assert_error_at(&yaml, 5, "tag `!ago` on a struct field name");
}

#[test]
fn alias_errors_point_at_the_use() {
    let yaml = format!(
        "notes:\n  - id: {ID_1}\n    title: &title many\n    created_at: !now\n\
         {}    votes: *title\n",
        note(ID_2, "!now")
    );
    assert_error_at(&yaml, 8, "expected u32 (in the value anchored at line 3)");
}

#[test]
fn not_utf8() {
    let root = TempRoot::new();
    let path = root.path().join("demo/template/a.yaml");
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(&path, b"notes: \xff\n").expect("write");
    let err = read(&root).expect_err("not UTF-8");
    assert_eq!(err.file.as_deref(), Some(path.as_path()));
    assert!(err.to_string().contains("cannot read"), "{err}");
}

#[test]
fn keys_report_duplicates_and_dangling_references() {
    let root = TempRoot::new();
    let users = root.write(
        "demo/template/10-users.yaml",
        &format!("notes:\n{}{}", note(ID_1, "!now"), note(ID_2, "!now")),
    );
    let notes = root.write(
        "demo/template/20-notes.yaml",
        &format!(
            "notes:\n{}    owner: {ID_2}\n{}    owner: 0190a8f2-6c1e-7d4b-9a3e-2f1c5b7d0099\n",
            note("0190a8f2-6c1e-7d4b-9a3e-2f1c5b7d0003", "!now"),
            note(ID_1, "!now"),
        ),
    );
    let sources = read(&root).expect("read");
    let mut keys: Keys<Uuid> = Keys::new("user");
    assert!(keys.is_empty());
    for (n, note) in sources[0].doc.notes.iter().enumerate() {
        let local_id = i64::try_from(n).expect("small") + 1;
        keys.define(note.id.value, local_id, &sources[0], note.id.line())
            .expect("first definition");
    }
    assert_eq!(keys.len(), 2);

    let second = &sources[1];
    let owner = second.doc.notes[0].owner.expect("owner");
    assert_eq!(
        keys.resolve(&owner.value, second, owner.line())
            .expect("known"),
        2
    );

    let dangling = second.doc.notes[1].owner.expect("owner");
    let err = keys
        .resolve(&dangling.value, second, dangling.line())
        .expect_err("dangling");
    assert_eq!(
        err.to_string(),
        format!(
            "{}:9: dangling reference: no user 0190a8f2-6c1e-7d4b-9a3e-2f1c5b7d0099 in this scenario",
            notes.display()
        )
    );

    let again = &second.doc.notes[1];
    let err = keys
        .define(again.id.value, 9, second, again.id.line())
        .expect_err("duplicate");
    assert_eq!(
        err.to_string(),
        format!(
            "{}:6: duplicate user {ID_1}: already defined at {}:2",
            notes.display(),
            users.display()
        )
    );
    assert_eq!(err.line, Some(6));
}

#[test]
fn unknown_scenario_lists_available_ones() {
    let root = TempRoot::new();
    for dir in ["load", "demo", "empty", ".git", "Bad Name"] {
        fs::create_dir_all(root.path().join(dir)).expect("mkdir");
    }
    root.write("readme.yaml", "");
    let err = Scenario::open(root.path(), "dmeo").expect_err("unknown");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: unknown scenario `dmeo`; available: `demo`, `empty`, `load`",
            root.path().display()
        )
    );
    assert_eq!(
        Scenario::list(root.path()).expect("list"),
        ["demo", "empty", "load"]
    );
}

#[test]
fn no_scenarios_or_no_root() {
    let root = TempRoot::new();
    let err = Scenario::open(root.path(), "demo").expect_err("none");
    assert!(
        err.to_string()
            .ends_with("unknown scenario `demo`: there are no scenarios here"),
        "{err}"
    );
    let err = Scenario::open(root.path().join("missing"), "demo").expect_err("no root");
    assert!(err.to_string().contains("cannot list scenarios"), "{err}");
}

#[test]
fn invalid_names() {
    let root = TempRoot::new();
    fs::create_dir_all(root.path().join("demo")).expect("mkdir");
    let err = Scenario::open(root.path(), "../demo").expect_err("invalid");
    assert!(
        err.to_string()
            .starts_with("invalid scenario name `../demo`"),
        "{err}"
    );
    let scenario = Scenario::open(root.path(), "demo").expect("open");
    let err = scenario.read::<Doc>("Template").expect_err("invalid");
    assert!(
        err.to_string()
            .starts_with("invalid service name `Template`"),
        "{err}"
    );
}

#[test]
fn source_errors() {
    let source = Source {
        path: PathBuf::from("populator/demo/template/notes.yaml"),
        doc: (),
    };
    assert_eq!(
        source.error_at(12, "title too long").to_string(),
        "populator/demo/template/notes.yaml:12: title too long"
    );
    let err = source.database_error(3, sqlx::Error::RowNotFound);
    assert!(
        err.to_string()
            .starts_with("populator/demo/template/notes.yaml:3: database: "),
        "{err}"
    );
}
