# GPU requests within a workspace's budget. A workspace sets its budget with the label
# `gpu-budget` (a whole number of GPUs, e.g. `labels = { gpu-budget = "16" }`); without
# the label it has no budget to check. Requests add up every job's GPUs x instances and
# every endpoint deployment's GPUs x replicas. (Each compute's own `max_gpus` quota is
# checked by `cairn validate`; this is the budget across all of them.)
package cairn.gpu

requests(r) := object.get(r.spec, "gpus", 0) * object.get(r.spec, "instances", 1) if r.kind == "job"

requests(r) := sum([n |
	some d in r.spec.deployments
	n := object.get(d, "gpus", 0) * object.get(d, "replicas", 1)
]) if r.kind == "endpoint"

# Each job's and endpoint's request, grouped by workspace in one pass over the resources.
requests_in[workspace] contains [address, n] if {
	some address, r in input.resources
	r.kind in {"job", "endpoint"}
	workspace := r.workspace
	n := requests(r)
}

requested(workspace) := sum([n | some [_, n] in requests_in[workspace]])

deny contains {"msg": msg, "address": address} if {
	some name, w in input.workspaces
	budget := w.labels["gpu-budget"]
	regex.match(`^[0-9]+$`, budget)
	total := requested(name)
	total > to_number(budget)
	address := sprintf("%s/workspace", [name])
	msg := sprintf("workspace %s requests %d GPUs (jobs: GPUs x instances; endpoints: GPUs x replicas), over its gpu-budget of %s", [name, total, budget])
}

deny contains {"msg": msg, "address": address} if {
	some name, w in input.workspaces
	budget := w.labels["gpu-budget"]
	not regex.match(`^[0-9]+$`, budget)
	address := sprintf("%s/workspace", [name])
	msg := sprintf("workspace %s has gpu-budget = \"%s\"; the budget is a whole number of GPUs, e.g. \"16\"", [name, budget])
}
