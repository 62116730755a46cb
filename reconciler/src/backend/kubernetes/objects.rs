//! From the desired state to template variables: which objects a workspace's Kubernetes
//! computes, jobs and endpoints become, their names and labels, and what each template
//! is given. Rendering and checking are in `render.rs`.

mod job;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{json, Map, Value};

use super::containers::{env_list, instance_vars, pod_proxy_port, resources};
use super::templates::Owned;
use super::{
    Error, KubeObject, ObjectKey, Renderer, Result, VersionLookup, LABEL_MANAGED_BY,
    LABEL_WORKSPACE,
};
use crate::address::{Address, Kind, Reference};
use crate::backend::server_command;
use crate::desired::{DesiredState, Resource};
use crate::manifest::{Auth, ComputeSpec, EndpointSpec, InstanceType, Spec, Target, WorkspaceSpec};

/// The least share of an endpoint's `max_capture` one pod keeps.
const MIN_CAPTURE_PER_POD: u64 = 1 << 20;

/// The port an endpoint serves on when it names none.
pub const DEFAULT_PORT: u16 = 8080;

/// Where a job's pod keeps its inputs and outputs, and a server its model.
const WORK_DIR: &str = "/cairn";
const MODEL_DIR: &str = "/cairn/model";

const LABEL_NAME: &str = "app.kubernetes.io/name";
pub(super) const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// The component of the pod that uploads a run's outputs.
pub const COMPONENT_UPLOAD: &str = "upload";
const LABEL_JOB: &str = "cairn.dev/job";
pub(super) const LABEL_RUN: &str = "cairn.dev/run";
/// On a sweep's trial objects: the sweep's run.
const LABEL_SWEEP: &str = "cairn.dev/sweep";
pub const LABEL_ENDPOINT: &str = "cairn.dev/endpoint";
pub const LABEL_DEPLOYMENT: &str = crate::plan::objects::DEPLOYMENT_LABEL;
pub const LABEL_DEPLOYMENT_REVISION: &str = "cairn.dev/deployment-revision";
const ANNOTATION_MODEL: &str = "cairn.dev/model";

impl Renderer {
    /// Renders every object `workspace` declares on Kubernetes, in apply order:
    /// Namespace, ResourceQuota, LimitRange, ServiceAccount, Job, Deployment, Service,
    /// HTTPRoute (objects of other kinds that an override adds come with their
    /// template's kind). Resources on `local` computes render nothing.
    ///
    /// `versions` gives the content version of each unpinned dataset input, the version
    /// of each unpinned model an endpoint serves, and the run id of each job.
    pub fn desired_objects(
        &self,
        desired: &DesiredState,
        workspace: &str,
        versions: &dyn VersionLookup,
    ) -> Result<Vec<KubeObject>> {
        let Some(Spec::Workspace(spec)) =
            desired.get(&Address::workspace(workspace)).map(|r| &r.spec)
        else {
            return Err(Error::UnknownWorkspace(workspace.to_string()));
        };
        let mut walk = Walk::new(self, desired, workspace, spec, versions);
        walk.namespaces()?;
        for resource in &desired.resources {
            if resource.address.workspace != workspace {
                continue;
            }
            match &resource.spec {
                Spec::Job(job) => walk.job(resource, job)?,
                Spec::Endpoint(endpoint) => walk.endpoint(resource, endpoint)?,
                _ => {}
            }
        }
        walk.finish()
    }
}

/// One workspace's rendering in progress.
struct Walk<'a> {
    renderer: &'a Renderer,
    desired: &'a DesiredState,
    workspace: &'a str,
    spec: &'a WorkspaceSpec,
    versions: &'a dyn VersionLookup,
    /// Variables every template gets: `workspace`, `cairn`.
    common: Map<String, Value>,
    /// Rendered objects with their apply rank and the address they were rendered for.
    out: Vec<(usize, KubeObject, String)>,
}

