//! Dependencies between abgate's modules run one way. Each top-level module has a level;
//! a module may import modules of a lower level only. This test reads every source file
//! and fails, naming the file and line, when a module imports one at its own level or
//! above (`use crate::x`, `crate::x::…` paths in code).
//!
//! The levels (low to high) are the layout of `src/lib.rs`:
//! config ← assign ← guard ← events ← metrics ← runtime ← {proxy, admin, control} ←
//! server ← cli; analyze reads config, events and stats and is read by admin and cli.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn levels() -> BTreeMap<&'static str, u32> {
    BTreeMap::from([
        ("hash", 0),
        ("ratelog", 0),
        ("stats", 0),
        ("rfc3339", 0),
        ("mock", 0),
        ("config", 1),
        ("assign", 2),
        ("guard", 3),
        ("events", 4),
        ("metrics", 5),
        ("analyze", 5),
        ("runtime", 6),
        ("proxy", 7),
        ("admin", 7),
        ("control", 7),
        ("fleet", 7),
        ("server", 8),
        ("demo", 9),
        ("cli", 10),
    ])
}

/// The top-level module a source file belongs to.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_string())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every `crate::<module>` named in `line` (comments excluded).
fn imported_modules(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.push(name);
        }
    }
    // `use crate::{a, b}` groups.
    if let Some(i) = code.find("crate::{") {
        let inner = &code[i + "crate::{".len()..];
        for part in inner.split([',', '}']) {
            let name: String = part
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

#[test]
fn lower_modules_never_import_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let levels = levels();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        if module == "lib" || module == "main" {
            continue;
        }
        let own = *levels
            .get(module.as_str())
            .unwrap_or_else(|| panic!("module `{module}` has no level in this test: give it one"));
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for imported in imported_modules(line) {
                if imported == module {
                    continue;
                }
                let Some(&theirs) = levels.get(imported.as_str()) else {
                    continue;
                };
                if theirs >= own {
                    violations.push(format!(
                        "{}:{}: `{module}` (level {own}) imports `{imported}` (level {theirs})",
                        file.strip_prefix(&src).unwrap().display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the dependency direction:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_an_upward_import() {
    assert_eq!(imported_modules("use crate::proxy::App;"), ["proxy"]);
    assert_eq!(
        imported_modules("use crate::{config::Config, runtime::App};"),
        ["config", "runtime"]
    );
    assert!(imported_modules("// see crate::proxy").is_empty());
}
