//! The documentation names every command, event type and refusal code the code has, so docs cannot drift.

use partner_ledger::domain::{Body, Code, Event};

fn doc(name: &str) -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/").to_string() + name)
        .unwrap()
}

#[test]
fn every_command_is_documented_with_an_example() {
    let text = doc("commands.md");
    for t in Body::TYPE_NAMES {
        assert!(
            text.contains(&format!("## `{t}`")),
            "{t} has no section in docs/commands.md"
        );
        assert!(
            text.contains(&format!("{{\"type\":\"{t}\"")),
            "{t} has no example in docs/commands.md"
        );
    }
}

#[test]
fn every_event_type_is_documented_with_an_example() {
    let text = doc("events.md");
    for t in Event::TYPE_NAMES {
        let section = text
            .split(&format!("### `{t}`"))
            .nth(1)
            .unwrap_or_else(|| panic!("{t} is missing from docs/events.md"));
        assert!(section.contains("```json"), "{t} has no example");
    }
}

#[test]
fn every_refusal_code_is_documented_with_its_vendor_code() {
    let text = doc("errors.md");
    for c in Code::ALL {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` ", c.as_str())))
            .unwrap_or_else(|| panic!("{c} is missing from docs/errors.md"));
        if let Some(v) = c.vendor_code() {
            assert!(
                row.contains(&v.to_string()),
                "{c}: vendor code {v} not documented"
            );
        }
    }
}

#[test]
fn every_http_route_is_documented() {
    let text = doc("api.md");
    let openapi = partner_ledger::api::openapi_document();
    for path in openapi["paths"].as_object().unwrap().keys() {
        let route = path.split('{').next().unwrap().trim_end_matches('/');
        assert!(text.contains(route), "{path} is missing from docs/api.md");
    }
}

/// The Markdown files a reader of the repository meets: README.md, docs/ and fixtures/README.md.
fn markdown_files() -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("fixtures/README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    files.sort();
    files
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| slug(l.trim_start_matches('#')))
        .collect()
}

/// Every `[text](target)` of a Markdown text, outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_link_in_readme_and_docs_resolves_inside_the_repository() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .canonicalize()
        .unwrap();
    let mut checked = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        assert!(
            !text.contains("shared/"),
            "{name} points at ../shared, which a clone does not have"
        );
        for link in links(&text) {
            assert!(
                !link.contains("://") && !link.starts_with("mailto:"),
                "{name}: `{link}` leaves the repository"
            );
            let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            let target = target
                .canonicalize()
                .unwrap_or_else(|_| panic!("{name}: `{link}` names a file that does not exist"));
            assert!(
                target.starts_with(&root),
                "{name}: `{link}` leaves the repository"
            );
            if !anchor.is_empty() {
                let t = std::fs::read_to_string(&target).unwrap();
                assert!(
                    anchors(&t).contains(&anchor.to_string()),
                    "{name}: `{link}`: no heading with that anchor"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} links found");
}

#[test]
fn the_domain_doc_explains_every_rule_and_every_refusal_code() {
    let text = doc("domain.md");
    for n in 1..=39 {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("### R{n} "))),
            "R{n} has no section in docs/domain.md"
        );
    }
    for c in Code::ALL {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("| `{}` ", c.as_str()))),
            "{c} is missing from the refusal codes of docs/domain.md"
        );
        let mentions = text.matches(&format!("`{}`", c.as_str())).count();
        assert!(
            mentions >= 2,
            "{c} is listed but never explained under a rule or with an example"
        );
    }
    // Every rule the code cites is one of those.
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/domain")).unwrap() {
        let src = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for (i, _) in src.match_indices("\"R") {
            let digits: String = src[i + 2..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(n) = digits.parse::<u32>() {
                assert!(
                    (1..=39).contains(&n),
                    "the code cites R{n}, which docs/domain.md does not define"
                );
            }
        }
    }
}

/// Every `{parameter}` in an OpenAPI path is declared as a path parameter, on the path or on each of its operations
/// (openapi-spec-validator refuses the document otherwise, and client generators cannot build the call).
#[test]
fn every_openapi_path_parameter_is_declared() {
    let doc = partner_ledger::api::openapi_document();
    let paths = doc["paths"].as_object().expect("paths");
    for (path, item) in paths {
        let wanted: Vec<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|rest| rest.split('}').next())
            .collect();
        let declared = |params: &serde_json::Value, name: &str| {
            params.as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["in"] == "path" && p["name"] == name && p["required"] == true)
            })
        };
        for (method, op) in item.as_object().expect("a path item") {
            if method == "parameters" {
                continue;
            }
            for name in &wanted {
                assert!(
                    declared(&item["parameters"], name) || declared(&op["parameters"], name),
                    "{method} {path}: the path parameter `{name}` is not declared"
                );
            }
        }
    }
}
