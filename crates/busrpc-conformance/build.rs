//! Declares each list of conformance cases once: the cases are the
//! `pub async fn`s of the files under `src/cases/<list>/`, and this script
//! writes, for each list, a macro that hands every name to `suite!`. Adding
//! a case is writing its function in the right folder; nothing else names
//! it, so no list can forget one.

use std::fmt::Write as _;
use std::path::Path;
use std::{env, fs};

/// The lists, each a folder of `src/cases`, in the order `suite!` uses.
const LISTS: [&str; 2] = ["calls", "failure_paths"];

fn main() {
    let mut generated = String::new();
    let mut seen = Vec::new();
    for list in LISTS {
        let folder = Path::new("src/cases").join(list);
        println!("cargo:rerun-if-changed={}", folder.display());
        let mut files: Vec<_> = fs::read_dir(&folder)
            .unwrap_or_else(|e| panic!("reading {}: {e}", folder.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .filter(|path| path.extension().is_some_and(|e| e == "rs"))
            .collect();
        files.sort();
        let mut names = Vec::new();
        for file in &files {
            println!("cargo:rerun-if-changed={}", file.display());
            let source = fs::read_to_string(file)
                .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
            for name in cases_in(&source, file) {
                assert!(
                    !seen.contains(&name),
                    "conformance case `{name}` is defined twice"
                );
                seen.push(name.clone());
                names.push(name);
            }
        }
        assert!(!names.is_empty(), "no cases under {}", folder.display());
        writeln!(
            generated,
            "/// Hands `suite!` the cases under `src/cases/{list}`, after `$args`.\n\
             #[doc(hidden)]\n\
             #[macro_export]\n\
             macro_rules! __busrpc_conformance_{list} {{\n    \
             ($($args:tt)*) => {{ $crate::suite!($($args)*; {}); }};\n}}\n",
            names.join(", ")
        )
        .expect("writing to a String");
        writeln!(
            generated,
            "/// The names of the cases under `src/cases/{list}`.\n\
             pub const {}: &[&str] = &[{}];\n",
            list.to_uppercase(),
            names
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
        .expect("writing to a String");
    }
    let out = Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("lists.rs");
    fs::write(&out, generated).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}

/// The cases a file defines: each function declared at the start of a line
/// as `pub async fn <name>(h: &dyn Harness)`. Any other top-level
/// `pub async fn` there is a mistake: a helper belongs in the fixtures.
fn cases_in(source: &str, file: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for (at, _) in source.match_indices("\npub async fn ") {
        let rest = &source[at + "\npub async fn ".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let signature = &rest[..rest.find('{').unwrap_or(rest.len())];
        let params: String = signature.split_whitespace().collect();
        assert!(
            params == format!("{name}(h:&dynHarness)"),
            "{}: `pub async fn {name}` is not a case (a case takes exactly \
             `h: &dyn Harness` and returns nothing); make it private or move \
             it to src/fixture",
            file.display()
        );
        names.push(name);
    }
    names
}
