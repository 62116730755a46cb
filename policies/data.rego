# Data sovereignty: a dataset tagged `pii = "true"` may only be read by jobs on compute
# in one of its allowed regions. The dataset's `region` tag names them (one region, or
# several separated by commas: `region = "eu-west, eu-central"`); the compute's `region`
# field says where it runs. A PII dataset without a `region` tag can't be placed and is
# denied itself.
package cairn.data

pii(dataset) if dataset.spec.tags.pii == "true"

regions(dataset) := {region |
	some part in split(dataset.spec.tags.region, ",")
	region := trim_space(part)
}

# `dataset.loans` or `dataset.loans@3f9a2c1` in workspace `ws` → `ws/dataset.loans`.
address_of(workspace, reference) := sprintf("%s/%s", [workspace, split(reference, "@")[0]])

deny contains {"msg": msg, "address": address} if {
	some address, job in input.resources
	job.kind == "job"
	some reference in job.spec.inputs
	dataset := input.resources[address_of(job.workspace, reference)]
	dataset.kind == "dataset"
	pii(dataset)
	dataset.spec.tags.region
	compute := input.resources[address_of(job.workspace, job.spec.compute)]
	region := object.get(compute.spec, "region", "")
	not region in regions(dataset)
	where := region_text(region)
	msg := sprintf("job %s reads PII dataset %s (allowed regions: %s) on compute %s, %s", [job.name, dataset.name, concat(", ", sort([r | some r in regions(dataset)])), compute.name, where])
}

region_text("") := "which declares no region"

region_text(region) := sprintf("in region %s", [region]) if region != ""

deny contains {"msg": msg, "address": address} if {
	some address, dataset in input.resources
	dataset.kind == "dataset"
	pii(dataset)
	not dataset.spec.tags.region
	msg := sprintf("PII dataset %s has no region tag; add tags.region with the regions it may be processed in", [dataset.name])
}
