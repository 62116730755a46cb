package cairn.images_test

import data.cairn.images

job(image) := {"resources": {"ml/job.train": {
	"address": "ml/job.train", "kind": "job", "name": "train", "workspace": "ml",
	"file": "ml/train.toml", "spec": {"compute": "compute.c", "image": image},
}}}

deployment(image) := {"resources": {"ml/endpoint.api": {
	"address": "ml/endpoint.api", "kind": "endpoint", "name": "api", "workspace": "ml",
	"file": "ml/serve.toml", "spec": {"deployments": {
		"blue": {"model": "model.m", "image": image},
		"green": {"model": "model.m"},
	}},
}}}

config := {"cairn": {"config": {"approved_registries": ["registry.example.com", "ghcr.io/acme"]}}}

test_image_from_approved_registry_passes if {
	count(images.deny) == 0 with input as job("registry.example.com/team/trainer:1.0") with data.cairn.config as config.cairn.config
	count(images.deny) == 0 with input as job("ghcr.io/acme/trainer@sha256:abc") with data.cairn.config as config.cairn.config
}

test_image_from_other_registry_is_denied if {
	some m in images.deny with input as job("evil.example.net/trainer:1.0") with data.cairn.config as config.cairn.config
	m.address == "ml/job.train"
	contains(m.msg, "ghcr.io/acme, registry.example.com")
}

test_prefix_is_matched_on_a_path_boundary if {
	count(images.deny) == 1 with input as job("ghcr.io/acme-evil/trainer:1") with data.cairn.config as config.cairn.config
	count(images.deny) == 1 with input as job("registry.example.com.evil.net/trainer:1") with data.cairn.config as config.cairn.config
}

test_docker_hub_short_names_are_docker_io if {
	images.full_name("python:3.12") == "docker.io/library/python:3.12"
	images.full_name("acme/tool") == "docker.io/acme/tool"
	images.full_name("localhost/tool") == "localhost/tool"
	images.full_name("registry:5000/tool") == "registry:5000/tool"
}

test_deployment_images_are_checked if {
	some m in images.deny with input as deployment("docker.io/library/nginx") with data.cairn.config as config.cairn.config
	m.address == "ml/endpoint.api"
}

# `with data.cairn.config as {}`: a repository's own settings (manifests/policies/) must not
# leak into this test when `cairn policy test` runs them together.
test_without_configuration_images_are_warned_about if {
	count(images.deny) == 0 with input as job("evil.example.net/trainer:1.0") with data.cairn.config as {}
	some m in images.warn with input as job("evil.example.net/trainer:1.0") with data.cairn.config as {}
	contains(m, "1 image(s) not checked")
}

test_with_configuration_there_is_no_warning if {
	count(images.warn) == 0 with input as job("registry.example.com/team/trainer:1.0") with data.cairn.config as config.cairn.config
}

test_jobs_without_image_pass if {
	count(images.deny) == 0 with input as {"resources": {"ml/job.train": {"kind": "job", "spec": {"command": ["true"]}}}}
}
