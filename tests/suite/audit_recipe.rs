//! The auditor's recipe in docs/audit.md, run verbatim: an independent tool (Python) recomputes the hash chain from
//! `events` output, and notices tampering.

use crate::common;

use std::process::Command;

use common::*;

fn recipe() -> String {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/events.md")).unwrap();
    let after = doc.split("## The canonical form").nth(1).unwrap();
    let block = after.split("```sh\n").nth(1).unwrap();
    block.split("\n```").next().unwrap().to_string()
}

fn run_recipe(data: &std::path::Path) -> std::process::Output {
    let bin_dir = std::path::Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("bash")
        .arg("-c")
        .arg(format!("set -o pipefail\n{}", recipe()))
        .env("PATH", path)
        .env("PARTNER_LEDGER_DATA", data)
        .envs(crate::pg::env_for(data).unwrap_or_default())
        .output()
        .expect("bash runs")
}

#[test]
fn the_documented_recipe_verifies_the_chain_including_non_ascii_text() {
    crate::pg::on_both_backends(recipe_verifies_non_ascii_text);
}

fn recipe_verifies_non_ascii_text() {
    let data = crate::pg::folder();
    let seed = fixtures().join("seed-story/commands.ndjson");
    assert!(run(data.path(), &["exec", seed.to_str().unwrap()], None)
        .status
        .success());
    let unicode = r#"{"type":"UpdateCustomer","actor":{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"opérateur@ledger.example","role":"operator"},"customer":"c0000000-0000-4000-8000-00000000000c","company_name":"Contoso Société Générale — 日本 ÆØÅ \"quoted\" \\ back"}"#;
    let out = run(data.path(), &["exec", "-"], Some(unicode.as_bytes()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run_recipe(data.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("chain ok: 12 events, head "), "{text}");
    // The head it prints is the ledger's own.
    let verify = String::from_utf8_lossy(&run(data.path(), &["verify"], None).stdout).to_string();
    let head = text.trim().rsplit(' ').next().unwrap();
    assert!(verify.contains(head), "{verify} vs {head}");
}

#[test]
fn the_documented_recipe_notices_an_edited_export() {
    let data = tempfile::tempdir().unwrap();
    let seed = fixtures().join("seed-story/commands.ndjson");
    assert!(run(data.path(), &["exec", seed.to_str().unwrap()], None)
        .status
        .success());
    let export = String::from_utf8(run(data.path(), &["events"], None).stdout).unwrap();
    let tampered = export.replace("\"quantity\":25", "\"quantity\":2500");
    assert_ne!(export, tampered);
    let file = data.path().join("tampered.ndjson");
    std::fs::write(&file, tampered).unwrap();
    let script = recipe().replacen(
        "partner-ledger events",
        &format!("cat {}", file.display()),
        1,
    );
    let out = Command::new("bash").arg("-c").arg(script).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("position 7: hash mismatch"));
}

#[test]
fn the_ledger_refuses_to_serve_an_edited_recent_event() {
    let data = tempfile::tempdir().unwrap();
    let seed = fixtures().join("seed-story/commands.ndjson");
    assert!(run(data.path(), &["exec", seed.to_str().unwrap()], None)
        .status
        .success());
    common::raw_log::edit(data.path(), 7, |e| {
        e.replace("\"quantity\":25", "\"quantity\":2500")
    });
    let out = run_recipe(data.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("the ledger is damaged at position 7: the hash does not match"));
}
