//! `docs/CONFIGURATION.md` agrees with the binary's `--help`: its tables list exactly the flags
//! `--help` lists, each with the same environment variable and the same default. A flag added,
//! renamed or given a new default on one side only fails here, naming the flag and the
//! difference.
//!
//! A documented flag is a table row whose first cell's first code span starts with `--`; its
//! second and third cells' first code spans are the variable and the default (a cell without
//! one, such as `—`, means none). `--help` gives them as `[env: NAME=]` and `[default: VALUE]`.

use std::collections::BTreeMap;
use std::process::Command;

const DOC: &str = "docs/CONFIGURATION.md";

/// What one side says about a flag.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Described {
    env: Option<String>,
    default: Option<String>,
}

fn show(value: &Option<String>) -> String {
    value
        .as_deref()
        .map_or_else(|| "none".to_owned(), |v| format!("`{v}`"))
}

/// The binary's `--help`, with an empty environment so that no variable's value shows.
fn help() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_broadcast-server"))
        .arg("--help")
        .env_clear()
        .output()
        .expect("the binary runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "--help failed: {text}");
    text
}

/// An option's heading in clap's long help: `  -h, --help`, `      --port <PORT>`. Descriptions
/// and possible values (`- text`) are indented further.
fn heading_flag(line: &str) -> Option<String> {
    let indent = line.len() - line.trim_start().len();
    let text = line.trim_start();
    let is_heading = indent < 10
        && (text.starts_with("--") || (text.starts_with('-') && text.get(2..3) == Some(",")));
    if !is_heading {
        return None;
    }
    text.split_whitespace()
        .map(|word| word.trim_end_matches(','))
        .find(|word| word.starts_with("--"))
        .map(str::to_owned)
}

/// The value of clap's `[tag: VALUE]` in an option's text, which may itself hold brackets
/// (`[default: [{"urls":…}]]`).
fn bracketed(text: &str, tag: &str) -> Option<String> {
    let start = text.find(&format!("[{tag}: "))? + tag.len() + 3;
    let mut depth = 1;
    for (i, c) in text[start..].char_indices() {
        match c {
            '[' => depth += 1,
            ']' if depth == 1 => return Some(text[start..start + i].to_owned()),
            ']' => depth -= 1,
            _ => {}
        }
    }
    None
}

fn help_options(help: &str) -> BTreeMap<String, Described> {
    // Each option's heading, then its text (clap puts `[env: …]` and `[default: …]` after the
    // description, on the same line or on lines of their own).
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        if let Some(flag) = heading_flag(line) {
            blocks.push((flag, String::new()));
        } else if let Some((_, text)) = blocks.last_mut() {
            text.push(' ');
            text.push_str(line.trim());
        }
    }
    blocks
        .into_iter()
        .map(|(flag, text)| {
            let described = Described {
                // `NAME=` (or `NAME=value` when set), or `NAME` alone when values are hidden.
                env: bracketed(&text, "env")
                    .map(|env| env.split('=').next().unwrap_or_default().to_owned()),
                default: bracketed(&text, "default"),
            };
            (flag, described)
        })
        .collect()
}

/// A Markdown table row's cells; `\|` inside a cell is a literal bar.
fn cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().expect("one cell").push('|');
                chars.next();
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().expect("one cell").push(c),
        }
    }
    cells
}

/// A cell's first `code span`, if it has one.
fn first_code(cell: &str) -> Option<String> {
    let mut parts = cell.split('`');
    parts.next()?;
    let code = parts.next()?;
    // An opening backtick without its closing one is not a code span.
    parts.next()?;
    Some(code.to_owned())
}

/// Every documented flag, and the flags documented more than once.
fn doc_options(doc: &str) -> (BTreeMap<String, Described>, Vec<String>) {
    let mut options = BTreeMap::new();
    let mut repeated = Vec::new();
    for row in doc
        .lines()
        .filter(|line| line.trim_start().starts_with('|'))
    {
        let cells = cells(row);
        let Some(flag) = cells.first().and_then(|c| first_code(c)) else {
            continue;
        };
        if !flag.starts_with("--") {
            continue;
        }
        let described = Described {
            env: cells.get(1).and_then(|c| first_code(c)),
            default: cells.get(2).and_then(|c| first_code(c)),
        };
        if options.insert(flag.clone(), described).is_some() {
            repeated.push(flag);
        }
    }
    (options, repeated)
}

