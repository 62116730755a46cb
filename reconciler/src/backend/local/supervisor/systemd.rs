//! The systemd unit that runs `cairn supervise --state DIR` as a service (from
//! `templates/cairn-supervise.service.j2`), for serving that must come back after a
//! reboot or outlive the user's login session.

use std::path::Path;

use minijinja::Environment;

use super::{Error, Result};

/// The unit's template, built into the binary.
pub const SYSTEMD_UNIT_TEMPLATE: &str =
    include_str!("../../../../../templates/cairn-supervise.service.j2");

/// Renders the unit for the supervisor of `state_dir` run by `program` (both made
/// absolute). Paths holding a control character (a newline would end the line) are
/// refused.
pub fn systemd_unit(program: &Path, state_dir: &Path) -> Result<String> {
    let absolute = |path: &Path| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let (program, state_dir) = (absolute(program), absolute(state_dir));
    let text = |path: &Path| {
        let text = path.to_str().ok_or_else(|| Error::SystemdUnit {
            reason: format!("the path `{}` is not UTF-8", path.display()),
        })?;
        if text.chars().any(char::is_control) {
            return Err(Error::SystemdUnit {
                reason: format!("the path {text:?} holds a control character"),
            });
        }
        Ok(text.to_string())
    };
    let (program, state) = (text(&program)?, text(&state_dir)?);
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    let render_error = |e: minijinja::Error| Error::SystemdUnit {
        reason: e.to_string(),
    };
    env.add_template("cairn-supervise.service", SYSTEMD_UNIT_TEMPLATE)
        .map_err(render_error)?;
    env.get_template("cairn-supervise.service")
        .and_then(|t| {
            t.render(minijinja::context! {
                cairn => quote(&program),
                state => quote(&state),
                title => specifiers(&state),
            })
        })
        .map_err(render_error)
}

/// One word of a systemd command line: double-quoted, with `\` and `"` escaped, and `%`
/// (specifiers) and `$` (variables) doubled.
fn quote(text: &str) -> String {
    let escaped = specifiers(text)
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('$', "$$");
    format!("\"{escaped}\"")
}

/// Text with systemd's `%` specifiers escaped.
fn specifiers(text: &str) -> String {
    text.replace('%', "%%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_paths_are_quoted_for_systemd() {
        assert_eq!(quote("/srv/cairn"), r#""/srv/cairn""#);
        assert_eq!(quote(r#"/a b/100%/$x/"q"\"#), r#""/a b/100%%/$$x/\"q\"\\""#);
        let error = systemd_unit(Path::new("/bin/cairn"), Path::new("/srv/a\nb")).unwrap_err();
        assert!(error.to_string().contains("control character"), "{error}");
    }
}
