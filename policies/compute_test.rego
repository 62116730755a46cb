package cairn.compute_test

import data.cairn.compute

state(spec) := {"resources": {"ml/compute.c": {
	"address": "ml/compute.c", "kind": "compute", "name": "c", "workspace": "ml",
	"file": "ml/compute.toml", "spec": spec,
}}}

test_idle_shutdown_passes if {
	count(compute.deny) == 0 with input as state({"target": "local", "idle_shutdown": "30m"})
	count(compute.warn) == 0 with input as state({"target": "local", "idle_shutdown": "30m"})
}

test_training_compute_without_idle_shutdown_is_denied if {
	some m in compute.deny with input as state({"target": "local"})
	m.address == "ml/compute.c"
	contains(m.msg, "idle_shutdown")
}

test_compute_for_training_role_is_denied if {
	count(compute.deny) == 1 with input as state({"target": "kubernetes", "roles": ["train", "serve"]})
}

test_serve_only_compute_is_warned_not_denied if {
	count(compute.deny) == 0 with input as state({"target": "kubernetes", "roles": ["serve"]})
	count(compute.warn) == 1 with input as state({"target": "kubernetes", "roles": ["serve"]})
}
