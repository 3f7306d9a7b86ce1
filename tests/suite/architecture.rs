//! The shape docs/ARCHITECTURE.md promises, checked on the source: top-level modules import each other without a
//! cycle, the domain core stays pure, and only the store knows sled. Comments and test code are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every source file under src/ with its non-test code, comment lines dropped.
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let code: String = text
                    .split("\n#[cfg(test)]\n")
                    .next()
                    .unwrap()
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .map(|l| format!("{l}\n"))
                    .collect();
                let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
                let rel = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                out.push((rel, code));
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    // Test-only files of the library.
    out.retain(|(rel, _)| {
        ![
            "fault_tests.rs",
            "proptest.rs",
            "proptests.rs",
            "testkit.rs",
        ]
        .iter()
        .any(|t| rel.ends_with(t))
    });
    out
}

/// The top-level module a file belongs to (`ledger` for src/ledger/writer.rs), or none for lib.rs and main.rs.
fn module_of(rel: &str) -> Option<String> {
    let first = rel.split('/').next()?;
    (first != "lib.rs" && first != "main.rs").then(|| first.trim_end_matches(".rs").to_string())
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, code) in sources() {
        let Some(me) = module_of(&rel) else { continue };
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() && name != me {
                graph.entry(me.clone()).or_default().insert(name);
            }
        }
    }
    assert!(graph.len() >= 10, "the scan found the modules: {graph:?}");
    // Depth-first search for a path back to where it started.
    fn reaches(
        graph: &BTreeMap<String, BTreeSet<String>>,
        from: &str,
        to: &str,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        graph
            .get(from)
            .into_iter()
            .flatten()
            .any(|next| next == to || (seen.insert(next.clone()) && reaches(graph, next, to, seen)))
    }
    for (module, uses) in &graph {
        for used in uses {
            assert!(
                !reaches(&graph, used, module, &mut BTreeSet::new()),
                "{module} imports {used}, which imports {module} back (directly or through others): {graph:?}"
            );
        }
    }
}

#[test]
fn the_domain_reads_no_clock_draws_no_random_numbers_and_imports_no_adapter() {
    let forbidden = [
        "crate::store",
        "crate::ledger",
        "crate::api",
        "crate::cli",
        "crate::access",
        "crate::projection",
        "crate::query",
        "tokio",
        "sled",
        "Utc::now",
        "SystemTime",
        "Instant::now",
        "rand::",
        "std::fs",
        "std::net",
    ];
    let mut checked = 0;
    for (rel, code) in sources() {
        if !rel.starts_with("domain/") {
            continue;
        }
        checked += 1;
        for f in forbidden {
            assert!(
                !code.contains(f),
                "src/{rel} uses {f}: the domain core is pure (docs/ARCHITECTURE.md)"
            );
        }
    }
    assert!(checked >= 10, "only {checked} domain files found");
}

#[test]
fn nothing_outside_the_store_names_sled() {
    for (rel, code) in sources() {
        if rel.starts_with("store/") {
            continue;
        }
        assert!(
            !code.contains("sled::") && !code.contains("SledStore"),
            "src/{rel} names sled: everything outside src/store/ goes through the store seam (src/store/seam.rs)"
        );
    }
}
