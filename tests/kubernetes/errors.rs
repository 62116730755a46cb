//! Templates that go wrong say where and why: the template file, line and column, the
//! variable, and a hint. The sandbox keeps templates away from files.

use cairn::backend::kubernetes::{Error, Renderer};
use cairn::manifest::load_folder;

use crate::{imaging_root, message, render};

/// Renders `imaging` with one override and returns the error it must cause.
fn error_with(path: &str, template: &str) -> Error {
    error_with_files(&[(path, template)])
}

fn error_with_files(files: &[(&str, &str)]) -> Error {
    let root = imaging_root(files);
    let snapshot = load_folder(root.path()).unwrap();
    match render(&snapshot) {
        Ok(objects) => panic!("rendered {} objects, expected an error", objects.len()),
        Err(error) => error,
    }
}

const JOB_HEAD: &str = r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {{ name | tojson }}
  namespace: {{ namespace | tojson }}
spec:
"#;

#[test]
fn an_undefined_field_names_the_line_the_variable_and_the_fields_there_are() {
    let template = format!("{JOB_HEAD}  parallelism: {{{{ job.instance_count }}}}\n");
    let error = error_with("templates/kubernetes/job.yaml.j2", &template);
    insta::assert_snapshot!("undefined_field", message(&error));
}

#[test]
fn an_undefined_variable_lists_the_template_variables() {
    let template = JOB_HEAD.replace("{{ namespace | tojson }}", "{{ nmespace | tojson }}");
    let error = error_with("templates/kubernetes/job.yaml.j2", &template);
    insta::assert_snapshot!("undefined_variable", message(&error));
}

#[test]
fn an_attribute_of_none_says_to_guard_it() {
    // The example endpoint declares no mirror.
    let template = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {{ name | tojson }}
  namespace: {{ namespace | tojson }}
spec:
  mirrorPercent: {{ route.mirror.percent }}
"#;
    let error = error_with("templates/kubernetes/httproute.yaml.j2", template);
    insta::assert_snapshot!("attribute_of_none", message(&error));
}

#[test]
fn an_undefined_value_inside_a_map_is_caught_by_tojson() {
    let template = r#"apiVersion: v1
kind: Service
metadata:
  name: {{ name | tojson }}
  namespace: {{ namespace | tojson }}
  labels: {{ {"tier": service.tier} | tojson }}
"#;
    let error = error_with("templates/kubernetes/service.yaml.j2", template);
    let text = message(&error);
    assert!(
        text.starts_with("error: templates/kubernetes/service.yaml.j2:6:")
            && text.contains("undefined value: the value at `tier` is undefined"),
        "{text}"
    );
}

#[test]
fn invalid_yaml_shows_the_output_line() {
    let template = r#"apiVersion: v1
kind: Service
metadata:
  name: {{ name | tojson }}
  namespace: {{ namespace | tojson }}
spec:
  ports:
    - name: http
      port {{ service.port }}
"#;
    let error = error_with("templates/kubernetes/service.yaml.j2", template);
    assert!(matches!(error, Error::Yaml { .. }), "{error:?}");
    insta::assert_snapshot!("invalid_yaml", message(&error));
}

#[test]
fn an_object_kubernetes_would_refuse_is_caught() {
    let template = r#"apiVersion: v1
kind: Service
metadata:
  name: {{ name | tojson }}
spec:
  selector: {{ service.selector | tojson }}
"#;
    let error = error_with("templates/kubernetes/service.yaml.j2", template);
    insta::assert_snapshot!("invalid_object", message(&error));
}

#[test]
fn a_syntax_error_is_reported_before_anything_renders() {
    let root = imaging_root(&[(
        "templates/kubernetes/limitrange.yaml.j2",
        "apiVersion: v1\nkind: LimitRange\n{% if compute.largest %}\nmetadata: {}\n",
    )]);
    let snapshot = load_folder(root.path()).unwrap();
    let error = Renderer::from_snapshot(&snapshot).unwrap_err();
    insta::assert_snapshot!("syntax_error", message(&error));
}

#[test]
fn the_sandbox_reads_no_files() {
    // Neither absolute paths, nor paths relative to the manifests root or the template,
    // nor files that exist: only the templates themselves can be included.
    for target in [
        "/etc/passwd",
        "../../Cargo.toml",
        "imaging/workspace.toml",
        "templates/kubernetes/secret.txt",
    ] {
        let template = format!("{{% include {target:?} %}}\n");
        let error = error_with_files(&[
            ("templates/kubernetes/namespace.yaml.j2", &template),
            ("templates/kubernetes/secret.txt", "token: hunter2\n"),
        ]);
        let text = message(&error);
        assert!(
            text.contains("non-existing template") && text.contains("sandbox"),
            "{target}: {text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        if target == "/etc/passwd" {
            insta::assert_snapshot!("sandbox_include", text);
        }
    }
}

#[test]
fn an_error_in_an_included_template_names_that_template() {
    // Templates can include each other by name; the LimitRange's includes the
    // ServiceAccount's, which fails.
    let root = imaging_root(&[
        (
            "templates/kubernetes/limitrange.yaml.j2",
            "{% include \"serviceaccount.yaml.j2\" %}\n",
        ),
        (
            "templates/kubernetes/serviceaccount.yaml.j2",
            "apiVersion: v1\n{{ only_in_serviceaccount }}\n",
        ),
    ]);
    let snapshot = load_folder(root.path()).unwrap();
    let error = render(&snapshot).unwrap_err();
    let text = message(&error);
    assert!(
        text.contains("templates/kubernetes/serviceaccount.yaml.j2:2:4"),
        "{text}"
    );
}

#[test]
fn a_runaway_loop_runs_out_of_fuel() {
    let template =
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}\n";
    let error = error_with("templates/kubernetes/namespace.yaml.j2", template);
    assert!(
        message(&error).contains("ran too long"),
        "{}",
        message(&error)
    );
}

#[test]
fn two_objects_with_one_identity_are_refused() {
    // Every Service of the endpoint gets the same name.
    let template = r#"apiVersion: v1
kind: Service
metadata:
  name: {{ endpoint.name | tojson }}
  namespace: {{ namespace | tojson }}
"#;
    let error = error_with("templates/kubernetes/service.yaml.j2", template);
    insta::assert_snapshot!("duplicate", message(&error));
}
