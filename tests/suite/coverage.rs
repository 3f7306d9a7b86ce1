//! Every rule of DOMAIN.md has a test named after it, and every refusal code is asserted by some test, so a rule
//! without a test cannot slip in.

use partner_ledger::domain::Code;

fn read_dir_text(dir: &str, ext: &str) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            text += &read_dir_text(path.to_str().unwrap(), ext);
        } else if path.to_string_lossy().ends_with(ext) {
            text += &std::fs::read_to_string(&path).unwrap();
        }
    }
    text
}

fn test_sources() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut text = String::new();
    // The unit tests of the domain: only the parts after #[cfg(test)].
    for file in read_dir_text(&format!("{root}/src/domain"), ".rs").split("\n//! ") {
        if let Some((_, tests)) = file.split_once("#[cfg(test)]") {
            text += tests;
        }
    }
    text += &read_dir_text(&format!("{root}/tests"), ".rs");
    text += &read_dir_text(&format!("{root}/fixtures"), "expected-outcomes.ndjson");
    text
}

#[test]
fn every_rule_has_a_test_named_after_it() {
    let text = test_sources();
    let missing: Vec<u8> = (1..=39)
        .filter(|n| !text.contains(&format!("fn r{n}_")))
        .collect();
    assert!(
        missing.is_empty(),
        "rules without a test named fn rN_…: {missing:?}"
    );
}

#[test]
fn every_refusal_code_is_asserted_by_a_test() {
    let text = test_sources();
    let missing: Vec<String> = Code::ALL
        .iter()
        .filter(|c| {
            let variant = format!("Code::{c:?}");
            let wire = format!("\"{}\"", c.as_str());
            !(text.contains(&format!("then_refused({variant}"))
                || text.contains(&format!("then_refused_under({variant}"))
                || text.contains(&format!("\"code\":{wire}"))
                || text.contains(&format!("[\"code\"], {wire}")))
        })
        .map(|c| c.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "refusal codes no test asserts: {missing:?}"
    );
}