#[test]
fn configuration_doc_lists_exactly_the_flags_of_help() {
    let help = help();
    let from_help = help_options(&help);
    assert_eq!(
        from_help.get("--port"),
        Some(&Described {
            env: Some("PORT".to_owned()),
            default: Some("3000".to_owned()),
        }),
        "could not read `--port` from --help; has its layout changed?\n{help}"
    );
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/CONFIGURATION.md"
    ))
    .expect("docs/CONFIGURATION.md is readable");
    let (from_doc, repeated) = doc_options(&doc);

    let mut problems: Vec<String> = repeated
        .iter()
        .map(|flag| format!("`{flag}` has more than one row in {DOC}"))
        .collect();
    for (flag, help_says) in &from_help {
        let Some(doc_says) = from_doc.get(flag) else {
            problems.push(format!(
                "`{flag}` is in --help but has no row in {DOC} (env {}, default {})",
                show(&help_says.env),
                show(&help_says.default)
            ));
            continue;
        };
        if doc_says.env != help_says.env {
            problems.push(format!(
                "`{flag}`: --help says env {}, {DOC} says {}",
                show(&help_says.env),
                show(&doc_says.env)
            ));
        }
        if doc_says.default != help_says.default {
            problems.push(format!(
                "`{flag}`: --help says default {}, {DOC} says {}",
                show(&help_says.default),
                show(&doc_says.default)
            ));
        }
    }
    for flag in from_doc
        .keys()
        .filter(|flag| !from_help.contains_key(*flag))
    {
        problems.push(format!("`{flag}` has a row in {DOC} but is not in --help"));
    }
    assert!(
        problems.is_empty(),
        "{DOC} and --help disagree:\n- {}",
        problems.join("\n- ")
    );
}

#[test]
fn the_parsers_read_what_they_are_meant_to() {
    // Both layouts clap uses: `[env: …] [default: …]` after the description, or on lines of
    // their own; possible values listed below it.
    let help = r#"Options:
      --port <PORT>
          Port [env: PORT=] [default: 3000]
      --ice-servers <ICE_SERVERS>
          JSON (`[]` = none) [env: ICE_SERVERS=] [default: [{"urls":"stun:a"}]]
      --log-format <LOG_FORMAT>
          Format.

          Possible values:
          - text
          - json

          [env: LOG_FORMAT=]
          [default: text]

      --turn-secret <TURN_SECRET>
          Secret [env: TURN_SECRET]
  -h, --help
          Print help
"#;
    let options = help_options(help);
    assert_eq!(
        options.keys().collect::<Vec<_>>(),
        [
            "--help",
            "--ice-servers",
            "--log-format",
            "--port",
            "--turn-secret"
        ]
    );
    assert_eq!(
        options["--ice-servers"].default.as_deref(),
        Some(r#"[{"urls":"stun:a"}]"#)
    );
    assert_eq!(options["--port"].env.as_deref(), Some("PORT"));
    assert_eq!(options["--log-format"].default.as_deref(), Some("text"));
    assert_eq!(options["--turn-secret"].env.as_deref(), Some("TURN_SECRET"));
    assert_eq!(options["--help"], Described::default());

    let doc = r"| flag | env | default | meaning |
|---|---|---|---|
| `--port` | `PORT` | `3000` (0 = any) | a \| bar `x` |
| `--healthcheck` | — | — | probe |
| — | `RUST_LOG` | `info` | not a flag |
| `--port` | `PORT` | `3000` | again |
";
    let (options, repeated) = doc_options(doc);
    assert_eq!(
        options.keys().collect::<Vec<_>>(),
        ["--healthcheck", "--port"]
    );
    assert_eq!(options["--port"].default.as_deref(), Some("3000"));
    assert_eq!(options["--healthcheck"], Described::default());
    assert_eq!(repeated, ["--port"]);
}
