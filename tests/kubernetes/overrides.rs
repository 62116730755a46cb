//! A repository's `templates/kubernetes/<name>` replaces the shipped template of that
//! name, read through the manifests snapshot: from the folder, or from a commit.

use std::fs;
use std::path::Path;

use cairn::backend::kubernetes::{Error, Renderer, TemplateSource};
use cairn::manifest::{load_folder, load_revision};
use git2::{IndexAddOption, Repository, Signature, Time};

use crate::{imaging_root, message, render};

/// A Service template that marks its objects with `variant`.
fn service_template(variant: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {{{{ name | tojson }}}}
  namespace: {{{{ namespace | tojson }}}}
  labels: {{{{ metadata.labels | tojson }}}}
  annotations: {{{{ metadata.annotations | tojson }}}}
spec:
  type: NodePort
  selector: {{{{ service.selector | tojson }}}}
  ports:
    - {{name: http, port: {{{{ service.port }}}}, targetPort: http}}
  # variant: {variant}
---
# A second object from the same template: applied with the Services.
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{{{ (name ~ "-notes") | tojson }}}}
  namespace: {{{{ namespace | tojson }}}}
data:
  variant: {variant}
  role: {{{{ service.role | tojson }}}}
"#
    )
}

fn variants(objects: &[cairn::backend::kubernetes::KubeObject]) -> Vec<String> {
    objects
        .iter()
        .filter(|o| o.kind == "ConfigMap")
        .map(|o| {
            format!(
                "{} {}",
                o.name,
                o.value["data"]["variant"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn an_override_replaces_the_shipped_template() {
    let root = imaging_root(&[
        (
            "templates/kubernetes/service.yaml.j2",
            &service_template("folder"),
        ),
        (
            "templates/kubernetes/README.md",
            "Notes beside the templates are ignored.",
        ),
    ]);
    let snapshot = load_folder(root.path()).unwrap();
    let renderer = Renderer::from_snapshot(&snapshot).unwrap();
    let sources: Vec<(&str, &TemplateSource)> = renderer
        .templates()
        .iter()
        .map(|t| (t.name, &t.source))
        .collect();
    assert!(sources.contains(&(
        "service.yaml.j2",
        &TemplateSource::Repository {
            path: "templates/kubernetes/service.yaml.j2".into()
        }
    )));
    assert_eq!(
        sources
            .iter()
            .filter(|(_, s)| **s == TemplateSource::Shipped)
            .count(),
        10
    );

    let objects = render(&snapshot).unwrap();
    let services: Vec<&str> = objects
        .iter()
        // The Job's headless Service comes from job.yaml.j2.
        .filter(|o| o.kind == "Service" && o.value["spec"]["clusterIP"] != "None")
        .map(|o| o.value["spec"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["NodePort", "NodePort"]);
    assert_eq!(
        variants(&objects),
        [
            "triage-blue-9f3c2a1b7d4e-notes folder",
            "triage-notes folder"
        ]
    );
    // Objects an override adds still carry what Cairn finds them by, and come with the
    // Services, before the route.
    let kinds: Vec<&str> = objects.iter().map(|o| o.kind.as_str()).collect();
    let deployments = kinds.iter().position(|k| *k == "Deployment").unwrap();
    assert_eq!(
        &kinds[deployments..],
        [
            "Deployment",
            "Service", // the Job's headless Service
            "Service",
            "ConfigMap",
            "Service",
            "ConfigMap",
            "HTTPRoute"
        ]
    );
    let notes = objects.iter().find(|o| o.kind == "ConfigMap").unwrap();
    assert_eq!(
        notes.value["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "cairn"
    );
    assert_eq!(
        notes.value["metadata"]["annotations"]["cairn.dev/address"],
        "imaging/endpoint.triage"
    );
    assert!(notes.spec_hash().is_some());
}

fn commit_all(repo: &Repository, message: &str) {
    let mut index = repo.index().unwrap();
    index.add_all(["*"], IndexAddOption::DEFAULT, None).unwrap();
    index.update_all(["*"], None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let parent = repo.head().ok().map(|h| h.peel_to_commit().unwrap());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let sig = Signature::new(
        "Cairn Tests",
        "tests@cairn.invalid",
        &Time::new(1_700_000_000, 0),
    )
    .unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap();
}

fn write(root: &Path, path: &str, text: &str) {
    let path = root.join(path);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

#[test]
fn at_a_revision_the_committed_override_is_used() {
    let root = imaging_root(&[]);
    let repo = Repository::init(root.path()).unwrap();
    commit_all(&repo, "the example, shipped templates");
    write(
        root.path(),
        "templates/kubernetes/service.yaml.j2",
        &service_template("committed"),
    );
    commit_all(&repo, "override the Service template");
    // The working tree moves on; `--rev` must not see it.
    write(
        root.path(),
        "templates/kubernetes/service.yaml.j2",
        &service_template("working"),
    );

    let at_head = load_revision(root.path(), "HEAD").unwrap();
    let objects = render(&at_head).unwrap();
    assert_eq!(
        variants(&objects),
        [
            "triage-blue-9f3c2a1b7d4e-notes committed",
            "triage-notes committed"
        ]
    );
    let renderer = Renderer::from_snapshot(&at_head).unwrap();
    assert_eq!(
        renderer.revision(),
        at_head.commit(),
        "the commit is stamped"
    );

    let before = load_revision(root.path(), "HEAD~1").unwrap();
    assert!(
        variants(&render(&before).unwrap()).is_empty(),
        "shipped templates"
    );

    let folder = load_folder(root.path()).unwrap();
    assert_eq!(
        variants(&render(&folder).unwrap()),
        [
            "triage-blue-9f3c2a1b7d4e-notes working",
            "triage-notes working"
        ]
    );
}

#[test]
fn a_file_that_overrides_nothing_is_an_error() {
    let root = imaging_root(&[("templates/kubernetes/jobs.yaml.j2", "kind: Job\n")]);
    let snapshot = load_folder(root.path()).unwrap();
    let error = Renderer::from_snapshot(&snapshot).unwrap_err();
    assert!(matches!(
        error,
        Error::UnknownTemplate {
            suggestion: Some("job.yaml.j2"),
            ..
        }
    ));
    insta::assert_snapshot!("unknown_template", message(&error));
}
