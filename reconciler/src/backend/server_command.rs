//! What both targets share about a deployment's own serving process (`command`): how its
//! placeholders expand. `{{ model }}` becomes the model version's folder (on this machine,
//! or in the pod) and `{{ port }}` the port the replica listens on; validation has
//! refused any other name ([`crate::manifest::SERVER_PLACEHOLDERS`]), so one left here is
//! kept as written.

use std::path::Path;

/// Replaces `{{ model }}` and `{{ port }}` (spaces inside the braces optional) in one
/// argument.
pub fn expand(arg: &str, model_dir: &Path, port: &str) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        match rest[start + 2..start + end].trim() {
            "model" => out.push_str(&model_dir.display().to_string()),
            "port" => out.push_str(port),
            _ => out.push_str(&rest[start..start + end + 2]),
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

/// Expands every argument.
pub fn expand_all(command: &[String], model_dir: &Path, port: &str) -> Vec<String> {
    command
        .iter()
        .map(|arg| expand(arg, model_dir, port))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_the_model_folder_and_the_port() {
        let model = Path::new("/srv/models/risk/v1");
        assert_eq!(
            expand("--model={{ model }}", model, "8080"),
            "--model=/srv/models/risk/v1"
        );
        assert_eq!(
            expand("127.0.0.1:{{port}}", model, "8080"),
            "127.0.0.1:8080"
        );
        assert_eq!(
            expand("{{ model }}/{{ model }}", model, "1"),
            "/srv/models/risk/v1//srv/models/risk/v1"
        );
        assert_eq!(expand("{{ other }} {{", model, "1"), "{{ other }} {{");
        // The local target keeps the supervisor's own placeholder for the port, which it
        // fills per replica.
        assert_eq!(
            expand_all(
                &["--port".into(), "{{  port }}".into()],
                model,
                "{{ port }}"
            ),
            ["--port", "{{ port }}"]
        );
    }
}
