//! `cairn completions <shell>`: a completion script on stdout, made from the same
//! definition the command line is parsed with.

use crate::support::{manifests, Job};

#[test]
fn bash_completes_commands_and_flags() {
    let root = manifests(&Job::default());
    let run = root.cairn(&["completions", "bash"]);
    run.ok();
    for word in [
        "plan",
        "drift",
        "--detailed-exitcode",
        "--github-issue",
        "complete -F",
    ] {
        assert!(run.stdout.contains(word), "{word}: {}", run.both());
    }
    assert!(run.stderr.is_empty(), "{}", run.both());
}

#[test]
fn every_shell_gets_a_script() {
    let root = manifests(&Job::default());
    for (shell, marker) in [
        ("zsh", "#compdef cairn"),
        ("fish", "complete -c cairn"),
        ("elvish", "edit:completion:arg-completer[cairn]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let run = root.cairn(&["completions", shell]);
        run.ok();
        assert!(run.stdout.contains(marker), "{shell}: {}", run.both());
        assert!(
            run.stdout.contains("detailed-exitcode"),
            "{shell}: {}",
            run.both()
        );
    }
    let run = root.cairn(&["completions", "tcsh"]);
    run.code(64);
    assert!(
        run.stderr.contains("invalid value 'tcsh'"),
        "{}",
        run.both()
    );
}
