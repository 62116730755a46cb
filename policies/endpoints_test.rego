package cairn.endpoints_test

import data.cairn.endpoints

steps := {"steps": [10, 50, 100]}

endpoint(environment, spec) := {
	"workspaces": {"ml": {"environment": environment}},
	"resources": {"ml/endpoint.api": {
		"address": "ml/endpoint.api", "kind": "endpoint", "name": "api", "workspace": "ml",
		"file": "ml/serve.toml", "spec": spec,
	}},
}

test_authenticated_endpoint_with_steps_passes if {
	count(endpoints.deny) == 0 with input as endpoint("production", {"auth": "key", "rollout": steps})
}

test_unauthenticated_endpoint_in_production_is_denied if {
	some m in endpoints.deny with input as endpoint("production", {"auth": "none", "rollout": steps})
	m.address == "ml/endpoint.api"
	contains(m.msg, "auth = \"none\"")
}

test_unauthenticated_endpoint_in_dev_passes if {
	count(endpoints.deny) == 0 with input as endpoint("dev", {"auth": "none"})
}

test_production_endpoint_without_rollout_is_denied if {
	some m in endpoints.deny with input as endpoint("production", {"auth": "token"})
	contains(m.msg, "no rollout steps")
}

test_production_endpoint_with_one_step_is_warned_about if {
	count(endpoints.deny) == 0 with input as endpoint("production", {"auth": "token", "rollout": {"steps": [100]}})
	some m in endpoints.warn with input as endpoint("production", {"auth": "token", "rollout": {"steps": [100]}})
	contains(m.msg, "one step")
	count(endpoints.warn) == 0 with input as endpoint("production", {"auth": "token", "rollout": steps})
}
