//! The markdown plan's header names what was planned: the commit, and whether the
//! working tree held uncommitted changes on top of it (Cairn's own `.cairn/` aside).

use crate::support::{manifests, Job};

#[test]
fn the_markdown_header_says_when_the_working_tree_has_uncommitted_changes() {
    let root = manifests(&Job::default());
    let head = root.git_commit_all("manifests");
    let header = |run: &crate::support::Run| run.stdout.lines().next().unwrap_or("").to_string();

    let clean = root.cairn(&["plan", "ROOT", "--format", "markdown"]);
    clean.ok();
    assert_eq!(
        header(&clean),
        format!("### Cairn plan at `{}`", &head[..7])
    );

    // An apply writes the store under `.cairn/`: still clean.
    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();
    let applied = root.cairn(&["plan", "ROOT", "--format", "markdown"]);
    assert_eq!(
        header(&applied),
        format!("### Cairn plan at `{}`", &head[..7])
    );

    root.edit_row(51_000);
    let dirty = root.cairn(&["plan", "ROOT", "--format", "markdown"]);
    dirty.ok();
    assert_eq!(
        header(&dirty),
        format!(
            "### Cairn plan at `{}` with uncommitted changes",
            &head[..7]
        )
    );
    // The same revision read from Git is clean whatever the working tree holds.
    let at_head = root.cairn(&["plan", "ROOT", "--rev", "HEAD", "--format", "markdown"]);
    assert_eq!(
        header(&at_head),
        format!("### Cairn plan at `{}`", &head[..7])
    );
}