impl<'a> Walk<'a> {
    fn new(
        renderer: &'a Renderer,
        desired: &'a DesiredState,
        workspace: &'a str,
        spec: &'a WorkspaceSpec,
        versions: &'a dyn VersionLookup,
    ) -> Walk<'a> {
        let mut common = Map::new();
        common.insert(
            "workspace".into(),
            json!({
                "name": workspace,
                "namespace": workspace_namespace(workspace, spec),
                "environment": spec.environment,
                "store": spec.store_url(),
                "labels": spec.labels,
                "description": spec.description,
            }),
        );
        common.insert(
            "cairn".into(),
            json!({
                "image": renderer.cairn_image,
                "version": env!("CARGO_PKG_VERSION"),
            }),
        );
        Walk {
            renderer,
            desired,
            workspace,
            spec,
            versions,
            common,
            out: Vec::new(),
        }
    }

    /// The Kubernetes computes of the workspace, by name.
    fn computes(&self) -> Vec<(&'a Resource, &'a ComputeSpec)> {
        let mut computes: Vec<_> = self
            .desired
            .resources
            .iter()
            .filter(|r| r.address.workspace == self.workspace)
            .filter_map(|r| match &r.spec {
                Spec::Compute(c) if *c.target.get_ref() == Target::Kubernetes => Some((r, c)),
                _ => None,
            })
            .collect();
        computes.sort_by(|a, b| a.0.address.cmp(&b.0.address));
        computes
    }

    /// The compute a job or endpoint names, if it is a Kubernetes one.
    fn compute_of(&self, reference: &str) -> Option<(&'a str, &'a ComputeSpec)> {
        let r = Reference::parse(reference).ok()?;
        let address = Address::new(self.workspace, Kind::Compute, r.name);
        let compute = self.desired.get(&address)?;
        match &compute.spec {
            Spec::Compute(c) if *c.target.get_ref() == Target::Kubernetes => {
                Some((compute.address.name.as_str(), c))
            }
            _ => None,
        }
    }

    fn namespace_of(&self, compute: &ComputeSpec) -> String {
        compute_namespace(self.workspace, self.spec, compute)
    }

    /// Labels every object of this workspace carries, before its own.
    fn labels(&self, name: &str, component: &str) -> BTreeMap<String, String> {
        let mut labels = self.spec.labels.clone();
        labels.insert(LABEL_NAME.into(), name.into());
        labels.insert(LABEL_COMPONENT.into(), component.into());
        labels.insert(LABEL_MANAGED_BY.into(), "cairn".into());
        labels.insert(LABEL_WORKSPACE.into(), self.workspace.into());
        labels
    }

    fn annotations(&self, address: &Address) -> BTreeMap<String, String> {
        let mut annotations = BTreeMap::new();
        annotations.insert(super::ANNOTATION_ADDRESS.into(), address.to_string());
        if let Some(revision) = self.renderer.revision() {
            annotations.insert(super::ANNOTATION_REVISION.into(), revision.into());
        }
        annotations
    }

    /// Renders one template for `address` with the common variables, `vars`, and
    /// `metadata` made of `labels` and the address's annotations.
    fn emit(
        &mut self,
        template: &str,
        address: &Address,
        kube_context: Option<&str>,
        labels: BTreeMap<String, String>,
        extra_annotations: BTreeMap<String, String>,
        vars: Value,
    ) -> Result<()> {
        let mut context = self.common.clone();
        let mut annotations = self.annotations(address);
        annotations.extend(extra_annotations);
        context.insert(
            "metadata".into(),
            json!({ "labels": labels, "annotations": annotations }),
        );
        if let Value::Object(vars) = vars {
            context.extend(vars);
        }
        let owned = Owned {
            workspace: self.workspace.to_string(),
            address: address.to_string(),
        };
        let what = address.to_string();
        let objects = self.renderer.render(
            template,
            &what,
            &Value::Object(context),
            kube_context,
            &owned,
        )?;
        self.out.extend(
            objects
                .into_iter()
                .map(|(rank, object)| (rank, object, what.clone())),
        );
        Ok(())
    }

    /// Namespace, LimitRange and ServiceAccount once per (context, namespace), owned by
    /// the first compute using it; a ResourceQuota per compute with `max_gpus`.
    fn namespaces(&mut self) -> Result<()> {
        let mut seen: BTreeSet<(Option<String>, String)> = BTreeSet::new();
        for (resource, compute) in self.computes() {
            let namespace = self.namespace_of(compute);
            let kube_context = compute.context.as_ref().map(|c| c.get_ref().clone());
            let name = resource.address.name.as_str();
            let vars = json!({
                "name": namespace,
                "namespace": namespace,
                "compute": compute_vars(name, &resource.address, compute, &namespace),
            });
            let first = seen.insert((kube_context.clone(), namespace.clone()));
            let labels = self.labels(name, "compute");
            let ctx = kube_context.as_deref();
            if first {
                let mut namespace_vars = vars.clone();
                namespace_vars
                    .as_object_mut()
                    .expect("a map")
                    .remove("namespace");
                self.emit(
                    "namespace.yaml.j2",
                    &resource.address,
                    ctx,
                    labels.clone(),
                    BTreeMap::new(),
                    namespace_vars,
                )?;
            }
            if compute.max_gpus.is_some() {
                let mut quota = vars.clone();
                quota["name"] = format!("cairn-{}-{name}", self.workspace).into();
                self.emit(
                    "resourcequota.yaml.j2",
                    &resource.address,
                    ctx,
                    labels.clone(),
                    BTreeMap::new(),
                    quota,
                )?;
            }
            if first {
                for template in ["limitrange.yaml.j2", "serviceaccount.yaml.j2"] {
                    let mut v = vars.clone();
                    v["name"] = service_account(self.workspace).into();
                    self.emit(
                        template,
                        &resource.address,
                        ctx,
                        labels.clone(),
                        BTreeMap::new(),
                        v,
                    )?;
                }
            }
        }
        Ok(())
    }

    fn version(&self, what: &Address, reference: &Reference) -> Result<String> {
        if let Some(pin) = &reference.pin {
            return Ok(pin.clone());
        }
        let address = Address::new(self.workspace, reference.kind, reference.name.clone());
        self.versions
            .version_of(&address)
            .map(str::to_string)
            .ok_or_else(|| Error::MissingVersion {
                what: what.to_string(),
                needed: address.local(),
            })
    }

    /// Refuses a store pods can't reach.
    fn reachable_store(&self, what: &Address) -> Result<()> {
        if self.spec.store_url().starts_with("file://") {
            return Err(Error::Unsupported {
                what: what.to_string(),
                problem: format!(
                    "the workspace store `{}` is a folder on this machine, which pods in a cluster can't reach",
                    self.spec.store_url()
                ),
                hint: "give the workspace an object store: `store = \"s3://bucket/prefix\"`",
            });
        }
        Ok(())
    }

    /// `CAIRN_STORE*` and `CAIRN_WORKSPACE`, for `cairn fetch` and `cairn upload`.
    fn store_env(&self) -> Value {
        let mut env = BTreeMap::new();
        env.insert("CAIRN_WORKSPACE", self.workspace.to_string());
        env.insert("CAIRN_STORE", self.spec.store_url().to_string());
        if let Some(endpoint) = &self.spec.endpoint {
            env.insert("CAIRN_STORE_ENDPOINT", endpoint.get_ref().clone());
        }
        if let Some(region) = &self.spec.region {
            env.insert("CAIRN_STORE_REGION", region.clone());
        }
        if let Some(path_style) = self.spec.path_style {
            env.insert("CAIRN_STORE_PATH_STYLE", path_style.to_string());
        }
        env_list(env)
    }

    fn instance_type(
        &self,
        what: &Address,
        compute_name: &str,
        compute: &'a ComputeSpec,
        name: Option<&str>,
    ) -> Result<Option<(&'a str, &'a InstanceType)>> {
        let Some(name) = name else {
            return Ok(None);
        };
        match compute.instance_types.get_key_value(name) {
            Some((key, it)) => Ok(Some((key.get_ref().as_str(), it.get_ref()))),
            None => Err(Error::Unsupported {
                what: what.to_string(),
                problem: format!("instance type `{name}` is not declared by compute `{compute_name}`"),
                hint: "declare it under `[compute.<name>.instance_types.<type>]`, or run `cairn validate`",
            }),
        }
    }

    fn endpoint(&mut self, resource: &Resource, spec: &EndpointSpec) -> Result<()> {
        let Some((compute_name, compute)) = self.compute_of(spec.compute.get_ref()) else {
            return Ok(());
        };
        let address = &resource.address;
        self.reachable_store(address)?;
        let namespace = self.namespace_of(compute);
        let kube_context = compute.context.as_ref().map(|c| c.get_ref().clone());
        let ctx = kube_context.as_deref();
        let port = spec.port.as_ref().map_or(DEFAULT_PORT, |p| *p.get_ref());
        let endpoint_name = address.name.as_str();
        let compute_vars = compute_vars(
            compute_name,
            &Address::new(self.workspace, Kind::Compute, compute_name),
            compute,
            &namespace,
        );
        // Every pod checks the key itself and captures its own sample of requests (`cairn
        // pod-proxy`), whatever serves behind it and whatever gateway is in front.
        let authenticated = spec.auth != Auth::None;
        let key_secret = format!("{endpoint_name}-key");
        let monitor = spec.monitor.as_ref().map(|m| {
            let m = m.get_ref();
            // Each pod keeps its share of `max_capture`, counting every pod the
            // deployments may run.
            let pods: u64 = spec
                .deployments
                .values()
                .map(|d| u64::from(d.get_ref().most_replicas()))
                .sum();
            json!({
                "every": (1.0 / m.sample.get_ref().clamp(1e-6, 1.0)).round() as u32,
                "max_bytes_per_pod": (m.max_capture_bytes() / pods.max(1)).max(MIN_CAPTURE_PER_POD),
            })
        });
        let proxied = authenticated || monitor.is_some();
        let endpoint_vars = json!({
            "name": endpoint_name,
            "address": address.to_string(),
            "port": port,
            "auth": spec.auth,
            "auth_port": authenticated.then(|| pod_proxy_port(port)),
            "proxy_port": proxied.then(|| pod_proxy_port(port)),
            "monitor": monitor,
            "key_secret": authenticated.then_some(&key_secret),
            "description": spec.description,
        });
        // The endpoint's own objects (not a revision's), and every pod of the endpoint.
        let mut endpoint_labels = self.labels(endpoint_name, "serving");
        endpoint_labels.insert(LABEL_ENDPOINT.into(), endpoint_name.into());
        let every_pod = BTreeMap::from([
            (LABEL_WORKSPACE.to_string(), self.workspace.to_string()),
            (LABEL_ENDPOINT.to_string(), endpoint_name.to_string()),
        ]);
        if authenticated {
            let vars = json!({
                "name": key_secret,
                "namespace": namespace,
                "compute": compute_vars,
                "endpoint": endpoint_vars,
            });
            self.emit(
                "secret.yaml.j2",
                address,
                ctx,
                endpoint_labels.clone(),
                BTreeMap::from([(ANNOTATION_GENERATED_KEY.to_string(), "key".to_string())]),
                vars,
            )?;
            let vars = json!({
                "name": endpoint_name,
                "namespace": namespace,
                "compute": compute_vars,
                "endpoint": endpoint_vars,
                "selector": every_pod,
            });
            self.emit(
                "networkpolicy.yaml.j2",
                address,
                ctx,
                endpoint_labels.clone(),
                BTreeMap::new(),
                vars,
            )?;
        }

        // Deployment name → (object name, pod selector).
        let mut backends: BTreeMap<String, (String, BTreeMap<String, String>)> = BTreeMap::new();
        for (deployment_name, deployment) in &spec.deployments {
            let deployment_name = deployment_name.get_ref();
            let deployment = deployment.get_ref();
            let Ok(reference) = Reference::parse(deployment.model.get_ref()) else {
                continue;
            };
            let version = self.version(address, &reference)?;
            let revision = crate::plan::endpoint::deployment_revision(&version, deployment);
            let revision_label = dns_safe(&revision);
            let object_name = revision_object_name(endpoint_name, deployment_name, &revision);
            let instance = self.instance_type(
                address,
                compute_name,
                compute,
                deployment
                    .instance_type
                    .as_ref()
                    .map(|s| s.get_ref().as_str()),
            )?;
            let model_reference = format!("model.{}@{version}", reference.name);
            let mut env: BTreeMap<&str, String> = deployment
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            env.insert("CAIRN_ENDPOINT", address.to_string());
            env.insert("CAIRN_DEPLOYMENT", deployment_name.clone());
            env.insert("CAIRN_MODEL", model_reference.clone());
            env.insert("CAIRN_MODEL_DIR", MODEL_DIR.to_string());
            env.insert("PORT", port.to_string());
            let selector: BTreeMap<String, String> = BTreeMap::from([
                (LABEL_WORKSPACE.to_string(), self.workspace.to_string()),
                (LABEL_ENDPOINT.to_string(), endpoint_name.to_string()),
                (LABEL_DEPLOYMENT.to_string(), deployment_name.clone()),
                (
                    LABEL_DEPLOYMENT_REVISION.to_string(),
                    revision_label.clone(),
                ),
            ]);
            let mut labels = self.labels(endpoint_name, "serving");
            labels.extend(selector.clone());
            let vars = json!({
                "name": object_name,
                "namespace": namespace,
                "service_account": service_account(self.workspace),
                "compute": compute_vars,
                "endpoint": endpoint_vars,
                "deployment": {
                    "name": deployment_name,
                    "revision": revision,
                    "replicas": deployment.replicas(),
                    "autoscale": deployment.autoscale().is_some(),
                    "gpus": deployment.gpus(),
                    "image": deployment.image.as_ref().map_or(self.renderer.cairn_image.as_str(), |i| i.get_ref().as_str()),
                    "reference_server": deployment.image.is_none() && deployment.command.is_none(),
                    // Its own serving process, with the pod's model folder and the
                    // endpoint's port (the pod proxy, when there is one, listens on
                    // another and forwards to this one).
                    "command": deployment.command().map(|c| {
                        server_command::expand_all(&c, Path::new(MODEL_DIR), &port.to_string())
                    }),
                    "health": deployment.health(),
                    "health_port": deployment.health_port.as_ref().map(|p| *p.get_ref()),
                    "env": env_list(env),
                    "resources": resources(instance.map(|(_, it)| it), deployment.cpu.as_ref(), deployment.memory.as_ref(), deployment.gpus()),
                    "weight": spec.weight_of(deployment_name),
                },
                "model": {
                    "name": reference.name,
                    "version": version,
                    "pinned": reference.pin.is_some(),
                    "reference": model_reference,
                    "path": MODEL_DIR,
                },
                "instance_type": instance.map(|(n, it)| instance_vars(n, it)),
                "selector": selector,
                "store_env": self.store_env(),
            });
            self.emit(
                "deployment.yaml.j2",
                address,
                ctx,
                labels.clone(),
                BTreeMap::from([(ANNOTATION_MODEL.to_string(), model_reference)]),
                vars,
            )?;
            if let Some(autoscale) = deployment.autoscale() {
                let vars = json!({
                    "name": object_name,
                    "namespace": namespace,
                    "compute": compute_vars,
                    "endpoint": endpoint_vars,
                    "autoscale": autoscale_vars(autoscale),
                });
                self.emit(
                    "horizontalpodautoscaler.yaml.j2",
                    address,
                    ctx,
                    labels,
                    BTreeMap::new(),
                    vars,
                )?;
            }
            backends.insert(deployment_name.clone(), (object_name, selector));
        }

        for (deployment_name, (object_name, selector)) in &backends {
            let mut labels = self.labels(endpoint_name, "serving");
            labels.extend(selector.clone());
            let vars = json!({
                "name": object_name,
                "namespace": namespace,
                "compute": compute_vars,
                "endpoint": endpoint_vars,
                "service": {
                    "role": "revision",
                    "deployment": deployment_name,
                    "selector": selector,
                    "port": port,
                },
            });
            self.emit(
                "service.yaml.j2",
                address,
                ctx,
                labels,
                BTreeMap::new(),
                vars,
            )?;
        }
        // With a gateway, the HTTPRoute weighs traffic and this Service is the stable
        // in-cluster address of every pod. Without one, it is the switch: it selects
        // the pods of the one deployment that takes the traffic (0/100 blue-green).
        let serving = spec
            .weights()
            .filter(|(_, w)| *w > 0)
            .max_by_key(|(_, w)| *w)
            .and_then(|(name, _)| backends.get(name));
        let selector: BTreeMap<String, String> = match serving {
            Some((_, selector)) if compute.gateway.is_none() => selector.clone(),
            _ => every_pod,
        };
        let labels = endpoint_labels;
        let vars = json!({
            "name": endpoint_name,
            "namespace": namespace,
            "compute": compute_vars,
            "endpoint": endpoint_vars,
            "service": {
                "role": "endpoint",
                "deployment": null,
                "selector": selector,
                "port": port,
            },
        });
        self.emit(
            "service.yaml.j2",
            address,
            ctx,
            labels.clone(),
            BTreeMap::new(),
            vars,
        )?;

        if let Some(gateway) = &compute.gateway {
            let gateway = match gateway.get_ref().split_once('/') {
                Some((ns, name)) => json!({ "name": name, "namespace": ns }),
                None => json!({ "name": gateway.get_ref() }),
            };
            let route_backends: Vec<Value> = backends
                .iter()
                .map(|(deployment, (object_name, _))| {
                    json!({
                        "deployment": deployment,
                        "name": object_name,
                        "port": port,
                        "weight": spec.weight_of(deployment),
                    })
                })
                .collect();
            let mirror = spec.mirror.as_ref().and_then(|m| {
                let (deployment, percent) = m.get_ref().iter().next()?;
                let (object_name, _) = backends.get(deployment.get_ref().as_str())?;
                Some(json!({
                    "deployment": deployment.get_ref(),
                    "name": object_name,
                    "port": port,
                    "percent": percent.get_ref(),
                }))
            });
            let vars = json!({
                "name": endpoint_name,
                "namespace": namespace,
                "compute": compute_vars,
                "endpoint": endpoint_vars,
                "route": {
                    "gateway": gateway,
                    "backends": route_backends,
                    "mirror": mirror,
                },
            });
            self.emit(
                "httproute.yaml.j2",
                address,
                ctx,
                labels,
                BTreeMap::new(),
                vars,
            )?;
        }
        Ok(())
    }

    /// Puts the objects in apply order and refuses two objects with the same identity.
    fn finish(mut self) -> Result<Vec<KubeObject>> {
        // Stable: within a kind, the order resources were walked in (by address).
        self.out.sort_by_key(|(rank, _, _)| *rank);
        let mut seen: BTreeMap<ObjectKey, &str> = BTreeMap::new();
        for (_, object, address) in &self.out {
            if let Some(first) = seen.insert(object.key(), address) {
                return Err(Error::Duplicate {
                    object: object.key().to_string(),
                    first: first.to_string(),
                    second: address.clone(),
                });
            }
        }
        Ok(self.out.into_iter().map(|(_, object, _)| object).collect())
    }
}

