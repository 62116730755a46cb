package cairn.gpu_test

import data.cairn.gpu

workspace(labels, resources) := {
	"workspaces": {"ml": {"environment": "production", "labels": labels}},
	"resources": resources,
}

job := {"ml/job.train": {
	"address": "ml/job.train", "kind": "job", "name": "train", "workspace": "ml",
	"spec": {"compute": "compute.c", "gpus": 4, "instances": 2},
}}

endpoint := {"ml/endpoint.api": {
	"address": "ml/endpoint.api", "kind": "endpoint", "name": "api", "workspace": "ml",
	"spec": {"deployments": {"blue": {"gpus": 1, "replicas": 2}, "green": {"gpus": 1}}},
}}

# A job and an endpoint in another workspace: not counted against `ml`.
other := {"other/job.train": {
	"address": "other/job.train", "kind": "job", "name": "train", "workspace": "other",
	"spec": {"gpus": 64},
}}

test_requests_add_jobs_and_endpoints if {
	gpu.requested("ml") == 11 with input as workspace({}, object.union(object.union(job, endpoint), other))
}

test_within_budget_passes if {
	count(gpu.deny) == 0 with input as workspace({"gpu-budget": "11"}, object.union(object.union(job, endpoint), other))
}

test_over_budget_is_denied if {
	some m in gpu.deny with input as workspace({"gpu-budget": "8"}, object.union(job, endpoint))
	m.address == "ml/workspace"
	contains(m.msg, "requests 11 GPUs")
}

test_no_budget_no_check if {
	count(gpu.deny) == 0 with input as workspace({"team": "risk"}, job)
}

test_budget_that_is_not_a_number_is_denied if {
	some m in gpu.deny with input as workspace({"gpu-budget": "lots"}, job)
	contains(m.msg, "whole number")
}
