package cairn.data_test

import data.cairn.data as sovereignty

state(tags, compute_spec) := {"resources": {
	"ml/dataset.people": {
		"address": "ml/dataset.people", "kind": "dataset", "name": "people", "workspace": "ml",
		"spec": {"source": "data/", "format": "csv", "tags": tags},
	},
	"ml/compute.c": {
		"address": "ml/compute.c", "kind": "compute", "name": "c", "workspace": "ml",
		"spec": compute_spec,
	},
	"ml/job.train": {
		"address": "ml/job.train", "kind": "job", "name": "train", "workspace": "ml",
		"file": "ml/train.toml",
		"spec": {"compute": "compute.c", "inputs": {"people": "dataset.people@3f9a2c1"}},
	},
}}

test_pii_in_allowed_region_passes if {
	count(sovereignty.deny) == 0 with input as state({"pii": "true", "region": "eu-west"}, {"region": "eu-west"})
	count(sovereignty.deny) == 0 with input as state({"pii": "true", "region": "eu-west, eu-central"}, {"region": "eu-central"})
}

test_pii_in_other_region_is_denied if {
	some m in sovereignty.deny with input as state({"pii": "true", "region": "eu-west"}, {"region": "us-east"})
	m.address == "ml/job.train"
	contains(m.msg, "in region us-east")
}

test_pii_on_compute_without_region_is_denied if {
	some m in sovereignty.deny with input as state({"pii": "true", "region": "eu-west"}, {"target": "local"})
	contains(m.msg, "declares no region")
}

test_pii_without_region_tag_is_denied if {
	some m in sovereignty.deny with input as state({"pii": "true"}, {"region": "eu-west"})
	m.address == "ml/dataset.people"
}

test_data_without_pii_goes_anywhere if {
	count(sovereignty.deny) == 0 with input as state({"pii": "false", "region": "eu-west"}, {"region": "us-east"})
}