/// The namespace a compute's objects live in: its `namespace`, else the workspace's,
/// else the workspace's name.
pub fn compute_namespace(workspace: &str, spec: &WorkspaceSpec, compute: &ComputeSpec) -> String {
    compute
        .namespace
        .as_ref()
        .map(|n| n.get_ref().clone())
        .unwrap_or_else(|| workspace_namespace(workspace, spec))
}

fn workspace_namespace(workspace: &str, spec: &WorkspaceSpec) -> String {
    spec.namespace
        .as_ref()
        .map_or_else(|| workspace.to_string(), |n| n.get_ref().clone())
}

/// The ServiceAccount the workspace's pods run as, in each of its namespaces.
fn service_account(workspace: &str) -> String {
    format!("cairn-{workspace}")
}

fn compute_vars(name: &str, address: &Address, compute: &ComputeSpec, namespace: &str) -> Value {
    let instance_types: BTreeMap<&str, Value> = compute
        .instance_types
        .iter()
        .map(|(n, it)| {
            (
                n.get_ref().as_str(),
                instance_vars(n.get_ref(), it.get_ref()),
            )
        })
        .collect();
    // The largest cpu and memory any instance type offers: the LimitRange's ceiling.
    let mut largest = Map::new();
    let types = || compute.instance_types.values().map(|it| it.get_ref());
    if let Some(cpu) = types()
        .filter_map(|it| it.cpu.as_ref())
        .max_by_key(|q| q.millis())
    {
        largest.insert("cpu".into(), cpu.as_str().into());
    }
    if let Some(memory) = types()
        .filter_map(|it| it.memory.as_ref())
        .max_by_key(|q| q.millis())
    {
        largest.insert("memory".into(), memory.as_str().into());
    }
    json!({
        "name": name,
        "address": address.to_string(),
        "context": compute.context.as_ref().map(|c| c.get_ref()),
        "namespace": namespace,
        "gateway": compute.gateway.as_ref().map(|g| g.get_ref()),
        "max_gpus": compute.max_gpus.as_ref().map(|g| *g.get_ref()),
        "region": compute.region.as_ref().map(|r| r.get_ref()),
        "labels": compute.labels,
        "instance_types": instance_types,
        "largest": largest,
    })
}

