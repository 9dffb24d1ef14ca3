//! The guide (README.md) shows real code: every code block preceded by
//! `<!-- compiled: <path from the repo root> -->` must equal that file, which the workspace
//! builds and tests. (The guide's other Rust blocks run as doc tests, see `lib.rs`.)

use std::path::Path;

#[test]
fn guide_examples_are_the_compiled_files() {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(sdk.join("README.md")).unwrap();
    let mut checked = 0;
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(path) = line
            .strip_prefix("<!-- compiled: ")
            .and_then(|r| r.strip_suffix(" -->"))
        else {
            continue;
        };
        let fence = lines.next().unwrap_or_default();
        assert!(
            fence.starts_with("```"),
            "a code block must follow the marker for {path}"
        );
        let block: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        let file = std::fs::read_to_string(sdk.join("..").join(path)).unwrap();
        assert_eq!(
            block.join("\n").trim_end(),
            file.trim_end(),
            "README.md's copy of {path} differs from the file; update the guide"
        );
        checked += 1;
    }
    assert!(checked > 0, "no `<!-- compiled: … -->` marker in README.md");
}
