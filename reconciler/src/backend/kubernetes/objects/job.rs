//! A job's objects: the Job of its current run (an Indexed Job and a headless Service
//! with several instances), and with outputs the run's outputs volume and upload Job
//! ([`super::super::outputs_volume`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};

use super::super::containers::{instance_vars, job_env, resources};
use super::super::outputs_volume;
use super::super::{Error, Result};
use super::{
    compute_vars, service_account, Walk, COMPONENT_UPLOAD, LABEL_COMPONENT, LABEL_JOB, LABEL_NAME,
    LABEL_RUN, LABEL_SWEEP, LABEL_WORKSPACE, WORK_DIR,
};
use crate::address::{Address, Kind, Reference};
use crate::backend::distribution::{Distribution, DEFAULT_MASTER_PORT};
use crate::backend::job::DEFAULT_SCHEDULE_TIMEOUT;
use crate::backend::sweep;
use crate::desired::Resource;
use crate::manifest::{JobSpec, Spec};

impl Walk<'_> {
    pub(super) fn job(&mut self, resource: &Resource, spec: &JobSpec) -> Result<()> {
        if self.compute_of(spec.compute.get_ref()).is_none() {
            return Ok(());
        }
        let address = &resource.address;
        self.reachable_store(address)?;
        let run_id = self
            .versions
            .version_of(address)
            .map(str::to_string)
            .ok_or_else(|| Error::MissingVersion {
                what: address.to_string(),
                needed: format!("the run id of {}", address.local()),
            })?;
        match &spec.sweep {
            None => self.run(resource, spec, &run_id, None),
            // One Job (and outputs volume, upload Job) per trial, all of them planned:
            // the apply starts them `parallel` at a time.
            Some(sweep) => {
                for (i, params) in sweep.get_ref().trials().iter().enumerate() {
                    let trial = crate::manifest::sweep::trial_id(&run_id, i);
                    self.run(resource, spec, &trial, Some((&run_id, params)))?;
                }
                Ok(())
            }
        }
    }

    /// The objects of one run of a job: run `run_id`, or a trial of sweep run `sweep.0`
    /// with the parameters `sweep.1`.
    fn run(
        &mut self,
        resource: &Resource,
        spec: &JobSpec,
        run_id: &str,
        sweep: Option<(&str, &BTreeMap<String, String>)>,
    ) -> Result<()> {
        let Some((compute_name, compute)) = self.compute_of(spec.compute.get_ref()) else {
            return Ok(());
        };
        let address = &resource.address;
        let run_id = run_id.to_string();
        let params = sweep.map(|(_, p)| p.clone()).unwrap_or_default();
        let Some(image) = &spec.image else {
            return Err(Error::Unsupported {
                what: address.to_string(),
                problem: "a job on Kubernetes needs an `image`".into(),
                hint: "add `image = \"registry.example.com/team/trainer:1.0\"` to the job",
            });
        };
        let namespace = self.namespace_of(compute);
        let kube_context = compute.context.as_ref().map(|c| c.get_ref().clone());

        let mut paths: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut env: BTreeMap<&str, String> = BTreeMap::new();
        let mut cairn_env: BTreeMap<String, String> = BTreeMap::new();
        let mut inputs = Vec::new();
        for (name, value) in &spec.inputs {
            let Ok(reference) = Reference::parse(value.get_ref()) else {
                continue;
            };
            let version = self.version(address, &reference)?;
            let name = name.get_ref();
            let path = format!("{WORK_DIR}/inputs/{name}");
            paths.insert(format!("inputs.{name}"), PathBuf::from(&path));
            cairn_env.insert(
                format!("CAIRN_INPUT_{}", crate::backend::job::env_name(name)),
                path.clone(),
            );
            inputs.push(json!({
                "name": name,
                "kind": reference.kind,
                "resource": reference.name,
                "version": version,
                "reference": format!("{}.{}@{version}", reference.kind, reference.name),
                "path": path,
            }));
        }
        let mut outputs = Vec::new();
        for (name, value) in &spec.outputs {
            let Ok(reference) = Reference::parse(value.get_ref()) else {
                continue;
            };
            let name = name.get_ref();
            let path = format!("{WORK_DIR}/outputs/{name}");
            paths.insert(format!("outputs.{name}"), PathBuf::from(&path));
            cairn_env.insert(
                format!("CAIRN_OUTPUT_{}", crate::backend::job::env_name(name)),
                path.clone(),
            );
            let format = match self
                .desired
                .get(&Address::new(self.workspace, Kind::Model, &reference.name))
                .map(|r| &r.spec)
            {
                Some(Spec::Model(model)) => {
                    serde_json::to_value(model.format.get_ref()).unwrap_or(Value::Null)
                }
                _ => Value::Null,
            };
            outputs.push(json!({
                "name": name,
                "kind": reference.kind,
                "model": (reference.kind == Kind::Model).then_some(&reference.name),
                "resource": reference.name,
                "format": format,
                "version": run_id,
                "reference": format!("{}.{}@{run_id}", reference.kind, reference.name),
                "path": path,
            }));
        }
        cairn_env.insert("CAIRN_RUN_ID".into(), run_id.clone());
        cairn_env.insert("CAIRN_JOB".into(), address.to_string());
        for (k, v) in &spec.env {
            env.insert(k, v.clone());
        }
        cairn_env.extend(sweep::param_env(&params));
        // As on the local target, Cairn's variables win over the job's.
        for (k, v) in &cairn_env {
            env.insert(k, v.clone());
        }
        let command = spec.command.as_ref().map(|c| {
            c.get_ref()
                .iter()
                .map(|arg| {
                    let arg = sweep::with_params(arg.get_ref(), &params);
                    crate::backend::job::expand(&arg, &paths, &run_id)
                })
                .collect::<Vec<_>>()
        });
        let instance = self.instance_type(
            address,
            compute_name,
            compute,
            spec.instance_type.as_ref().map(|s| s.get_ref().as_str()),
        )?;

        let name = &address.name;
        let object_name = format!("{name}-{run_id}");
        let distributed = spec.instances() > 1;
        // Several instances find instance 0 through the run's headless Service: an
        // Indexed Job's pod is `<job>-<index>`, its DNS name `<pod>.<service>`.
        let group = Distribution::new(
            spec.instances(),
            spec.gpus(),
            if distributed {
                format!("{object_name}-0.{object_name}")
            } else {
                "127.0.0.1".to_string()
            },
            DEFAULT_MASTER_PORT,
        );
        let mut labels = self.labels(name, "training");
        labels.insert(LABEL_JOB.into(), name.clone());
        labels.insert(LABEL_RUN.into(), run_id.clone());
        if let Some((sweep_run, _)) = sweep {
            labels.insert(LABEL_SWEEP.into(), sweep_run.to_string());
        }
        if let Some(queue) = &spec.queue {
            // Kueue's queue for a batch Job: it admits the suspended Job whole.
            labels.insert("kueue.x-k8s.io/queue-name".into(), queue.get_ref().clone());
        }
        let pod_labels: BTreeMap<&str, &str> = BTreeMap::from([
            (LABEL_NAME, name.as_str()),
            (LABEL_COMPONENT, "training"),
            (LABEL_WORKSPACE, self.workspace),
            (LABEL_JOB, name.as_str()),
            (LABEL_RUN, run_id.as_str()),
        ]);
        // The upload's pod is not one of the group's (the headless Service selects
        // those).
        let mut upload_pod_labels = pod_labels.clone();
        upload_pod_labels.insert(LABEL_COMPONENT, COMPONENT_UPLOAD);
        let (outputs_volume, upload) =
            outputs_volume::vars(&object_name, spec, compute, upload_pod_labels);
        let vars = json!({
            "name": object_name,
            "namespace": namespace,
            "service_account": service_account(self.workspace),
            "compute": compute_vars(compute_name, &Address::new(self.workspace, Kind::Compute, compute_name), compute, &namespace),
            "job": {
                "name": name,
                "address": address.to_string(),
                "run_id": run_id,
                "image": image.get_ref(),
                "command": command,
                "env": job_env(env, &group),
                "gpus": spec.gpus(),
                "instances": spec.instances(),
                "master_port": group.master_port,
                // The Job's first deadline bounds an attempt even if no apply watches it:
                // its scheduling time plus its timeout. Apply sets the real one once
                // every pod runs (only running time counts).
                "timeout_seconds": spec.timeout.as_ref().map(|t| {
                    (t.get_ref().as_std() + schedule_timeout(spec)).as_secs()
                }),
                "queue": spec.queue.as_ref().map(|q| q.get_ref()),
                "retries": spec.retries,
                "outputs_volume": outputs_volume,
                "upload": upload,
                "resources": resources(instance.map(|(_, it)| it), spec.cpu.as_ref(), spec.memory.as_ref(), spec.gpus()),
                "description": spec.description,
            },
            "sweep": sweep.map(|(sweep_run, params)| json!({"run_id": sweep_run, "params": params})),
            "inputs": inputs,
            "outputs": outputs,
            "instance_type": instance.map(|(n, it)| instance_vars(n, it)),
            "store_env": self.store_env(),
            "pod_labels": pod_labels,
        });
        self.emit(
            "job.yaml.j2",
            address,
            kube_context.as_deref(),
            labels,
            BTreeMap::new(),
            vars,
        )
    }
}

/// How long a job's instances may take to all be running once admitted.
fn schedule_timeout(spec: &JobSpec) -> std::time::Duration {
    spec.schedule_timeout
        .as_ref()
        .map_or(DEFAULT_SCHEDULE_TIMEOUT, |t| t.get_ref().as_std())
}