/// On a Secret Cairn renders without data: the data key apply fills with a random
/// key once (`cluster/keys.rs`).
pub const ANNOTATION_GENERATED_KEY: &str = "cairn.dev/generated-key";

/// A revision as it can appear in object names and label values: lowercase letters,
/// digits and `-`.
/// The name of a deployment revision's Deployment and Service:
/// `<endpoint>-<deployment>-<revision>`.
pub fn revision_object_name(endpoint: &str, deployment: &str, revision: &str) -> String {
    format!("{endpoint}-{deployment}-{}", dns_safe(revision))
}

fn dns_safe(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() {
                c
            } else {
                '-'
            }
        })
        .collect();
    mapped.trim_matches('-').to_string()
}

/// An autoscaled deployment's bounds and target, as its HorizontalPodAutoscaler's
/// template reads them (a request rate as a Kubernetes quantity: `50`, `2500m`).
fn autoscale_vars(autoscale: &crate::manifest::Autoscale) -> Value {
    let window = autoscale
        .scale_down_window
        .map_or(DEFAULT_SCALE_DOWN_WINDOW_SECONDS, |d| d.as_std().as_secs());
    json!({
        "min": autoscale.min,
        "max": autoscale.max,
        "target_rps": autoscale.target_rps,
        "target_rps_quantity": autoscale.target_rps.map(|rps| {
            let milli = (rps * 1000.0).round() as u64;
            if milli % 1000 == 0 { (milli / 1000).to_string() } else { format!("{milli}m") }
        }),
        "target_cpu": autoscale.target_cpu,
        "scale_down_window_seconds": window,
    })
}

/// How long the load must stay low before an autoscaler removes replicas, unless
/// declared: the HorizontalPodAutoscaler's own default.
pub const DEFAULT_SCALE_DOWN_WINDOW_SECONDS: u64 = 300;
