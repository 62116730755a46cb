# Images only from approved registries (Azure ML: "workspaces should use approved
# container registries"). Applies to job images and deployment images; jobs without an
# image (local commands) and deployments served by Cairn's reference server are not
# images of the repository's choosing and are not checked.
#
# The approved registries are data: `data.cairn.config.approved_registries`, a list of
# registries or registry prefixes (`registry.example.com`, `ghcr.io/acme`). A repository
# sets it in its own `policies/` folder, in Rego:
#
#     package cairn.config
#     approved_registries := ["registry.example.com", "ghcr.io/acme"]
#
# or in a JSON data file (`policies/data.json`):
#     {"cairn": {"config": {"approved_registries": ["registry.example.com"]}}}
#
# With none configured, images are not checked and one warning says so.
package cairn.images

approved contains registry if {
	some registry in data.cairn.config.approved_registries
}

# An image reference with its registry spelled out: `python:3.12` is
# `docker.io/library/python:3.12`, `acme/tool` is `docker.io/acme/tool`.
full_name(image) := name if {
	parts := split(image, "/")
	count(parts) > 1
	explicit_registry(parts[0])
	name := image
} else := name if {
	count(split(image, "/")) > 1
	name := concat("/", ["docker.io", image])
} else := concat("/", ["docker.io", "library", image])

explicit_registry(host) if contains(host, ".")

explicit_registry(host) if contains(host, ":")

explicit_registry(host) if host == "localhost"

from_approved(image) if {
	some registry in approved
	name := full_name(image)
	startswith(name, concat("", [trim_suffix(registry, "/"), "/"]))
}

images contains [address, image] if {
	some address, r in input.resources
	r.kind == "job"
	image := r.spec.image
}

images contains [address, image] if {
	some address, r in input.resources
	r.kind == "endpoint"
	some deployment in r.spec.deployments
	image := deployment.image
}

deny contains {"msg": msg, "address": address} if {
	count(approved) > 0
	some [address, image] in images
	not from_approved(image)
	approved_list := concat(", ", sort([r | some r in approved]))
	msg := sprintf("image %s is not from an approved registry; approved: %s", [image, approved_list])
}

# Until the repository lists its registries, images are not checked: one warning says so.
warn contains msg if {
	count(approved) == 0
	count(images) > 0
	msg := sprintf("%d image(s) not checked against approved registries: none are configured (set data.cairn.config.approved_registries in the repository's policies/)", [count(images)])
}
